"""End to end: every drop accounted for, caps and output deterministic, shards readable by webdataset."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from clipforge.curate.balance import unit_hash
from clipforge.curate.clean import CleanConfig
from clipforge.curate.pipeline import CurateConfig, curate

QUERIES = ["dog", "zebra", "kite", "giraffe", "red bus"]
CAP = 10


def _smooth_image(seed: int, size: int = 64) -> Image.Image:
    """Random 8x8 colour field upsampled: distinct seeds give unrelated thumbnails."""
    base = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)


def _save(image: Image.Image, path: Path, **kwargs) -> str:
    image.save(path, **kwargs)
    return str(path)


def _make_dataset(folder: Path) -> tuple[list[Path], Counter]:
    """Two JSONL files; returns them and the drops every pair is designed to produce (besides balancing)."""
    img = folder / "img"
    img.mkdir()
    rows_a, rows_b, expected = [], [], Counter()
    for i in range(40):  # head query "dog": 40 pairs, cap 10 -> balanced by hash
        rows_a.append(
            {"image": _save(_smooth_image(i), img / f"dog{i}.jpg"), "caption": f"a dog number {i} here"}
        )
    for i, q in enumerate(["zebra", "kite", "giraffe", "red bus"]):  # tail queries, kept unless unclean
        rows_b.append(
            {"image": _save(_smooth_image(100 + i), img / f"t{i}.png"), "caption": f"one {q} in view"}
        )
    twin = _save(_smooth_image(200), img / "twin.jpg")
    rows_b.append({"image": twin, "caption": "a zebra standing still"})
    rows_b.append({"image": _save(_smooth_image(200), img / "twin_copy.jpg"), "caption": "the zebra again"})
    expected["duplicate_image"] += 1  # same bytes under another name
    rows_b.append({"image": _save(_smooth_image(201), img / "c1.jpg"), "caption": "A kite, flying high."})
    rows_b.append({"image": _save(_smooth_image(202), img / "c2.jpg"), "caption": "a KITE flying high"})
    expected["duplicate_caption"] += 1  # same normalised caption
    near = _smooth_image(203)
    rows_b.append({"image": _save(near, img / "n1.jpg", quality=95), "caption": "giraffe by a tree"})
    small = near.resize((50, 50), Image.Resampling.BILINEAR)
    rows_b.append({"image": _save(small, img / "n2.jpg", quality=60), "caption": "giraffe eating leaves"})
    expected["near_duplicate_image"] += 1
    (img / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    rows_b.append({"image": str(img / "broken.jpg"), "caption": "a red bus parked"})
    expected["image_unreadable"] += 1
    rows_b.append({"image": _save(_smooth_image(204, 16), img / "tiny.png"), "caption": "a red bus moving"})
    expected["image_too_small"] += 1
    rows_b.append({"image": str(img / "gone.jpg"), "caption": "a red bus at night"})
    expected["fetch_missing_file"] += 1
    rows_b.append({"image": _save(_smooth_image(205), img / "blur.jpg"), "caption": "blurry zebra photo"})
    expected["low_similarity"] += 1
    for caption, reason in [("", "caption_empty"), ("dog", "caption_too_short"), ("dog!", "caption_too_short"),
                            ("1234 5678 zebra", "caption_not_text"), ("aaaaaaaaaaaa kite", "caption_repetitive"),
                            ("a cat on a mat", "no_query_match")]:  # fmt: skip
        rows_b.append({"image": twin, "caption": caption})
        expected[reason] += 1
    files = [folder / "a.jsonl", folder / "b.jsonl"]
    for path, rows in zip(files, (rows_a, rows_b)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files, expected


def _scorer(jpegs, captions):
    return np.array([0.1 if "blurry" in c else 0.9 for c in captions])


def _config(tmp_path: Path, out: str, **overrides) -> CurateConfig:
    (tmp_path / "queries.txt").write_text("# test queries\n" + "\n".join(QUERIES) + "\nDog\n")
    values = dict(
        inputs=(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")),
        output_dir=str(tmp_path / out),
        queries_file=str(tmp_path / "queries.txt"),
        cap=CAP,
        seed=0,
        samples_per_shard=4,
        rank=0,
        world_size=1,
        clean=CleanConfig(min_similarity=0.5),
    )
    values.update(overrides)
    return CurateConfig(**values)


def _read_shards(out_dir: Path) -> list[dict]:
    urls = sorted(str(p) for p in out_dir.glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))


@pytest.fixture()
def dataset(tmp_path):
    return tmp_path, *_make_dataset(tmp_path)


def test_every_drop_accounted_and_shards_load(dataset):
    tmp_path, _, expected = dataset
    stats = curate(_config(tmp_path, "out"), scorer=_scorer)
    dog_keys = [f"a.jsonl:{i}" for i in range(40)]
    dog_kept = sum(unit_hash(0, k) < CAP / 40 for k in dog_keys)
    expected["balanced_out"] = 40 - dog_kept
    assert stats["dropped"] == dict(expected)
    assert stats["input_pairs"] == 40 + 20
    assert stats["input_pairs"] == stats["kept"] + sum(stats["dropped"].values()) and stats["accounted"]
    assert stats["kept"] == dog_kept + 4 + 1 + 1 + 1  # tail singles, twin, c1, n1

    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["samples"] for s in manifest["shards"]][:-1] == [4] * (len(manifest["shards"]) - 1)
    assert sum(s["samples"] for s in manifest["shards"]) == stats["kept"] == manifest["samples"]
    samples = _read_shards(out)
    assert len(samples) == stats["kept"]
    for sample in samples:
        meta = sample["json"]
        assert sample["txt"] == meta["caption"]
        assert sample["jpg"].size == (meta["width"], meta["height"])
        assert meta["queries"] and all(q in sample["txt"].lower() for q in meta["queries"])
    assert {s["json"]["source_key"] for s in samples} >= {"b.jsonl:0", "b.jsonl:4", "b.jsonl:6", "b.jsonl:8"}

    rows = list(csv.DictReader((out / "query_counts.tsv").open(), delimiter="\t"))
    counts = {r["query"]: (int(r["before"]), int(r["after"])) for r in rows}
    after = Counter(q for s in samples for q in s["json"]["queries"])
    assert counts["dog"] == (40, dog_kept) and counts["zebra"][0] == 4  # single, twin, twin copy, blurry
    assert {q: a for q, (_, a) in counts.items()} == dict(after)
    assert stats["balance"]["head_queries"] == 1 and stats["balance"]["head_matches_after"] == dog_kept
    assert (out / "query_counts.png").stat().st_size > 10_000
    assert json.loads((out / "stats.json").read_text())["kept"] == stats["kept"]


def test_deterministic_across_workers_and_seeded(dataset):
    tmp_path, _, _ = dataset
    one = curate(_config(tmp_path, "w1", num_workers=1), scorer=_scorer)
    two = curate(_config(tmp_path, "w2", num_workers=2), scorer=_scorer)
    shas = [[s["sha256"] for s in json.loads((tmp_path / d / "manifest.json").read_text())["shards"]]
            for d in ("w1", "w2")]  # fmt: skip
    assert shas[0] == shas[1] and one["dropped"] == two["dropped"]
    other = curate(_config(tmp_path, "s1", seed=1), scorer=_scorer)
    keys = [{s["json"]["source_key"] for s in _read_shards(tmp_path / d)} for d in ("w1", "s1")]
    assert keys[0] != keys[1]
    assert other["kept"] + sum(other["dropped"].values()) == other["input_pairs"]


def test_ranks_split_the_work(dataset):
    tmp_path, _, _ = dataset
    single = curate(_config(tmp_path, "single"), scorer=_scorer)
    counts_dir = str(tmp_path / "shared_counts")
    for rank in range(2):
        counted = curate(_config(tmp_path, f"r{rank}", rank=rank, world_size=2, stage="count",
                                 counts_dir=counts_dir), scorer=_scorer)  # fmt: skip
        assert counted["files"] == 1
    kept_keys, total = set(), Counter()
    for rank in range(2):
        stats = curate(_config(tmp_path, f"r{rank}", rank=rank, world_size=2, stage="select",
                               counts_dir=counts_dir), scorer=_scorer)  # fmt: skip
        total.update(stats["dropped"])
        manifest = tmp_path / f"r{rank}" / f"manifest-r{rank:05d}.json"
        assert json.loads(manifest.read_text())["samples"] == stats["kept"]
        kept_keys |= {s["json"]["source_key"] for s in _read_shards(tmp_path / f"r{rank}")}
    single_keys = {s["json"]["source_key"] for s in _read_shards(tmp_path / "single")}
    assert kept_keys == single_keys and dict(total) == single["dropped"]


def test_errors_name_what_is_wrong(dataset, tmp_path):
    root, _, _ = dataset
    with pytest.raises(ValueError, match="no scorer"):
        curate(_config(root, "x"))
    with pytest.raises(FileNotFoundError, match="run the count stage on every rank"):
        curate(
            _config(root, "y", rank=1, world_size=2, stage="select", barrier_timeout_s=0.0), scorer=_scorer
        )
    with pytest.raises(ValueError, match="stage must be one of"):
        _config(root, "z", stage="both")


def test_real_coco_pairs_with_near_duplicates(shared_data, tmp_path):
    coco = shared_data / "coco_captions_mini"
    rows = list(csv.DictReader((coco / "captions.csv").open()))[:60]  # 12 images x 5 captions
    images = sorted({r["path"] for r in rows})
    pairs = [{"image": str(coco / r["path"]), "caption": r["caption"]} for r in rows]
    copies = tmp_path / "copies"
    copies.mkdir()
    for i, path in enumerate(images[:4]):  # re-encoded half-size copies with fresh captions
        with Image.open(coco / path) as im:
            small = im.resize((im.width // 2, im.height // 2))
        pairs.append(
            {"image": _save(small, copies / f"{i}.jpg", quality=70), "caption": f"copy {i} of a photo"}
        )
    (tmp_path / "coco.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "q.txt").write_text(
        "a\nan\nthe\nphoto\nman\nwoman\ntable\ndog\ncat\npeople\nstreet\nsitting\nwhite\n"
    )
    config = CurateConfig(inputs=(str(tmp_path / "coco.jsonl"),), output_dir=str(tmp_path / "out"),
                          queries_file=str(tmp_path / "q.txt"), cap=1_000, rank=0, world_size=1)  # fmt: skip
    stats = curate(config)
    assert stats["accounted"] and stats["dropped"]["near_duplicate_image"] == 4
    samples = list(wds.WebDataset(str(tmp_path / "out" / "curated-000000.tar"), shardshuffle=False))
    assert len(samples) == stats["kept"] == len({s["json"] for s in samples})
    by_path = {r["path"]: set() for r in rows}
    for r in rows:
        by_path[r["path"]].add(r["caption"].strip())
    seen_images = set()
    for sample in samples:
        meta = json.loads(sample["json"])
        source = Path(meta["image"]).relative_to(coco).as_posix()
        assert sample["txt"].decode() in by_path[source]  # caption belongs to its image
        assert sample["jpg"] == (coco / source).read_bytes()  # original JPEG bytes, untouched
        seen_images.add(source)
    assert len(seen_images) == len(samples)  # one pair per image: the rest are exact image duplicates
    assert stats["dropped"].get("duplicate_image", 0) + stats["kept"] + 4 <= len(pairs)


def test_shards_load_in_clipforge_data(dataset):
    from clipforge.data.webdataset import ShardStream, StreamConfig

    tmp_path, _, _ = dataset
    stats = curate(_config(tmp_path, "out"), scorer=_scorer)
    config = StreamConfig(batch_size=4, image_size=32, shuffle_shards=False, augment=None)
    batches = [b for b in ShardStream(tmp_path / "out", config) if "images" in b]
    assert sum(len(b["images"]) for b in batches) == stats["kept"]
    assert all(not b["_skips"] for b in batches)
    assert batches[0]["images"].shape[1:] == (3, 32, 32) and batches[0]["text"].shape[0] == 4


def test_clip_similarity_filter_with_a_clipforge_model(dataset):
    import torch

    from clipforge.curate.clean import ClipSimilarity
    from clipforge.factory import create_model_and_transforms
    from clipforge.tokenizer import tokenize

    torch.manual_seed(0)
    model, _, preprocess = create_model_and_transforms("tiny-vit")
    scorer = ClipSimilarity(model, preprocess)
    tmp_path, _, _ = dataset
    images = sorted((tmp_path / "img").glob("dog*.jpg"))[:3]
    captions = ["a dog", "two dogs playing", "a dog on grass"]
    scores = scorer([p.read_bytes() for p in images], captions)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokenize(captions, context_length=model.context_length), normalize=True)
    np.testing.assert_allclose(scores, (image * text).sum(-1).numpy(), atol=1e-5)
    threshold = float(np.median(scores))
    stats = curate(_config(tmp_path, "sim", clean=CleanConfig(min_similarity=threshold)), scorer=scorer)
    samples = _read_shards(tmp_path / "sim")
    assert stats["accounted"] and stats["dropped"]["low_similarity"] >= 1
    assert all(s["json"]["similarity"] >= threshold for s in samples)
