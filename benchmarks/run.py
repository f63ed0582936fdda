"""`make bench`: clipforge vs open_clip vs transformers in one run, same random weights and inputs.

Every case times all libraries in one process, call by call in rotating order, so that load on this noisy
host falls on all of them alike; then runs each library alone in a fresh process (clean peak RSS) and checks that its outputs equal clipforge's
(max abs difference of the features, or of the training losses), and reports medians with min/max.
Writes benchmarks/results/bench.json and bench.md (absolute figures, ratios, targets), then the scaling
figures (benchmarks.scaling). `--smoke`: tiny cases, under a minute.

    .venv/bin/python -m benchmarks.run [--smoke] [--threads 2] [--no-scaling]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.cases import SHARED
from benchmarks.harness import bf16_fp32_ratio, machine_info, matmul_peak_gflops, run_isolated
from benchmarks.onnx_peers import PEERS, available_peers, peer_settings, prepare_onnx
from benchmarks.report import summary_markdown, targets
from benchmarks.weights import prepare_weights
from clipforge.fileio import atomic_write_json
from clipforge.flops import model_gflops
from clipforge.models import get_config
from clipforge.results import write_results

RESULTS = Path(__file__).resolve().parent / "results"
TEXT_LIBS = ["clipforge", "open_clip", "transformers", "transformers-max77"]
RUNTIMES = available_peers()  # ONNX Runtime (and OpenVINO when installed) on clipforge's exported graphs

# (case, libraries, repeats): case = kind:model:batch; the first library is the baseline of the ratios
AUTO = ["clipforge-auto"]  # the apps' default backend, beside clipforge's eager PyTorch
FULL_CASES = [
    ("image:ViT-B-32:32", ["clipforge", *AUTO, "open_clip", "transformers", *RUNTIMES], 3),
    ("image:ViT-B-32:1", ["clipforge", *AUTO, "open_clip", "transformers", *RUNTIMES], 5),
    ("image:RN50:32", ["clipforge", *AUTO, "open_clip", *RUNTIMES], 3),
    ("image:RN50:1", ["clipforge", *AUTO, "open_clip", *RUNTIMES], 5),
    ("text-coco:ViT-B-32:256", [*TEXT_LIBS[:1], *AUTO, *TEXT_LIBS[1:], *RUNTIMES], 2),
    ("text-coco:ViT-B-32:32", ["clipforge", *AUTO, "open_clip", "transformers", *RUNTIMES], 3),
    ("text-coco:ViT-B-32:1", ["clipforge", *AUTO, "open_clip", "transformers", *RUNTIMES], 5),
    ("text-77:ViT-B-32:32", TEXT_LIBS, 3),
    ("train:ViT-B-32:16", ["clipforge", "open_clip"], 2),
    ("train:demo-cifar:512", ["clipforge", "open_clip"], 3),
]
SMOKE_CASES = [
    ("image:tiny-resnet:4", ["clipforge", *AUTO, "open_clip", *RUNTIMES], 2),
    ("text-coco:tiny-vit:16", ["clipforge", *AUTO, "open_clip", "transformers", *RUNTIMES], 2),
    ("train:demo-cifar:32", ["clipforge", "open_clip"], 2),
]


def achieved(case: str, row: dict, peak: float) -> dict:
    """Model FLOP/s (forward FLOPs of the full-length model) at the best timed call, and its fraction of the
    matmul peak (best of repeats too: like for like), the peak being the best seen in the run."""
    kind, name, _ = case.split(":")
    if kind != "image":
        return {}
    peak = max(peak, row.get("local_peak_gflops", 0.0))
    rate = row["items"] / row["min_s"] * model_gflops(get_config(name))[0]
    return {"gflops_per_s": round(rate, 1), "fraction_of_peak": round(rate / peak, 3)}


def run_case(
    case: str, libs: list[str], repeats: int, weights: Path, threads: int, rounds: int = 1
) -> list[dict]:
    """Timing: all libraries in one process, call by call in rotating order, `repeats x rounds` calls each
    (the ratios). Then each library alone in a fresh process: its peak RSS, its outputs for the equality
    check and its timing alone (`alone_items_per_s`)."""
    args = [case, ",".join(libs), str(weights), "--repeats", str(repeats * rounds), "--threads", str(threads)]
    results = {row["lib"]: row for row in run_isolated("benchmarks.cases", args, threads)}
    for lib in libs:
        args = [case, lib, str(weights), "--repeats", "1", "--threads", str(threads)]
        alone = run_isolated("benchmarks.cases", args + ["--save", str(weights / f"out-{lib}.pt")], threads)
        results[lib]["peak_rss_mb"] = alone["peak_rss_mb"]
        results[lib]["alone_items_per_s"] = alone["items_per_s"]
    reference = torch.load(weights / f"out-{libs[0]}.pt")
    base = results[libs[0]]["items_per_s"]
    for lib, row in results.items():
        out = torch.load(weights / f"out-{lib}.pt")
        row["max_abs_diff"] = float((out - reference).abs().max()) if out.shape == reference.shape else None
        row["clipforge_speedup"] = round(base / row["items_per_s"], 3)
    return list(results.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny cases, under a minute")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling figures")
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed calls per library = repeats x rounds (2; smoke 1)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = SMOKE_CASES if args.smoke else FULL_CASES
    name = "bench_smoke" if args.smoke else "bench"
    rounds = args.rounds or (1 if args.smoke else 2)
    peak = matmul_peak_gflops(repeats=3 if args.smoke else 7)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        prepare_weights({c.split(":")[1] for c, _, _ in cases}, weights)
        for model_name in sorted({c.split(":")[1] for c, libs, _ in cases if set(libs) & set(PEERS)}):
            prepare_onnx(model_name, weights, SHARED)  # export + int8, once per model
        for case, libs, repeats in tqdm(cases, desc="bench cases"):
            rows += run_case(case, libs, repeats, weights, args.threads, rounds)
            partial = {"machine": machine_info(args.threads), "matmul_peak": peak, "rows": rows}
            atomic_write_json(args.out / f"{name}_partial.json", partial)  # survives an interrupted run
    pipeline_args = ["--threads", str(args.threads)] + (["--smoke"] if args.smoke else [])
    pipeline = run_isolated("benchmarks.pipeline", pipeline_args, args.threads)
    peak_end = matmul_peak_gflops(repeats=3 if args.smoke else 7)  # the host is noisy: measure again
    best_peak = max(peak["peak_gflops"], peak_end["peak_gflops"])
    for row in rows:
        row.update(achieved(row["case"], row, best_peak))
    report = {
        "machine": machine_info(args.threads),
        "matmul_peak": {**peak, "peak_gflops_at_end": peak_end["peak_gflops"], "best_gflops": best_peak},
        "bf16_over_fp32_time_ratio": round(bf16_fp32_ratio(), 2),
        "peer_settings": peer_settings(args.threads),
        "rows": rows,
        "pipeline": pipeline,
    }
    report["targets"] = targets(report)
    summary = summary_markdown(report)
    paths = write_results(args.out, name, report, summary)
    print(summary)
    print(f"results: {paths['json']}")
    from benchmarks.backend_check import main as backend_main

    smoke = ["--models", "tiny-vit", "--rounds", "1", "--name", "backend_smoke"] if args.smoke else []
    backend_main(["--threads", str(args.threads), "--out", str(args.out), *smoke])  # --backend auto vs torch
    if not args.no_scaling:
        from benchmarks.scaling import main as scaling_main

        scaling_main((["--smoke"] if args.smoke else []) + ["--out", str(args.out)])
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
