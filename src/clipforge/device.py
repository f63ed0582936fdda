"""Device and precision choice for the hardware at hand."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
# The one device default of every front door (clipforge.load, create_model, load_model, the commands).
DEFAULT_DEVICE = "auto"


def resolve_device(device: str | torch.device | None = DEFAULT_DEVICE) -> torch.device:
    """'auto' (or None): CUDA when available, else CPU; anything else as torch.device reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AMX-BF16 tiles. AVX512-BF16 alone is not enough: on such a Xeon a 2048^2 bf16
    matmul measured 0.57x the fp32 speed (oneDNN converts more than it saves), and without either bf16 is
    emulated (~90x slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags


def cuda_has_native_bf16(device: torch.device | int | None = None) -> bool:
    """True on GPUs with bf16 tensor cores (compute capability >= 8: A100, H100, RTX 30xx+) and on ROCm.

    `torch.cuda.is_bf16_supported()` also says True on V100/T4, where bf16 is emulated (and several times
    slower than fp16); it also asks the *current* device, not the one training runs on."""
    if torch.version.hip:
        return True
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_precision(precision: Precision, device: torch.device) -> Literal["fp32", "bf16", "fp16"]:
    """'auto' picks bf16 only where the hardware runs it natively: on GPUs of compute capability >= 8 (else
    fp16, which the trainer pairs with a GradScaler), on CPUs with AMX tiles (else fp32)."""
    if precision != "auto":
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision fp16 needs a GPU; use fp32 (or bf16) on CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if cuda_has_native_bf16(device) else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
