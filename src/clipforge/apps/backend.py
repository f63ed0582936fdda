"""Which runtime runs a model's towers in the apps (`classify`, `embed`, `serve`): PyTorch, ONNX Runtime or
OpenVINO, with the image tower in fp32 or int8.

The rule `auto` follows, from the measurements in docs/performance.md ("The product's default"): on CPU,
both towers run as clipforge's own exported fp32 graphs on the first runtime of `AUTO_ORDER` that is
installed: the image tower's graph, and the text tower's graph over shared-prefix packs (models.prefix: the
same positions PyTorch's bulk encoding computes, on the runtime's kernels) when the tower shares prefixes
(causal, pooled at EOT; other text towers stay PyTorch). On CUDA, or with neither runtime installed,
everything stays PyTorch. The model's own weights are never rewritten (outputs record their fingerprint;
the runtimes fold BatchNorm into the convolutions themselves), so `optimize_for_inference` is not applied.

fp32: each runtime graph is checked against PyTorch before it is used (random images; real-looking texts):
unit features differ by at most `TOLERANCE`, else an explicit backend is an error and `auto` falls back to
PyTorch with a warning. int8 (`int8_calibration`: batches of real preprocessed images): the exported image
graph is quantised statically (apps.onnx_export.quantize_int8: per-channel int8 weights, activation ranges
from those images) and must keep a mean cosine of at least `INT8_MIN_COSINE` with PyTorch's features on
them, else it is an error: int8 is a choice the user makes, never a silent one. Texts stay fp32.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.apps.runtimes import Runner, open_runner

Backend = Literal["auto", "torch", "onnx", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")
RUNTIME_OF = {"onnx": "onnxruntime", "openvino": "openvino"}  # backend -> apps.runtimes runtime
AUTO_ORDER = ("openvino", "onnx")  # auto on CPU: the first installed (docs/performance.md)
TOLERANCE = 1e-5  # max |unit features, runtime - PyTorch| accepted (fp32)
INT8_MIN_COSINE = 0.99  # mean cosine of int8 features with PyTorch's, on the calibration images
CALIBRATION_IMAGES = 64
PROBE_TEXTS = ("a photo of a dog.", "a photo of a big red bicycle on a street.", "a photo of a cat", "x")


class RuntimeCLIP:
    """`model` with `encode_image` (when `image` is given) and shared-prefix text encoding (`encode_packed`,
    which clipforge.encode uses; when `text` is given) run by a runtime on its exported graphs; everything
    else (logit scale, config, parameters, eval(), `encode_text`) is the PyTorch model's own. `backend`
    names what runs the image tower, e.g. 'openvino' or 'onnx-int8' (the service's /health reports it)."""

    def __init__(
        self, model: nn.Module, backend: str, image: Runner | None, text: Runner | None, runtime: str
    ):
        self._model = model
        self._image, self._text = image, text
        self.backend = backend if image is not None else "torch"
        self.text_backend = runtime if text is not None else "torch"

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy/pickle probe attributes before __init__ has run
            raise AttributeError(name)
        return getattr(self._model, name)

    def eval(self) -> RuntimeCLIP:  # the apps call model.eval(): keep the wrapper, not the bare model
        self._model.eval()
        return self

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:  # (B, 3, S, S) -> (B, E)
        if self._image is None:
            return self._model.encode_image(images, normalize=normalize)
        features = torch.from_numpy(self._image(images.detach().float().cpu().numpy()))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_packed(self, pack) -> Tensor:
        """models.prefix.PrefixPack -> (T, E) projected features in `pack.texts` order (as
        TextTransformer.forward_packed)."""
        if self._text is None:
            return self._model.text.forward_packed(pack)
        arrays = (pack.tokens.numpy(), pack.positions.numpy(), pack.mask.numpy(), pack.eot.numpy())
        features = torch.from_numpy(self._text(*arrays))  # (R, Q, E)
        return features.reshape(-1, features.shape[-1])[pack.slots]


def _on_cpu(model: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in model.parameters())


def _check_fp32(name: str, got: Tensor, want: Tensor) -> None:
    diff = float((got - want).abs().max())
    if not diff <= TOLERANCE:  # NaN fails too
        raise ValueError(f"{name} features differ from PyTorch by {diff:.2e} > {TOLERANCE}")


def runtime_model(
    model: nn.Module,
    backend: str = "onnx",
    threads: int | None = None,
    int8_calibration: Sequence[Tensor] | None = None,
    images: bool = True,
    texts: bool = True,
) -> RuntimeCLIP:
    """Export the image tower (`images`; int8-quantised on `int8_calibration` when given) and the packed
    text tower (`texts`, when the tower shares prefixes) to temporary files, open them with `backend`'s
    runtime (`threads`, default torch's) and check them against `model` (ValueError when a check fails:
    see the module docstring)."""
    from clipforge.apps.onnx_export import export_image_tower, export_packed_text_tower, quantize_int8
    from clipforge.encode import encode_tokens
    from clipforge.tokenizer import tokenizer_for

    if backend not in RUNTIME_OF:
        raise ValueError(f"backend {backend!r}: a runtime backend is one of {', '.join(RUNTIME_OF)}")
    runtime, threads = RUNTIME_OF[backend], threads or torch.get_num_threads()
    texts = texts and getattr(model.text, "shares_prefixes", False)
    image_run = text_run = None
    with tempfile.TemporaryDirectory(prefix="clipforge-onnx-") as folder:
        if images:
            path = export_image_tower(model, Path(folder) / "image.onnx")
            if int8_calibration is not None:
                path = quantize_int8(path, calibration=list(int8_calibration))
            image_run = open_runner(runtime, path, threads)  # the runtimes read the file into memory
        if texts:
            text_run = open_runner(
                runtime, export_packed_text_tower(model, Path(folder) / "text.onnx"), threads
            )
    int8 = images and int8_calibration is not None
    wrapped = RuntimeCLIP(model, f"{backend}-int8" if int8 else backend, image_run, text_run, backend)
    with torch.inference_mode():
        if texts:
            tokens = tokenizer_for(model)(list(PROBE_TEXTS))
            want = encode_tokens(model, tokens)  # PyTorch's own packed encoding, unit features
            _check_fp32(f"{backend} text", encode_tokens(wrapped, tokens), want)
        if images and not int8:
            size = model.config.preprocess.image_size
            probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
            want = model.encode_image(probe, normalize=True).float()
            _check_fp32(f"{backend} image", wrapped.encode_image(probe, normalize=True), want)
        if int8:
            probe = torch.cat(list(int8_calibration))
            want = model.encode_image(probe, normalize=True).float()
            cosine = float((wrapped.encode_image(probe, normalize=True) * want).sum(-1).mean())
            if not cosine >= INT8_MIN_COSINE:
                raise ValueError(
                    f"{backend} int8 image features keep a mean cosine of {cosine:.4f} with PyTorch's on the "
                    f"calibration images, below {INT8_MIN_COSINE}: int8 would change results; run fp32"
                )
    return wrapped


def calibration_batches(
    paths: Sequence[str | Path], preprocess, n: int = CALIBRATION_IMAGES, batch: int = 8
) -> list[Tensor]:
    """Up to `n` images (evenly spaced over `paths`, decoded as the apps decode them) preprocessed for the
    model, in batches: the real inputs static int8 takes its activation ranges from. Unreadable files are
    skipped with a warning that counts them."""
    from clipforge.decode import ImageError, open_image

    step = max(1, len(paths) // n)
    images, skipped = [], []
    for path in list(paths)[::step]:
        if len(images) == n:
            break
        try:
            images.append(preprocess(open_image(path)))
        except ImageError as error:
            skipped.append(str(error))  # names the file
    if skipped:
        warnings.warn(
            f"int8 calibration skipped {len(skipped)} unreadable image(s), first: {skipped[0]}", stacklevel=2
        )
    if not images:
        raise ValueError(f"int8 calibration needs at least one readable image ({len(paths)} given)")
    return list(torch.stack(images).split(batch))


def _auto_backend() -> str | None:
    from clipforge.extras import installed

    needs = {"openvino": ("onnx", "openvino"), "onnx": ("onnx", "onnxruntime")}  # the exporter needs onnx
    return next((b for b in AUTO_ORDER if all(installed(m) for m in needs[b])), None)


def use_backend(
    model: nn.Module,
    backend: Backend = "auto",
    images: bool = True,
    int8_calibration: Sequence[Tensor] | None = None,
    texts: bool = True,
) -> nn.Module | RuntimeCLIP:
    """The model the apps should call, per the rule in this module's docstring. `images` / `texts`: whether
    the command will run that tower (what it will not run is not exported). `model` itself is unchanged."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    int8 = int8_calibration is not None
    if int8 and (backend == "torch" or not images):
        raise ValueError(
            "int8 quantises the image tower on ONNX Runtime or OpenVINO: use --backend auto, onnx or openvino"
            if images
            else "int8 quantises the image tower; this command runs only texts"
        )
    texts = texts and getattr(model.text, "shares_prefixes", False)
    if backend == "torch" or not (images or texts):
        return model
    if not _on_cpu(model):
        if backend == "auto" and not int8:
            return model
        device = next(model.parameters()).device
        raise ValueError(
            f"backend {backend!r}{' (int8)' if int8 else ''} runs on CPU, the model is on {device}: "
            "use --device cpu, or 'torch' / 'auto' in fp32 there"
        )
    chosen = backend if backend != "auto" else _auto_backend()
    if backend != "auto" or int8:
        if chosen is None:
            raise ImportError("int8 needs onnxruntime or openvino: pip install 'clipforge[apps]'")
        return runtime_model(model, chosen, int8_calibration=int8_calibration, images=images, texts=texts)
    if chosen is None:
        return model  # neither runtime installed (the apps extra): PyTorch, as documented
    try:
        return runtime_model(model, chosen, images=images, texts=texts)
    except ImportError:
        return model
    except Exception as error:  # an architecture the exporter cannot trace, or outputs that disagree
        warnings.warn(f"backend auto: {chosen} not used ({error}); running PyTorch", stacklevel=2)
        return model
