"""Which runtime runs a model's towers in the apps (`classify`, `embed`, `serve`): PyTorch, ONNX Runtime or
OpenVINO, with the image tower in fp32 or int8.

The rule `auto` follows, from the measurements in docs/performance.md ("The product's default"): on CPU,
both towers run as clipforge's own exported fp32 graphs: the image tower's graph, and the text tower's graph
over shared-prefix packs (models.prefix: the same positions PyTorch's bulk encoding computes, on the
runtime's kernels) when the tower shares prefixes (causal, pooled at EOT; other text towers stay PyTorch).
Each tower takes the first installed runtime of `auto_order`: OpenVINO before ONNX Runtime, except a
ModifiedResNet image tower in fp32, which ONNX Runtime runs faster (in int8 OpenVINO again: its int8
convolutions pay where ONNX Runtime's do not). On CUDA, or with neither runtime installed, everything stays
PyTorch. The model's own weights are never rewritten (outputs record their fingerprint; the runtimes fold
BatchNorm into the convolutions themselves), so `optimize_for_inference` is not applied.

fp32: each runtime graph is checked against PyTorch before it is used (random images; four texts): unit
features differ by at most `TOLERANCE`, else an explicit backend is an error and `auto` falls back to
PyTorch with a warning. int8 (`int8_calibration`: batches of real preprocessed images): the exported image
graph is quantised statically (apps.onnx_export.quantize_int8: per-channel int8 weights, activation ranges
from those images) and must keep a mean cosine of at least `INT8_MIN_COSINE` with PyTorch's features on
them, else it is an error: int8 is a choice the user makes, never a silent one. The first layers of a
trunk carry most of the int8 error of MobileNet-style towers (EfficientNet-Lite0: its stem and first
depthwise conv in fp32 take cosine 0.973 -> 0.989 at ~4% of the FLOPs; benchmarks/results/
int8_float_layers.md), so the graph is quantised with the first 0, 1, 2, 3, 5, 8 weight layers left fp32
(`INT8_FLOAT_STEPS`) until the features keep a mean cosine of `INT8_MIN_COSINE` both on the calibration
images and on their low-resolution versions (`low_resolution`: smooth inputs are where int8 loses most, and
the images a command runs may be smoother than the calibration's); `RuntimeCLIP.int8` records the step; none
does: the error. That line is where zero-shot holds: on the caption demo's tower, steps below cosine 0.99
changed top-1 on the train splits by up to 1.2-2.4 points, those above by at most 0.8 (benchmarks.
int8_float_layers); the low-resolution check keeps Flickr8k-calibrated int8 from losing 1.6-1.9 points on
CIFAR-10's upsampled 32-px images (benchmarks.int8_calibration). Texts stay fp32.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.apps.runtimes import Runner, open_runner

Backend = Literal["auto", "torch", "onnx", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")
RUNTIME_OF = {"onnx": "onnxruntime", "openvino": "openvino"}  # backend -> apps.runtimes runtime
TOLERANCE = 1e-5  # max |unit features, runtime - PyTorch| accepted (fp32)
INT8_MIN_COSINE = 0.99  # mean cosine of int8 features with PyTorch's, calibration images and low-res versions
INT8_LOW_RES_FACTOR = 4  # low_resolution: the calibration images at 1/4 of their size, upsampled back
INT8_FLOAT_STEPS = (0, 1, 2, 3, 5, 8)  # leading weight layers kept fp32, tried in turn (quantize_int8)
CALIBRATION_IMAGES = 64
PROBE_TEXTS = ("a photo of a dog.", "a photo of a big red bicycle on a street.", "a photo of a cat", "x")


class RuntimeCLIP:
    """`model` with `encode_image` (when `image` is given) and shared-prefix text encoding (`encode_packed`,
    which clipforge.encode uses; when `text` is given) run by a runtime on its exported graphs; everything
    else (logit scale, config, parameters, eval(), `encode_text`) is the PyTorch model's own. `backend`
    names what runs the image tower, e.g. 'openvino' or 'onnx-int8' (the service's /health reports it)."""

    def __init__(
        self, model: nn.Module, image: Runner | None, text: Runner | None, backend: str, text_backend: str
    ):
        self._model = model
        self._image, self._text = image, text
        self.backend = backend if image is not None else "torch"
        self.text_backend = text_backend if text is not None else "torch"
        self.int8: dict | None = None  # {"cosine", "float_layers"} of an int8 image tower (_int8_image)

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
    image: str | None = "onnx",
    text: str | None = "onnx",
    threads: int | None = None,
    int8_calibration: Sequence[Tensor] | None = None,
) -> RuntimeCLIP:
    """Export the image tower (when `image` names a runtime backend, 'onnx' or 'openvino'; int8-quantised on
    `int8_calibration` when given) and the packed text tower (when `text` names one and the tower shares
    prefixes) to temporary files, open them with those runtimes (`threads`, default torch's) and check them
    against `model` (ValueError when a check fails: see the module docstring)."""
    from clipforge.apps.onnx_export import export_image_tower, export_packed_text_tower
    from clipforge.encode import encode_tokens
    from clipforge.tokenizer import tokenizer_for

    for backend in (image, text):
        if backend is not None and backend not in RUNTIME_OF:
            raise ValueError(f"backend {backend!r}: a runtime backend is one of {', '.join(RUNTIME_OF)}")
    threads = threads or torch.get_num_threads()
    texts = text is not None and getattr(model.text, "shares_prefixes", False)
    int8 = image is not None and int8_calibration is not None
    image_run = text_run = int8_report = None
    with tempfile.TemporaryDirectory(prefix="clipforge-onnx-") as folder:
        if image is not None:
            path = export_image_tower(model, Path(folder) / "image.onnx")
            if int8:
                image_run, int8_report = _int8_image(model, path, image, threads, list(int8_calibration))
            else:  # the runtimes read the file into memory
                image_run = open_runner(RUNTIME_OF[image], path, threads)
        if texts:
            path = export_packed_text_tower(model, Path(folder) / "text.onnx")
            text_run = open_runner(RUNTIME_OF[text], path, threads)
    wrapped = RuntimeCLIP(model, image_run, text_run, f"{image}-int8" if int8 else str(image), str(text))
    wrapped.int8 = int8_report
    with torch.inference_mode():
        if texts:
            tokens = tokenizer_for(model)(list(PROBE_TEXTS))
            want = encode_tokens(model, tokens)  # PyTorch's own packed encoding, unit features
            _check_fp32(f"{text} text", encode_tokens(wrapped, tokens), want)
        if image is not None and not int8:
            size = model.config.preprocess.image_size
            probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
            want = model.encode_image(probe, normalize=True).float()
            _check_fp32(f"{image} image", wrapped.encode_image(probe, normalize=True), want)
    return wrapped


