"""Hugging Face Hub downloads through `huggingface_hub`: its cache, offline mode and revisions, plus SHA256.

`hf-hub:org/name` (or `hf-hub:org/name@revision`, a branch, tag or commit) names a Hub repo in open_clip's layout
(open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin) or a transformers folder
(config.json + model.safetensors or pytorch_model.bin). Files go to huggingface_hub's cache (HF_HUB_CACHE, else
HF_HOME/hub, else ~/.cache/huggingface/hub), which open_clip and transformers share. Offline (HF_HUB_OFFLINE=1,
CLIPFORGE_OFFLINE=1 or offline=True) reads the cache only. HF_ENDPOINT, HF_HUB_CACHE and the offline switches
are read at each call.

SHA256: the Hub gives every LFS file (the weights) its SHA256 as ETag and huggingface_hub stores the blob under
that name (the cache links snapshots to blobs, as on Linux and macOS), but does not hash the bytes it received.
clipforge hashes each LFS file at every use (as it does for URL downloads) against that name; a mismatch
removes the file from the cache, fetches it once more when online, and is a ChecksumError if it is still wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from clipforge.checkpoints.download import ChecksumError, offline_mode, sha256_file

HUB_PREFIX = "hf-hub:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_EXTRA_FILES = (  # read by the HF loaders when present
    "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "spiece.model",
)  # fmt: skip
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class HubRepo:
    repo_id: str  # "org/name"
    revision: str | None = None  # branch, tag or commit; None: the default branch

    @property
    def spec(self) -> str:
        return HUB_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(HUB_PREFIX)


def parse_hub_spec(spec: str) -> HubRepo:
    """'hf-hub:org/name' or 'hf-hub:org/name@revision' -> HubRepo."""
    repo_id, _, revision = spec.removeprefix(HUB_PREFIX).partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (spec.count("@") and not revision):
        raise ValueError(f"{spec!r}: expected 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
    return HubRepo(repo_id, revision or None)


def hub_offline(offline: bool | None = None) -> bool:
    """`offline` if given, else on when CLIPFORGE_OFFLINE or HF_HUB_OFFLINE says so."""
    if offline is not None:
        return offline
    hub_constants = _huggingface_hub().constants
    return (
        offline_mode()
        or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
        or bool(hub_constants.HF_HUB_OFFLINE)
    )


def hub_cache_dir() -> str | None:
    """huggingface_hub's cache folder from the environment now (None: its default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None


def _huggingface_hub():
    from clipforge.extras import require

    return require("huggingface_hub", "Hub downloads (hf-hub: models and most pretrained tags)")


def hub_file(
    repo: HubRepo, names: Sequence[str], offline: bool | None = None, required: bool = True
) -> Path | None:
    """The first of `names` that `repo` holds, from the cache or downloaded, SHA256-checked (see the module
    docstring). None if none exists and not `required`; otherwise a FileNotFoundError naming what was tried."""
    _huggingface_hub()
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from clipforge import __version__

    local = hub_offline(offline)
    for name in names:
        try:
            path = _download(repo, name, local, __version__)
        except LocalEntryNotFoundError as error:
            if local:
                continue  # not in the cache: try the next name
            raise ConnectionError(
                f"{repo.spec}: cannot reach the Hub ({_endpoint_name()}) and {name} is not in the cache: {error}"
            ) from None
        except EntryNotFoundError:
            continue  # the repo has no such file
        except RevisionNotFoundError:
            raise FileNotFoundError(
                f"{repo.spec}: the repository has no revision {repo.revision!r}"
            ) from None
        except RepositoryNotFoundError:
            raise FileNotFoundError(
                f"{repo.spec}: no such repository on {_endpoint_name()} (or it is private or gated: log in "
                "with `hf auth login`)"
            ) from None
        return _verified(repo, name, path, local, __version__)
    if not required:
        return None
    where = (
        "in the cache, and offline mode is on (HF_HUB_OFFLINE / CLIPFORGE_OFFLINE / offline=True)"
        if local
        else f"in the repository at revision {repo.revision or 'main'}"
    )
    raise FileNotFoundError(f"{repo.spec}: none of {', '.join(names)} found {where}")


def _endpoint_name() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _download(repo: HubRepo, name: str, local: bool, version: str, force: bool = False) -> Path:
    path = _huggingface_hub().hf_hub_download(
        repo.repo_id,
        name,
        revision=repo.revision,
        cache_dir=hub_cache_dir(),
        endpoint=os.environ.get("HF_ENDPOINT") or None,
        local_files_only=local,
        force_download=force,
        library_name="clipforge",
        library_version=version,
    )
    return Path(path)


def _verified(repo: HubRepo, name: str, path: Path, local: bool, version: str) -> Path:
    """`path` if its bytes have the SHA256 its LFS blob is named by; see the module docstring."""
    for attempt in range(2):
        expected = _lfs_sha256(path)
        if not expected:
            return path  # a small git file (a config): the Hub publishes no SHA256 for it
        actual = sha256_file(path)
        if actual == expected:
            return path
        if local:
            raise ChecksumError(
                f"{repo.spec}/{name}: the cached file {path} has SHA256 {actual}, not the Hub's {expected}; "
                "delete it or turn offline mode off to fetch it again"
            )
        for stale in (path, Path(os.path.realpath(path))):  # the snapshot link and its blob
            stale.unlink(missing_ok=True)
        if attempt == 0:
            path = _download(repo, name, local, version, force=True)
    raise ChecksumError(
        f"{repo.spec}/{name}: downloaded bytes have SHA256 {actual}, not the Hub's {expected}, twice; "
        "removed from the cache"
    )


def _lfs_sha256(path: Path) -> str:
    """The SHA256 the Hub gave for an LFS file: huggingface_hub names the blob a snapshot links to by its ETag,
    which is the SHA256 for LFS files (a git SHA1 for others). '' if not an LFS file or the cache has no links."""
    blob_name = Path(os.path.realpath(path)).name
    return blob_name if _SHA256_NAME.fullmatch(blob_name) else ""


def pinned(repo: HubRepo, file: Path) -> HubRepo:
    """`repo` at the commit `file` was read from (snapshots/<commit>/<name>), so that a repo's files come
    from one commit even if its branch moves."""
    if file.parent.parent.name == "snapshots":
        return replace(repo, revision=file.parent.name)
    return repo


def weight_candidates(filename: str) -> tuple[str, ...]:
    """The files to try for a registry entry's `hf_file`, safetensors first, as open_clip does."""
    if filename in ("", OPEN_CLIP_WEIGHTS[1]):
        return OPEN_CLIP_WEIGHTS
    stem, dot, suffix = filename.rpartition(".")
    if dot and suffix in ("bin", "pth"):
        return (f"{stem}.safetensors", filename)
    return (filename,)


def fetch_hub_config(spec: str, offline: bool | None = None) -> tuple[HubRepo, Path]:
    """The model config of the repo `spec` ('hf-hub:org/name[@revision]') names -- open_clip_config.json,
    else a transformers config.json -- and the repo pinned to the commit it came from, for the other files."""
    repo = parse_hub_spec(spec)
    config = hub_file(repo, (OPEN_CLIP_CONFIG, HF_CONFIG), offline)
    return pinned(repo, config), config


def fetch_hf_folder(repo: HubRepo, offline: bool | None = None) -> Path:
    """A transformers model folder's weights and the extra files its loaders read, when the repo has them."""
    weights = hub_file(repo, HF_WEIGHTS, offline)
    for name in HF_EXTRA_FILES:
        hub_file(repo, (name,), offline, required=False)
    return weights
