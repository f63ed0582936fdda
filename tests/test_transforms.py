"""Preprocessing equals open_clip's eval/train transforms; 16-bit, palette and 1-bit modes are handled."""

from __future__ import annotations

import pickle

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from clipforge.decode import ImageError, convert_rgb, sixteen_bit_to_l
from clipforge.models.config import PreprocessConfig
from clipforge.transforms import Preprocess, TrainPreprocess, image_transform, load_image, to_rgb

CONFIG = PreprocessConfig()
REFERENCE = open_clip.image_transform(224, is_train=False)
COCO_PHOTOS = [  # varied sizes and aspect ratios (portrait, landscape, near-square)
    "val2017/000000000139.jpg",  # 640 x 426
    "train2017/000000069468.jpg",  # 427 x 640
    "train2017/000000072258.jpg",  # 500 x 500
    "train2017/000000084533.jpg",  # 640 x 579
]
MODES = ["same", "L", "LA", "RGBA", "CMYK", "I", "F", "YCbCr", "RGBX", "HSV"]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape == (3, 224, 224)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def images(shared_data) -> dict[str, Image.Image]:
    paths = {p: shared_data / "coco_captions_mini" / "images" / p for p in COCO_PHOTOS}
    paths["kafka"] = shared_data / "clip_assets" / "franz-kafka.jpg"
    paths["CLIP.png"] = shared_data / "clip_assets" / "CLIP.png"
    paths["cifar"] = next(iter(sorted((shared_data / "cifar10" / "images" / "test" / "cat").glob("*.jpg"))))
    loaded = {name: load_image(path, draft=False) for name, path in paths.items()}
    kafka = loaded["kafka"]
    loaded["crop-224x224"] = kafka.crop((0, 0, 224, 224))  # no resize at all
    loaded["crop-223x500"] = kafka.crop((10, 20, 233, 520))  # upscales slightly
    loaded["crop-450x60"] = kafka.crop((0, 300, 450, 360))  # extreme aspect ratio
    return loaded


def test_matches_expected_kafka_tensor(clip_assets):
    expected = np.load(clip_assets / "expected_preprocessed_image.npy")  # (1, 3, 224, 224)
    ours = Preprocess(CONFIG)(Image.open(clip_assets / "franz-kafka.jpg"))
    assert np.abs(ours.numpy()[None] - expected).max() <= 1e-6


@pytest.mark.parametrize("mode", MODES)
def test_eval_matches_open_clip_for_modes(images, mode):
    preprocess = Preprocess(CONFIG)
    for name, image in images.items():
        converted = image if mode == "same" else image.convert(mode)
        assert max_diff(preprocess(converted), REFERENCE(converted)) <= 1e-6, (name, mode)


def test_clip_png_is_rgba_and_matches(images):
    assert images["CLIP.png"].mode == "RGBA"
    assert max_diff(Preprocess(CONFIG)(images["CLIP.png"]), REFERENCE(images["CLIP.png"])) <= 1e-6


@pytest.mark.parametrize(("mode", "resizable_as"), [("P", "RGB"), ("PA", "RGBA"), ("1", "L")])
def test_palette_and_bilevel_are_converted_before_resizing(images, mode, resizable_as):
    """PIL nearest-resizes P/1 and interpolates PA palette indices; we convert first, then as open_clip."""
    preprocess = Preprocess(CONFIG)
    image = images["val2017/000000000139.jpg"].convert(mode)
    ours = preprocess(image)
    assert max_diff(ours, REFERENCE(image.convert(resizable_as))) <= 1e-6
    assert max_diff(ours, REFERENCE(image)) > 0.1  # open_clip differs here, by design


def test_sixteen_bit_is_scaled_not_clipped(images):
    grey = images["kafka"].convert("L")
    as_16bit = np.asarray(grey).astype(np.uint16) * 257
    sixteen = Image.fromarray(as_16bit)
    assert sixteen.mode == "I;16"
    expected = REFERENCE(grey)
    preprocess = Preprocess(CONFIG)
    assert max_diff(preprocess(sixteen), expected) == 0.0
    assert max_diff(preprocess(Image.fromarray(as_16bit.astype(np.int32), mode="I")), expected) == 0.0
    big_endian = Image.frombytes("I;16B", sixteen.size, as_16bit.astype(">u2").tobytes())
    assert max_diff(preprocess(big_endian), expected) == 0.0
    # open_clip (PIL's I;16 -> RGB) clips every value above 255 to white:
    white = (1 - torch.tensor(CONFIG.mean)) / torch.tensor(CONFIG.std)
    clipped = REFERENCE(sixteen)
    assert (clipped == white.view(3, 1, 1)).float().mean() > 0.9
    rounded = np.asarray(sixteen_bit_to_l(Image.fromarray(np.array([[0, 128, 129, 385, 65535]], np.uint16))))
    assert rounded.tolist() == [[0, 0, 1, 1, 255]]
    assert to_rgb(sixteen).getpixel((0, 0)) == (grey.getpixel((0, 0)),) * 3


