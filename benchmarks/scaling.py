"""Scaling figures: image throughput vs batch size and thread count, training vs GradCache micro-batch.

Random weights (clipforge only). Writes benchmarks/results/scaling.{json,md} and scaling.png.

    .venv/bin/python -m benchmarks.scaling [--smoke]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.harness import machine_info, time_fn
from clipforge.figures import pyplot, save_figure
from clipforge.models import CLIP, get_config
from clipforge.models.inference import optimize_for_inference
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def image_rate(model: CLIP, batch: int, repeats: int) -> float:
    size = model.config.vision.image_size
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return time_fn(lambda: model.encode_image(images), repeats=repeats).rate(batch)


def train_rate(model: CLIP, batch: int, micro_batch: int, repeats: int) -> float:
    """Samples/s of one AdamW step on `batch` pairs, gradients accumulated over micro-batches (GradCache)."""
    from benchmarks.cases import template_captions
    from clipforge.tokenizer import tokenize
    from clipforge.train.objectives import ContrastiveObjective
    from clipforge.train.step import accumulate_gradients

    size, length = model.config.vision.image_size, model.config.text.context_length
    batch_data = {
        "images": torch.randn(batch, 3, size, size),
        "text": tokenize(template_captions(batch), context_length=length, truncate=True),
        "index": torch.arange(batch),
    }
    objective = ContrastiveObjective(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(objective, batch_data, accum_steps=batch // micro_batch)
        optimizer.step()

    return time_fn(step, repeats=repeats).rate(batch)


def measure(smoke: bool) -> list[dict]:
    image_model = optimize_for_inference(CLIP(get_config("tiny-vit" if smoke else "ViT-B-32")))
    batches = (1, 2, 4) if smoke else (1, 4, 16, 32)
    rows = []
    for threads in tqdm((1, 2), desc="scaling: threads"):
        torch.set_num_threads(threads)
        for batch in batches:
            rate = image_rate(image_model, batch, repeats=2)
            rows.append(
                {"figure": "image", "threads": threads, "batch": batch, "items_per_s": round(rate, 2)}
            )
    torch.set_num_threads(2)
    train_model = CLIP(get_config("tiny-resnet" if smoke else "demo-cifar")).train()
    batch = 64 if smoke else 512
    for micro in (batch, batch // 2, batch // 4, batch // 8):
        rate = train_rate(train_model, batch, micro, repeats=1 if smoke else 2)
        rows.append(
            {
                "figure": "train",
                "threads": 2,
                "batch": batch,
                "micro_batch": micro,
                "items_per_s": round(rate, 2),
            }
        )
    return rows


def plot(rows: list[dict], path: Path, image_name: str, train_name: str) -> None:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for threads in (1, 2):
        points = [r for r in rows if r["figure"] == "image" and r["threads"] == threads]
        left.plot(
            [r["batch"] for r in points], [r["items_per_s"] for r in points], "o-", label=f"{threads} threads"
        )
    left.set(xscale="log", xlabel="batch size", ylabel="images/s", title=f"{image_name} encode_image")
    left.legend()
    points = [r for r in rows if r["figure"] == "train"]
    right.plot([r["micro_batch"] for r in points], [r["items_per_s"] for r in points], "o-")
    right.set(
        xscale="log",
        xlabel="micro-batch (GradCache accumulation)",
        ylabel="samples/s",
        title=f"{train_name} training, batch {points[0]['batch']}",
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = measure(args.smoke)
    name = "scaling_smoke" if args.smoke else "scaling"
    image_name, train_name = ("tiny-vit", "tiny-resnet") if args.smoke else ("ViT-B-32", "demo-cifar")
    plot(rows, args.out / f"{name}.png", image_name, train_name)
    report = {"machine": machine_info(2), "image_model": image_name, "train_model": train_name, "rows": rows}
    summary = (
        f"# Scaling\n\n![scaling]({name}.png)\n\nImage encoding ({image_name}, inference copy) vs batch size "
        f"at 1 and 2 threads; one training step ({train_name}, AdamW) vs GradCache micro-batch at a fixed "
        "batch. Medians after a warm-up.\n\n"
        + markdown_table(rows, ["figure", "threads", "batch", "micro_batch", "items_per_s"])
    )
    write_results(args.out, name, report, summary)
    print(summary)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
