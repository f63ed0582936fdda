"""`make bench`: clipforge vs open_clip vs transformers in one run, same random weights and inputs.

Writes benchmarks/results/bench.json and bench.md (absolute figures and ratios)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.harness import bf16_fp32_ratio, machine_info, matmul_peak_gflops, run_isolated
from clipforge.flops import model_gflops
from clipforge.models import get_config
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"

# (case, libraries): case = kind:model:batch
FULL_CASES = [
    ("image:ViT-B-32:32", ["clipforge", "open_clip", "transformers"]),
    ("image:ViT-B-32:1", ["clipforge", "open_clip", "transformers"]),
    ("image:RN50:32", ["clipforge", "open_clip"]),
    ("image:RN50:1", ["clipforge", "open_clip"]),
    ("text-coco:ViT-B-32:1024", ["clipforge", "open_clip", "transformers"]),
    ("text-77:ViT-B-32:64", ["clipforge", "open_clip", "transformers"]),
    ("train:ViT-B-32:16", ["clipforge", "open_clip"]),
]
SMOKE_CASES = [
    ("image:ViT-B-32:2", ["clipforge", "open_clip"]),
    ("text-coco:ViT-B-32:64", ["clipforge", "open_clip"]),
]


def prepare_weights(model_names: set[str], out: Path) -> None:
    """Seeded random open_clip weights, saved in each library's format (converted by clipforge)."""
    import open_clip
    from transformers import CLIPTokenizerFast

    from clipforge.checkpoints import load_any, save

    for name in sorted(model_names):
        torch.manual_seed(0)
        reference = open_clip.create_model(f"{name}-quickgelu")
        for module in reference.modules():  # non-trivial BatchNorm statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        state = reference.state_dict()
        torch.save(state, out / f"{name}.openai.pt")
        model = load_any(out / f"{name}.openai.pt")
        save(model, out / f"{name}.safetensors", "clipforge")
        if get_config(name).vision.kind == "vit":
            save(model, out / f"{name}-hf", "hf")
        (out / f"{name}.json").write_text(json.dumps({"image_size": get_config(name).vision.image_size}))
    from clipforge.tokenizer import write_hf_tokenizer_files

    write_hf_tokenizer_files(out / "hf-tokenizer")
    CLIPTokenizerFast.from_pretrained(out / "hf-tokenizer")  # fail early if unusable


def achieved(case: str, row: dict, peak: float) -> dict:
    kind, name, _ = case.split(":")
    if kind != "image":
        return {}
    gflops = model_gflops(get_config(name))[0]
    rate = row["items_per_s"] * gflops
    return {"gflops_per_s": round(rate, 1), "fraction_of_peak": round(rate / peak, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="two tiny cases, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = SMOKE_CASES if args.smoke else FULL_CASES
    peak = matmul_peak_gflops()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        prepare_weights({c.split(":")[1] for c, _ in cases}, weights)
        for case, libs in tqdm(cases, desc="bench cases"):
            results = {
                lib: run_isolated(
                    "benchmarks.cases",
                    [case, lib, tmp, "--repeats", str(args.repeats), "--threads", str(args.threads)],
                    args.threads,
                )
                for lib in libs
            }
            base = results["clipforge"]["items_per_s"]
            for row in results.values():
                row.update(achieved(case, row, peak["peak_gflops"]))
                row["clipforge_speedup"] = round(base / row["items_per_s"], 3)
                rows.append(row)
    report = {
        "machine": machine_info(args.threads),
        "matmul_peak": peak,
        "bf16_over_fp32_time_ratio": round(bf16_fp32_ratio(), 2),
        "rows": rows,
    }
    columns = [
        "case",
        "lib",
        "items_per_s",
        "min_s",
        "max_s",
        "peak_rss_mb",
        "clipforge_speedup",
        "gflops_per_s",
        "fraction_of_peak",
    ]
    summary = (
        f"# clipforge benchmarks\n\nMachine: {report['machine']}\n\n"
        f"fp32 matmul peak: {peak['peak_gflops']} GFLOP/s (best of repeats over sizes {list(peak['per_size_best_gflops'])});"
        f" bf16 matmul takes {report['bf16_over_fp32_time_ratio']}x the fp32 time here.\n\n"
        "`clipforge_speedup` = clipforge items/s ÷ that library's items/s (medians, warm-up excluded).\n\n"
        + markdown_table(rows, columns, floatfmt=".3f")
    )
    paths = write_results(args.out, "bench_smoke" if args.smoke else "bench", report, summary)
    print(summary)
    print(f"results: {paths['json']}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
