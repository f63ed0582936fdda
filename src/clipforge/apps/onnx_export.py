"""ONNX export of the image and text towers (dynamic batch), checked against PyTorch with onnxruntime,
with optional int8 quantisation (dynamic, or static with activation ranges calibrated on real inputs).

Files written: image.onnx (images (B, 3, S, S) float32 -> image_features (B, E)), text.onnx
(text (B, L) int64 token ids -> text_features (B, E); L is dynamic too, up to the context length, so a
batch can be padded to its longest text), unnormalised like `encode_image` / `encode_text`, plus
onnx.json (model config, preprocessing, logit scale) so a runtime needs nothing else.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from clipforge.extras import require

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


class PackedTextTower(nn.Module):
    """The text tower on a shared-prefix pack (models.prefix): tokens, positions, mask, eot -> (R, Q, E)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, positions: Tensor, mask: Tensor, eot: Tensor) -> Tensor:
        return self.model.text.packed_features(tokens, positions, mask, eot)


PACKED_INPUTS = ("tokens", "positions", "mask", "eot")


def _export(
    module: nn.Module,
    example: Tensor | tuple[Tensor, ...],
    path: Path,
    input_name: str | tuple[str, ...],
    output_name: str,
    dynamic: dict,
) -> Path:
    # the exporter restores the wrapper's own mode afterwards: a wrapper left in training mode would put the
    # whole model in training mode (and its BatchNorm statistics would drift on the next forward)
    module.eval()
    names = (input_name,) if isinstance(input_name, str) else input_name
    axes = {input_name: dynamic} if isinstance(input_name, str) else dynamic
    torch.onnx.export(
        module,
        (example,) if isinstance(example, Tensor) else example,
        str(path),
        input_names=list(names),
        output_names=[output_name],
        dynamic_axes={**axes, output_name: axes.get(output_name, {0: "batch"})},
        opset_version=OPSET,
        dynamo=False,  # the TorchScript exporter needs no onnxscript
    )
    return path


def probe_inputs(model: nn.Module, batch: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random images and three texts (short, long, one character) at the model's own image size and text
    context, for checking an exported model against PyTorch."""
    from clipforge.tokenizer import tokenizer_for

    size = model.config.preprocess.image_size
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    texts = ["a dog", "a photo of a big red bicycle on a street.", "x"]
    return images, tokenizer_for(model)(texts)  # the model's own tokenizer (CLIP BPE, or an HF tower's)


def export_towers(
    model: nn.Module, out_dir: str | os.PathLike, batch: int = 2, atol: float | None = 1e-4
) -> dict[str, Path]:
    """Write image.onnx, text.onnx and onnx.json into `out_dir`; the model itself is left unchanged.

    The three files are written under temporary names, checked with onnxruntime against PyTorch on
    `probe_inputs` (ValueError above `atol`; None skips the check), and only then renamed, onnx.json last:
    a failed or interrupted export leaves no file that looks like a finished one."""
    from clipforge.apps.provenance import weights_id
    from clipforge.fileio import StagedFiles, ensure_dir
    from clipforge.tokenizer import tokenizer_for

    out_dir = ensure_dir(out_dir, "ONNX output folder")
    model = copy.deepcopy(model).float().eval().cpu()
    model.text.trim_to_longest = False  # trimming depends on the values, which a traced graph cannot
    size = model.config.preprocess.image_size
    images = torch.randn(batch, 3, size, size)
    tokens = tokenizer_for(model)(["a photo of a cat.", "a diagram"][:batch] * max(1, batch // 2))
    with StagedFiles() as staged:
        image_tmp, text_tmp = staged.path(out_dir / "image.onnx"), staged.path(out_dir / "text.onnx")
        info_tmp = staged.path(out_dir / "onnx.json")
        with torch.no_grad():
            image_axes, text_axes = {0: "batch"}, {0: "batch", 1: "length"}
            _export(ImageTower(model), images, image_tmp, "images", "image_features", image_axes)
            _export(TextTower(model), tokens, text_tmp, "text", "text_features", text_axes)
        diff = None
        if atol is not None:
            diff = max_abs_diff(model, OnnxCLIP(image_tmp, text_tmp), *probe_inputs(model))
            if not max(diff.values()) <= atol:  # NaN fails too
                raise ValueError(
                    f"onnxruntime differs from PyTorch by {diff}, above atol {atol}; nothing written"
                )
        info = {
            "config": asdict(model.config),
            "context_length": model.context_length,
            "logit_scale": float(model.logit_scale.detach().exp()),
            "opset": OPSET,
            "weights": weights_id(model),
            "max_abs_diff": diff,
            "files": {"image": "image.onnx", "text": "text.onnx"},
        }
        info_tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        image_path, text_path, info_path = staged.commit()
    return {"image": image_path, "text": text_path, "info": info_path}


def weight_nodes(onnx_path: str | os.PathLike) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes whose second input is a weight (an initializer): the ones worth
    int8. The attention products (activation x activation) stay float."""
    import onnx

    return _weight_nodes(onnx.load(str(onnx_path), load_external_data=False).graph)


def _weight_nodes(graph) -> list[str]:
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and n.input[1] in weights]


