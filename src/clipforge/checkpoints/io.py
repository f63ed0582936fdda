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

import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipforge.fileio import atomic_write, atomic_write_bytes
from clipforge.models import CLIP, CLIPConfig

CLIPFORGE_FORMAT = "clipforge"


class UnsafeCheckpointError(ValueError):
    """The file would run code (or reference non-weight objects) when loaded."""


@dataclass
class Checkpoint:
    """A clipforge checkpoint: config, state_dict (clipforge names) and extra plain values."""

    config: CLIPConfig
    state_dict: dict[str, Tensor]
    extra: dict[str, Any] = field(default_factory=dict)


def is_safetensors(path: str | os.PathLike) -> bool:
    """True if the file starts with a safetensors header (u64 length + JSON object)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size < 10:
        return False
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return length <= path.stat().st_size and f.read(1) == b"{"


def is_torchscript(path: str | os.PathLike) -> bool:
    """True for a TorchScript zip (it has a `code/` folder; a torch.save zip does not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors (on CPU) and the string metadata of a safetensors file."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = dict(f.metadata() or {})
        for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            tensors[key] = f.get_tensor(key)
    return tensors, metadata


def read_safetensors_header(path: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """Tensor names and metadata without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return list(f.keys()), dict(f.metadata() or {})


def torch_load_safe(path: str | os.PathLike) -> Any:
    """`torch.load` restricted to tensors and plain containers; refuses anything that runs code."""
    path = Path(path)
    if is_torchscript(path):
        raise ValueError(f"{path}: is a TorchScript archive; read it with clipforge.checkpoints.openai")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        detail = next((ln for ln in str(err).splitlines() if "GLOBAL" in ln or "global" in ln), first_line)
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: the pickle references objects beyond tensors and plain "
            f"containers, so loading it could run code ({detail.strip()}). Convert it where you trust "
            "the source, or save weights as safetensors."
        ) from None


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
        config = _config_from(path, json.loads(metadata["clipforge_config"]))
        return Checkpoint(config, tensors, json.loads(metadata.get("clipforge_extra", "{}")))
    if is_torchscript(path) or not path.is_file():
        return None
    obj = torch_load_safe(path)
    return checkpoint_from_object(path, obj)


def checkpoint_from_object(path: str | os.PathLike, obj: Any) -> Checkpoint | None:
    """Interpret an already-loaded pickle as a clipforge checkpoint (None if it is not one)."""
    if not (isinstance(obj, dict) and "config" in obj and "state_dict" in obj):
        return None
    if obj.get("format", CLIPFORGE_FORMAT) != CLIPFORGE_FORMAT or not isinstance(obj["config"], dict):
        return None
    extra = {k: v for k, v in obj.items() if k not in ("format", "config", "state_dict")}
    return Checkpoint(_config_from(path, obj["config"]), dict(obj["state_dict"]), extra)


def _config_from(path: str | os.PathLike, data: dict) -> CLIPConfig:
    try:
        return CLIPConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: bad clipforge config: {err}") from None


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


def model_from_state(config: CLIPConfig, state_dict: dict[str, Tensor], source: str | os.PathLike) -> CLIP:
    """Build `CLIP(config)` and load a clipforge-named state_dict, keeping the file's dtype.

    Only BatchNorm's `num_batches_tracked` may be missing; any other mismatch names the keys."""
    # Built on the meta device (no memory, no init time), except ecosystem towers: timm / transformers
    # modules hold non-persistent buffers (position ids, ...) that a state_dict cannot fill.
    external = config.vision.kind == "timm" or config.text.kind == "hf"
    with torch.device("cpu" if external else "meta"):
        model = CLIP(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{source}: state_dict does not match the {describe(config)} architecture: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    for key, value in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source}: tensor {key!r} has shape {tuple(state_dict[key].shape)}, "
                f"the config needs {tuple(value.shape)}"
            )
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
