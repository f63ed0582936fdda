"""The apps' image-tower backends side by side: does `--backend auto` ever pick a slower image tower than the
PyTorch one it replaces, is it at least ONNX Runtime fp32, and does int8 pay? (issue #16.2, #16.3)

For each preset and batch, the models the apps run (`apps.backend.use_backend`): PyTorch eager (`torch`),
ONNX Runtime and OpenVINO on the exported fp32 graph (`onnx`, `openvino`), `auto`, and the int8 graphs
(`--int8-calibration`: static int8 calibrated on 64 real COCO photos) on both runtimes, timed interleaved
in one process (rounds rotate the order; medians), random weights, `--threads` threads. fp32 rows give
their largest difference in unit features from PyTorch, int8 rows their mean cosine with PyTorch's features
on 32 other real COCO photos. Writes benchmarks/results/backend.{json,md}.

    python -m benchmarks.backend_check                 # ViT-B-32 and RN50, batch 1 and 32
    python -m benchmarks.backend_check --models tiny-vit --rounds 2   # seconds
    python -m benchmarks.backend_check --models runs/demo/pretrained.safetensors --name backend_captions
                                                       # a trained checkpoint (e.g. `make demo`'s)
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.cases import SHARED
from benchmarks.harness import PEAK_SHAPES, machine_info, runtime_matmul_peaks
from clipforge.flops import model_gflops
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).parent / "results"
FP32 = ("torch", "onnx", "openvino", "auto")
INT8 = ("onnx-int8", "openvino-int8")
NOISE = 1.02  # 2 %: the timer's noise on this host


def _seconds(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _photos(size: int, start: int, n: int) -> list[torch.Tensor]:
    from clipforge.apps.backend import calibration_batches
    from clipforge.models import PreprocessConfig
    from clipforge.transforms import Preprocess

    paths = sorted((SHARED / "coco_captions_mini" / "images").rglob("*.jpg"))[start : start + n]
    return calibration_batches(paths, Preprocess(PreprocessConfig(image_size=size)), n=n)


def backends(base, size: int, int8: bool) -> dict:
    from clipforge.apps.backend import use_backend

    models = {name: use_backend(copy.deepcopy(base) if name == "torch" else base, name) for name in FP32}
    if int8:
        calibration = _photos(size, 0, 64)
        for name in INT8:
            models[name] = use_backend(base, name.split("-")[0], int8_calibration=calibration)
    return models


def check_model(name: str, batches: list[int], rounds: int, int8: bool = True) -> list[dict]:
    import clipforge
    from clipforge.checkpoints import load_any

    base = (load_any(name) if name.endswith(".safetensors") else clipforge.create_model(name)).eval()
    size = base.config.preprocess.image_size
    models = backends(base, size, int8)
    held_out = torch.cat(_photos(size, 64, 32))
    with torch.inference_mode():
        reference = models["torch"].encode_image(held_out, True)
        fidelity = {}
        for key, model in models.items():
            features = model.encode_image(held_out, True)
            fidelity[key] = (
                {"max_unit_feature_diff": float((features - reference).abs().max())}
                if key in FP32
                else {"mean_cosine": round(float((features * reference).sum(-1).mean()), 5)}
            )
    gflops = model_gflops(base.config)[0]  # forward FLOPs per image
    rows = []
    for batch in batches:
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        calls = 1 if batch >= 32 else 5
        keys = list(models)
        runs: dict[str, list[float]] = {k: [] for k in keys}
        with torch.inference_mode():
            for r in range(rounds + 1):  # the first round warms up and is dropped
                for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                    runs[key].append(_seconds(lambda m=models[key], x=images: m.encode_image(x), calls))
        seconds = {k: statistics.median(v[1:]) for k, v in runs.items()}
        for key in keys:
            fp32 = key.removesuffix("-int8")
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "backend": key,
                    "runs": getattr(models[key], "backend", "torch"),
                    "img_per_s": round(batch / seconds[key], 2),
                    "gflops_per_s": round(gflops * batch / seconds[key], 1),
                    "over_torch": round(seconds["torch"] / seconds[key], 3),
                    "over_ort_fp32": round(seconds["onnx"] / seconds[key], 3),
                    "over_own_fp32": round(seconds[fp32] / seconds[key], 3) if key in INT8 else None,
                    **fidelity[key],
                    "float_layers": (getattr(models[key], "int8", None) or {}).get("float_layers"),
                }
            )
            print(rows[-1], file=sys.stderr)
    return rows


def checks(rows: list[dict]) -> list[dict]:
    """Per model and batch: auto not slower than PyTorch nor than ONNX Runtime fp32; int8 >= 2x its fp32."""
    out = []
    for row in rows:
        if row["backend"] == "auto":
            out.append({**_key(row), "check": "auto >= torch", "ratio": row["over_torch"],
                        "met": row["over_torch"] * NOISE >= 1.0})  # fmt: skip
            out.append({**_key(row), "check": "auto >= ONNX Runtime fp32", "ratio": row["over_ort_fp32"],
                        "met": row["over_ort_fp32"] * NOISE >= 1.0})  # fmt: skip
        if row["backend"] in INT8:
            out.append({**_key(row), "check": f"{row['backend']} >= 2x its fp32", "ratio": row["over_own_fp32"],
                        "met": row["over_own_fp32"] >= 2.0})  # fmt: skip
            out.append({**_key(row), "check": f"{row['backend']} >= 2x ONNX Runtime fp32",
                        "ratio": row["over_ort_fp32"], "met": row["over_ort_fp32"] >= 2.0})  # fmt: skip
    return out


def _key(row: dict) -> dict:
    return {"model": row["model"], "batch": row["batch"]}


def peaks_text(peaks: dict[str, float]) -> str:
    return ", ".join(f"{lib} {gflops:.0f}" for lib, gflops in peaks.items())


def summary_markdown(report: dict) -> str:
    rows = [
        {**row, "max_unit_feature_diff": f"{row['max_unit_feature_diff']:.1e}"}
        if "max_unit_feature_diff" in row
        else row
        for row in report["rows"]
    ]
    load = ", ".join(f"{x:.1f}" for x in report["load_average"])
    return (
        "# The apps' image-tower backends (`--backend`, `--int8-calibration`)\n\n"
        f"{report['machine']['threads']} threads, {report['weights']}, {report['rounds']} interleaved rounds "
        f"(medians), {report['machine']['cpu']}, load average {report['load_average_start']} at the start, "
        f"{load} at the end; command: `{' '.join(['python -m benchmarks.backend_check', report['argv']]).strip()}`. int8: static, "
        "calibrated on 64 COCO photos, `float_layers` leading layers kept fp32 (apps.backend.INT8_FLOAT_STEPS); "
        "`mean_cosine` with PyTorch's unit features on 32 other COCO photos. "
        f"`met` allows {NOISE - 1:.0%} timer noise for the 1.0x checks.\n\n"
        "## Checks\n\n" + markdown_table(report["checks"]) + "\n\n## Rates\n\n"
        "`gflops_per_s` = forward FLOPs (`clipforge.flops`) x images / median call time; "
        "`fraction_of_best_matmul` = that / the best fp32 MatMul GFLOP/s any library reaches here "
        f"(best of repeats over {', '.join(f'{m}x{k}x{n}' for m, k, n in PEAK_SHAPES)}, measured right after "
        f"the timing: {peaks_text(report['matmul_peaks'])}).\n\n" + markdown_table(rows)
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.backend_check", description=__doc__)
    p.add_argument("--models", default="ViT-B-32,RN50")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-int8", action="store_true", help="fp32 backends only")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="backend", help="results file stem")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start_load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    batches = [int(b) for b in args.batches.split(",")]
    rows = [
        r
        for name in args.models.split(",")
        for r in check_model(name, batches, args.rounds, not args.no_int8)
    ]
    peaks = runtime_matmul_peaks(threads=args.threads)  # after the timing: the same host state
    best = max(peaks.values())
    for row in rows:
        row["fraction_of_best_matmul"] = round(row["gflops_per_s"] / best, 3)
    report = {"machine": machine_info(args.threads), "load_average_start": start_load}
    trained = [m for m in args.models.split(",") if m.endswith(".safetensors")]
    report["weights"] = f"weights of {', '.join(trained)}" if trained else "random weights"
    report.update(load_average=os.getloadavg(), rounds=args.rounds, matmul_peaks=peaks)
    report.update(rows=rows, checks=checks(rows), argv=" ".join(argv if argv is not None else sys.argv[1:]))
    write_results(args.out, args.name, report, summary_markdown(report))
    return report


if __name__ == "__main__":
    main()
