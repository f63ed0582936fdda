"""Every entry point decodes an image file exactly as `Preprocess` of the upright decoded image defines it.

The corpus is generated here: one file per PIL mode that a file can hold (1, L, LA, P, PA, RGB, RGBA, CMYK,
YCbCr, I, I;16, I;16B, F, plus LAB, which has no RGB conversion and must be refused), in each format that
keeps that mode, and RGB photos carrying each of the 8 EXIF orientations (JPEG, and one PNG). The reference
is computed independently of clipforge.decode: PIL opens the file, `ImageOps.exif_transpose` stands it up,
`Preprocess` (the exact transform, itself checked against open_clip in test_transforms.py) does the rest.
Each entry point gets a preprocess that records what it produced, so the comparison is exact (atol 0).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from PIL import Image, ImageOps

from clipforge.decode import ImageError, open_image, to_rgb
from clipforge.models import CLIP, get_config
from clipforge.transforms import Preprocess

HEIGHT, WIDTH = 45, 61  # not square, so a wrong orientation changes the crop


def _base(seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: every orientation and every channel mix-up shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1) + rng.integers(0, 40, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _mode_image(mode: str) -> Image.Image:
    rng = np.random.default_rng(1)
    if mode in ("I;16", "I;16B"):
        values = np.asarray(_base().convert("L"), np.uint16) * 257 + rng.integers(0, 200, (HEIGHT, WIDTH))
        image = Image.fromarray(values.astype(np.uint16))  # I;16 spanning 0..65535 (white if clipped)
        return image if mode == "I;16" else image.convert("I").convert("I;16B")
    if mode == "I":
        return Image.fromarray((np.asarray(_base().convert("L"), np.int32) * 200), "I")  # values to 51,000
    if mode == "F":
        return Image.fromarray(np.asarray(_base().convert("L"), np.float32) * 0.9 + 3.5, "F")
    if mode == "PA":
        return _base().convert("RGBA").convert("PA")
    if mode in ("LA", "RGBA"):
        image = _base().convert(mode)
        alpha = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH)).astype(np.uint8), "L")
        image.putalpha(alpha)
        return image
    return _base().convert(mode)


# (mode, format) pairs whose saved file opens in that mode again
MODE_FILES = [
    ("1", "PNG"), ("1", "BMP"), ("L", "PNG"), ("L", "JPEG"), ("LA", "PNG"), ("LA", "TIFF"), ("P", "PNG"),
    ("P", "GIF"), ("PA", "TIFF"), ("RGB", "PNG"), ("RGB", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"),
    ("RGBA", "PNG"), ("RGBA", "TIFF"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("YCbCr", "TIFF"), ("I", "TIFF"),
    ("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("F", "TIFF"),
]  # fmt: skip
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}
SERVE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


def _save(image: Image.Image, path: Path, fmt: str, **kwargs) -> Path:
    kwargs = {"quality": 95, **kwargs} if fmt == "JPEG" else ({"lossless": True} if fmt == "WEBP" else kwargs)
    image.save(path, fmt, **kwargs)
    return path


def _oriented(orientation: int) -> Image.Image:
    """The pixels a camera stores for an upright photo under EXIF `orientation` (the inverse of the
    transpose exif_transpose applies), so every orientation decodes to the same upright image."""
    t = Image.Transpose
    stored = {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE, 6: t.ROTATE_90,
              7: t.TRANSVERSE, 8: t.ROTATE_270}  # fmt: skip
    image = _base(7)
    return image.transpose(stored[orientation]) if orientation in stored else image


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("modes")
    files = {}
    for mode, fmt in MODE_FILES:
        path = _save(_mode_image(mode), root / f"mode-{mode.replace(';', '_')}{EXTENSIONS[fmt]}", fmt)
        with Image.open(path) as check:  # older Pillows read some back in another mode (YCbCr TIFF as RGB,
            assert check.format == fmt, (
                mode,
                fmt,
            )  # I;16 PNG as I): the reference follows the file either way
            try:
                check.load()
            except OSError:  # Pillow 10's TIFF writer truncates YCbCr files; 11+ round-trips every pair
                assert int(PIL.__version__.split(".")[0]) < 11, (mode, fmt)
                continue
        files[f"{mode}/{fmt}"] = path
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        files[f"exif{orientation}/JPEG"] = _save(
            _oriented(orientation), root / f"exif-{orientation}.jpg", "JPEG", exif=exif
        )
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif6/PNG"] = _save(_oriented(6), root / "exif-6.png", "PNG", exif=exif)
    return files


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CLIP(get_config("tiny-vit")).eval()


class Recorder:
    """A preprocess that remembers each tensor it made, by call order."""

    def __init__(self, preprocess: Preprocess):
        self.preprocess, self.seen = preprocess, []

    def __call__(self, image: Image.Image) -> torch.Tensor:
        tensor = self.preprocess(image)
        self.seen.append(tensor)
        return tensor


def reference(path: Path, preprocess: Preprocess) -> torch.Tensor:
    with Image.open(path) as image:
        return preprocess(ImageOps.exif_transpose(image))


def reference_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(to_rgb(ImageOps.exif_transpose(image)))


def test_the_corpus_is_hard(corpus, model):
    """Sanity: converting to RGB first, or ignoring EXIF, gives other tensors (what the old decode did)."""
    pre = Preprocess(model.config.preprocess)
    for name in ("I;16/PNG", "RGBA/PNG", "LA/PNG", "exif6/JPEG", "exif3/JPEG", "exif8/JPEG"):
        with Image.open(corpus[name]) as image:
            old = pre(image.convert("RGB"))
        assert not torch.equal(old, reference(corpus[name], pre)), name
    with Image.open(corpus["I;16/PNG"]) as image:
        assert (np.asarray(image.convert("RGB")) == 255).mean() > 0.9  # PIL's RGB conversion clips to white


def _check(name: str, got: torch.Tensor, path: Path, pre: Preprocess) -> None:
    want = reference(path, pre)
    assert got.shape == want.shape and torch.equal(got, want), f"{name}: max diff {(got - want).abs().max()}"


def test_classify(corpus, model):
    from clipforge.apps.classify import classify_files

    recorder = Recorder(Preprocess(model.config.preprocess))
    names = list(corpus)
    report = classify_files(model, recorder, [corpus[n] for n in names], ["cat", "dog"], ["a {}"],
                            batch_size=5, progress=False)  # fmt: skip
    assert not report.failures and len(recorder.seen) == len(names)
    for name, tensor in zip(names, recorder.seen, strict=True):
        _check(name, tensor, corpus[name], recorder.preprocess)


def test_embed(corpus, model, tmp_path):
    from clipforge.apps.embed import embed_source

    folder = tmp_path / "images"
    folder.mkdir()
    names = sorted(corpus, key=lambda n: corpus[n].name)
    for name in names:
        (folder / corpus[name].name).write_bytes(corpus[name].read_bytes())
    recorder = Recorder(Preprocess(model.config.preprocess))
    report = embed_source(model, recorder, folder, tmp_path / "out", metadata_format="jsonl", progress=False)
    assert not report["failures"] and report["rows"] == len(names)
    for name, tensor in zip(names, recorder.seen, strict=True):
        _check(name, tensor, corpus[name], recorder.preprocess)


def test_search_query(corpus, model):
    from clipforge.apps.search import query_embedding

    recorder = Recorder(Preprocess(model.config.preprocess))
    for name, path in corpus.items():
        query_embedding(model, recorder, image=path)
        _check(name, recorder.seen[-1], path, recorder.preprocess)


def test_serve(corpus, model):
    from fastapi.testclient import TestClient

    from clipforge.apps.serve import create_app

    recorder = Recorder(Preprocess(model.config.preprocess))
    pixel_limit_before = Image.MAX_IMAGE_PIXELS
    with TestClient(create_app(model, recorder)) as client:
        for name, path in corpus.items():
            files = {"image": (path.name, path.read_bytes(), "application/octet-stream")}
            response = client.post("/classify", files=files, data={"labels": "cat,dog"})
            if name.split("/")[1] not in SERVE_FORMATS:
                assert response.status_code == 415, name
                continue
            assert response.status_code == 200, (name, response.text)
            _check(name, recorder.seen[-1], path, recorder.preprocess)
    assert pixel_limit_before == Image.MAX_IMAGE_PIXELS  # no process-wide state changed


def test_training_table_reader(corpus, tmp_path):
    """CSV training rows -> Records -> the data stack's decoder: the upright RGB image, 16-bit scaled."""
    from clipforge.data.csvjsonl import read_table
    from clipforge.data.records import decode_image

    table = tmp_path / "train.csv"
    table.write_text("path,caption\n" + "".join(f"{p},a photo of {n}\n" for n, p in corpus.items()))
    records = read_table(table)
    assert len(records) == len(corpus)
    for (name, path), record in zip(corpus.items(), records, strict=True):
        # upright JPEGs take torchvision's decoder, which gives PIL's pixels exactly
        assert np.array_equal(decode_image(record.image, record.key), reference_rgb(path)), name


