"""Timing and memory helpers shared by the benchmarks: medians with min/max, warm-up excluded."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int
    times_s: tuple[float, ...] = ()

    @classmethod
    def of(cls, times: list[float]) -> Timing:
        return cls(statistics.median(times), min(times), max(times), len(times), tuple(times))

    def rate(self, items: int) -> float:
        """Items per second at the median time."""
        return items / self.median_s


def time_fn(
    fn: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    min_time_s: float = 0.0,
    warmup_fn: Callable[[], Any] | None = None,
) -> Timing:
    """Run `warmup_fn` (default `fn`) `warmup` times untimed, then `fn` `repeats` times (or until `min_time_s`
    is spent) timed. A cheaper `warmup_fn` (one batch of many) saves time on slow reference libraries."""
    for _ in range(warmup):
        (warmup_fn or fn)()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_time_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50:
            break
    return Timing.of(times)


# (M, K, N): squares, and the transformer GEMMs of a ViT-B/32 batch of 32 (1,600 tokens x width 768, MLP 3,072),
# which MKL runs faster than the squares here: leaving them out would understate the machine's peak.
PEAK_SHAPES = ((512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (1600, 768, 3072), (1600, 3072, 768))


def matmul_peak_gflops(
    shapes: tuple[tuple[int, int, int], ...] = PEAK_SHAPES, repeats: int = 7
) -> dict[str, Any]:
    """This machine's fp32 matmul peak, measured robustly: best over repeated runs and several shapes."""
    best = 0.0
    per_size = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        timing = time_fn(lambda a=a, b=b: a @ b, repeats=repeats, warmup=2)
        gflops = 2 * m * k * n / timing.min_s / 1e9
        per_size[f"{m}x{k}x{n}"] = round(gflops, 2)
        best = max(best, gflops)
    return {"peak_gflops": round(best, 2), "per_size_best_gflops": per_size}


def runtime_matmul_peaks(
    shapes: tuple[tuple[int, int, int], ...] = PEAK_SHAPES, threads: int = 2, repeats: int = 7
) -> dict[str, float]:
    """The best fp32 GFLOP/s of one MatMul (a weight initializer, like a Linear) over `shapes` in each
    installed runtime (apps.runtimes settings), beside torch's: the hardware limit each library's kernels
    reach here (torch's MKL may not use every vector width a CPU has)."""
    import tempfile

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from clipforge.apps.runtimes import RUNTIMES, open_runner
    from clipforge.extras import installed

    best = {"torch": matmul_peak_gflops(shapes, repeats)["peak_gflops"]}
    with tempfile.TemporaryDirectory() as folder:
        for m, k, n in shapes:
            weight = numpy_helper.from_array(np.random.randn(k, n).astype(np.float32), "w")
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["a", "w"], ["y"])], "matmul",
                [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight],
            )  # fmt: skip
            path = f"{folder}/matmul.onnx"
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
            a = np.random.randn(m, k).astype(np.float32)
            for runtime in RUNTIMES:
                if not installed(runtime):
                    continue
                run = open_runner(runtime, path, threads)
                timing = time_fn(lambda run=run, a=a: run(a), repeats=repeats, warmup=2)
                gflops = round(2 * m * k * n / timing.min_s / 1e9, 2)
                best[runtime] = max(best.get(runtime, 0.0), gflops)
    return best


def bf16_fp32_ratio(n: int = 512) -> float:
    """How many times slower a bf16 matmul is than fp32 here (>1 means bf16 is slower)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    fp32 = time_fn(lambda: a @ b, repeats=5).median_s
    a16, b16 = a.bfloat16(), b.bfloat16()
    bf16 = time_fn(lambda: a16 @ b16, repeats=3).median_s
    return bf16 / fp32


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, unlike ru_maxrss, is not inherited from the parent."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(module: str, args: list[str], threads: int) -> dict[str, Any]:
    """Run `python -m module args` in a fresh process (clean peak-RSS) and parse its last stdout line as JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info(threads: int) -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def timing_dict(timing: Timing, items: int) -> dict[str, Any]:
    return {**asdict(timing), "items": items, "items_per_s": round(timing.rate(items), 3)}


def publish(folder: Path, stem: str, report: dict, summary: str) -> dict:
    """Write `report` (json) and `summary` (md) as folder/stem.*, print the summary and where they went."""
    from clipforge.results import write_results

    paths = write_results(folder, stem, report, summary)
    print(summary)
    print(f"results: {paths['json']}")
    return report
