"""Training from streamed shards: memory stays flat as shards go by, and the loader outpaces the training step.

Trains `fit()` from the 50,000-image CIFAR-10 WebDataset shards (`data.kind=stream`, 2 loader workers, a
1,000-sample shuffle buffer per worker) past one epoch, recording after every step the proportional set size
(PSS, /proc/<pid>/smaps_rollup: the main process plus its loader workers, shared pages counted once) against
samples seen. Then, separately on the same machine, the loader alone and the training step alone (same
batches in memory), samples/s each. Writes benchmarks/results/stream_memory.{json,md,png}.

    .venv/bin/python -m benchmarks.stream_memory [--smoke]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import machine_info
from clipforge.figures import pyplot, save_figure
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET_RATIO, FEED_TARGET = 1.2, 2.0


def pss_kb(pid: int) -> int:
    """Proportional set size of one process (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))


def descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return sorted(tree)


def overrides(args, output_dir: str) -> list[str]:
    return [
        f"model.name={args.model}", "model.context_length=16", "data.kind=stream",
        f"data.path={DATA / 'cifar10-wds'}", f"data.classes={DATA / 'cifar10' / 'classes.txt'}",
        f"data.batch_size={args.batch_size}", "data.num_workers=2", "data.shuffle_buffer=1000",
        f"max_steps={args.steps}", "epochs=3", "optim.warmup_steps=10", "checkpoint.every_steps=0",
        "log.every_steps=10", "log.plot=false", "device=cpu", "precision=fp32", f"output_dir={output_dir}",
    ]  # fmt: skip


def train_and_sample(args) -> tuple[list[dict], dict]:
    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig, fit

    samples, me = [], os.getpid()

    def record(event: str, info: dict) -> None:
        if event == "step":
            workers = descendants(me)
            samples.append({"step": info["step"], "samples_seen": info["step"] * args.batch_size,
                            "pss_mib": (pss_kb(me) + sum(pss_kb(p) for p in workers)) / 1024,
                            "main_pss_mib": pss_kb(me) / 1024, "workers": len(workers)})  # fmt: skip

    with tempfile.TemporaryDirectory() as out:
        results = fit(load_config(TrainConfig, None, overrides(args, out)), callbacks=(record,))
    return samples, results


def feed_rates(args) -> dict:
    """Loader alone and training step alone, samples/s (the same batch size and model)."""
    from clipforge.models import CLIP
    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig
    from clipforge.train.data import build_stream
    from clipforge.train.distributed import DistInfo
    from clipforge.train.loop import build_model
    from clipforge.train.objectives import ContrastiveObjective
    from clipforge.train.optim import build_optimizer
    from clipforge.train.step import accumulate_gradients

    config = load_config(TrainConfig, None, overrides(args, "unused"))
    model: CLIP = build_model(config)
    loader = build_stream(config, model, DistInfo())
    batches, start, count = iter(loader), None, 0
    for i, batch in enumerate(batches):
        if i == 5:  # workers started and warm
            start = time.perf_counter()
        elif i > 5:
            count += len(batch["index"])
        if i == 5 + args.feed_batches:
            break
    loader_rate = count / (time.perf_counter() - start)
    objective = ContrastiveObjective(model)
    optimizer = build_optimizer(objective, 1e-4, 0.2, (0.9, 0.98), 1e-6)
    for i in range(3 + args.feed_steps):
        if i == 3:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(objective, batch)
        optimizer.step()
    step_rate = args.feed_steps * len(batch["index"]) / (time.perf_counter() - start)
    return {"loader_samples_per_s": loader_rate, "train_step_samples_per_s": step_rate,
            "feed_ratio": loader_rate / step_rate, "loader_workers": 2, "threads": torch.get_num_threads()}  # fmt: skip


def plot(samples: list[dict], baseline: float, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [s["samples_seen"] for s in samples], [s["pss_mib"] for s in samples], label="main + loader workers"
    )
    ax.plot([s["samples_seen"] for s in samples], [s["main_pss_mib"] for s in samples], label="main process")
    ax.axhline(
        TARGET_RATIO * baseline,
        color="red",
        linestyle="--",
        label=f"{TARGET_RATIO}x the PSS at 1,000 samples",
    )
    ax.axvline(50_000, color="grey", linestyle=":", label="50,000 samples (one pass over the shards)")
    ax.set(xlabel="samples seen", ylabel="PSS (MiB)", title="Training from streamed CIFAR-10 shards")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps (seconds)")
    parser.add_argument("--model", default="tiny-vit")  # the cheaper step: the harder one to feed
    args = parser.parse_args(argv)
    args.batch_size, args.steps = (32, 8) if args.smoke else (256, 210)  # 210 x 256 = 53,760 samples
    args.feed_batches, args.feed_steps = (4, 2) if args.smoke else (40, 8)
    load_before = os.getloadavg()[0]
    samples, results = train_and_sample(args)
    first = next(s for s in samples if s["samples_seen"] >= min(1000, samples[-1]["samples_seen"]))
    after = [s for s in samples if s["samples_seen"] >= min(50_000, samples[-1]["samples_seen"])]
    peak = max(s["pss_mib"] for s in samples)
    feed = feed_rates(args)
    targets = [{"target": f"peak PSS after 50k samples <= {TARGET_RATIO}x PSS at the first 1,000",
                "measured": f"{peak / first['pss_mib']:.3f}x ({peak:.0f} / {first['pss_mib']:.0f} MiB)",
                "met": peak <= TARGET_RATIO * first["pss_mib"] and bool(after)},
               {"target": f"loader feeds >= {FEED_TARGET}x the training step", "measured": f"{feed['feed_ratio']:.2f}x",
                "met": feed["feed_ratio"] >= FEED_TARGET}]  # fmt: skip
    name = "stream_memory_smoke" if args.smoke else "stream_memory"
    report = {"targets": targets, "samples": samples, "feed": feed, "model": args.model, "batch_size": args.batch_size,
              "train": {k: results[k] for k in ("steps", "images_seen", "wall_time_s", "samples_per_s")},
              "machine": machine_info(threads=torch.get_num_threads()),
              "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}  # fmt: skip
    out = Path(tempfile.gettempdir()) / "clipforge-stream-memory-smoke" if args.smoke else RESULTS
    report["png"] = str(plot(samples, first["pss_mib"], out / f"{name}.png"))
    md = f"# Streaming training memory and feed rate\n\n{markdown_table(targets)}\n"
    md += f"Model {args.model}, batch {args.batch_size}, CPU fp32, 2 loader workers, shuffle buffer 1,000 per worker; "
    md += f"{results['steps']} steps, {results['images_seen']:,} samples seen ({results['wall_time_s']:.0f} s).\n\n"
    md += f"{report['machine']['cpu']}, {report['machine']['threads']} torch threads, torch {torch.__version__}; "
    md += f"host load (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a shared host).\n\n"
    md += (
        "Feed rate: the loader alone (its batches discarded) and the training step alone (one batch reused), "
    )
    md += "each after warm-up, in this process, one after the other.\n\n"
    md += markdown_table([feed], floatfmt=".1f") + f"\n![PSS vs samples]({name}.png)\n"
    report["files"] = write_results(out, name, report, md)
    print(md)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
