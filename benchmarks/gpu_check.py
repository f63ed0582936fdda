"""One prepared GPU check (<= 8 minutes on one GPU): the CUDA tests, fp32/bf16/fp16 training steps against a CPU
fp32 reference, SIGKILL + resume equality, a 1-process NCCL group, and training throughput + MFU for ViT-B/32
and ViT-B/16 beside open_clip on the same GPU, batch and precision.

    .venv/bin/python -m benchmarks.gpu_check                 # on a GPU machine: benchmarks/results/gpu.{json,md}
    .venv/bin/python -m benchmarks.gpu_check --cpu-dry-run   # every part that can run on a CPU, tiny sizes

Sections run in order, each in its own time budget; a section that fails is recorded (with the end of its
output) and the next one runs, so one run always leaves a complete report.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks import gpu_sections as S
from clipforge.results import markdown_table, write_results

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET_S = 8 * 60
SECTION_TIMEOUT_S = {
    "cuda_tests": 150,
    "precision": 60,
    "resume": 150,
    "process_group": 60,
    "throughput": 240,
}


def machine() -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    return info


def run_sections(plan: S.Plan, work: Path, names: list[str], slack: float = 1.0) -> dict:
    """`slack` stretches the time limits (the CPU dry run on a loaded 2-core host is slower than a GPU)."""
    start = time.monotonic()
    deadline = start + BUDGET_S * slack
    limits = {k: v * slack for k, v in SECTION_TIMEOUT_S.items()}
    calls = {
        "cuda_tests": lambda: S.cuda_tests(plan, limits["cuda_tests"]),
        "precision": lambda: S.precision_parity(plan),
        "resume": lambda: S.sigkill_resume(plan, work / "resume", limits["resume"]),
        "process_group": lambda: S.one_process_group(plan, work / "group", limits["process_group"]),
        "throughput": lambda: S.throughput(plan, deadline),
    }
    sections = {}
    for name in tqdm(names, desc="gpu check"):
        if time.monotonic() > deadline - 30:
            sections[name] = {"ok": None, "skipped": "time budget spent"}
            continue
        section_start = time.monotonic()
        try:
            sections[name] = calls[name]()
        except Exception as error:  # record and go on: one run must leave a whole report
            sections[name] = {"ok": False, "error": repr(error), "traceback": traceback.format_exc()[-3000:]}
        sections[name]["wall_s"] = time.monotonic() - section_start
    return {"sections": sections, "wall_s": time.monotonic() - start, "budget_s": BUDGET_S * slack}


def summary(report: dict) -> str:
    sections = report["sections"]
    lines = ["# GPU check", "", f"Device: {report['machine'].get('gpu', 'none (CPU dry run)')}; "
             f"torch {report['machine']['torch']}; wall {report['wall_s']:.0f} s of {report['budget_s']} s.", ""]  # fmt: skip
    lines.append(markdown_table([{"section": k, "ok": v.get("ok"), "wall_s": v.get("wall_s", 0.0)}
                                 for k, v in sections.items()], floatfmt=".1f"))  # fmt: skip
    if "precision" in sections and sections["precision"].get("rows"):
        lines += ["## Training step vs CPU fp32", "", f"Tolerances: {json.dumps(S.TOLERANCES)}", ""]
        lines.append(markdown_table(sections["precision"]["rows"], floatfmt=".3g"))
    if "throughput" in sections and sections["throughput"].get("rows"):
        t = sections["throughput"]
        lines += ["## Training throughput", "", f"Spec bf16 peak: {t['spec_peak_tflops']} TFLOP/s; measured "
                  f"matmul peak: {t['local_matmul_peak_tflops']:.3g} TFLOP/s. MFU = 3 x forward FLOPs x samples/s "
                  "/ peak.", ""]  # fmt: skip
        lines.append(markdown_table(t["rows"], floatfmt=".3g"))
    for key in ("resume", "process_group", "cuda_tests"):
        if key in sections:
            shown = {k: v for k, v in sections[key].items() if k not in ("output_tail", "traceback")}
            lines += [f"## {key}", "", "```", json.dumps(shown, indent=1, default=str), "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="run every CPU-runnable part, tiny sizes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu.json / gpu.md")
    parser.add_argument(
        "--sections", nargs="*", default=list(SECTION_TIMEOUT_S), choices=list(SECTION_TIMEOUT_S)
    )
    parser.add_argument("--train-worker", help=argparse.SUPPRESS)  # JSON list of overrides
    parser.add_argument("--kill-at-step", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--group-worker", nargs=3, help=argparse.SUPPRESS)  # backend device work_dir
    args = parser.parse_args(argv)
    if args.train_worker:
        S.train_worker(json.loads(args.train_worker), args.kill_at_step)
        return {}
    if args.group_worker:
        S.process_group_worker(*args.group_worker)
        return {}
    if not args.cpu_dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --cpu-dry-run")
    plan = S.Plan.cpu_dry_run() if args.cpu_dry_run else S.Plan.gpu()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        report = run_sections(plan, Path(work), args.sections, slack=4.0 if args.cpu_dry_run else 1.0)
    report.update(machine=machine(), plan=plan.__dict__, dry_run=args.cpu_dry_run)
    name = "gpu_dryrun" if args.cpu_dry_run else "gpu"
    report["files"] = write_results(args.out, name, report, summary(report))
    print(summary(report))
    return report


if __name__ == "__main__":
    result = main()
    sys.exit(0 if not result or all(s.get("ok") is not False for s in result["sections"].values()) else 1)
