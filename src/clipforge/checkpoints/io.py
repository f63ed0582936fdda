"""Safe checkpoint reading and clipforge's own format.

Loading never runs code from a file: safetensors is preferred, pickles go through
`torch.load(weights_only=True)` (a pickle that names any other global is refused), and
TorchScript archives are read by `clipforge.checkpoints.torchscript` without `torch.jit.load`.

clipforge's format:
  * `*.safetensors`: the model's state_dict; metadata {"format": "clipforge", "clipforge_config": JSON
    of `CLIPConfig.to_dict()`, "clipforge_extra": JSON of any extra plain values}.
  * any other suffix (`*.pt`): `torch.save({"format": "clipforge", "config": dict, "state_dict": ...,
    **extra})`, for training checkpoints whose extras (optimizer state, step) are not tensors-only.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipforge.fileio import atomic_write, atomic_write_bytes
from clipforge.models import CLIP, CLIPConfig

CLIPFORGE_FORMAT = "clipforge"


class CheckpointError(ValueError):
    """A checkpoint file or folder is malformed (empty, truncated, a header that lies, text instead of
    weights, a config that cannot describe a model); the message names the path and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path, self.problem = os.fspath(path), problem


class UnsafeCheckpointError(CheckpointError):
    """The file would run code (or reference non-weight objects) when loaded."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.path, self.problem = "", message


@dataclass
class Checkpoint:
    """A clipforge checkpoint: config, state_dict (clipforge names) and extra plain values."""

    config: CLIPConfig
    state_dict: dict[str, Tensor]
    extra: dict[str, Any] = field(default_factory=dict)


# ---- the validation layer: every weights file is read through here ------------------------------------

MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip


def sniff_file(path: str | os.PathLike) -> str:
    """'safetensors' | 'zip' (torch.save, TorchScript) | 'pickle' (legacy torch.save) from the first bytes,
    or a CheckpointError for what no checkpoint is: a missing or empty file, text, a Git LFS pointer."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", os.fspath(path))
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(path, "the file is empty (0 bytes): an interrupted download or copy?")
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(path, "is a Git LFS pointer, not the weights (run `git lfs pull`)")
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= MAX_SAFETENSORS_HEADER:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"
    text = head.decode("utf-8", "replace")
    if all(c.isprintable() or c in "\r\n\t" for c in text.rstrip("\ufffd")):
        raise CheckpointError(path, f"is a text file, not a checkpoint (it starts {text[:40]!r})")
    raise CheckpointError(path, f"not a checkpoint: unknown format (first bytes {head[:8].hex(' ')})")