def test_train_transform_matches_open_clip_seeded_and_pickles(images):
    ours = image_transform(CONFIG, train=True)
    reference = open_clip.image_transform(224, is_train=True)
    restored = pickle.loads(pickle.dumps(ours))
    assert isinstance(restored, TrainPreprocess) and restored.scale == (0.9, 1.0)
    for seed, name in enumerate(["kafka", "CLIP.png", "cifar", "train2017/000000069468.jpg"]):
        torch.manual_seed(seed)
        expected = reference(images[name])
        torch.manual_seed(seed)
        first = ours(images[name])
        torch.manual_seed(seed)
        assert max_diff(first, expected) <= 1e-6
        assert max_diff(restored(images[name]), expected) <= 1e-6
    torch.manual_seed(0)
    square = images["train2017/000000072258.jpg"]  # 500 x 500: many crops fit (kafka's aspect often doesn't)
    assert max_diff(ours(square), ours(square)) > 0.1  # the crop is random


def test_eval_transform_pickles(images):
    preprocess = pickle.loads(pickle.dumps(image_transform(CONFIG)))
    assert max_diff(preprocess(images["kafka"]), REFERENCE(images["kafka"])) <= 1e-6


def test_load_image_draft(shared_data, images):
    photo = shared_data / "coco_captions_mini" / "images" / "val2017" / "000000000139.jpg"
    full = load_image(photo, 224, draft=False)
    draft = load_image(photo, 224, draft=True)
    assert full.size == (640, 426) and draft.size == full.size  # 426 < 2 * 224: no reduction possible
    kafka = shared_data / "clip_assets" / "franz-kafka.jpg"  # 450 x 655
    assert load_image(kafka, None).size == load_image(kafka, 224, draft=False).size == (450, 655)
    assert load_image(kafka, 224).size == (225, 328)  # 1/2 scale keeps both sides >= 224
    assert load_image(kafka, 100).size == (113, 164)  # 1/4
    diff = (Preprocess(CONFIG)(load_image(kafka, 224)) - REFERENCE(images["kafka"])).abs()
    # measured: mean 0.032, 99th percentile 0.20, max 1.17 (at sharp edges), in normalised units
    assert diff.mean().item() < 0.05 and diff.flatten().quantile(0.99).item() < 0.3
    png = shared_data / "clip_assets" / "CLIP.png"
    assert load_image(png, 100).size == (2162, 762)  # not a JPEG: decoded as is
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        load_image(shared_data / "missing.jpg", 224)


def test_premultiplied_la_and_bad_modes():
    grey_alpha = Image.new("LA", (300, 250), (90, 200))
    premultiplied = grey_alpha.convert("La")
    assert premultiplied.mode == "La"  # open_clip fails on it: PIL has no La -> RGB conversion
    assert max_diff(Preprocess(CONFIG)(premultiplied), REFERENCE(grey_alpha)) <= 1.5 / 255 / min(CONFIG.std)
    with pytest.raises(ValueError, match="mode 'La'"):
        convert_rgb(premultiplied)


def test_random_resized_crop_box_draws_as_torchvision():
    from torchvision.transforms import RandomResizedCrop

    from clipforge.transforms import random_resized_crop_box

    for seed, (width, height), scale, ratio in [
        (0, (640, 426), (0.9, 1.0), (3 / 4, 4 / 3)),
        (1, (50, 300), (0.08, 1.0), (3 / 4, 4 / 3)),  # a tall strip: misses, then the clamped centre crop
        (2, (300, 40), (0.9, 1.0), (3 / 4, 4 / 3)),
        (3, (224, 224), (0.5, 0.7), (0.5, 2.0)),
    ]:
        image = Image.new("RGB", (width, height))
        for draw in range(20):
            torch.manual_seed(seed * 100 + draw)
            want = RandomResizedCrop.get_params(image, list(scale), list(ratio))
            torch.manual_seed(seed * 100 + draw)
            assert random_resized_crop_box((width, height), scale, ratio) == tuple(want), (seed, draw)
