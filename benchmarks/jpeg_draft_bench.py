"""JPEG draft decoding (`load_image(..., draft=True)`): speed-up and pixel difference on the COCO photos.

Decodes every COCO photo both ways, runs the eval transform, and reports load+preprocess images/s and the
difference of the preprocessed tensors (in normalised units and in 8-bit pixel steps).
Writes benchmarks/results/jpeg_draft.json and .md.

    .venv/bin/python -m benchmarks.jpeg_draft_bench [--smoke] [--image-size 224]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from benchmarks.harness import machine_info
from clipforge.models.config import PreprocessConfig
from clipforge.results import markdown_table, write_results
from clipforge.transforms import Preprocess, load_image

RESULTS = Path(__file__).resolve().parent / "results"
COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_captions_mini" / "images"


def time_pass(paths: list[Path], preprocess: Preprocess, size: int, draft: bool) -> float:
    start = time.perf_counter()
    for path in paths:
        preprocess(load_image(path, size, draft=draft))
    return time.perf_counter() - start


def draft_reduces(path: Path, size: int) -> bool:
    """Whether draft mode would decode this JPEG at reduced scale (no pixels decoded to find out)."""
    with Image.open(path) as image:
        full_size = image.size
        image.draft(image.mode, (size, size))
        return image.size != full_size


def compare(paths: list[Path], preprocess: Preprocess, size: int) -> dict:
    """Per-image max/mean |full - draft| of the preprocessed tensors, and the decoded sizes."""
    std_255 = torch.tensor(preprocess.config.std).view(3, 1, 1) * 255  # normalised unit -> 8-bit steps
    max_diffs, mean_diffs, max_steps, mean_steps, p99_steps, reduced = [], [], [], [], [], 0
    for path in tqdm(paths, desc="compare full vs draft", leave=False):
        full_image, draft_image = load_image(path, size, draft=False), load_image(path, size, draft=True)
        reduced += draft_image.size != full_image.size
        diff = (preprocess(full_image) - preprocess(draft_image)).abs()
        steps = diff * std_255
        max_diffs.append(diff.max().item())
        mean_diffs.append(diff.mean().item())
        max_steps.append(steps.max().item())
        mean_steps.append(steps.mean().item())
        p99_steps.append(steps.flatten().quantile(0.99).item())
    return {
        "images": len(paths),
        "images_decoded_smaller": reduced,
        "max_abs_diff": round(max(max_diffs), 4),
        "mean_abs_diff": round(float(np.mean(mean_diffs)), 5),
        "median_per_image_max_abs_diff": round(float(np.median(max_diffs)), 4),
        "max_abs_diff_8bit_steps": round(max(max_steps), 2),
        "mean_abs_diff_8bit_steps": round(float(np.mean(mean_steps)), 3),
        "median_per_image_p99_8bit_steps": round(float(np.median(p99_steps)), 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="20 photos, one repeat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    paths = sorted(COCO.glob("*/*.jpg"))
    if not paths:
        raise FileNotFoundError(f"{COCO}: no COCO photos found (expected ../shared/data beside the repo)")
    paths = paths[:20] if args.smoke else paths
    repeats = 1 if args.smoke else args.repeats
    preprocess = Preprocess(PreprocessConfig(image_size=args.image_size))
    reducible = [p for p in paths if draft_reduces(p, args.image_size)]
    rows = []
    for subset, subset_paths in (("all photos", paths), ("photos draft can reduce", reducible)):
        times = {"full": [], "draft": []}
        for _ in tqdm(range(repeats), desc=f"timing {subset}"):
            for mode in times:  # interleaved, so machine load hits both alike
                times[mode].append(time_pass(subset_paths, preprocess, args.image_size, mode == "draft"))
        rates = {mode: len(subset_paths) / min(ts) for mode, ts in times.items()}
        rows.append(
            {
                "subset": subset,
                "full_images_per_s": round(rates["full"], 1),
                "draft_images_per_s": round(rates["draft"], 1),
                "speedup": round(rates["draft"] / rates["full"], 2),
                **compare(subset_paths, preprocess, args.image_size),
            }
        )
    report = {
        "machine": machine_info(1),
        "image_size": args.image_size,
        "timing": "best of interleaved passes, load_image + eval Preprocess per photo, 1 thread",
        "rows": rows,
    }
    summary = (
        "# JPEG draft decoding\n\n"
        f"COCO photos (~640x480), `load_image(path, {args.image_size}, draft=True)` vs full decode, each "
        "followed by the eval `Preprocess`. Draft decodes at 1/2 (1/4, 1/8) scale only when both sides stay "
        f">= {args.image_size}, i.e. here when the shorter side is >= {2 * args.image_size}. Differences are of "
        "the preprocessed tensors, in normalised units and in 8-bit pixel steps (diff x std x 255).\n\n"
        + markdown_table(rows, floatfmt=".4f")
        + f"\nMachine: {report['machine']['cpu']}. Timing: {report['timing']}.\n"
    )
    paths_written = write_results(
        args.out, "jpeg_draft_smoke" if args.smoke else "jpeg_draft", report, summary
    )
    print(summary)
    print(f"results: {paths_written['json']}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
