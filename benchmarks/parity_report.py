"""Converter parity for the nine OpenAI architectures, each as open_clip's QuickGELU `X-quickgelu` (OpenAI's
weights) and GELU `X` (LAION/DataComp/... weights): clipforge vs open_clip vs transformers, same random
weights, fp32, plus a file round trip per preset.

Round trip: open_clip's random model written as OpenAI's TorchScript archive (QuickGELU models) or as an open_clip
state_dict loaded by name (GELU models) -> clipforge -> (ViT) HF directory -> clipforge / (ResNet) clipforge
safetensors -> clipforge -> open_clip state_dict -> a fresh open_clip model, compared with the original.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.parity_report [--models RN50 ViT-B-32-quickgelu] [--smoke]

Writes benchmarks/results/parity.json and parity.md.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.references import (
    clipforge_from_open_clip,
    compare_hf,
    compare_open_clip,
    load_hf_reference,
    random_open_clip,
    sample_inputs,
    trace_open_clip,
)
from clipforge.checkpoints import load_any, save
from clipforge.models.config import OPENAI_PRESETS
from clipforge.results import markdown_table, write_results

NAMES = [f"{name}-quickgelu" for name in OPENAI_PRESETS] + list(OPENAI_PRESETS)

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 2


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def round_trip(reference: torch.nn.Module, name: str, work: Path, images, text) -> dict[str, float]:
    if name.endswith("-quickgelu"):  # OpenAI's released format; TorchScript archives are QuickGELU
        trace_open_clip(reference, work / "openai.pt")
        first = load_any(work / "openai.pt")
    else:  # open_clip files do not record the activation: loaded by name
        torch.save(reference.state_dict(), work / "open_clip_in.pt")
        first = load_any(work / "open_clip_in.pt", config=name)
    if first.config.vision.kind == "vit":
        middle = save(first, work / "hf", "hf")
    else:
        middle = save(first, work / "model.safetensors", "clipforge")
    del first
    second = load_any(middle)
    save(second, work / "open_clip.pt", "open_clip")
    del second
    gc.collect()
    fresh = random_open_clip(name, seed=123)
    fresh.load_state_dict(torch.load(work / "open_clip.pt", weights_only=True), strict=True)
    with torch.no_grad():
        image = (fresh.encode_image(images) - reference.encode_image(images)).abs().max().item()
        text_diff = (fresh.encode_text(text) - reference.encode_text(text)).abs().max().item()
    return {"image": image, "text": text_diff}


def check_preset(name: str, work: Path) -> dict:
    start = time.perf_counter()
    reference = random_open_clip(name, seed=0)
    ours = clipforge_from_open_clip(reference, name)
    images, text = sample_inputs(ours, BATCH, seed=1)
    row = {"model": name, "params": ours.num_parameters(), "params_open_clip": _params(reference)}
    diffs = compare_open_clip(ours, reference, images, text)
    row |= {"open_clip_image": diffs["image"], "open_clip_text": diffs["text"]}
    if ours.config.vision.kind == "vit":
        save(ours, work / "hf_direct", "hf")
        hf_model = load_hf_reference(work / "hf_direct")
        row["params_hf"] = _params(hf_model)
        diffs = compare_hf(ours, hf_model, images, text)
        row |= {"hf_image": diffs["image"], "hf_text": diffs["text"]}
        del hf_model
    else:
        row |= {"params_hf": None, "hf_image": None, "hf_text": None}
    del ours
    gc.collect()
    diffs = round_trip(reference, name, work, images, text)
    row |= {"round_trip_image": diffs["image"], "round_trip_text": diffs["text"]}
    row["seconds"] = f"{time.perf_counter() - start:.0f}"
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=NAMES, choices=NAMES)
    parser.add_argument("--smoke", action="store_true", help="RN50 and ViT-B-32 (both activations) only")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    names = ["RN50", "RN50-quickgelu", "ViT-B-32", "ViT-B-32-quickgelu"] if args.smoke else args.models
    rows = []
    for name in tqdm(names, desc="parity", unit="model"):
        with tempfile.TemporaryDirectory(prefix="clipforge-parity-") as tmp:
            rows.append(check_preset(name, Path(tmp)))
        tqdm.write(f"{name}: {rows[-1]}")
    diff_keys = [k for k in rows[0] if k.endswith(("_image", "_text"))]
    worst = max(row[k] for row in rows for k in diff_keys if row[k] is not None)
    results = {
        "batch": BATCH,
        "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "max_abs_diff_overall": worst,
        "rows": rows,
    }
    shown = [{k: (f"{v:.2e}" if k in diff_keys and v is not None else ("-" if v is None else v))
              for k, v in row.items()} for row in rows]  # fmt: skip
    summary = (
        "# Converter parity (fp32, random weights, batch 2)\n\n"
        "Max abs difference of encode_image / encode_text: clipforge vs open_clip's model of the same name, vs "
        "transformers.CLIPModel through clipforge's HF directory (ViT only), and after the file round trip "
        "OpenAI TorchScript -> clipforge -> HF (ViT) or clipforge safetensors (ResNet) -> clipforge -> "
        "open_clip.\n\n" + markdown_table(shown) + f"\nWorst difference overall: {worst:.2e}. Reproduce: "
        "`OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.parity_report`\n"
    )
    paths = write_results(args.out, "parity", results, summary)
    print(summary)
    return {"results": results, "paths": paths}


if __name__ == "__main__":
    main(sys.argv[1:])
