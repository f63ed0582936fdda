"""Loss memory per rank vs world size: the sigmoid loss as a ring and all-gathered, the softmax loss beside.

World sizes 1, 2, 4, 8 as gloo processes on this machine. Each rank holds n (image, text) feature rows of
width E, as tiny towers would produce them, and runs the loss forward + backward inside
benchmarks.memory.LiveTensorBytes; the figure is the peak of the tensor bytes the loss creates, the largest
over ranks. Writes benchmarks/results/sigmoid_memory.{json,md,png}.

    .venv/bin/python -m benchmarks.sigmoid_memory [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp
from tqdm import tqdm

from benchmarks.harness import machine_info
from clipforge.figures import pyplot, save_figure
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"
LOSSES = ("sigmoid ring", "sigmoid all-gather", "softmax all-gather (local_loss)")
SHAPES = ((1024, 64), (256, 512))  # (rows per rank n, feature width E): tiny towers' E=64, then ViT-B's 512
WORLD_SIZES = (1, 2, 4, 8)


def loss_peak_bytes(loss: str, rows: int, dim: int, rank: int) -> int:
    from benchmarks.memory import LiveTensorBytes
    from clipforge.train.loss import contrastive_loss
    from clipforge.train.sigmoid import sigmoid_loss

    generator = torch.Generator().manual_seed(rank)
    images = torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1)
    images.requires_grad_(), texts.requires_grad_()
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    with LiveTensorBytes() as tracker:
        if loss == "sigmoid ring":
            value = sigmoid_loss(images, texts, scale, bias, form="ring")
        elif loss == "sigmoid all-gather":
            value = sigmoid_loss(images, texts, scale, bias, form="gather")
        else:
            value = contrastive_loss(images, texts, scale, local_loss=True)
        value.backward()
    return tracker.peak_bytes


def _worker(rank: int, world_size: int, shapes: tuple, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    peaks = {f"{loss}|{n}|{e}": loss_peak_bytes(loss, n, e, rank) for n, e in shapes for loss in LOSSES}
    torch.save(peaks, Path(out_dir) / f"rank{rank}.pt")
    if world_size > 1:
        dist.destroy_process_group()


def measure(world_sizes: tuple[int, ...], shapes: tuple) -> list[dict]:
    rows = []
    for world_size in tqdm(world_sizes, desc="world sizes"):
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_worker, args=(world_size, shapes, f"{tmp}/init", tmp), nprocs=world_size, join=True)
            per_rank = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
        for key in per_rank[0]:
            loss, n, e = key.split("|")
            peak = max(p[key] for p in per_rank)
            rows.append({"loss": loss, "rows_per_rank": int(n), "dim": int(e), "world_size": world_size,
                         "peak_mib": peak / 2**20})  # fmt: skip
    for row in rows:
        base = next(r for r in rows if r["world_size"] == 1 and _same_case(r, row))
        row["vs_world_1"] = row["peak_mib"] / base["peak_mib"]
    return rows


def _same_case(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("loss", "rows_per_rank", "dim"))


def plot(rows: list[dict], shapes: tuple, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4), squeeze=False)
    for ax, (n, e) in zip(axes[0], shapes):
        for loss in LOSSES:
            points = [r for r in rows if r["loss"] == loss and (r["rows_per_rank"], r["dim"]) == (n, e)]
            ax.plot([r["world_size"] for r in points], [r["peak_mib"] for r in points], "o-", label=loss)
        ax.set(xscale="log", xlabel="world size (gloo processes)", ylabel="loss peak MiB per rank",
               title=f"n = {n} pairs per rank, E = {e}")  # fmt: skip
        ax.set_xticks(list(WORLD_SIZES), [str(w) for w in WORLD_SIZES])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def summary(rows: list[dict], shapes: tuple, world_sizes: tuple) -> tuple[list[dict], str]:
    n, e = shapes[0]
    top = world_sizes[-1]
    ring = next(r for r in rows if r["loss"] == "sigmoid ring" and r["world_size"] == top and r["dim"] == e)
    gather = next(
        r for r in rows if r["loss"] == "sigmoid all-gather" and r["world_size"] == top and r["dim"] == e
    )
    targets = [{"target": f"ring loss peak per rank at {top} processes <= 1.1x at 1 (n={n}, E={e})",
                "measured": f"{ring['vs_world_1']:.3f}x", "met": ring["vs_world_1"] <= 1.1},
               {"target": "(contrast) all-gather sigmoid loss, same case", "measured":
                f"{gather['vs_world_1']:.2f}x", "met": "-"}]  # fmt: skip
    md = "# Loss memory per rank vs world size\n\n" + markdown_table(targets) + "\n"
    md += "Peak tensor bytes created by the loss forward + backward on one rank (largest over ranks), "
    md += "from benchmarks.memory.LiveTensorBytes; features (n, E) per rank, fp32.\n\n"
    md += markdown_table(rows, floatfmt=".3f")
    return targets, md


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="world sizes 1 and 2, small shapes (seconds)")
    args = parser.parse_args(argv)
    world_sizes = (1, 2) if args.smoke else WORLD_SIZES
    shapes = ((64, 8),) if args.smoke else SHAPES
    rows = measure(world_sizes, shapes)
    name = "sigmoid_memory_smoke" if args.smoke else "sigmoid_memory"
    targets, md = summary(rows, shapes, world_sizes)
    results = {
        "rows": rows,
        "targets": targets,
        "machine": machine_info(threads=1),
        "world_sizes": world_sizes,
    }
    results["png"] = str(plot(rows, shapes, RESULTS / f"{name}.png"))
    results["files"] = write_results(RESULTS, name, results, md + f"\n![loss memory]({name}.png)\n")
    print(md)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
