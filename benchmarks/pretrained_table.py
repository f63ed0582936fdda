"""Generate clipforge's pretrained registry (src/clipforge/checkpoints/pretrained.json) from open_clip's table.

One row per open_clip (architecture, tag) pair, in open_clip's order, as plain data: where the weights are (URL
and/or `hf_hub` repo + file), the SHA256 where one is published (OpenAI's URLs carry the full digest, open_clip's
release files an 8-digit prefix in their names), the activation the weights were trained with, and their
preprocessing (mean, std, interpolation, resize mode; image size from the architecture's open_clip config).
tests/test_pretrained_registry.py checks that the committed file still equals what this script writes.

    python -m benchmarks.pretrained_table            # rewrite the data file
    python -m benchmarks.pretrained_table --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parents[1] / "src" / "clipforge" / "checkpoints" / "pretrained.json"
_RELEASE_HASH = re.compile(r"-([0-9a-f]{8,64})\.(?:pt|pth|bin|safetensors)$")  # open_clip's release names


def published_sha256(url: str) -> str:
    """The SHA256 (or its published prefix) a download URL carries, or '' where none is published."""
    if url.startswith("https://openaipublic.azureedge.net/"):
        return url.rsplit("/", 2)[-2]  # .../<sha256>/<name>.pt
    if "/mlfoundations/open_clip/releases/" in url:
        match = _RELEASE_HASH.search(url)
        return match.group(1) if match else ""
    return ""


def split_hf_hub(hf_hub: str) -> tuple[str, str]:
    """open_clip's 'org/name/' (default weight file) or 'org/name/file' -> (repo id, file or '')."""
    if not hf_hub:
        return "", ""
    org, name, *rest = hf_hub.split("/")
    return f"{org}/{name}", "/".join(rest)


def registry_row(model: str, tag: str, cfg: dict[str, Any], model_cfg: dict[str, Any]) -> dict[str, Any]:
    """One registry entry. The activation is QuickGELU if the tag says so (open_clip's `quick_gelu` flag on
    the weights) or, for tags without the flag, if the architecture's own config builds QuickGELU."""
    repo, filename = split_hf_hub(cfg.get("hf_hub", ""))
    quick_gelu = cfg.get("quick_gelu", model_cfg.get("quick_gelu", False))
    image_size = model_cfg["vision_cfg"]["image_size"]
    return {
        "model": model,
        "tag": tag,
        "url": cfg.get("url", ""),
        "sha256": published_sha256(cfg.get("url", "")),
        "hf_hub": repo,
        "hf_file": filename,
        "activation": "quick_gelu" if quick_gelu else "gelu",
        "preprocess": {
            "image_size": image_size if isinstance(image_size, int) else list(image_size),
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "interpolation": cfg["interpolation"],
            "resize_mode": cfg["resize_mode"],
        },
    }


def open_clip_rows() -> list[dict[str, Any]]:
    """Every pair in the installed open_clip's pretrained table, as registry rows."""
    from open_clip import pretrained
    from open_clip.factory import get_model_config

    rows = []
    for model, tag in pretrained.list_pretrained():
        model_cfg = get_model_config(model)
        if model_cfg is None:
            raise ValueError(
                f"open_clip lists pretrained {model}:{tag} but has no model config for {model!r}"
            )
        rows.append(registry_row(model, tag, pretrained.get_pretrained_cfg(model, tag), model_cfg))
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """The data file's text: one entry per line, so a diff shows which pairs changed."""
    import open_clip

    lines = ",\n".join("    " + json.dumps(row, separators=(", ", ": ")) for row in rows)
    header = json.dumps(
        f"open_clip_torch {open_clip.__version__} pretrained table (benchmarks/pretrained_table.py)"
    )
    return f'{{\n  "source": {header},\n  "entries": [\n{lines}\n  ]\n}}\n'


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the data file is out of date")
    args = parser.parse_args(argv)
    rows = open_clip_rows()
    committed = json.loads(DATA_FILE.read_text())["entries"] if DATA_FILE.is_file() else None
    if args.check:
        if committed != rows:
            print(f"{DATA_FILE} is out of date: run python -m benchmarks.pretrained_table", file=sys.stderr)
            raise SystemExit(1)
    else:
        DATA_FILE.write_text(render(rows))
    summary = {"entries": len(rows), "file": str(DATA_FILE), "up_to_date": committed == rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
