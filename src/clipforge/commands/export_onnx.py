"""`clipforge export-onnx`: image and text towers to ONNX (dynamic batch), parity-checked with onnxruntime;
optionally int8-quantised, with the zero-shot accuracy change measured on an ImageFolder test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipforge.commands.options import (
    add_model_args,
    load_model_from,
    non_negative_int,
    positive_float,
    user_path,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge export-onnx", description=__doc__)
    p.add_argument(
        "--out", type=user_path, required=True, help="output folder for image.onnx, text.onnx, onnx.json"
    )
    p.add_argument("--overwrite", action="store_true", help="--out holds another model's export: replace it")
    add_model_args(p, device=False)  # export traces on the CPU
    p.add_argument("--int8", action="store_true", help="also write int8 dynamically quantised towers")
    p.add_argument(
        "--eval-data",
        type=user_path,
        help="ImageFolder root with classes.txt and test.csv (e.g. ../shared/data/cifar10)"
        " to report zero-shot top-1 of fp32 vs int8",
    )
    p.add_argument(
        "--eval-limit", type=non_negative_int, default=0, help="evaluate on the first N test images (0: all)"
    )
    p.add_argument("--template", default="a photo of a {}.")
    p.add_argument(
        "--atol", type=positive_float, default=1e-4, help="fail if onnxruntime differs from PyTorch by more"
    )
    p.add_argument("--smoke", action="store_true", help="tiny-vit with random weights, no evaluation")
    return p


def load_eval_set(root: Path, preprocess, limit: int):
    import torch

    from clipforge.data.csvjsonl import table_rows
    from clipforge.decode import open_image
    from clipforge.fileio import read_text

    classes = read_text(root / "classes.txt", "class list").split()
    rows = [row for _, row in table_rows(root / "test.csv", None)]
    rows = rows[:limit] if limit > 0 else rows
    images = torch.stack([preprocess(open_image(root / r["path"])) for r in rows])
    return images, torch.tensor([int(r["label"]) for r in rows]), classes


def check_eval_data(root: Path, template: str) -> None:
    missing = [name for name in ("classes.txt", "test.csv") if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--eval-data {root}: no {' or '.join(missing)} (an ImageFolder root as cifar10's)"
        )
    if "{}" not in template:
        raise ValueError(f"--template {template!r}: needs a '{{}}' for the class name")


def claim_output(out: Path, weights: str, overwrite: bool, int8: bool) -> None:
    """Re-export the same model in place, refuse another model's export unless --overwrite, and remove int8
    towers that would no longer match the new fp32 ones."""
    import json

    from clipforge.fileio import OutputInUseError, read_text

    info_path = out / "onnx.json"
    if info_path.is_file() and not overwrite:
        try:
            previous = json.loads(read_text(info_path, "onnx.json")).get("weights")
        except (ValueError, AttributeError):
            previous = None
        if previous != weights:
            raise OutputInUseError(
                f"{out} holds the ONNX export of another model (weights {previous}, now {weights}); use another "
                "--out, or --overwrite to replace it"
            )
    if not int8:
        for name in ("image.int8.onnx", "text.int8.onnx"):
            (out / name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from clipforge.apps.onnx_export import (
        OnnxCLIP,
        export_towers,
        max_abs_diff,
        probe_inputs,
        quantize_int8,
        zeroshot_accuracy,
    )
    from clipforge.apps.provenance import weights_id
    from clipforge.extras import require
    from clipforge.fileio import check_output_dir
    from clipforge.results import markdown_table, write_results
    from clipforge.tokenizer import tokenizer_for

    if args.smoke:
        import torch

        torch.manual_seed(0)
        args.model, args.checkpoint, args.pretrained, args.eval_data = "tiny-vit", None, None, None
        args.random_weights = True
    check_output_dir(args.out, "--out")
    if args.eval_data:
        check_eval_data(Path(args.eval_data), args.template)
    require("onnx", "clipforge export-onnx")
    require("onnxruntime", "clipforge export-onnx (it checks the export)")
    model, preprocess = load_model_from(args, device="cpu")
    out = Path(args.out)
    claim_output(out, weights_id(model), args.overwrite, args.int8)
    paths = export_towers(model, out, atol=args.atol)
    diff = json_diff(paths["info"])
    result: dict = {"files": {k: str(v) for k, v in paths.items()}, "max_abs_diff": diff}
    rows = [size_row("fp32", paths["image"], paths["text"], diff)]
    runtimes = {"fp32": OnnxCLIP(paths["image"], paths["text"])}
    if args.int8:
        q_image, q_text = quantize_int8(paths["image"]), quantize_int8(paths["text"])
        runtimes["int8"] = OnnxCLIP(q_image, q_text)
        q_diff = max_abs_diff(model, runtimes["int8"], *probe_inputs(model))
        result["files"].update(image_int8=str(q_image), text_int8=str(q_text))
        result["int8_max_abs_diff"] = q_diff
        rows.append(size_row("int8", q_image, q_text, q_diff))
    if args.eval_data:
        images, labels, classes = load_eval_set(Path(args.eval_data), preprocess, args.eval_limit)
        prompts = [args.template.replace("{}", c) for c in classes]
        class_tokens = tokenizer_for(model)(prompts)  # the model's own tokenizer
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


def json_diff(info_path: Path) -> dict:
    import json

    return json.loads(info_path.read_text(encoding="utf-8"))["max_abs_diff"]


def size_row(variant: str, image: Path, text: Path, diff: dict) -> dict:
    return {
        "variant": variant,
        "image_MB": round(image.stat().st_size / 2**20, 2),
        "text_MB": round(text.stat().st_size / 2**20, 2),
        "max_abs_diff_image": diff["image"],
        "max_abs_diff_text": diff["text"],
    }