def low_resolution(images: Tensor, factor: int = INT8_LOW_RES_FACTOR) -> Tensor:
    """`images` (N, 3, H, W) seen at 1/`factor` of their resolution (area average), upsampled back (bicubic):
    smooth, low-detail inputs (thumbnails, small photos), where int8 loses the most."""
    size = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, size[0] // factor), max(1, size[1] // factor)), mode="area")
    return F.interpolate(small, size=size, mode="bicubic", align_corners=False)


def int8_fidelity(model: nn.Module, images: Tensor) -> Callable[[Callable[[Tensor], Tensor]], float]:
    """A scorer of an int8 image encoder (a tensor -> features function): the lower of its mean cosines with
    `model`'s unit features on `images` and on `low_resolution(images)`."""
    inputs = (images, low_resolution(images))
    with torch.inference_mode():
        want = [model.encode_image(x, normalize=True).float() for x in inputs]

    def score(encode: Callable[[Tensor], Tensor]) -> float:
        return min(
            float((F.normalize(encode(x).float(), dim=-1) * w).sum(-1).mean()) for x, w in zip(inputs, want)
        )

    return score


def int8_steps(
    model: nn.Module, path: Path, backend: str, threads: int, calibration: list[Tensor]
) -> Iterator[tuple[int, Runner, float]]:
    """The exported image graph `path` quantised statically on `calibration` with the first k weight layers
    left fp32, for k in `INT8_FLOAT_STEPS` in turn (lazily: each step is built when asked for): (k, runner,
    `int8_fidelity` on those images)."""
    from clipforge.apps.onnx_export import quantize_int8, weight_nodes

    layers = len(weight_nodes(path))
    score = int8_fidelity(model, torch.cat(calibration))
    for kept in (k for k in INT8_FLOAT_STEPS if k < layers):
        out = quantize_int8(path, path.with_name(f"{path.stem}.int8-{kept}.onnx"), calibration, kept)
        run = open_runner(RUNTIME_OF[backend], out, threads)  # read into memory
        yield kept, run, score(lambda x, run=run: torch.from_numpy(run(x.numpy())))


