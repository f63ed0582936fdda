"""Zero-shot classification of image files with the user's own labels, and sorting files by label."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from clipforge.decode import ImageError, open_image


@dataclass
class Prediction:
    path: Path
    labels: list[str]  # top-k, best first
    probs: list[float]  # matching probabilities


@dataclass
class ClassifyReport:
    predictions: list[Prediction]
    failures: list[dict] = field(default_factory=list)  # {"path", "error"} for skipped files


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def classify_files(
    model: torch.nn.Module,
    preprocess,
    paths: Sequence[Path],
    labels: list[str],
    templates: list[str],
    *,
    top_k: int = 3,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | bool | None = None,
    progress: bool = True,
) -> ClassifyReport:
    """Top-k labels per readable image; unreadable images are reported in `failures` and skipped."""
    from clipforge.zeroshot.classifier import build_classifier, zeroshot_logits

    classifier = build_classifier(
        model, labels, templates, batch_size=256, cache_dir=cache_dir, progress=progress
    )  # (E, C)
    device = classifier.device
    scale = model.logit_scale.exp()
    k = min(top_k, len(labels))
    report = ClassifyReport(predictions=[])
    bar = tqdm(total=len(paths), desc="classify", unit="img", disable=not progress)
    for chunk in _batches(list(paths), batch_size):
        tensors, ok_paths = [], []
        for path in chunk:
            try:
                tensors.append(preprocess(open_image(path)))
                ok_paths.append(Path(path))
            except (ImageError, OSError) as err:
                report.failures.append({"path": str(path), "error": str(err)})
        bar.update(len(chunk))
        if not tensors:
            continue
        feats = model.encode_image(torch.stack(tensors).to(device), normalize=True)  # (B, E)
        probs = zeroshot_logits(feats, classifier, scale).softmax(dim=-1).cpu()  # (B, C)
        top_p, top_i = probs.topk(k, dim=-1)
        for path, p_row, i_row in zip(ok_paths, top_p.tolist(), top_i.tolist(), strict=True):
            report.predictions.append(Prediction(path, [labels[i] for i in i_row], p_row))
    bar.close()
    return report


def prediction_rows(report: ClassifyReport) -> list[dict]:
    """Flat rows: path, label (top-1), prob, then label_2/prob_2 ... for the rest of the top-k."""
    rows = []
    for pred in report.predictions:
        row = {"path": str(pred.path), "label": pred.labels[0], "prob": round(pred.probs[0], 6)}
        for rank, (label, prob) in enumerate(zip(pred.labels[1:], pred.probs[1:], strict=True), start=2):
            row[f"label_{rank}"] = label
            row[f"prob_{rank}"] = round(prob, 6)
        rows.append(row)
    return rows


def write_predictions(report: ClassifyReport, path: str | os.PathLike) -> Path:
    """CSV or JSON by extension (.csv / .json); JSON also lists the failures."""
    from clipforge.fileio import atomic_write_json, atomic_write_text

    path = Path(path)
    rows = prediction_rows(report)
    if path.suffix.lower() == ".json":
        return atomic_write_json(path, {"predictions": rows, "failures": report.failures})
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--output {path}: use a .csv or .json file name")
    import io

    columns = list(rows[0]) if rows else ["path", "label", "prob"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def unique_destination(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem-1.ext`, `-2` ... : the first that does not exist yet."""
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def safe_folder_name(label: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in " -_." else "_" for c in label).strip(" .")
    return cleaned or "_"


def sort_into(report: ClassifyReport, dest: str | os.PathLike, move: bool = False) -> list[dict]:
    """Copy (or move) each classified file into `dest/<top-1 label>/`, never overwriting existing files."""
    dest = Path(dest)
    placed = []
    for pred in report.predictions:
        folder = dest / safe_folder_name(pred.labels[0])
        folder.mkdir(parents=True, exist_ok=True)
        target = unique_destination(folder, pred.path.name)
        if move:
            shutil.move(os.fspath(pred.path), target)
        else:
            shutil.copy2(pred.path, target)
        placed.append({"source": str(pred.path), "destination": str(target)})
    return placed


def summary_json(report: ClassifyReport) -> str:
    return json.dumps({"predictions": prediction_rows(report), "failures": report.failures}, indent=2)