def validate_safetensors(path: str | os.PathLike) -> dict:
    """The header of a safetensors file, checked against the file before any tensor is read: JSON, known
    dtypes, sizes that match shapes, offsets inside the file and covering it. CheckpointError otherwise."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(path, f"too short for a safetensors file ({size} bytes)")
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise CheckpointError(
                path,
                f"safetensors header says it is {length:,} bytes, but the file has {size - 8:,} after it: "
                "truncated, or not a safetensors file",
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "safetensors header is not a JSON object")
    data_size = size - 8 - length
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                raise CheckpointError(path, "safetensors __metadata__ must map names to strings")
            continue
        spans.append(_check_tensor_entry(path, name, entry, data_size))
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise CheckpointError(
                path, f"tensor {name!r} starts at byte {begin:,}, expected {covered:,} (gap or overlap)"
            )
        covered = end
    if covered != data_size:
        raise CheckpointError(
            path, f"the header describes {covered:,} bytes of tensor data, the file holds {data_size:,}"
        )
    return header


def _check_tensor_entry(path: Path, name: str, entry, data_size: int) -> tuple[int, int, str]:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(path, f"tensor {name!r}: header entry lacks dtype/shape/data_offsets") from None
    if dtype not in _ST_ITEMSIZE:
        raise CheckpointError(path, f"tensor {name!r}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise CheckpointError(path, f"tensor {name!r}: bad shape {shape!r}")
    if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
        raise CheckpointError(path, f"tensor {name!r}: bad data offsets {[begin, end]!r}")
    if end > data_size:
        raise CheckpointError(
            path,
            f"tensor {name!r} ends at byte {end:,} but the file holds {data_size:,} bytes of tensor data: "
            "truncated (download or copy it again)",
        )
    needed = math.prod(shape) * _ST_ITEMSIZE[dtype]
    if end - begin != needed:
        raise CheckpointError(
            path,
            f"tensor {name!r}: shape {tuple(shape)} of {dtype} needs {needed:,} bytes, the header gives {end - begin:,}",
        )
    return begin, end, name


def is_safetensors(path: str | os.PathLike) -> bool:
    """True if the file starts like a safetensors file (u64 header length + '{'), even when truncated:
    `read_safetensors` then says what is wrong with it."""
    try:
        return sniff_file(path) == "safetensors"
    except (CheckpointError, OSError):
        return False


def is_torchscript(path: str | os.PathLike) -> bool:
    """True for a TorchScript zip (it has a `code/` folder; a torch.save zip does not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors (on CPU) and the string metadata of a safetensors file, validated first."""
    from safetensors import SafetensorError, safe_open

    if sniff_file(path) != "safetensors":
        raise CheckpointError(
            path, "is not a safetensors file (its first bytes are not a safetensors header)"
        )
    validate_safetensors(path)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(path, f"unreadable safetensors file ({error})") from None
    return tensors, metadata


def read_safetensors_header(path: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """Tensor names and metadata without reading the tensors (validated like `read_safetensors`)."""
    header = validate_safetensors(path)
    return [k for k in header if k != "__metadata__"], dict(header.get("__metadata__") or {})


def torch_load_safe(path: str | os.PathLike) -> Any:
    """`torch.load` restricted to tensors and plain containers; refuses anything that runs code, and says
    which file is empty, truncated or not a torch file at all."""
    path = Path(path)
    kind = sniff_file(path)
    if kind == "safetensors":
        raise CheckpointError(path, "is a safetensors file, not a torch.save file")
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise CheckpointError(path, "truncated or damaged: a zip archive (torch.save) whose end is missing")
    if is_torchscript(path):
        raise CheckpointError(path, "is a TorchScript archive; read it with clipforge.checkpoints.openai")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(path, f"damaged pickle ({_first_line(err)})") from None
        detail = next(
            (ln for ln in str(err).splitlines() if "GLOBAL" in ln or "global" in ln), _first_line(err)
        )
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: the pickle references objects beyond tensors and plain "
            f"containers, so loading it could run code ({detail.strip()}). Convert it where you trust "
            "the source, or save weights as safetensors."
        ) from None
    except (
        EOFError,
        RuntimeError,
        OSError,
        zipfile.BadZipFile,
        KeyError,
        ValueError,
        IndexError,
        struct.error,
    ) as err:
        raise CheckpointError(
            path, f"truncated or damaged torch file ({type(err).__name__}: {_first_line(err)})"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def validate_config(config: CLIPConfig, source: str | os.PathLike, own_vocabulary: bool = False) -> None:
    """Refuse a config no model can be built from, or one the tokenizer cannot feed, naming the field.
    (Towers of other kinds, e.g. timm or HF encoders, are checked by their own builders.) A vocabulary
    smaller than the BPE tokenizer's is refused, or only warned about when `own_vocabulary` (an HF folder
    defines its own vocabulary; its tokenizer files may just not have been shipped)."""
    v, t = config.vision, config.text
    fields_: dict[str, Any] = {"embed_dim": config.embed_dim}
    if v.kind in ("vit", "resnet"):
        layers = v.layers if isinstance(v.layers, tuple) else (v.layers,)
        fields_.update(
            {"vision.width": v.width, "vision.image_size": v.image_size, "vision.heads": v.num_heads}
        )
        fields_.update({f"vision.layers[{i}]": n for i, n in enumerate(layers)})
        if v.kind == "vit":
            fields_["vision.patch_size"] = v.patch_size
    bpe_text = getattr(t, "kind", "transformer") == "transformer"
    if bpe_text:
        fields_.update({"text.width": t.width, "text.heads": t.heads, "text.layers": t.layers,
                        "text.context_length": t.context_length, "text.vocab_size": t.vocab_size})  # fmt: skip
    for name, value in fields_.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(source, f"config field {name} = {value!r}; it must be a whole number >= 1")
    if bpe_text and t.width % t.heads:
        raise CheckpointError(
            source, f"config: text.width {t.width} is not divisible by text.heads {t.heads}"
        )
    # not divisibility: the patch conv floors, as open_clip's (ViT-SO400M-14-SigLIP-384 has 384 px, 14 px patches)
    if v.kind == "vit" and v.image_size < v.patch_size:
        raise CheckpointError(
            source, f"config: vision.image_size {v.image_size} is smaller than one patch ({v.patch_size})"
        )
    if bpe_text and t.hf_tokenizer_name is None and t.vocab_size < TOKENIZER_VOCAB_SIZE:  # our BPE's ids
        problem = (
            f"the text vocabulary has {t.vocab_size} rows, but clipforge's BPE tokenizer emits ids up to "
            f"{TOKENIZER_VOCAB_SIZE - 1} (start/end of text: {TOKENIZER_VOCAB_SIZE - 2}/{TOKENIZER_VOCAB_SIZE - 1})"
        )
        if not own_vocabulary:
            raise CheckpointError(
                source, f"{problem}: a truncated embedding, or weights for another tokenizer"
            )
        warnings.warn(
            f"{source}: {problem} and no tokenizer files came with it: give it token ids, or add its "
            "tokenizer.json to the folder",
            stacklevel=4,
        )


TOKENIZER_VOCAB_SIZE = 49408


def check_finite(state_dict: dict[str, Tensor], source: str | os.PathLike) -> None:
    """Refuse weights holding NaN or infinity (every output would be NaN, or silently wrong)."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(source, f"tensor {name!r} holds {bad:,} NaN/infinite values")


