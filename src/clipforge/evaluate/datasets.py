"""Evaluation datasets read from disk in their public layouts; no downloads.

Every adapter returns an `EvalDataset`: (path, label) samples, class names in label order, and for the
ImageNet-derived shift sets `class_groups` (dataset class -> ImageNet class indices) so a 1,000-way ImageNet
head can be reduced to the dataset's classes. Missing data raises `MissingDataError` saying where to put it.
"""

from __future__ import annotations

import csv
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from clipforge.decode import decode_rgb, open_image
from clipforge.zeroshot.classnames import get_classnames, imagenet_wnids, objectnet_classes, subset_indices

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class MissingDataError(FileNotFoundError):
    """The data set is not on disk where it was looked for."""


def require(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise MissingDataError(f"{what} not found at {path}. {hint}")
    return path


@dataclass
class EvalDataset(Dataset):
    """Labelled images: items are (transform(image), label)."""

    samples: list[tuple[Path | np.ndarray, int]]
    classes: list[str]
    transform: Callable | None = None
    class_groups: list[list[int]] | None = None  # per class: indices into the ImageNet-1k head
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        source, label = self.samples[index]
        if isinstance(source, np.ndarray):
            image = Image.fromarray(source)
        else:  # decoded the one exact way: EXIF orientation applied, own mode kept for the transform
            image = open_image(source) if self.transform else decode_rgb(source)
        return (self.transform(image) if self.transform else image), label

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def image_folder(root, transform=None, classes: list[str] | None = None, name: str = "") -> EvalDataset:
    """`root/<class>/*.jpg`; labels follow `classes` (default: sorted folder names)."""
    root = require(Path(root), "image folder", "Expected layout: ROOT/<class name>/<image>.jpg")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = classes or folders
    if not classes:
        raise MissingDataError(f"{root} has no class sub-folders; expected ROOT/<class name>/<image>.jpg")
    samples = [
        (path, label)
        for label, c in enumerate(classes)
        if (root / c).is_dir()
        for path in _images_in(root / c)
    ]
    return EvalDataset(samples, list(classes), transform, name=name or root.name)


def csv_dataset(
    csv_path, transform=None, root=None, classes: list[str] | None = None, name: str = ""
) -> EvalDataset:
    """A CSV with columns `path,label` (integer or class name; optional `class_name`); paths relative to `root`
    (default: the CSV's folder)."""
    csv_path = require(Path(csv_path), "CSV file", "Expected columns: path,label[,class_name]")
    root = Path(root) if root else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for field_name in ("path", "label"):
        if rows and field_name not in rows[0]:
            raise ValueError(f"{csv_path}: missing column {field_name!r}; columns are {list(rows[0])}")
    numeric = all(r["label"].strip().lstrip("-").isdigit() for r in rows)
    if not numeric:
        classes = classes or sorted({r["label"] for r in rows})
        index = {c: i for i, c in enumerate(classes)}
    elif classes is None:
        names = {int(r["label"]): r.get("class_name") or r["label"] for r in rows}
        classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
    samples = []
    for line, r in enumerate(rows, start=2):
        label = int(r["label"]) if numeric else index.get(r["label"])
        if label is None or not 0 <= label < len(classes):
            raise ValueError(f"{csv_path}:{line}: label {r['label']!r} is not one of {len(classes)} classes")
        samples.append((root / r["path"], label))
    return EvalDataset(samples, list(classes), transform, name=name or csv_path.stem)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches but refuses every global other than numpy array reconstruction."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def cifar(root, split: str = "test", transform=None, num_classes: int = 10) -> EvalDataset:
    """CIFAR-10/100 from the standard python batches (`cifar-10-batches-py/`, `cifar-100-python/`) or an
    image-folder export (`images/<split>/<class>/` with `classes.txt`, like ../shared/data/cifar10)."""
    root = Path(root)
    if (root / "images" / split).is_dir():
        classes = None
        if (root / "classes.txt").is_file():
            classes = (root / "classes.txt").read_text().split()
        return image_folder(root / "images" / split, transform, classes, name=f"cifar{num_classes}")
    folder = root / ("cifar-10-batches-py" if num_classes == 10 else "cifar-100-python")
    if not folder.is_dir() and (root / ("batches.meta" if num_classes == 10 else "meta")).is_file():
        folder = root
    hint = (
        f"Put the python version of CIFAR-{num_classes} (from https://www.cs.toronto.edu/~kriz/cifar.html) "
        f"extracted under {root}, or an image folder {root}/images/{split}/<class>/."
    )
    if not root.is_file():
        require(folder, f"CIFAR-{num_classes}", hint)
    try:  # the data package's reader (also reads the .tar.gz); ours below when it is absent
        from clipforge.data.cifar import load_cifar_python
    except ImportError:
        images, labels, names = _read_cifar_batches(folder, split, num_classes, hint)
    else:
        arrays = load_cifar_python(root, split, num_classes)
        images, labels, names = arrays.images, [int(v) for v in arrays.labels], arrays.classes
    return EvalDataset(list(zip(images, labels)), list(names), transform, name=f"cifar{num_classes}")


def _read_cifar_batches(folder: Path, split: str, num_classes: int, hint: str):
    if num_classes == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, meta, names_key = "labels", "batches.meta", "label_names"
    else:
        files, label_key, meta, names_key = [split], "fine_labels", "meta", "fine_label_names"
    images, labels = [], []
    for file in files:
        batch = _load_cifar_batch(require(folder / file, f"CIFAR-{num_classes} batch", hint))
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels += [int(v) for v in batch[label_key]]
    names = [n.decode() if isinstance(n, bytes) else n for n in _load_cifar_batch(folder / meta)[names_key]]
    return np.concatenate(images), labels, names


def _imagenet_subset(root: Path, indices: list[int], transform, name: str, folder_of=None) -> EvalDataset:
    """Folders named by wnid (or by `folder_of(index)`); label = position of the class in `indices`."""
    wnids, names = imagenet_wnids(), get_classnames("imagenet")
    folder_of = folder_of or (lambda i: wnids[i])
    samples = []
    for label, index in enumerate(indices):
        folder = root / folder_of(index)
        if folder.is_dir():
            samples += [(path, label) for path in _images_in(folder)]
    if not samples:
        raise MissingDataError(
            f"no images of {name} found under {root}; expected {root}/{folder_of(indices[0])}/"
        )
    return EvalDataset(
        samples, [names[i] for i in indices], transform, class_groups=[[i] for i in indices], name=name
    )


SHIFT_LAYOUTS = {
    "imagenet": ("val", "ImageNet validation in class folders: ROOT/val/<wnid>/*.JPEG"),
    "imagenet-v2": (
        "imagenetv2-matched-frequency-format-val",
        "ImageNet-V2 (matched frequency) from https://github.com/modestyachts/ImageNetV2: ROOT/"
        "imagenetv2-matched-frequency-format-val/<class index 0..999>/*.jpeg",
    ),
    "imagenet-sketch": (
        "sketch",
        "ImageNet-Sketch (https://github.com/HaohanWang/ImageNet-Sketch): ROOT/sketch/<wnid>/",
    ),
    "imagenet-r": (
        "imagenet-r",
        "ImageNet-R (https://github.com/hendrycks/imagenet-r): ROOT/imagenet-r/<wnid>/",
    ),
    "imagenet-a": (
        "imagenet-a",
        "ImageNet-A (https://github.com/hendrycks/natural-adv-examples): ROOT/imagenet-a/<wnid>/",
    ),
    "objectnet": (
        "objectnet-1.0/images",
        "ObjectNet 1.0 (https://objectnet.dev): ROOT/objectnet-1.0/images/<folder>/*.png",
    ),
}


def imagenet_family(name: str, root, transform=None) -> EvalDataset:
    """ImageNet val and its distribution-shift sets in their public layouts, with their class subsets."""
    key = name.lower().replace("_", "-")
    if key not in SHIFT_LAYOUTS:
        raise KeyError(f"unknown ImageNet-family dataset {name!r}; valid: {', '.join(SHIFT_LAYOUTS)}")
    sub, hint = SHIFT_LAYOUTS[key]
    folder = Path(root) / sub
    if not folder.is_dir() and Path(root).name == Path(sub).name:
        folder = Path(root)
    require(folder, key, f"Expected {hint}")
    if key == "objectnet":
        entries = objectnet_classes()
        samples = []
        for label, folder_name in enumerate(entries):
            if (folder / folder_name).is_dir():
                samples += [(path, label) for path in _images_in(folder / folder_name)]
        classes = [e["name"] for e in entries.values()]
        groups = [list(e["imagenet_indices"]) for e in entries.values()]
        return EvalDataset(samples, classes, transform, class_groups=groups, name=key)
    indices = subset_indices(key)
    folder_of = (lambda i: str(i)) if key == "imagenet-v2" else None
    return _imagenet_subset(folder, indices, transform, key, folder_of)


def build_eval_dataset(name: str, root, split: str = "test", transform=None) -> EvalDataset:
    """Dispatch by name: imagefolder, csv, cifar10, cifar100, imagenet, imagenet-v2/-sketch/-r/-a, objectnet."""
    key = name.lower().replace("_", "-")
    if key == "imagefolder":
        return image_folder(root, transform)
    if key == "csv":
        return csv_dataset(root, transform)
    if key in ("cifar10", "cifar100"):
        return cifar(root, split, transform, num_classes=int(key[5:]))
    if key in SHIFT_LAYOUTS:
        return imagenet_family(key, root, transform)
    valid = ["imagefolder", "csv", "cifar10", "cifar100", *SHIFT_LAYOUTS]
    raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(valid)}")
