"""Can a caption-trained checkpoint read digits? Zero-shot and a linear probe on printed digits, no MNIST image.

mnist has only a test split, so nothing in the repository could choose its prompts or class names on MNIST
itself. This benchmark renders a validation set instead: the digits 0-9 in the DejaVu fonts the system has
(random font, size, stroke, rotation +-15 degrees, shift, blur), white on black and scaled into a 20 px box of a
28 px image as MNIST's digits are. For one checkpoint it reports zero-shot top-1 for five forms of the class names
x four prompt sets, a linear probe on the same image embeddings (fitted on one seed's renders, scored on
another's: whether the image side separates the digits at all), how close the digit classifier's text columns
sit to each other against CIFAR-10's, and how often digits appear in Flickr8k's training captions.

    .venv/bin/python -m benchmarks.digit_reading --checkpoint runs/demo/pretrained.safetensors
    # -> benchmarks/results/digit_reading.{json,md}
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import machine_info
from clipforge.results import markdown_table, write_results

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
DIGITS = [str(i) for i in range(10)]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NAME_FORMS = {
    "digits": DIGITS,
    "words": WORDS,
    "digit (word)": [f"{d} ({w})" for d, w in zip(DIGITS, WORDS)],
    "number d": [f"number {d}" for d in DIGITS],
    "handwritten digit d": [f"handwritten digit {d}" for d in DIGITS],
}
PROMPT_SETS = ("plain", "paper", "flickr", "flickr+paper")


def render_digits(per_class: int, seed: int, font_dir: Path = FONT_DIR) -> tuple[torch.Tensor, torch.Tensor]:
    """(10 * per_class, 28, 28, 3) uint8 white-on-black printed digits, and their labels."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    fonts = sorted(font_dir.glob("*.ttf"))
    if not fonts:
        raise FileNotFoundError(
            f"{font_dir}: no .ttf fonts to render digits with (apt install fonts-dejavu-core)"
        )
    rng = random.Random(seed)
    images, labels = [], []
    for digit in range(10):
        for _ in range(per_class):
            font = ImageFont.truetype(str(rng.choice(fonts)), rng.randint(60, 90))
            canvas = Image.new("L", (120, 120), 0)
            ImageDraw.Draw(canvas).text(
                (60, 60),
                str(digit),
                fill=255,
                font=font,
                anchor="mm",
                stroke_width=rng.randint(0, 4),
                stroke_fill=255,
            )
            glyph = canvas.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
            glyph = glyph.crop(glyph.getbbox())
            scale = 20 / max(glyph.size)
            glyph = glyph.resize(
                (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS
            )
            out = Image.new("L", (28, 28), 0)
            corner = (
                (28 - glyph.width) // 2 + rng.randint(-2, 2),
                (28 - glyph.height) // 2 + rng.randint(-2, 2),
            )
            out.paste(glyph, corner)
            images.append(np.asarray(out.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))))
            labels.append(digit)
    pixels = torch.from_numpy(np.stack(images))[..., None].expand(-1, -1, -1, 3).contiguous()
    return pixels, torch.tensor(labels)


def caption_digit_counts(captions_csv: Path) -> dict[str, int]:
    """Tokens of digit glyphs (any number written in digits) and of each number word in Flickr8k's train captions."""
    counts: Counter = Counter()
    with captions_csv.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "train":
                counts.update(re.findall(rf"\b(\d+|{'|'.join(WORDS)})\b", row["caption"].lower()))
    glyphs = sum(n for word, n in counts.items() if word.isdigit())
    return {"digit_glyph_tokens": glyphs, **{word: counts[word] for word in WORDS}}


def mean_off_diagonal(classifier: torch.Tensor) -> float:
    """Mean cosine between different classes' text columns of an (E, C) zero-shot classifier."""
    gram = classifier.T @ classifier
    count = gram.shape[0]
    return float((gram.sum() - gram.diagonal().sum()) / (count * (count - 1)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/demo/pretrained.safetensors")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    import clipforge
    from clipforge.evaluate.linear_probe import linear_probe
    from clipforge.evaluate.metrics import topk_accuracy
    from clipforge.recipes.prompts import CHOSEN, candidates, prompts_for
    from clipforge.recipes.unseen import SHARED, class_names, encode_arrays
    from clipforge.zeroshot.classifier import build_classifier

    model, _ = clipforge.load(args.checkpoint, device="cpu")
    images, labels = render_digits(args.per_class, seed=0)
    features = encode_arrays(model, images)  # (N, E)
    rows = []
    for form, names in NAME_FORMS.items():
        row = {"class names": form}
        for choice in PROMPT_SETS:
            classifier = build_classifier(
                model, names, candidates("mnist")[choice], cache_dir=False, progress=False
            )
            row[choice] = round(100 * topk_accuracy(features @ classifier, labels, 1), 1)
        rows.append(row)
    probe_images, probe_labels = render_digits(args.per_class // 2, seed=1)
    probe = linear_probe(features, labels, encode_arrays(model, probe_images), probe_labels, progress=False)
    closeness = {
        f"{name}, {CHOSEN[name]}": mean_off_diagonal(
            build_classifier(model, names, prompts_for(name), cache_dir=False, progress=False)
        )
        for name, names in (("mnist", DIGITS), ("cifar10", class_names(SHARED / "cifar10")))
    }
    results = {
        "checkpoint": args.checkpoint,
        "rendered_images": len(labels),
        "zeroshot_top1": rows,
        "linear_probe_top1": round(100 * probe["acc1"], 1),
        "linear_probe_images": {"fit": len(labels), "scored": len(probe_labels)},
        "text_column_mean_cosine": {key: round(value, 3) for key, value in closeness.items()},
        "flickr8k_train_captions": caption_digit_counts(SHARED / "flickr8k" / "captions.csv"),
        "machine": machine_info(2),
    }
    summary = (
        "# Reading printed digits: zero-shot vs a linear probe (rendered digits, no MNIST image)\n\n"
        + f"Checkpoint `{args.checkpoint}`; {len(labels)} digits rendered in DejaVu fonts, 28 px, MNIST-like. "
        + "Command: `python -m benchmarks.digit_reading --checkpoint runs/demo/pretrained.safetensors`.\n\n"
        + "Zero-shot top-1 (%, chance 10) per class-name form and prompt set:\n\n"
        + markdown_table(rows, floatfmt="g")
        + f"\n\nLinear probe on the same image embeddings ({len(labels)} renders fitted, {len(probe_labels)} "
        + f"others scored): **{results['linear_probe_top1']}%**. Mean cosine between the classes' text columns: "
        + ", ".join(f"{key} {value:.3f}" for key, value in results["text_column_mean_cosine"].items())
        + ". Flickr8k train captions: "
        + ", ".join(f"{key} {value}" for key, value in results["flickr8k_train_captions"].items())
        + ".\n"
    )
    write_results(args.out, "digit_reading", results, summary)
    print(summary)
    return results


if __name__ == "__main__":
    main()
