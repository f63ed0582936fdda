"""Which runtime runs a model's towers in the apps (`classify`, `embed`, `serve`): PyTorch or ONNX Runtime.

The rule `auto` follows, from the measurements in docs/performance.md ("ONNX Runtime and OpenVINO"): on CPU
with onnxruntime installed, the image tower runs as clipforge's own exported fp32 graph in an onnxruntime
session (faster than PyTorch eager for ViT-B/32 at batch 1 and 32); the text tower stays PyTorch, whose
shared-prefix encoding (models.prefix) computes fewer positions than any padded graph can. On CUDA, or
without onnxruntime, both towers stay PyTorch. The model's own weights are never rewritten (outputs record
their fingerprint; ONNX Runtime folds BatchNorm into the convolutions itself), so `optimize_for_inference`
is not applied here.

An ONNX image tower is checked against PyTorch on random images before it is used: unit features differ by
at most `TOLERANCE`, else `onnx` is an error and `auto` falls back to PyTorch with a warning.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Backend = Literal["auto", "torch", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
TOLERANCE = 1e-5  # max |unit features, ONNX Runtime - PyTorch| accepted (fp32)


class OnnxImageCLIP:
    """`model` with `encode_image` run by onnxruntime on its exported image graph; everything else (text
    tower, logit scale, config, parameters, eval()) is the PyTorch model's own."""

    backend = "onnx"

    def __init__(self, model: nn.Module, session):
        self._model = model
        self._session = session  # onnxruntime.InferenceSession on the image graph

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy/pickle probe attributes before __init__ has run
            raise AttributeError(name)
        return getattr(self._model, name)

    def eval(self) -> OnnxImageCLIP:  # the apps call model.eval(): keep the wrapper, not the bare model
        self._model.eval()
        return self

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:  # (B, 3, S, S) -> (B, E)
        array = images.detach().float().cpu().numpy()
        features = torch.from_numpy(self._session.run(None, {"images": array})[0])
        return F.normalize(features, dim=-1) if normalize else features


def _on_cpu(model: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in model.parameters())


def onnx_image_model(model: nn.Module, threads: int | None = None) -> OnnxImageCLIP:
    """Export the image tower to a temporary file, open it in onnxruntime (apps.onnx_export.session_options:
    `threads` intra-op threads, default torch's) and check it against `model` (ValueError above TOLERANCE)."""
    from clipforge.apps.onnx_export import export_image_tower, session_options
    from clipforge.extras import require

    ort = require("onnxruntime", "the ONNX Runtime backend")
    with tempfile.TemporaryDirectory(prefix="clipforge-onnx-") as folder:
        path = export_image_tower(model, Path(folder) / "image.onnx")
        options = session_options(threads or torch.get_num_threads())
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wrapped = OnnxImageCLIP(model, session)
    size = model.config.preprocess.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model.encode_image(images, normalize=True).float()
    diff = float((wrapped.encode_image(images, normalize=True) - reference).abs().max())
    if not diff <= TOLERANCE:  # NaN fails too
        raise ValueError(f"ONNX Runtime image features differ from PyTorch by {diff:.2e} > {TOLERANCE}")
    return wrapped


def use_backend(
    model: nn.Module, backend: Backend = "auto", images: bool = True
) -> nn.Module | OnnxImageCLIP:
    """The model the apps should call, per the rule in this module's docstring (`images=False`: the image
    tower will not be called, so nothing is exported). `model` itself is left unchanged."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "torch" or not images:
        return model
    if backend == "onnx" and not _on_cpu(model):
        device = next(model.parameters()).device
        raise ValueError(f"backend 'onnx' runs on CPU, the model is on {device}: use 'torch' or 'auto' there")
    if backend == "auto" and not _on_cpu(model):
        return model
    if backend == "onnx":
        return onnx_image_model(model)
    try:
        return onnx_image_model(model)
    except ImportError:
        return model  # onnxruntime / onnx not installed (the apps extra): PyTorch, as documented
    except Exception as error:  # an architecture the exporter cannot trace, or outputs that disagree
        warnings.warn(f"backend auto: ONNX Runtime not used ({error}); running PyTorch", stacklevel=2)
        return model
