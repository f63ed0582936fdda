"""Where int8 loses zero-shot accuracy: calibration source, image tower vs text tower (train splits only).

For one checkpoint, on the *train* splits of CIFAR-10, imagenette and flowers5 (no test image is seen, so
what is learned here may choose the product's int8 recipe): image features' mean cosine to PyTorch fp32
and zero-shot top-1 for
- the product's int8 image tower (`apps.backend.use_backend(..., int8_calibration=)`: static int8 with
  the fewest leading fp32 layers that keep the features, on ONNX Runtime and OpenVINO; calibrated on 64
  CIFAR-10 training images as `benchmarks.int8_bench` does, or on 64 Flickr8k training photos), text fp32;
- every layer int8 (`quantize_int8` with no fp32 layers, the recipe before) with the text tower int8
  (dynamic), and the text tower int8 alone (image tower fp32).

    .venv/bin/python -m benchmarks.int8_calibration --checkpoint runs/demo/pretrained.safetensors
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.cases import SHARED
from benchmarks.harness import machine_info, publish
from benchmarks.int8_bench import IMAGE_BATCH, RESULTS, Eager, calibration_images, decoded, zeroshot_top1
from benchmarks.onnx_peers import Peer
from clipforge.results import markdown_table

# (name, folder, template set, train images used: an even stride over the split)
SETS = [
    ("cifar10", SHARED / "cifar10", "cifar10", 1000),
    ("imagenette", SHARED / "zeroshot" / "imagenette", "imagenet", 500),
    ("flowers5", SHARED / "zeroshot" / "flowers5", "flowers102", 250),
]


def flickr_train_photos() -> list[Path]:
    with open(SHARED / "flickr8k" / "captions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train" and r["caption_idx"] == "0"]
    return [SHARED / "flickr8k" / r["path"] for r in rows]


def train_splits(preprocess, sets: list[tuple] = SETS) -> dict[str, tuple]:
    """Per set of `sets`: (preprocessed images, labels, class names, templates) of its train split,
    `limit` images taken at an even stride."""
    from clipforge.evaluate.datasets import csv_dataset
    from clipforge.zeroshot.templates import get_templates

    data = {}
    for name, root, template_set, limit in sets:
        dataset = csv_dataset(root / "train.csv", preprocess)
        dataset.samples = dataset.samples[:: max(1, len(dataset.samples) // limit)][:limit]
        data[name] = (*decoded(dataset), dataset.classes, get_templates(template_set))
    return data


@torch.inference_mode()
def run(checkpoint: Path, threads: int) -> list[dict]:
    from clipforge.apps.backend import calibration_batches, use_backend
    from clipforge.apps.onnx_export import export_towers, quantize_int8
    from clipforge.checkpoints import load_any
    from clipforge.tokenizer import tokenizer_for
    from clipforge.transforms import Preprocess

    model = load_any(checkpoint).eval()
    preprocess = Preprocess(model.config.preprocess)
    tokenizer = tokenizer_for(model)
    data = train_splits(preprocess)

    def features(encoder, images):
        return torch.cat([encoder.encode_image(b) for b in images.split(IMAGE_BATCH)])

    eager = Eager(model)
    reference = {name: features(eager, d[0]) for name, d in data.items()}

    def row(variant: str, encoder) -> dict:
        out = {"variant": variant}
        for name, (images, labels, classes, templates) in data.items():
            cosine = F.cosine_similarity(features(encoder, images), reference[name]).mean()
            out[f"{name}_cosine"] = round(float(cosine), 4)
            top1 = zeroshot_top1(encoder, images, labels, classes, templates, tokenizer)
            out[f"{name}_top1"] = round(100 * top1, 2)
        return out

    rows = [row("pytorch-fp32", eager)]
    calibrations = {
        "64 CIFAR-10 train": calibration_images(preprocess),
        "64 Flickr8k train": calibration_batches(flickr_train_photos(), preprocess, n=64),
    }
    for backend in ("onnx", "openvino"):
        for source, batches in calibrations.items():
            product = use_backend(model, backend, int8_calibration=batches, texts=False)
            rows.append(
                {**row(f"product image int8, {backend} ({source}), text fp32", product), **product.int8}
            )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = export_towers(model, folder)
        quantize_int8(paths["text"])
        quantize_int8(paths["image"], calibration=calibrations["64 CIFAR-10 train"])
        rows.append(
            {**row("every image layer int8, ORT (64 CIFAR-10 train) + text int8", Peer("ort-int8", folder, threads)),
             "float_layers": 0}
        )  # fmt: skip
        shutil.copy(paths["image"], folder / "image.int8.onnx")  # image fp32, text int8
        rows.append(row("text int8 only", Peer("ort-int8", folder, threads)))
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.checkpoint, args.threads)
    report = {"machine": machine_info(args.threads), "checkpoint": str(args.checkpoint), "rows": rows}
    summary = (
        "# int8: where the zero-shot change comes from (train splits)\n\n"
        "int8 vs clipforge's PyTorch fp32 on the train splits (CIFAR-10 1,000, imagenette 500, "
        "flowers5 250 images); `*_cosine` = mean cosine of image features to fp32, `*_top1` = zero-shot "
        "top-1 (%) with each set's CLIP templates; `cosine` = the product's check on its calibration images, "
        "`float_layers` = leading weight layers it kept fp32 (apps.backend.INT8_FLOAT_STEPS).\n\n"
        f"Command: `python -m benchmarks.int8_calibration {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
        + markdown_table(rows, columns=list(dict.fromkeys(k for row in rows for k in row)), floatfmt=".4g")
    )
    return publish(args.out, "int8_calibration", report, summary)


if __name__ == "__main__":
    main(sys.argv[1:])
