"""Which model made an output, and the check that it is the model reading it back.

`embed` records the model in embeddings.json (`model`: how to load it, `weights`: a fingerprint of its
weights); `index` copies both into index.json; `search` and `serve --index` load that model when none is
given and refuse a different one (vectors of another model score meaningless neighbours).

A model source is a dict: {"checkpoint": path[, "model": architecture name]}, {"name": preset,
"pretrained": tag}, or {"name": preset, "random_weights": true} (recorded, but never reloadable).
"""

from __future__ import annotations

import os
from pathlib import Path


def weights_id(model) -> str:
    """Short fingerprint of every weight of the model (sha256, the zero-shot cache's fingerprint)."""
    from clipforge.zeroshot.classifier import weights_fingerprint

    return weights_fingerprint(model)[:32]


def describe_source(source) -> str:
    if isinstance(source, dict):
        if "checkpoint" in source:
            return f"checkpoint {source['checkpoint']}"
        if source.get("random_weights"):
            return f"{source.get('name')} with random weights"
        return f"{source.get('name')} pretrained={source.get('pretrained')}"
    return repr(source) if source else "an unrecorded model"


def load_recorded(source, device: str, recorded_in: str | os.PathLike):
    """(model, preprocess) for a recorded model source, or a ValueError saying why it cannot be reloaded."""
    from clipforge.factory import load, load_model

    where = os.fspath(recorded_in)
    if not isinstance(source, dict) or not source:
        raise ValueError(
            f"{where} does not record a loadable model; give --checkpoint or --model/--pretrained"
        )
    if source.get("random_weights"):
        raise ValueError(
            f"{where} was made with {describe_source(source)}, which cannot be loaded again; give the model "
            "to use with --checkpoint (or embed again with a saved checkpoint)"
        )
    if "checkpoint" in source:
        path = Path(source["checkpoint"])
        if not path.exists():
            raise FileNotFoundError(
                f"{where} was made with {path}, which no longer exists; give --checkpoint with the same weights"
            )
        if source.get("model"):
            return load(path, device=device, model=source["model"])
        return load_model(path, None, device)
    return load_model(source["name"], source.get("pretrained"), device)


def check_same_model(recorded_weights: str | None, recorded_source, model, what: str | os.PathLike) -> None:
    """Refuse a model whose weights differ from those recorded for `what` (no record: nothing to check)."""
    if not recorded_weights:
        return
    mine = weights_id(model)
    if mine != recorded_weights:
        raise ValueError(
            f"{os.fspath(what)} was embedded with {describe_source(recorded_source)} (weights {recorded_weights}); "
            f"the model given has other weights ({mine}), so its scores would be meaningless. Leave out the "
            "model flags to use the recorded model, or give the same weights"
        )
