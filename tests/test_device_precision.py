"""precision=auto per device capability, with the device queries monkeypatched (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from clipforge import device as device_module
from clipforge.device import cuda_has_native_bf16, resolve_precision

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("gpu", "capability", "expected"),
    [
        ("P100", (6, 0), "fp16"),
        ("V100", (7, 0), "fp16"),  # is_bf16_supported() says True here: emulated bf16
        ("T4", (7, 5), "fp16"),
        ("A100", (8, 0), "bf16"),
        ("RTX 3090", (8, 6), "bf16"),
        ("H100", (9, 0), "bf16"),
    ],
)
def test_auto_precision_on_gpus(monkeypatch, gpu, capability, expected):
    asked = []
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto", CUDA) == expected, gpu
    assert asked == [CUDA]  # the training device's capability, not the current device's
    assert resolve_precision("bf16", CUDA) == "bf16" and resolve_precision("fp32", CUDA) == "fp32"


def test_rocm_has_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    assert cuda_has_native_bf16(CUDA) and resolve_precision("auto", CUDA) == "bf16"


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpus(monkeypatch, native, expected):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
