"""Coverage of open_clip's pretrained zoo: every (architecture, tag) pair open_clip lists, checked generically.

    PYTHONPATH=src .venv/bin/python -m benchmarks.zoo_coverage            # writes benchmarks/results/zoo.{json,md}
    ... -m benchmarks.zoo_coverage --max-params 2e8 --only ViT-B-32 RN50  # a quick subset

For each architecture of `open_clip.list_pretrained()`, driven by open_clip's own configs (no test names them):
- clipforge refuses it (no preset): `get_config` must raise naming the reason, which the report quotes;
- up to `--max-params` parameters: open_clip builds it with random weights, clipforge loads its state_dict by
  name through the open_clip converter, and both embed the same random images and texts: max abs diff;
- larger: both are built on the meta device and the converted tensor names and shapes must be equal.
Towers open_clip takes from timm are built by timm on both sides; its Hugging Face text towers (roberta, NLLB)
get the config.json clipforge records (models/hf_text_configs.py) instead of a download: no internet.
One architecture at a time (peak memory ~2x its fp32 size). The fraction covered counts tags of architectures
at parity or shape-checked; the Markdown table gives each architecture's status.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmarks.zoo_reference import compare, random_open_clip, zoo_inputs
from clipforge.checkpoints.io import model_from_state
from clipforge.checkpoints.open_clip import open_clip_to_clipforge
from clipforge.models import CLIP, get_config
from clipforge.models.zoo_specs import OPEN_CLIP_UNSUPPORTED

RESULTS = Path(__file__).resolve().parent / "results"
TOL = 1e-4


def pretrained_pairs() -> dict[str, list[str]]:
    import open_clip

    pairs: dict[str, list[str]] = {}
    for model, tag in open_clip.list_pretrained():
        pairs.setdefault(model, []).append(tag)
    return pairs


def refused(name: str) -> dict:
    try:
        get_config(name)
    except KeyError as err:
        return {"status": "refused", "reason": OPEN_CLIP_UNSUPPORTED.get(name, str(err)), "error": str(err)}
    return {"status": "MISMATCH", "reason": "listed as unsupported but get_config accepted it"}


def shape_check(name: str) -> dict:
    reference = random_open_clip(name, device="meta")
    converted = open_clip_to_clipforge(reference.state_dict(), get_config(name))
    theirs = {k: tuple(v.shape) for k, v in converted.items() if not k.endswith("num_batches_tracked")}
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in CLIP(get_config(name)).state_dict().items()}
    ours = {k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")}
    params = sum(p.numel() for p in reference.parameters())
    if theirs != ours:
        differ = sorted(set(theirs.items()) ^ set(ours.items()))[:4]
        return {"status": "MISMATCH", "params": params, "reason": f"tensor names/shapes differ: {differ}"}
    return {"status": "shapes", "params": params, "reason": "too large for a CPU parity run: shapes checked"}


@torch.no_grad()
def parity_check(name: str, seed: int = 0) -> dict:
    reference = random_open_clip(name, seed=seed)
    state_dict = open_clip_to_clipforge(reference.state_dict(), get_config(name))
    ours = model_from_state(get_config(name), state_dict, f"<open_clip {name}>").float().eval()
    images, text = zoo_inputs(ours.config, batch=2, seed=seed + 1)
    diffs = compare(ours, reference, images, text)
    worst = max(diffs.values())
    params = sum(p.numel() for p in reference.parameters())
    status = "parity" if worst <= TOL else "MISMATCH"
    return {"status": status, "params": params, "max_abs_diff": worst, "diffs": diffs}


def check(name: str, max_params: float) -> dict:
    if name in OPEN_CLIP_UNSUPPORTED:
        return refused(name)
    meta = shape_check(name)
    if meta["status"] == "MISMATCH" or meta["params"] > max_params:
        return meta
    return parity_check(name)


def run(
    max_params: float = 1e9,
    only: list[str] | None = None,
    progress: bool = True,
    previous: dict | None = None,
) -> dict:
    """The report; with `only`, the other architectures' rows come from `previous` (a re-run of a subset)."""
    pairs = pretrained_pairs()
    names = [n for n in pairs if not only or n in only]
    kept = {r["architecture"]: r for r in (previous or {}).get("rows", []) if r["architecture"] not in names}
    rows = []
    for name in tqdm(names, desc="zoo", disable=not progress):
        start = time.perf_counter()
        try:
            row = check(name, max_params)
        except Exception as err:  # a crash is a finding, not the end of the report
            row = {"status": "MISMATCH", "reason": f"{type(err).__name__}: {err}"[:300]}
        rows.append(
            {"architecture": name, "tags": pairs[name], **row, "seconds": time.perf_counter() - start}
        )
        gc.collect()
    fresh = {r["architecture"]: r for r in rows}
    rows = [fresh.get(n) or kept[n] for n in pairs if n in fresh or n in kept]
    total = sum(len(tags) for tags in pairs.values())
    covered = sum(len(r["tags"]) for r in rows if r["status"] in ("parity", "shapes"))
    at_parity = sum(len(r["tags"]) for r in rows if r["status"] == "parity")
    import open_clip

    return {
        "pairs": total,
        "architectures": len(pairs),
        "covered_pairs": covered,
        "parity_pairs": at_parity,
        "covered_fraction": covered / total,
        "mismatches": [r["architecture"] for r in rows if r["status"] == "MISMATCH"],
        "conditions": {
            "max_params_for_parity": max_params,
            "tolerance": TOL,
            "open_clip": open_clip.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "rerun_subset": only or "all",
        },
        "rows": rows,
    }


def _subset_note(subset: list[str] | str) -> list[str]:
    if subset == "all":
        return []
    return [f"This report re-ran {len(subset)} architectures (`--only {' '.join(subset)}`); the other rows "
            "are the previous full run's.", ""]  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        "# open_clip pretrained zoo in clipforge",
        "",
        f"Covered: **{report['covered_pairs']} / {report['pairs']} (architecture, tag) pairs "
        f"({100 * report['covered_fraction']:.1f}%)**; {report['parity_pairs']} at parity on random weights "
        f"(max abs diff <= {TOL}), the rest shape-checked on the meta device (over "
        f"{report['conditions']['max_params_for_parity']:.2g} parameters). Mismatches: "
        f"{', '.join(report['mismatches']) or 'none'}.",
        "",
        "Reproduce: `PYTHONPATH=src .venv/bin/python -m benchmarks.zoo_coverage "
        f"--max-params {report['conditions']['max_params_for_parity']:.2g}` "
        f"(open_clip {report['conditions']['open_clip']}, torch {report['conditions']['torch']}).",
        "",
        *_subset_note(report["conditions"]["rerun_subset"]),
        "| architecture | tags | params | status | max abs diff / reason |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        params = f"{row['params'] / 1e6:.0f}M" if "params" in row else ""
        detail = f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else row.get("reason", "")
        lines.append(
            f"| {row['architecture']} | {len(row['tags'])} | {params} | {row['status']} | {detail} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-params", type=float, default=1e9, help="largest model run for real parity")
    parser.add_argument("--only", nargs="*", help="architecture names (default: every pretrained one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "zoo", help="path stem for .json and .md")
    args = parser.parse_args(argv)
    previous_path = args.out.with_suffix(".json")
    previous = json.loads(previous_path.read_text()) if args.only and previous_path.is_file() else None
    report = run(args.max_params, args.only, previous=previous)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report).split("\n\n")[1])
    return report


if __name__ == "__main__":
    main()
