"""ONNX Runtime and OpenVINO as benchmark peers, each running clipforge's own exported graphs.

`prepare_onnx` exports a model's towers once per run (`clipforge.apps.onnx_export`) and writes int8
versions: the image tower statically quantised (QDQ, per-channel int8 weights, uint8 activations
calibrated on 64 real COCO photos), the text tower dynamically (int8 weights, activations per call).
Peers (LIB names in benchmarks.cases):
- ort-fp32 / ort-int8: onnxruntime CPUExecutionProvider, `session_options(threads)` = intra-op threads =
  --threads, 1 inter-op thread, sequential, graph optimisation ORT_ENABLE_ALL;
- openvino-fp32 / openvino-int8: OpenVINO CPU plugin on the same ONNX files, INFERENCE_NUM_THREADS =
  --threads, INFERENCE_PRECISION_HINT f32 (no silent bf16), PERFORMANCE_HINT LATENCY, 1 stream; image
  graphs reshaped to the case's static batch.
Texts go in batches padded to their longest text (ids trimmed after the last EOT), like transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from clipforge.apps.runtimes import open_runner, openvino_available, openvino_config

PEERS = ("ort-fp32", "ort-int8", "openvino-fp32", "openvino-int8")
CALIBRATION_IMAGES = 64


def available_peers() -> list[str]:
    return [p for p in PEERS if not p.startswith("openvino") or openvino_available()]


def calibration_batches(shared: Path, size: int, n: int = CALIBRATION_IMAGES, batch: int = 8) -> list[Tensor]:
    """The first `n` real COCO photos, preprocessed as clipforge does for `size`, in batches (static int8
    ranges; apps.backend.calibration_batches, as `--int8-calibration` takes them)."""
    from clipforge.apps.backend import calibration_batches as batches
    from clipforge.models import PreprocessConfig
    from clipforge.transforms import Preprocess

    paths = sorted((shared / "coco_captions_mini" / "images").rglob("*.jpg"))[:n]
    return batches(paths, Preprocess(PreprocessConfig(image_size=size)), n=n, batch=batch)


def prepare_onnx(model_name: str, weights: Path, shared: Path) -> Path:
    """weights/<model>-onnx/: image.onnx, text.onnx and their .int8.onnx versions (once per run)."""
    from clipforge.apps.onnx_export import export_towers, quantize_int8
    from clipforge.checkpoints import load_any

    folder = weights / f"{model_name}-onnx"
    if (folder / "text.int8.onnx").is_file():
        return folder
    model = load_any(weights / f"{model_name}.safetensors")
    paths = export_towers(model, folder)
    size = model.config.preprocess.image_size
    quantize_int8(paths["image"], calibration=calibration_batches(shared, size))
    quantize_int8(paths["text"])
    return folder


class Peer:
    """One runtime on one model's exported towers, with encode_image / encode_text like clipforge's."""

    def __init__(self, lib: str, folder: Path, threads: int, image_shape: tuple[int, ...] | None = None):
        if lib not in PEERS:
            raise ValueError(f"unknown peer {lib!r}; valid: {', '.join(PEERS)}")
        self.lib = lib
        suffix = ".int8.onnx" if lib.endswith("int8") else ".onnx"
        image, text = folder / f"image{suffix}", folder / f"text{suffix}"
        runtime = "onnxruntime" if lib.startswith("ort") else "openvino"
        self._image = open_runner(runtime, image, threads, image_shape)  # OpenVINO: static batch
        self._text = open_runner(runtime, text, threads)

    def encode_image(self, images: Tensor) -> Tensor:
        return torch.from_numpy(self._image(images.numpy()))

    def encode_text(self, tokens: Tensor) -> Tensor:
        """tokens (B, L) -> (B, E), computing only up to the longest text (EOT = the largest id)."""
        longest = int(tokens.argmax(dim=-1).max()) + 1
        return torch.from_numpy(self._text(tokens[:, :longest].numpy()))


def peer_settings(threads: int) -> dict:
    """The peers' settings, as stated in the results."""
    import onnxruntime

    settings = {
        "onnxruntime": {
            "version": onnxruntime.__version__,
            "provider": "CPUExecutionProvider",
            "intra_op_num_threads": threads,
            "inter_op_num_threads": 1,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "execution_mode": "ORT_SEQUENTIAL",
        },
        "int8": "image: static QDQ, per-channel int8 weights, uint8 activations calibrated (min/max) on "
        f"{CALIBRATION_IMAGES} COCO photos; text: dynamic (int8 weights, activations quantised per call); "
        "only weight-carrying Conv/MatMul/Gemm nodes",
    }
    if openvino_available():
        import openvino

        settings["openvino"] = {
            "version": openvino.__version__,
            "device": "CPU",
            **openvino_config(threads),
            "image_shapes": "static (reshaped to the case's batch)",
        }
    return json.loads(json.dumps(settings))
