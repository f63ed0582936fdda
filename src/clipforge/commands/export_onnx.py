"""`clipforge export-onnx`: image and text towers to ONNX (dynamic batch), parity-checked with onnxruntime;
optionally int8-quantised, with the zero-shot accuracy change measured on an ImageFolder test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipforge.commands.options import add_model_args, model_spec, user_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge export-onnx", description=__doc__)
    p.add_argument(
        "--out", type=user_path, required=True, help="output folder for image.onnx, text.onnx, onnx.json"
    )
    add_model_args(p, device=False)  # export traces on the CPU
    p.add_argument("--int8", action="store_true", help="also write int8 dynamically quantised towers")
    p.add_argument(
        "--eval-data",
        type=user_path,
        help="ImageFolder root with classes.txt and test.csv (e.g. ../shared/data/cifar10)"
        " to report zero-shot top-1 of fp32 vs int8",
    )
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--template", default="a photo of a {}.")
    p.add_argument(
        "--atol", type=float, default=1e-4, help="fail if onnxruntime differs from PyTorch by more"
    )
    p.add_argument("--smoke", action="store_true", help="tiny-vit with random weights, no evaluation")
    return p


def load_eval_set(root: Path, preprocess, limit: int):
    import csv

    import torch

    from clipforge.decode import open_image

    classes = (root / "classes.txt").read_text().split()
    with (root / "test.csv").open() as f:
        rows = list(csv.DictReader(f))
    rows = rows[:limit] if limit > 0 else rows
    images = torch.stack([preprocess(open_image(root / r["path"])) for r in rows])
    return images, torch.tensor([int(r["label"]) for r in rows]), classes


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import torch

    import clipforge
    from clipforge.apps.onnx_export import (
        OnnxCLIP,
        export_towers,
        max_abs_diff,
        quantize_int8,
        zeroshot_accuracy,
    )
    from clipforge.factory import load_model
    from clipforge.results import markdown_table, write_results

    if args.smoke:
        torch.manual_seed(0)
        args.model, args.checkpoint, args.pretrained, args.eval_data = "tiny-vit", None, None, None
    model, preprocess = load_model(*model_spec(args), device="cpu")
    out = Path(args.out)
    paths = export_towers(model, out)
    size = model.config.preprocess.image_size
    probe_images = torch.randn(3, 3, size, size)
    probe_tokens = clipforge.tokenize(["a dog", "a photo of a big red bicycle on a street.", "x"])
    runtime = OnnxCLIP(paths["image"], paths["text"])
    diff = max_abs_diff(model, runtime, probe_images, probe_tokens)
    if max(diff.values()) > args.atol:
        raise ValueError(f"onnxruntime differs from PyTorch by {diff} > --atol {args.atol}")
    result: dict = {"files": {k: str(v) for k, v in paths.items()}, "max_abs_diff": diff}
    rows = [
        {
            "variant": "fp32",
            "image_MB": round(paths["image"].stat().st_size / 2**20, 2),
            "text_MB": round(paths["text"].stat().st_size / 2**20, 2),
            "max_abs_diff_image": diff["image"],
            "max_abs_diff_text": diff["text"],
        }
    ]
    runtimes = {"fp32": runtime}
    if args.int8:
        q_image, q_text = quantize_int8(paths["image"]), quantize_int8(paths["text"])
        runtimes["int8"] = OnnxCLIP(q_image, q_text)
        q_diff = max_abs_diff(model, runtimes["int8"], probe_images, probe_tokens)
        result["files"].update(image_int8=str(q_image), text_int8=str(q_text))
        result["int8_max_abs_diff"] = q_diff
        rows.append(
            {
                "variant": "int8",
                "image_MB": round(q_image.stat().st_size / 2**20, 2),
                "text_MB": round(q_text.stat().st_size / 2**20, 2),
                "max_abs_diff_image": q_diff["image"],
                "max_abs_diff_text": q_diff["text"],
            }
        )
    if args.eval_data:
        images, labels, classes = load_eval_set(Path(args.eval_data), preprocess, args.eval_limit)
        class_tokens = clipforge.tokenize([args.template.replace("{}", c) for c in classes])
        for row in rows:
            row["zeroshot_top1"] = round(
                zeroshot_accuracy(runtimes[row["variant"]], images, labels, class_tokens), 4
            )
        result["eval"] = {"data": args.eval_data, "images": len(labels), "chance": round(1 / len(classes), 4)}
        if args.int8:
            result["int8_top1_change"] = round(rows[1]["zeroshot_top1"] - rows[0]["zeroshot_top1"], 4)
    result["rows"] = rows
    table = markdown_table(rows, floatfmt=".3g")
    write_results(out, "export_onnx", result, f"# ONNX export ({args.checkpoint or args.model})\n\n{table}")
    print(table)
    return result
