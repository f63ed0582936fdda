"""Does the Flickr8k caption pipeline feed training as the CIFAR path does? Loader images/s vs step images/s.

    python -m benchmarks.caption_loader --threads 2 [--rounds 3] [--cache-dir DIR] [--smoke]

Two paths, measured in one process with rounds interleaved (machine load hits both alike):
- caption: `configs/flickr8k.yaml`'s data — the Flickr8k train split (6,000 photos x 5 captions) decoded once at
  `decode_size` into the memory-mapped cache, one caption per image per epoch, random resized crop + flip to the
  model's size — and its model's training step (forward, backward, AdamW) at the trainer's precision;
- cifar: the demo's — CIFAR-10 training shards, crop + flip at 32 px, the `demo-cifar` step with deduplicated
  template captions.
For each: the loader alone (its prefetch thread, batches handed out per second), the step alone, their ratio
(headroom: > 1 means the loader outruns the step), and a short `fit` whose `data_wait_s` says how long the loop
really waited for data while both shared the cores. Writes benchmarks/results/caption_loader.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.cases import SHARED
from benchmarks.harness import machine_info

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "flickr8k.yaml"
RESULTS = Path(__file__).resolve().parent / "results"


def _config(path: Path | None, overrides: list[str]):
    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig

    return load_config(TrainConfig, path, overrides)


def build_paths(cache_dir: str | None, batch_size: int) -> dict[str, dict[str, Any]]:
    """{path: {"config", "model", "loader", "objective"}} for the caption and the CIFAR path."""
    from clipforge.train import build_model
    from clipforge.train.data import build_train_data
    from clipforge.train.distributed import DistInfo
    from clipforge.train.objectives import ContrastiveObjective

    common = [f"data.batch_size={batch_size}", "log.progress=false"] + (
        [f"data.cache_dir={cache_dir}"] * bool(cache_dir)
    )
    flickr = [f"data.path={SHARED / 'flickr8k' / 'captions.csv'}", *common]
    cifar = [
        "model.name=demo-cifar", "data.kind=labelled", f"data.path={SHARED / 'cifar10-wds'}",
        "data.augment.kind=crop_flip", "loss.dedup_text=true", *common,
    ]  # fmt: skip
    paths = {}
    for name, config in (("caption", _config(CONFIG, flickr)), ("cifar", _config(None, cifar))):
        torch.manual_seed(0)
        model = build_model(config)
        loader = build_train_data(config, model, DistInfo())
        objective = ContrastiveObjective(model, dedup_text=config.loss.dedup_text)
        paths[name] = {"config": config, "model": model, "loader": loader, "objective": objective}
    return paths


def loader_rate(loader, batches: int) -> float:
    """Images/s handed out by the loader (prefetch thread on), first batch excluded (it starts the thread)."""
    loader.set_epoch(0)
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        count += len(next(iterator)["index"])
    elapsed = time.perf_counter() - start
    iterator.close()
    return count / elapsed


def step_rate(path: dict[str, Any], steps: int) -> float:
    """Images/s of the training step (forward, backward, AdamW) at the trainer's precision, on a fixed batch."""
    from clipforge.device import autocast_dtype, resolve_precision

    precision = resolve_precision(path["config"].precision, torch.device("cpu"))
    dtype = autocast_dtype(precision)
    loader, objective = path["loader"], path["objective"]
    loader.set_epoch(0)
    batch = next(iter(loader))
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-9)
    objective.train()
    times = []
    for _ in range(steps + 1):  # the first pays one-off kernel set-up
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = objective.loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return len(batch["index"]) / statistics.median(times[1:])


def fit_wait(path: dict[str, Any], steps: int, out: Path) -> dict[str, float]:
    """A real `fit` of `steps` steps: wall time and the time the loop waited for batches."""
    import json
    from dataclasses import replace

    from clipforge.train import fit

    config = replace(path["config"], max_steps=steps, output_dir=str(out), epochs=1)
    config = replace(config, log=replace(config.log, every_steps=1, plot=False, progress=False),
                     eval=replace(config.eval, zeroshot_data=None))  # fmt: skip
    results = fit(config, model=path["model"], train_data=path["loader"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    waits = [r["train/data_wait_s"] for r in rows if "train/data_wait_s" in r][1:]  # step 1 starts the thread
    return {
        "steps": results["steps"],
        "wall_time_s": round(results["wall_time_s"], 2),
        "data_wait_s_after_first_step": round(sum(waits), 3),
        "data_wait_fraction": round(sum(waits) / max(results["wall_time_s"], 1e-9), 4),
    }


def summary_markdown(report: dict[str, Any]) -> str:
    from clipforge.results import markdown_table

    rows = [{"path": name, **values} for name, values in report["paths"].items()]
    return (
        "# Caption pipeline vs the CIFAR path: does the loader keep up with training?\n\n"
        f"`{report['command']}` — {report['machine']['cpu']}, {report['machine']['threads']} torch threads, "
        f"{report['rounds']} interleaved rounds (medians), batch {report['batch_size']}. Provisional: measured on a "
        "shared, loaded host; the ratios matter, not the absolute rates.\n\n"
        + markdown_table(rows)
        + "\n`loader_images_per_s`: batches handed out by the loader alone (prefetch thread); `step_images_per_s`:"
        " the training step alone; `headroom` = loader / step (> 1: the loader outruns training); `fit_*`: a real"
        " `fit` of a few steps, where the loop's wait for data is what is left after both share the cores.\n"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from clipforge.results import write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cache-dir", default=None, help="decode cache (default: clipforge's)")
    parser.add_argument("--smoke", action="store_true", help="one round, few batches, results under runs/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches, steps = (3, 1) if args.smoke else (20, 2)
    paths = build_paths(args.cache_dir, args.batch_size)
    measured: dict[str, dict[str, list[float]]] = {name: {"loader": [], "step": []} for name in paths}
    for _ in range(1 if args.smoke else args.rounds):
        for name, path in paths.items():
            measured[name]["loader"].append(loader_rate(path["loader"], batches))
            measured[name]["step"].append(step_rate(path, steps))
    out = Path("runs/caption_loader_smoke") if args.smoke else RESULTS
    report_paths = {}
    for name, path in paths.items():
        loader, step = statistics.median(measured[name]["loader"]), statistics.median(measured[name]["step"])
        model = path["config"].model
        with tempfile.TemporaryDirectory() as tmp:  # the fit's checkpoints are not results
            fitted = fit_wait(path, 4 if args.smoke else 8, Path(tmp))
        report_paths[name] = {
            "images": len(path["loader"].data), "image_size": path["model"].config.vision.image_size,
            "decoded_at": tuple(path["loader"].data.images.shape[1:3]), "augment": path["config"].data.augment.kind,
            "model": model.name, "loader_images_per_s": round(loader, 1), "step_images_per_s": round(step, 1),
            "headroom": round(loader / step, 2), **{f"fit_{k}": v for k, v in fitted.items()},
        }  # fmt: skip
    report = {
        "command": "python -m benchmarks.caption_loader --threads 2" + (" --smoke" if args.smoke else ""),
        "machine": machine_info(args.threads), "rounds": 1 if args.smoke else args.rounds,
        "batch_size": args.batch_size, "paths": report_paths, "raw": measured,
    }  # fmt: skip
    report["files"] = write_results(out, "caption_loader", report, summary_markdown(report))
    print(summary_markdown(report))
    return report


if __name__ == "__main__":
    main()