def activation_nodes(graph, after: Iterable[str]) -> list[str]:
    """Names of the Relu/Clip nodes of an onnx `graph` that read a node of `after`'s output. Quantised with
    them, onnxruntime takes the activation's range for the node's output (its `_adjust_tensor_ranges`) and
    drops the activation: a ReLU6 after a conv otherwise gets the conv's raw range (EfficientNet-Lite0's
    stem: [-46, 87], 12 of 256 levels left inside [0, 6]; its int8 features had cosine 0.57 to fp32)."""
    after = set(after)
    outputs = {out for n in graph.node if n.name in after for out in n.output}
    return [n.name for n in graph.node if n.op_type in ("Relu", "Clip") and n.input[0] in outputs]


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self._feeds = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def quantize_int8(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    calibration: Iterable[np.ndarray | Tensor] | None = None,
    float_nodes: int = 0,
) -> Path:
    """int8 weights of the weight-carrying Conv/MatMul/Gemm nodes (per output channel when static).

    Without `calibration` activations are quantised dynamically, per call (text towers; any input). With
    it (batches of real inputs for the graph's single float input, e.g. preprocessed images), quantisation
    is static: QDQ nodes with uint8 activation ranges calibrated on those batches (min/max) around int8
    weights, a Relu/Clip after a weight node folded into its output's range (`activation_nodes`), which
    onnxruntime and OpenVINO fuse into integer kernels. `float_nodes`: the first that many weight nodes in
    graph order stay fp32 (a trunk's stem and first block carry most of the int8 error of a MobileNet-style
    tower at a few % of its FLOPs: apps.backend.INT8_FLOAT_STEPS). Writes `<stem>.int8.onnx` next to
    the input unless `out_path` is given."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from clipforge.fileio import atomic_path

    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path else onnx_path.with_name(onnx_path.stem + ".int8.onnx")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    nodes = _weight_nodes(graph)[float_nodes:]
    with atomic_path(out_path) as tmp:  # complete or absent
        if calibration is None:
            quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8, nodes_to_quantize=nodes)
        else:
            input_name = graph.input[0].name
            batches = [b.numpy() if isinstance(b, Tensor) else b for b in calibration]
            nodes = nodes + activation_nodes(graph, nodes)  # ranges taken after ReLU/ReLU6
            quantize_static(
                str(onnx_path),
                str(tmp),
                _Batches(input_name, batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes,
            )
    return out_path


def session_options(threads: int | None = None):
    """onnxruntime settings used everywhere in clipforge (stated in the benchmark results): `threads`
    intra-op threads (default torch's thread count), one inter-op thread, sequential execution, all graph
    optimisations (ORT_ENABLE_ALL: constant folding, Conv+BN, GELU/LayerNorm/MatMul+Add fusions, NCHWc)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxCLIP:
    """onnxruntime sessions for the two towers, with CLIP's encode_image / encode_text signatures."""

    def __init__(self, image_path: str | os.PathLike, text_path: str | os.PathLike, threads: int | None = 1):
        ort = require("onnxruntime", "running ONNX models")

        options = session_options(threads)
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


def export_image_tower(model: nn.Module, path: str | os.PathLike) -> Path:
    """Only the image graph (as image.onnx of export_towers), for the apps' ONNX Runtime backend whose text
    tower stays PyTorch; `model` (eval, on CPU) is left unchanged."""
    if next(model.parameters()).dtype != torch.float32:
        model = copy.deepcopy(model).float()
    size = model.config.preprocess.image_size
    with torch.no_grad():
        example = torch.randn(2, 3, size, size)
        tower = ImageTower(model).eval()  # the exporter restores the wrapper's mode onto `model` afterwards
        return _export(tower, example, Path(path), "images", "image_features", {0: "batch"})


def export_packed_text_tower(model: nn.Module, path: str | os.PathLike) -> Path:
    """The text tower on shared-prefix packs (`PackedTextTower`; inputs PACKED_INPUTS with dynamic rows,
    nodes and texts per row), for the apps' runtime backends; `model` (eval, on CPU) is left unchanged."""
    from clipforge.models.prefix import pack_prefixes
    from clipforge.tokenizer import tokenizer_for

    if next(model.parameters()).dtype != torch.float32:
        model = copy.deepcopy(model).float()
    texts = ["a photo of a cat.", "a photo of a dog on a mat", "a diagram", "x"]
    pack = next(pack_prefixes(tokenizer_for(model)(texts), row_nodes=12))
    dynamic = {
        "tokens": {0: "rows", 1: "nodes"},
        "positions": {0: "rows", 1: "nodes"},
        "mask": {0: "rows", 2: "nodes", 3: "nodes"},
        "eot": {0: "rows", 1: "texts"},
        "text_features": {0: "rows", 1: "texts"},
    }
    example = (pack.tokens, pack.positions, pack.mask, pack.eot)
    with torch.no_grad():
        return _export(PackedTextTower(model), example, Path(path), PACKED_INPUTS, "text_features", dynamic)