def test_evaluation_dataset(corpus, model):
    from clipforge.evaluate.datasets import EvalDataset

    pre = Preprocess(model.config.preprocess)
    dataset = EvalDataset([(p, 0) for p in corpus.values()], ["x"], pre)
    for index, name in enumerate(corpus):
        _check(name, dataset[index][0], corpus[name], pre)


def test_curation(corpus, model):
    """Curation stores the JPEG of the upright RGB image (JPEGs byte for byte) and scores what Preprocess
    makes of the stored image."""
    from clipforge.curate.clean import CleanConfig, ClipSimilarity, check_image

    recorder = Recorder(Preprocess(model.config.preprocess))
    stored = {}
    for name, path in corpus.items():
        reason, checked = check_image(path.read_bytes(), CleanConfig(min_image_side=8))
        assert reason is None, (name, reason)
        if path.suffix == ".jpg":
            assert checked.jpeg == path.read_bytes(), name
        else:
            buffer = io.BytesIO()
            Image.fromarray(reference_rgb(path)).save(buffer, "JPEG", quality=95)
            assert checked.jpeg == buffer.getvalue(), name
        assert (checked.width, checked.height) == (WIDTH, HEIGHT), name
        stored[name] = checked.jpeg
    ClipSimilarity(model, recorder)(list(stored.values()), ["a photo"] * len(stored))
    for (name, jpeg), tensor in zip(stored.items(), recorder.seen, strict=True):
        want = recorder.preprocess(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))))
        assert torch.equal(tensor, want), name


def test_modes_without_rgb_are_refused_by_name(tmp_path, model):
    from clipforge.apps.classify import classify_files

    lab = tmp_path / "lab.tif"
    _base().convert("LAB").save(lab, "TIFF")
    with pytest.raises(ImageError, match="lab.tif: PIL mode 'LAB' has no RGB conversion") as info:
        open_image(lab)
    assert info.value.reason == "mode"
    report = classify_files(
        model, Preprocess(model.config.preprocess), [lab], ["a", "b"], ["{}"], progress=False
    )
    assert report.predictions == [] and "LAB" in report.failures[0]["error"]
