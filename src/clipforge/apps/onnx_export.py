"""ONNX export of the image and text towers (dynamic batch), checked against PyTorch with onnxruntime,
with optional int8 dynamic quantisation.

Files written: image.onnx (images (B, 3, S, S) float32 -> image_features (B, E)), text.onnx
(text (B, L) int64 token ids -> text_features (B, E)), unnormalised like `encode_image` / `encode_text`,
plus onnx.json (model config, preprocessing, logit scale) so a runtime needs nothing else.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from clipforge.extras import require
from clipforge.fileio import atomic_write_json

OPSET = 17


class ImageTower(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, S, S) -> (B, E)
        return self.model.encode_image(images)


class TextTower(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, text: Tensor) -> Tensor:  # (B, L) int64 -> (B, E)
        return self.model.encode_text(text)


def _export(module: nn.Module, example: Tensor, path: Path, input_name: str, output_name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,  # the TorchScript exporter needs no onnxscript
    )
    return path


def export_towers(model: nn.Module, out_dir: str | os.PathLike, batch: int = 2) -> dict[str, Path]:
    """Write image.onnx, text.onnx and onnx.json into `out_dir`; the model itself is left unchanged."""
    from clipforge import tokenize

    out_dir = Path(out_dir)
    model = copy.deepcopy(model).float().eval().cpu()
    model.text.trim_to_longest = False  # trimming depends on the values, which a traced graph cannot
    size = model.config.preprocess.image_size
    images = torch.randn(batch, 3, size, size)
    tokens = tokenize(["a photo of a cat.", "a diagram"][:batch] * max(1, batch // 2), model.context_length)
    with torch.no_grad():
        paths = {
            "image": _export(ImageTower(model), images, out_dir / "image.onnx", "images", "image_features"),
            "text": _export(TextTower(model), tokens, out_dir / "text.onnx", "text", "text_features"),
        }
    info = {
        "config": asdict(model.config),
        "context_length": model.context_length,
        "logit_scale": float(model.logit_scale.detach().exp()),
        "opset": OPSET,
        "files": {k: p.name for k, p in paths.items()},
    }
    paths["info"] = atomic_write_json(out_dir / "onnx.json", info)
    return paths


def quantize_int8(onnx_path: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Dynamic int8 quantisation of the weights of MatMul/Gemm (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path else onnx_path.with_name(onnx_path.stem + ".int8.onnx")
    quantize_dynamic(
        str(onnx_path), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )
    return out_path


class OnnxCLIP:
    """onnxruntime sessions for the two towers, with CLIP's encode_image / encode_text signatures."""

    def __init__(self, image_path: str | os.PathLike, text_path: str | os.PathLike, threads: int = 1):
        ort = require("onnxruntime", "running ONNX models")

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.image = ort.InferenceSession(str(image_path), options, providers=providers)
        self.text = ort.InferenceSession(str(text_path), options, providers=providers)

    def encode_image(self, images: np.ndarray | Tensor) -> np.ndarray:
        array = images.numpy() if isinstance(images, Tensor) else images
        return self.image.run(None, {"images": array.astype(np.float32)})[0]

    def encode_text(self, tokens: np.ndarray | Tensor) -> np.ndarray:
        array = tokens.numpy() if isinstance(tokens, Tensor) else tokens
        return self.text.run(None, {"text": array.astype(np.int64)})[0]


def max_abs_diff(model: nn.Module, runtime: OnnxCLIP, images: Tensor, tokens: Tensor) -> dict[str, float]:
    """Largest |onnxruntime - PyTorch| over both towers' outputs for the given inputs."""
    with torch.no_grad():
        image_ref = model.encode_image(images).float().numpy()
        text_ref = model.encode_text(tokens).float().numpy()
    return {
        "image": float(np.abs(runtime.encode_image(images) - image_ref).max()),
        "text": float(np.abs(runtime.encode_text(tokens) - text_ref).max()),
    }


def zeroshot_accuracy(
    runtime: OnnxCLIP, images: Tensor, labels: Tensor, class_tokens: Tensor, batch_size: int = 256
) -> float:
    """Top-1 of argmax over unit image features @ unit class-prompt features (one prompt per class)."""
    text = runtime.encode_text(class_tokens)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    correct = 0
    for start in range(0, len(images), batch_size):
        feats = runtime.encode_image(images[start : start + batch_size])
        feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        correct += int(
            (np.argmax(feats @ text.T, axis=1) == labels[start : start + batch_size].numpy()).sum()
        )
    return correct / len(images)
