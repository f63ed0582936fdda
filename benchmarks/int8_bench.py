"""int8 zero-shot change: trained checkpoints exported to ONNX, int8-quantised, evaluated on real sets.

No pretrained CLIP weights exist offline, so the change is measured on checkpoints with real zero-shot
ability (e.g. `clipforge demo` runs: the CIFAR-10 ResNet demo, its tiny-vit variant, a caption-trained
demo). Per checkpoint: both towers exported (`clipforge.apps.onnx_export`); image tower int8 static (QDQ,
per-channel weights, activations calibrated on 64 CIFAR-10 *training* images: no test image is seen),
text tower int8 dynamic; and the apps' own int8 (`product-int8`: apps.backend.use_backend with the
same calibration, image tower only). Zero-shot top-1 on CIFAR-10 test and every ../shared/data/zeroshot set, with
each set's CLIP prompt templates (mean of unit prompt embeddings per class), by: PyTorch fp32
(clipforge eager), onnxruntime fp32 and int8, OpenVINO int8 (same int8 files) when installed.
The speed of int8 is measured by `benchmarks.run` (ViT-B/32 and RN50 rows), not here.

    .venv/bin/python -m benchmarks.int8_bench --checkpoint runs/demo/demo-cifar.safetensors [...] [--limit N] [--name STEM]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from benchmarks.cases import SHARED
from benchmarks.harness import machine_info, publish
from benchmarks.onnx_peers import Peer, available_peers
from clipforge.results import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
# (name, folder, template set of clipforge.zeroshot.templates)
SETS = [
    ("cifar10", SHARED / "cifar10", "cifar10"),
    ("imagenette", SHARED / "zeroshot" / "imagenette", "imagenet"),
    ("tiny-imagenet", SHARED / "zeroshot" / "tiny-imagenet", "imagenet"),
    ("flowers5", SHARED / "zeroshot" / "flowers5", "flowers102"),
    ("mnist", SHARED / "zeroshot" / "mnist", "mnist"),
]
CALIBRATION = 64
IMAGE_BATCH = 64  # the apps' image batch: at 256 ORT's arena kept a 24 GB peak (EfficientNet-Lite0, 224 px)


class Eager:
    """clipforge's PyTorch model with the runtimes' encode_image / encode_text."""

    def __init__(self, model):
        self.model = model

    def encode_image(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens)


def cifar_train_by_class() -> dict[str, list[Path]]:
    """CIFAR-10 training image paths per label, in train.csv's order."""
    import csv

    with open(SHARED / "cifar10" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_class: dict[str, list[Path]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(SHARED / "cifar10" / row["path"])
    return by_class


def calibration_images(preprocess, n: int = CALIBRATION) -> list[Tensor]:
    """The first n CIFAR-10 training images (one per class in turn), decoded and batched as the apps'
    `--int8-calibration` does it (`apps.backend.calibration_batches`)."""
    from clipforge.apps.backend import calibration_batches

    paths = [p for group in zip(*cifar_train_by_class().values()) for p in group][:n]
    return calibration_batches(paths, preprocess, n=n)


@torch.inference_mode()
def zeroshot_classifier(encoder, classnames: list[str], templates: list[str], tokenizer) -> Tensor:
    """(C, E): the mean of each class's unit prompt embeddings, renormalised."""
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    tokens = tokenizer(prompts)  # the model's own (CLIP BPE, or an HF text tower's)
    text = torch.cat([F.normalize(encoder.encode_text(b), dim=-1) for b in tokens.split(256)])
    return F.normalize(text.view(len(classnames), len(templates), -1).mean(1), dim=-1)


@torch.inference_mode()
def classifier_top1(encoder, images: Tensor, labels: Tensor, classifier: Tensor) -> float:
    predictions = [
        (F.normalize(encoder.encode_image(batch), dim=-1) @ classifier.T).argmax(1)
        for batch in images.split(IMAGE_BATCH)
    ]
    return float((torch.cat(predictions) == labels).float().mean())


def zeroshot_top1(
    encoder, images: Tensor, labels: Tensor, classnames: list[str], templates: list[str], tokenizer
) -> float:
    return classifier_top1(
        encoder, images, labels, zeroshot_classifier(encoder, classnames, templates, tokenizer)
    )


def decoded(dataset) -> tuple[Tensor, Tensor]:
    """All (preprocessed images, labels) of a set, decoded once for every runtime."""
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False))
    return torch.cat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches])


