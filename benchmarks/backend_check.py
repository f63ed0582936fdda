"""Does `--backend auto` ever pick a slower image tower than the PyTorch one it replaces? (issue #16.2)

For each preset and batch: the apps' model from `apps.backend.use_backend(model, "torch")` (PyTorch eager)
and from `use_backend(model, "auto")`, timed interleaved in one process (rounds of
torch / auto calls, medians), random weights, `--threads` threads; plus their largest difference in unit
features. Writes benchmarks/results/backend.{json,md}.

    python -m benchmarks.backend_check                 # ViT-B-32 and RN50, batch 1 and 32
    python -m benchmarks.backend_check --models tiny-vit --rounds 2   # seconds
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.harness import machine_info
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).parent / "results"


def _seconds(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def check_model(name: str, batches: list[int], rounds: int) -> list[dict]:
    import clipforge
    from clipforge.apps.backend import use_backend

    base = clipforge.create_model(name).eval()
    torch_model = use_backend(copy.deepcopy(base), "torch")
    auto_model = use_backend(base, "auto")
    chosen = getattr(auto_model, "backend", "torch")
    size = base.config.preprocess.image_size
    rows = []
    for batch in batches:
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            diff = (
                (torch_model.encode_image(images, True) - auto_model.encode_image(images, True)).abs().max()
            )
            calls = 1 if batch >= 32 else 5
            runs = {"torch": [], "auto": []}
            for _ in range(rounds + 1):  # the first round warms up and is dropped
                for key, model in (("torch", torch_model), ("auto", auto_model)):
                    runs[key].append(_seconds(lambda m=model, x=images: m.encode_image(x), calls))
        torch_s, auto_s = (statistics.median(runs[k][1:]) for k in ("torch", "auto"))
        rows.append(
            {
                "model": name,
                "batch": batch,
                "auto_picks": chosen,
                "torch_img_per_s": round(batch / torch_s, 2),
                "auto_img_per_s": round(batch / auto_s, 2),
                "auto_over_torch": round(torch_s / auto_s, 3),
                "max_unit_feature_diff": float(diff),
                "auto_not_slower": bool(auto_s <= torch_s * 1.02),  # 2 %: the timer's noise on this host
            }
        )
        print(rows[-1], file=sys.stderr)
    return rows


def summary_markdown(report: dict) -> str:
    rows = [{**row, "max_unit_feature_diff": f"{row['max_unit_feature_diff']:.1e}"} for row in report["rows"]]
    load = ", ".join(f"{x:.1f}" for x in report["load_average"])
    return (
        "# `--backend auto` vs PyTorch (image tower)\n\n"
        f"{report['machine']['threads']} threads, random weights, {report['rounds']} interleaved rounds "
        f"(medians), {report['machine']['cpu']}, load average {load} at the end; "
        "command: `python -m benchmarks.backend_check`.\n\n" + markdown_table(rows)
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.backend_check", description=__doc__)
    p.add_argument("--models", default="ViT-B-32,RN50")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="backend", help="results file stem")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rows = [row for name in args.models.split(",") for row in check_model(name, batches, args.rounds)]
    report = {"machine": machine_info(args.threads), "load_average": os.getloadavg(), "rounds": args.rounds}
    report["rows"] = rows
    write_results(args.out, args.name, report, summary_markdown(report))
    return report


if __name__ == "__main__":
    main()
