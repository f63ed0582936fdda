"""ArrayLoader: the batch contract, exact mid-epoch resume, rank partition, template captions."""

from __future__ import annotations

import pytest
import torch

from clipforge import tokenize
from clipforge.data import (
    ArrayLoader,
    AugmentConfig,
    EpochSampler,
    LabelledArrays,
    PromptCaptioner,
    load_zeroshot_eval,
    open_labelled_dataset,
)


@pytest.fixture(scope="module")
def cifar_test(shared_data, tmp_path_factory) -> LabelledArrays:
    cache = tmp_path_factory.mktemp("cache")
    return open_labelled_dataset(
        shared_data / "cifar10", "test", cache_dir=cache, num_workers=1, progress=False
    )


def _loader(data, batch_size=64, rank=0, world=1, prefetch=2, kind="crop_flip"):
    captioner = PromptCaptioner(data.classes, seed=0, context_length=16)
    sampler = EpochSampler(len(data), seed=0, batch_size=batch_size, rank=rank, world_size=world)
    return ArrayLoader(data, captioner, sampler, AugmentConfig(kind=kind, image_size=32), prefetch=prefetch)


def test_batch_contract(cifar_test):
    loader = _loader(cifar_test)
    assert loader.batches_per_epoch == 16 and loader.batch_size == 64  # ceil(1000 / 64)
    batch = next(iter(loader))
    assert loader.state_dict() == {"epoch": 0, "offset": 64, "seed": 0}  # position = batches handed out
    assert set(batch) == {"images", "text", "labels", "index"}
    assert batch["images"].shape == (64, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert batch["text"].shape == (64, 16) and batch["text"].dtype == torch.int64
    assert batch["labels"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    assert torch.equal(batch["labels"], cifar_test.labels[batch["index"]])
    # the caption tokens are those of "<template with the class name>"
    i, label = int(batch["index"][0]), int(batch["labels"][0])
    caption = loader.captioner.caption(label, i, epoch=0)
    assert cifar_test.classes[label] in caption
    assert torch.equal(batch["text"][0], tokenize([caption], context_length=16, truncate=True)[0])


def test_resume_mid_epoch_is_exact(cifar_test):
    full = _loader(cifar_test)
    full.set_epoch(3)
    batches = list(full)
    assert sum(len(b["index"]) for b in batches) == 1000
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(1000))
    resumed = _loader(cifar_test, prefetch=0)
    resumed.load_state_dict({"epoch": 3, "offset": 5 * 64, "seed": 0})  # 5 batches already consumed
    rest = list(resumed)
    assert len(rest) == len(batches) - 5
    for a, b in zip(batches[5:], rest):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_ranks_cover_each_sample_once(cifar_test):
    seen = [torch.cat([b["index"] for b in _loader(cifar_test, rank=r, world=2)]) for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 500
    assert sorted(torch.cat(seen).tolist()) == list(range(1000))


def test_templates_vary_and_are_deterministic(cifar_test):
    captioner = PromptCaptioner(cifar_test.classes, seed=0, context_length=16)
    index = torch.arange(1000)
    chosen = captioner.template_index(index, epoch=0)
    assert len(set(chosen.tolist())) == len(captioner.templates)  # all 12 templates in use
    assert (chosen == captioner.template_index(index, epoch=0)).all()
    assert (chosen != captioner.template_index(index, epoch=1)).mean() > 0.8


def test_zeroshot_eval_tensors(shared_data, tmp_path):
    evalset = load_zeroshot_eval(shared_data / "cifar10", "test", image_size=32, cache_dir=tmp_path)
    assert evalset.images.shape == (1000, 3, 32, 32) and evalset.labels.bincount().tolist() == [100] * 10
    assert abs(float(evalset.images.mean())) < 1.0 and evalset.classes[3] == "cat"


def test_record_loader_same_batches_for_any_worker_count_and_counts_skips(shared_data, tmp_path):
    import shutil

    from clipforge.data import Record
    from clipforge.data.mapstyle import RecordDataset, RecordLoader

    rows = (shared_data / "cifar10" / "test.csv").read_text().splitlines()[1:41]
    records = []
    for i, row in enumerate(rows):
        path, label, name = row.split(",")
        target = tmp_path / f"{i}.jpg"
        shutil.copy(shared_data / "cifar10" / path, target)
        records.append(Record(target, f"a photo of a {name}" if i != 6 else "", int(label), key=str(i)))
    (tmp_path / "2.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "9.jpg").unlink()

    def tok(texts):
        return torch.tensor([[len(t)] for t in texts])

    def run(workers, offset=0):
        sampler = EpochSampler(40, seed=1, batch_size=8)
        loader = RecordLoader(
            RecordDataset(records, image_size=32), sampler, AugmentConfig(image_size=32), tokenizer=tok,
            num_workers=workers,
        )  # fmt: skip
        loader.load_state_dict({"epoch": 1, "offset": offset, "seed": 1})
        return list(loader), loader.skips

    serial, skips = run(0)
    parallel, _ = run(2)
    assert skips.as_dict() == {"corrupt_image": 1, "empty_caption": 1, "missing_file": 1}
    assert sum(len(b["index"]) for b in serial) == 37
    assert all(torch.equal(a[k], b[k]) for a, b in zip(serial, parallel, strict=True) for k in a)
    resumed, _ = run(2, offset=16)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(serial[2:], resumed, strict=True) for k in a)


def test_labelled_loader_state_dict_resume(cifar_test):
    from clipforge.data import LabelledLoaderConfig, labelled_loader

    config = LabelledLoaderConfig(batch_size=100, seed=5, context_length=12)
    reference = labelled_loader(cifar_test, config)
    reference.set_epoch(1)
    expected = list(reference)
    assert len(expected) == 10 and reference.state_dict() == {"epoch": 1, "offset": 1000, "seed": 5}
    assert list(reference) == []  # the epoch is over until the next set_epoch
    first = labelled_loader(cifar_test, config)
    first.set_epoch(1)
    for step, _ in enumerate(first):
        if step == 2:
            break
    state = first.state_dict()
    assert state == {"epoch": 1, "offset": 300, "seed": 5}
    second = labelled_loader(cifar_test, config)
    second.load_state_dict(state)
    rest = list(second)
    assert len(rest) == 7
    assert all(torch.equal(a[k], b[k]) for a, b in zip(expected[3:], rest, strict=True) for k in a)
