"""Which onnxruntime int8 form pays on the ViT-B/32 image tower: speed of each vs ORT fp32, interleaved.

Variants of clipforge's exported image graph (`clipforge.apps.onnx_export`, random weights), all
`session_options(threads)` (ORT_ENABLE_ALL): the product's static QDQ (`quantize_int8(calibration=)`:
per-channel int8 weights, uint8 activations, weight-carrying Conv/MatMul/Gemm only), dynamic int8
(`quantize_int8()`), static QOperator (QLinearConv/QLinearMatMul instead of Q/DQ pairs), static QDQ over
every MatMul (attention's activation x activation products too), static QDQ with int8 (s8s8) activations.
Calibration: the first 16 COCO photos (speed does not depend on the ranges). `cosine` = mean cosine of the
variant's features with fp32's. Rounds rotate the order; rates from the median round.

    .venv/bin/python -m benchmarks.int8_variants [--threads 2] [--folder /tmp/clipforge-int8]   (~8 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.cases import SHARED
from benchmarks.harness import machine_info
from benchmarks.onnx_peers import calibration_batches
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def build_variants(folder: Path) -> dict[str, Path]:
    """fp32 export + every int8 variant in `folder` (each built once)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from benchmarks.references import randomize_
    from clipforge.apps.onnx_export import _Batches, export_image_tower, quantize_int8, weight_nodes
    from clipforge.models import CLIP, get_config

    fp32 = folder / "image.onnx"
    if not fp32.is_file():
        export_image_tower(randomize_(CLIP(get_config("ViT-B-32")), seed=0).eval(), fp32)
    calibration = [b.numpy() for b in calibration_batches(SHARED, 224, n=16)]
    paths = {"ort fp32": fp32}
    paths["static QDQ (product)"] = folder / "image.int8.onnx"
    if not paths["static QDQ (product)"].is_file():
        quantize_int8(fp32, calibration=calibration)
    paths["dynamic"] = folder / "image.dynamic.onnx"
    if not paths["dynamic"].is_file():
        quantize_int8(fp32, paths["dynamic"])
    nodes = weight_nodes(fp32)
    static = {  # name: (file, format, nodes, op types, activation type)
        "static QOperator": ("qoperator", QuantFormat.QOperator, nodes, None, QuantType.QUInt8),
        "static QDQ, every MatMul": ("qdq_all", QuantFormat.QDQ, None, ["MatMul", "Conv", "Gemm"], QuantType.QUInt8),
        "static QDQ, s8s8": ("qdq_s8s8", QuantFormat.QDQ, nodes, None, QuantType.QInt8),
    }  # fmt: skip
    for name, (stem, fmt, node_list, op_types, activation) in static.items():
        paths[name] = folder / f"image.{stem}.onnx"
        if not paths[name].is_file():
            extra = {"op_types_to_quantize": op_types} if op_types else {}
            quantize_static(
                str(fp32), str(paths[name]), _Batches("images", calibration), quant_format=fmt,
                per_channel=True, activation_type=activation, weight_type=QuantType.QInt8,
                nodes_to_quantize=node_list, **extra,
            )  # fmt: skip
    return paths


def time_variants(paths: dict[str, Path], threads: int, batch: int, rounds: int) -> list[dict]:
    import onnxruntime as ort

    from clipforge.apps.onnx_export import session_options

    sessions = {
        k: ort.InferenceSession(str(p), session_options(threads), providers=["CPUExecutionProvider"])
        for k, p in paths.items()
    }
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    outputs = {k: s.run(None, {"images": x})[0] for k, s in sessions.items()}  # also the warm-up
    ref = outputs["ort fp32"] / np.linalg.norm(outputs["ort fp32"], axis=-1, keepdims=True)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    keys = list(sessions)
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            start = time.perf_counter()
            sessions[k].run(None, {"images": x})
            times[k].append(time.perf_counter() - start)
    base = statistics.median(times["ort fp32"])
    rows = []
    for k in keys:
        unit = outputs[k] / np.linalg.norm(outputs[k], axis=-1, keepdims=True)
        median = statistics.median(times[k])
        rows.append(
            {
                "batch": batch,
                "variant": k,
                "ms": round(median * 1000, 1),
                "speedup_vs_ort_fp32": round(base / median, 2),
                "cosine": round(float((unit * ref).sum(-1).mean()), 4),
                "mb": round(paths[k].stat().st_size / 2**20, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/clipforge-int8"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.folder.mkdir(parents=True, exist_ok=True)
    paths = build_variants(args.folder)
    load_before = os.getloadavg()[0]
    rows = [
        r for batch, rounds in ((1, 9), (32, 3)) for r in time_variants(paths, args.threads, batch, rounds)
    ]
    load = {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)}
    report = {"machine": machine_info(args.threads), "load_average": load, "rows": rows}
    summary = (
        "# onnxruntime int8 variants, ViT-B/32 image tower\n\n"
        + (__doc__ or "").split("\n\n    .venv")[0].split("\n", 1)[1].strip()
        + f"\n\n{markdown_table(rows)}\n\nMachine: {report['machine']['cpu']}, {args.threads} threads, "
        f"{os.cpu_count()} cores shared with other jobs (1-minute load average {load['before']} before the "
        f"timing, {load['after']} after; ratios are interleaved in one process).\n"
    )
    write_results(args.out, "int8_variants", report, summary)
    print(summary)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