def _int8_image(
    model: nn.Module, path: Path, backend: str, threads: int, calibration: list[Tensor]
) -> tuple[Runner, dict]:
    """The first of `int8_steps` whose features keep a mean cosine of `INT8_MIN_COSINE` with PyTorch's on
    the calibration images and on their low-resolution versions: (runner, {"cosine", "float_layers"}).
    ValueError when none does."""
    best = float("nan")
    for kept, run, cosine in int8_steps(model, path, backend, threads, calibration):
        if cosine >= INT8_MIN_COSINE:
            return run, {"cosine": round(cosine, 4), "float_layers": kept}
        if cosine > best or best != best:  # the best so far, for the error (NaN never wins)
            best = cosine
    raise ValueError(
        f"{backend} int8 image features keep a mean cosine of at most {best:.4f} with PyTorch's on the "
        f"calibration images or their low-resolution versions (with the first 0-{INT8_FLOAT_STEPS[-1]} "
        f"layers in fp32), below {INT8_MIN_COSINE}: int8 would change results; run fp32"
    )


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


def auto_order(model: nn.Module, part: str, int8: bool = False) -> tuple[str, ...]:
    """The runtime backends `auto` tries for a tower (`part`: 'image' or 'text'), the first installed wins
    (measured: docs/performance.md, benchmarks/results/backend.md)."""
    from clipforge.models.resnet import ModifiedResNet

    if part == "image" and not int8 and isinstance(getattr(model, "visual", None), ModifiedResNet):
        return ("onnx", "openvino")
    return ("openvino", "onnx")


def _installed(backend: str) -> bool:
    from clipforge.extras import installed

    return installed("onnx") and installed(RUNTIME_OF[backend])  # the exporter needs onnx


def _auto(model: nn.Module, part: str, int8: bool = False) -> str | None:
    return next((b for b in auto_order(model, part, int8) if _installed(b)), None)


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
    if backend != "auto":
        image, text = backend if images else None, backend if texts else None
        return runtime_model(model, image, text, int8_calibration=int8_calibration)
    image = _auto(model, "image", int8) if images else None
    text = _auto(model, "text") if texts else None
    if int8:
        if image is None:
            raise ImportError("int8 needs onnxruntime or openvino: pip install 'clipforge[apps]'")
        return runtime_model(model, image, text, int8_calibration=int8_calibration)
    if image is None and text is None:
        return model  # neither runtime installed (the apps extra): PyTorch, as documented
    try:
        return runtime_model(model, image, text)
    except ImportError:
        return model
    except Exception as error:  # an architecture the exporter cannot trace, or outputs that disagree
        warnings.warn(f"backend auto: {image or text} not used ({error}); running PyTorch", stacklevel=2)
        return model