def evaluate_checkpoint(path: Path, limit: int | None, threads: int) -> list[dict]:
    from clipforge.apps.backend import use_backend
    from clipforge.apps.onnx_export import export_towers, quantize_int8
    from clipforge.checkpoints import load_any
    from clipforge.evaluate.datasets import csv_dataset
    from clipforge.tokenizer import tokenizer_for
    from clipforge.transforms import Preprocess
    from clipforge.zeroshot.templates import get_templates

    model = load_any(path).eval()
    preprocess = Preprocess(model.config.preprocess)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = export_towers(model, folder)
        quantize_int8(paths["image"], calibration=calibration_images(preprocess))
        quantize_int8(paths["text"])
        runtimes = {"pytorch-fp32": Eager(model)}
        runtimes.update(
            {lib: Peer(lib, folder, threads) for lib in available_peers() if lib != "openvino-fp32"}
        )
        product = use_backend(model, "auto", int8_calibration=calibration_images(preprocess), texts=False)
        runtimes["product-int8"] = product  # the apps' int8: image tower only, leading layers kept fp32
        for name, root, template_set in tqdm(SETS, desc=path.name):
            dataset = csv_dataset(root / "test.csv", preprocess)
            if limit:
                dataset.samples = dataset.samples[:: max(1, len(dataset.samples) // limit)][:limit]
            templates = get_templates(template_set)
            row = {
                "checkpoint": path.name,
                "set": name,
                "images": len(dataset),
                "classes": len(dataset.classes),
            }
            images, labels = decoded(dataset)
            for lib, encoder in runtimes.items():
                top1 = zeroshot_top1(
                    encoder, images, labels, dataset.classes, templates, tokenizer_for(model)
                )
                row[lib] = round(100 * top1, 2)
            row["chance"] = round(100 / len(dataset.classes), 2)
            row["product_float_layers"] = product.int8["float_layers"]
            for lib in runtimes:
                if lib.endswith("int8"):
                    row[f"{lib}_change"] = round(row[lib] - row["pytorch-fp32"], 2)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument(
        "--limit", type=int, default=None, help="at most N test images of each set (an even stride over it)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="int8_zeroshot", help="results file stem (json + md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [row for path in args.checkpoint for row in evaluate_checkpoint(path, args.limit, args.threads)]
    changes = [abs(v) for row in rows for k, v in row.items() if k.endswith("_change")]
    report = {
        "machine": machine_info(args.threads),
        "checkpoints": [str(p) for p in args.checkpoint],
        "limit_per_set": args.limit,
        "rows": rows,
        "worst_abs_change_points": max(changes, default=None),
        "worst_abs_change_points_by_runtime": {
            key.removesuffix("_change"): max(abs(row[key]) for row in rows)
            for key in rows[0]
            if key.endswith("_change")
        },
    }
    summary = (
        "# int8 zero-shot change (top-1, %)\n\n"
        "`ort-int8` / `openvino-int8`: both towers int8, every layer (image: static QDQ calibrated on 64 "
        "CIFAR-10 training images; text: dynamic). `product-int8`: what `--int8-calibration` runs in the apps "
        "(apps.backend.use_backend, same 64 images: image tower int8 with the leading layers that keep its "
        "features in fp32, `product_float_layers`; text fp32). Against clipforge's PyTorch fp32; each set's "
        "CLIP templates; `*_change` = int8 - fp32 in points. Worst |change| per runtime: "
        + ", ".join(f"{k} {v}" for k, v in report["worst_abs_change_points_by_runtime"].items())
        + " points (target <= 1).\n\n"
        f"Command: `python -m benchmarks.int8_bench {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
        + markdown_table(rows)
    )
    return publish(args.out, args.name, report, summary)  # --limit is recorded in the report


if __name__ == "__main__":
    main(sys.argv[1:])