def save_checkpoint(
    path: str | os.PathLike,
    model: CLIP | dict[str, Tensor],
    config: CLIPConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically save a model (or a clipforge state_dict + its config) in clipforge's format.

    `.safetensors`: extra must be JSON-serialisable. Other suffixes: a torch.save dict whose top level
    holds "format", "config", "state_dict" and the extra keys (tensors, optimizer state, ints...)."""
    path = Path(path)
    if isinstance(model, CLIP):
        config = config or model.config
        state_dict = model.state_dict()
    else:
        state_dict = model
    if config is None:
        raise ValueError(f"{path}: save_checkpoint needs a config when given a bare state_dict")
    extra = dict(extra or {})
    state_dict = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        metadata = {
            "format": CLIPFORGE_FORMAT,
            "clipforge_config": json.dumps(config.to_dict()),
            "clipforge_extra": json.dumps(extra),
        }
        return atomic_write_bytes(path, save(state_dict, metadata=metadata))
    reserved = {"format", "config", "state_dict"} & set(extra)
    if reserved:
        raise ValueError(f"{path}: extra keys {sorted(reserved)} are reserved")
    payload = {"format": CLIPFORGE_FORMAT, "config": config.to_dict(), "state_dict": state_dict, **extra}
    return atomic_write(path, lambda f: torch.save(payload, f))


def save_safetensors(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Atomically write plain safetensors (used by the foreign-format writers)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_clipforge(path: str | os.PathLike) -> Checkpoint | None:
    """The clipforge checkpoint in `path`, or None if the file is some other format."""
    path = Path(path)
    if is_safetensors(path):
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") != CLIPFORGE_FORMAT or "clipforge_config" not in metadata:
            return None
        config = _config_from(path, _metadata_json(path, metadata, "clipforge_config"))
        extra = _metadata_json(path, {"clipforge_extra": "{}", **metadata}, "clipforge_extra")
        return Checkpoint(config, tensors, extra if isinstance(extra, dict) else {})
    if is_torchscript(path) or not path.is_file():
        return None
    obj = torch_load_safe(path)
    return checkpoint_from_object(path, obj)


def checkpoint_from_object(path: str | os.PathLike, obj: Any) -> Checkpoint | None:
    """Interpret an already-loaded pickle as a clipforge checkpoint (None if it is not one)."""
    if not (isinstance(obj, dict) and "config" in obj and "state_dict" in obj):
        return None
    if obj.get("format", CLIPFORGE_FORMAT) != CLIPFORGE_FORMAT:
        return None
    if not isinstance(obj["config"], dict):
        raise CheckpointError(
            path, f"its 'config' is a {type(obj['config']).__name__}, not a mapping of config fields"
        )
    extra = {k: v for k, v in obj.items() if k not in ("format", "config", "state_dict")}
    return Checkpoint(_config_from(path, obj["config"]), dict(obj["state_dict"]), extra)


def _metadata_json(path: str | os.PathLike, metadata: dict[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"safetensors metadata {key!r} is not valid JSON ({error.msg})") from None


def _config_from(path: str | os.PathLike, data: dict) -> CLIPConfig:
    if not isinstance(data, dict):
        raise CheckpointError(path, f"clipforge config is a {type(data).__name__}, not an object")
    try:
        config = CLIPConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(path, f"bad clipforge config: {err}") from None
    validate_config(config, path)
    return config


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a clipforge checkpoint (safetensors or .pt); error if the file is another format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    checkpoint = read_clipforge(path)
    if checkpoint is None:
        raise ValueError(
            f"{path}: not a clipforge checkpoint (no config inside); use clipforge.checkpoints.load_any "
            "for OpenAI / open_clip / HF files"
        )
    return checkpoint


def check_state_dict(
    expected: dict[str, Tensor],
    tensors: dict[str, Tensor],
    source: str | os.PathLike,
    architecture: str,
    droppable: tuple[str, ...] = (),
) -> None:
    """Raise unless `tensors` has exactly the keys and shapes of `expected` (a module's state_dict).

    BatchNorm's `num_batches_tracked` may be missing; file tensors whose names start with `droppable`
    may be extra. The message names the first keys and the counts."""
    missing = [k for k in expected if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in expected and not k.startswith(droppable)]
    if missing or unexpected:
        raise ValueError(
            f"{source}: state_dict does not match the {architecture} architecture: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    for key, value in expected.items():
        if key in tensors and tuple(tensors[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                f"the config needs {tuple(value.shape)}"
            )


def model_from_state(
    config: CLIPConfig, state_dict: dict[str, Tensor], source: str | os.PathLike, own_vocabulary: bool = False
) -> CLIP:
    """Build `CLIP(config)` and load a clipforge-named state_dict, keeping the file's dtype.

    Only BatchNorm's `num_batches_tracked` may be missing; any other mismatch names the keys. The config
    must describe a buildable model the tokenizer can feed (see validate_config), and every weight must be
    finite."""
    validate_config(config, source, own_vocabulary)
    check_finite(state_dict, source)
    # Built on the meta device (no memory, no init time), except ecosystem towers: timm / transformers
    # modules hold non-persistent buffers (position ids, ...) that a state_dict cannot fill.
    external = config.vision.kind == "timm" or config.text.kind == "hf"
    with torch.device("cpu" if external else "meta"):
        model = CLIP(config)
    expected = model.state_dict()
    check_state_dict(expected, state_dict, source, describe(config))
    full = dict(state_dict)
    for key in expected:
        full.setdefault(key, torch.zeros((), dtype=torch.long))
    model.load_state_dict(full, assign=True)
    return model.eval()


def load_model_file(path: str | os.PathLike) -> CLIP:
    """A CLIP model from a clipforge checkpoint file (eval mode, CPU, the file's dtype)."""
    checkpoint = load_checkpoint(path)
    return model_from_state(checkpoint.config, checkpoint.state_dict, path)


def describe(config: CLIPConfig) -> str:
    from clipforge.models.config import PRESETS

    name = next((n for n, c in PRESETS.items() if c == config), None)
    return f"preset {name!r}" if name else f"{config.vision.kind} config (embed_dim={config.embed_dim})"
