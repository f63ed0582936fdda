"""Three ways to learn from Flickr8k captions on one 2-core budget, measured side by side (issue #17 point 3).

(a) scratch: ModifiedResNet + text transformer from scratch; (b) lit: locked EfficientNet-Lite0 + text
transformer from scratch; (c) pretrained: locked EfficientNet-Lite0 + locked MiniLM-L6, projections trained.
Each gets the same budget (`--minutes`, default 15) counted on the `cpu` clock (process CPU seconds / 1.5:
the quiet 2-core equivalent on a shared host; `--clock wall` for a quiet machine). Reported per recipe:
zero-shot top-1 with bootstrap 95% intervals on every unseen set's test split (capped by `--max-images`),
Flickr8k val recall@1/5/10 both ways, held-out Flickr8k-train retrieval (the selection split), images seen,
wall and CPU time, peak RSS. Writes benchmarks/results/language.{json,md,png}.

    .venv/bin/python -m benchmarks.language                          # all three recipes
    .venv/bin/python -m benchmarks.language --recipes pretrained     # one
    .venv/bin/python -m benchmarks.language --check-normalisation    # which mean/std EfficientNet-Lite0 expects
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.harness import machine_info
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"
COMMAND = "python -m benchmarks.language"


def run_one(name: str, args: argparse.Namespace, queue) -> None:
    """One recipe in a fresh process (its own peak RSS), results onto `queue`."""
    import torch

    from clipforge.recipes.language import RECIPES, run_language

    torch.set_num_threads(2)
    recipe = replace(
        RECIPES[name],
        minutes=args.minutes,
        budget_clock=args.clock,
        output_dir=f"{args.out}/{name}",
        progress=False,
    )
    if args.train_limit:  # a reduced run holds out a fifth of its images for selection
        recipe = replace(recipe, holdout_images=min(recipe.holdout_images, args.train_limit // 5))
    queue.put(run_language(recipe, max_images=args.max_images, train_limit=args.train_limit))


def run_isolated(name: str, args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_one, args=(name, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def table_rows(results: dict[str, dict]) -> list[dict]:
    rows = []
    for name, r in results.items():
        row = {"recipe": name}
        for set_name, z in r["zeroshot"].items():
            row[set_name] = f"{z['top1']:.1%} [{z['ci95'][0]:.1%}, {z['ci95'][1]:.1%}]"
        t2i, i2t = r["retrieval"]["text_to_image"], r["retrieval"]["image_to_text"]
        row["t2i R@1/5/10"] = "/".join(f"{100 * t2i[k]:.1f}" for k in ("R@1", "R@5", "R@10"))
        row["i2t R@1/5/10"] = "/".join(f"{100 * i2t[k]:.1f}" for k in ("R@1", "R@5", "R@10"))
        row.update(images_seen=r["images_seen"], steps=r.get("steps"), plan=r.get("step_plan"),
                   train_wall_s=r.get("train_wall_s"), train_cpu_s=r.get("train_cpu_s"), peak_rss_mb=r.get("peak_rss_mb"))  # fmt: skip
        rows.append(row)
    return rows


def plot(results: dict[str, dict], path: Path) -> Path:
    from clipforge.figures import pyplot, save_figure

    plt = pyplot()
    sets = list(next(iter(results.values()))["zeroshot"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / (len(results) + 1)
    for i, (name, r) in enumerate(results.items()):
        values = [r["zeroshot"][s]["top1"] for s in sets] + [r["retrieval"]["text_to_image"]["R@5"]]
        errors = [[r["zeroshot"][s]["top1"] - r["zeroshot"][s]["ci95"][0] for s in sets] + [0],
                  [r["zeroshot"][s]["ci95"][1] - r["zeroshot"][s]["top1"] for s in sets] + [0]]  # fmt: skip
        ax.bar([x + i * width for x in range(len(values))], values, width, yerr=errors, label=name, capsize=2)
    chance = [next(iter(results.values()))["zeroshot"][s]["chance"] for s in sets]
    ax.scatter(range(len(sets)), chance, marker="_", s=300, color="black", label="chance", zorder=3)
    ax.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(sets) + 1)])
    ax.set_xticklabels([*sets, "Flickr8k t2i R@5"])
    ax.set(
        ylabel="zero-shot top-1 / recall",
        ylim=(0, 1),
        title="Learning from Flickr8k captions: 3 recipes, same budget",
    )
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def summary(results: dict[str, dict], args, commands: dict[str, str]) -> str:
    return (
        "# Learning from real captions (Flickr8k), zero-shot on unseen label sets\n\n"
        f"Command: `{COMMAND} {' '.join(sys.argv[1:])}`. Budget {args.minutes:g} min per recipe on the "
        f"`{args.clock}` clock; test splits capped at {args.max_images} images (seeded, class-stratified)"
        + (f"; only {args.train_limit} Flickr8k train images (a reduced run)" if args.train_limit else "")
        + ".\n\n"
        + markdown_table(table_rows(results))
        + "".join(f"\n- `{name}` measured by `{command}`" for name, command in commands.items())
        + "\n\nReading: docs/language.md.\n"
    )


NORMALISATIONS = {
    "0.5/0.5": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "127/128": ((127 / 255,) * 3, (128 / 255,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def check_normalisation() -> dict:
    """ImageNet-1k top-1 of the converted EfficientNet-Lite0 on imagenette's few-shot *train* split (500 images,
    1000-way) per input normalisation and size: which mean/std the weights expect (docs/towers.md)."""
    import torch
    from timm.data import ImageNetInfo

    from clipforge.checkpoints.towers import load_image_tower
    from clipforge.data import open_labelled_dataset
    from clipforge.data.augment import eval_batch
    from clipforge.models import CLIP, get_config
    from clipforge.recipes.unseen import SHARED

    torch.set_num_threads(2)
    config = get_config("lite0-minilm")
    config = replace(config, embed_dim=1000, vision=replace(config.vision, timm_proj="none"))
    model = CLIP(config).eval()
    load_image_tower(model, "efficientnet-lite0")
    info = ImageNetInfo()
    index = {info.index_to_label_name(i): i for i in range(1000)}
    root = SHARED / "zeroshot" / "imagenette"
    data = open_labelled_dataset(root, "train", progress=False)
    wnids = [line.split("\t")[0] for line in (root / "classes.tsv").read_text().splitlines()]
    targets = torch.tensor([index[wnids[int(label)]] for label in data.labels])
    out = {}
    for size in (224, 128):
        for name, (mean, std) in NORMALISATIONS.items():
            with torch.no_grad():
                logits = torch.cat([model.visual(eval_batch(data.images[i : i + 100], size, mean, std))
                                    for i in range(0, len(data.images), 100)])  # fmt: skip
            out[f"{size}px {name}"] = float((logits.argmax(1) == targets).float().mean())
            print(f"{size}px {name}: ImageNet top-1 {out[f'{size}px {name}']:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="scratch,lit,pretrained")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--max-images", type=int, default=2500)
    parser.add_argument("--train-limit", type=int, help="use only N Flickr8k train images (a reduced run)")
    parser.add_argument("--out", default="runs/language")
    parser.add_argument("--name", default="language", help="results file stem under benchmarks/results")
    parser.add_argument(
        "--reuse", action="append", default=[],
        help="an earlier results JSON: its recipes (and their commands) join this table without re-running",
    )  # fmt: skip
    parser.add_argument(
        "--check-normalisation", action="store_true", help="EfficientNet-Lite0 mean/std check only"
    )
    args = parser.parse_args(argv)
    if args.check_normalisation:
        return check_normalisation()
    results, commands = {}, {}
    for path in args.reuse:
        earlier = json.loads(Path(path).read_text())
        for name, result in earlier["results"].items():
            results[name], commands[name] = result, earlier["command"]
    for name in filter(None, args.recipes.split(",")):
        commands[name] = f"{COMMAND} {' '.join(argv or sys.argv[1:])}"
        results[name] = run_isolated(name, args)
        print(
            json.dumps({name: {k: results[name][k] for k in ("zeroshot", "retrieval", "images_seen")}}),
            flush=True,
        )
    payload = {
        "command": f"{COMMAND} {' '.join(argv or sys.argv[1:])}",
        "commands": commands,  # per recipe: the command that measured it
        "machine": machine_info(2),
        "results": results,
    }
    files = write_results(RESULTS, args.name, payload, summary(results, args, commands))
    files["png"] = str(plot(results, RESULTS / f"{args.name}.png"))
    print(files)
    return payload


if __name__ == "__main__":
    main()
