"""Runtimes for clipforge's exported ONNX graphs, opened the one way clipforge uses them everywhere (the apps'
backends and the benchmark's peers): each opens a file as a `Runner`, a function of the graph's inputs.

- ONNX Runtime: CPUExecutionProvider with `apps.onnx_export.session_options` (intra-op threads, one inter-op
  thread, sequential, ORT_ENABLE_ALL).
- OpenVINO CPU plugin: INFERENCE_NUM_THREADS = threads, INFERENCE_PRECISION_HINT f32 (CPUs with AVX512-BF16
  would otherwise run bf16: a silent precision change), PERFORMANCE_HINT LATENCY, one stream. It runs the
  same files, fusing the QDQ pairs of `quantize_int8` into its int8 kernels.
A runner takes the graph's inputs in its order: `run(images)`, `run(tokens, positions, mask, eot)`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from clipforge.extras import installed, require

Runner = Callable[..., np.ndarray]  # (*inputs in the graph's order) -> its first output
RUNTIMES = ("onnxruntime", "openvino")


def openvino_available() -> bool:
    return installed("openvino")


def openvino_config(threads: int | None = None) -> dict:
    return {
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }


_CORE_LOCK = threading.Lock()
_CORES: list = []


def openvino_core():
    """The process's one `openvino.Core`: every runner compiles on it. A second Core in one process has been
    seen to crash it with a segmentation fault after some compiles (a test worker died mid-suite), and one
    Core is what OpenVINO documents anyway (it owns the plugins and their thread pools)."""
    ov = require("openvino", "the OpenVINO backend")
    with _CORE_LOCK:
        if not _CORES:
            _CORES.append(ov.Core())
        return _CORES[0]


def onnxruntime_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    from clipforge.apps.onnx_export import session_options

    ort = require("onnxruntime", "the ONNX Runtime backend")
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *arrays: session.run(None, dict(zip(names, arrays, strict=True)))[0]


def openvino_runner(
    path: str | os.PathLike, threads: int | None = None, shape: tuple[int, ...] | None = None
) -> Runner:
    """`shape`: a static input shape to compile for (else the graph's own, dynamic batch). The compiled model
    owns one infer request, so calls are serialised (the service calls from several threads)."""
    core = openvino_core()
    model = core.read_model(str(Path(path)))
    if shape is not None:
        model.reshape({model.inputs[0].get_any_name(): list(shape)})
    compiled = core.compile_model(model, "CPU", openvino_config(threads))
    lock = threading.Lock()

    def run(*arrays: np.ndarray) -> np.ndarray:
        with lock:
            return np.array(compiled(list(arrays))[0])  # a copy: the request's output buffer is reused

    return run


def open_runner(
    runtime: str, path: str | os.PathLike, threads: int | None = None, shape: tuple[int, ...] | None = None
) -> Runner:
    if runtime == "onnxruntime":
        return onnxruntime_runner(path, threads)
    if runtime == "openvino":
        return openvino_runner(path, threads, shape)
    raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
