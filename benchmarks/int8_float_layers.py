"""int8 with the first layers kept fp32: feature fidelity and speed per step (apps.backend.INT8_FLOAT_STEPS).

For one checkpoint's exported image tower (`clipforge.apps.onnx_export`): static int8 calibrated on 64
CIFAR-10 *training* images (as `benchmarks.int8_bench` does), with the first k weight layers in graph order
left fp32 (`quantize_int8(float_nodes=k)`), on ONNX Runtime and OpenVINO. Per step: mean cosine of unit
features with PyTorch fp32 on 256 other CIFAR-10 training images, zero-shot top-1 change (points, text tower
PyTorch fp32) on the train splits of CIFAR-10, imagenette, flowers5 and tiny-imagenet (no test image is seen:
this is what the product's `apps.backend.INT8_MIN_COSINE` may be chosen on), and images/s at batch 1 and 32
over each runtime's own fp32 graph and over ONNX Runtime fp32 (rounds interleaved; a ratio is the median
over rounds of that round's ratio, which a drifting host load perturbs less than a ratio of medians).

    .venv/bin/python -m benchmarks.int8_float_layers --checkpoint runs/demo/pretrained.safetensors
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.cases import SHARED
from benchmarks.harness import machine_info, publish, time_fn
from benchmarks.int8_bench import (
    RESULTS,
    calibration_images,
    cifar_train_by_class,
    classifier_top1,
    zeroshot_classifier,
)
from benchmarks.int8_calibration import SETS, train_splits
from clipforge.results import markdown_table

HELD_OUT = 256
ZEROSHOT_SETS = [*SETS, ("tiny-imagenet", SHARED / "zeroshot" / "tiny-imagenet", "imagenet", 1000)]


class RunnerImages:
    """A runtime's image graph with the model's PyTorch text tower, as zeroshot_top1 calls them."""

    def __init__(self, runner, model):
        self.runner, self.model = runner, model

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(images.numpy()))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def held_out_images(preprocess) -> torch.Tensor:
    """HELD_OUT CIFAR-10 training images spread over the classes, none of calibration_images' (the first
    of each class)."""
    from clipforge.apps.backend import calibration_batches

    by_class = cifar_train_by_class()
    per_class = -(-HELD_OUT // len(by_class))
    paths = [p for group in by_class.values() for p in group[-per_class:]][:HELD_OUT]
    return torch.cat(calibration_batches(paths, preprocess, n=HELD_OUT))


@torch.inference_mode()
def run(checkpoint: Path, threads: int, steps: list[int], rounds: int) -> list[dict]:
    from clipforge.apps.onnx_export import export_image_tower, quantize_int8
    from clipforge.apps.runtimes import open_runner
    from clipforge.checkpoints import load_any
    from clipforge.tokenizer import tokenizer_for
    from clipforge.transforms import Preprocess

    model = load_any(checkpoint).eval()
    preprocess = Preprocess(model.config.preprocess)
    calibration = calibration_images(preprocess)
    images = held_out_images(preprocess)
    reference = F.normalize(model.encode_image(images), dim=-1)
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_image_tower(model, Path(tmp) / "image.onnx")
        graphs = {None: fp32}
        for k in steps:
            graphs[k] = quantize_int8(fp32, Path(tmp) / f"image.int8-{k}.onnx", calibration, float_nodes=k)
        for runtime in ("onnxruntime", "openvino"):
            for k, graph in graphs.items():
                runners[(runtime, k)] = open_runner(runtime, graph, threads)  # read into memory
    fidelity = {}
    for key, runner in runners.items():
        got = torch.cat([torch.from_numpy(runner(b.numpy())) for b in images.split(64)])
        fidelity[key] = float((F.normalize(got, dim=-1) * reference).sum(-1).mean())
    tokenizer = tokenizer_for(model)
    sets = {
        name: (images, labels, zeroshot_classifier(model, classes, templates, tokenizer))
        for name, (images, labels, classes, templates) in train_splits(preprocess, ZEROSHOT_SETS).items()
    }
    top1 = {
        key: {name: 100 * classifier_top1(RunnerImages(runner, model), *data) for name, data in sets.items()}
        for key, runner in runners.items()
    }
    rates: dict[tuple, dict[int, list[float]]] = {key: {1: [], 32: []} for key in runners}
    keys = list(runners)
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            for batch in (1, 32):
                x = images[:batch].numpy()
                timing = time_fn(lambda run=runners[key], x=x: run(x), repeats=1, min_time_s=0.5)
                rates[key][batch].append(timing.rate(batch))
    median = {key: {b: statistics.median(v) for b, v in per.items()} for key, per in rates.items()}

    def ratio(key: tuple, over: tuple, batch: int) -> float:  # median over rounds of the same round's ratio
        return round(statistics.median(a / b for a, b in zip(rates[key][batch], rates[over][batch])), 2)

    rows = []
    for (runtime, k), per in median.items():
        if k is None:
            continue
        own, ort = (runtime, None), ("onnxruntime", None)
        change = {
            f"{name}_change": round(top1[(runtime, k)][name] - fp32, 2)
            for name, fp32 in top1[(runtime, None)].items()
        }
        rows.append(
            {
                "runtime": runtime,
                "float_layers": k,
                "mean_cosine": round(fidelity[(runtime, k)], 4),
                **change,
                "worst_change": max(abs(v) for v in change.values()),
                "b1_over_own_fp32": ratio((runtime, k), own, 1),
                "b32_over_own_fp32": ratio((runtime, k), own, 32),
                "b1_over_ort_fp32": ratio((runtime, k), ort, 1),
                "b32_over_ort_fp32": ratio((runtime, k), ort, 32),
                "b1_img_per_s": round(per[1], 1),
                "b32_img_per_s": round(per[32], 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--steps", default="0,1,2,3,5,8", help="leading fp32 layers to try")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    rows = run(args.checkpoint, args.threads, [int(k) for k in args.steps.split(",")], args.rounds)
    report = {"machine": machine_info(args.threads), "checkpoint": str(args.checkpoint), "rows": rows,
              "load_average": [load_start, os.getloadavg()]}  # fmt: skip
    summary = (
        "# int8 with the first layers kept fp32 (CIFAR-10 train images)\n\n"
        f"Static int8 calibrated on 64 CIFAR-10 training images, the first `float_layers` weight layers "
        f"left fp32; `mean_cosine` with PyTorch fp32's unit features on {HELD_OUT} other CIFAR-10 training "
        f"images; `*_change`: zero-shot top-1 change (points) on the train splits; speed ratios are medians "
        f"of the same round's ratio over {args.rounds} interleaved rounds, {args.threads} threads, "
        f"{report['machine']['cpu']}, load average {load_start[0]:.1f} at the start, "
        f"{report['load_average'][1][0]:.1f} at the end.\n\n"
        f"Command: `python -m benchmarks.int8_float_layers {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
        + markdown_table(rows)
    )
    return publish(args.out, "int8_float_layers", report, summary)


if __name__ == "__main__":
    main(sys.argv[1:])
