"""Streaming shards: rank x worker split reads every sample once per epoch, whole batches in equal numbers per
rank, exact mid-epoch resume (epoch and resampled modes, any worker count), skips counted, `pipe:` and http(s)
shards (a loopback server) equal to local files."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest
import torch
from test_data_shards import CLASSES, _indices, _tokenizer, cifar_rows, write_shards

from clipforge.data import PromptCaptioner
from clipforge.data.tarshards import shard_sizes
from clipforge.data.webdataset import SHARD_STRIDE, ShardLoader, ShardStream, StreamConfig


@pytest.fixture(scope="module")
def rows(shared_data):
    return cifar_rows(shared_data)


def _stream(folder, rank=0, world=1, batch_size=3, **kw) -> ShardStream:
    config = StreamConfig(batch_size=batch_size, image_size=32, seed=0, **kw)
    return ShardStream(folder, config, tokenizer=_tokenizer, rank=rank, world_size=world)


@pytest.mark.parametrize("num_shards", [5, 3])  # 5 shards / 4 consumers: whole shards + a split one; 3: split
def test_rank_worker_split_reads_every_sample_once(tmp_path, rows, num_shards):
    folder = write_shards(tmp_path / "s", rows, num_shards, per_shard=10)
    for epoch in range(2):
        seen = []
        for rank in range(2):
            stream = _stream(folder, rank=rank, world=2, shuffle_buffer=8)
            stream.num_workers, stream.epoch = 2, epoch  # 2 ranks x 2 workers
            for worker in range(2):
                seen += _indices([b for b in stream.worker_batches(worker) if "images" in b])
        assert sorted(seen) == [s * SHARD_STRIDE + o for s in range(num_shards) for o in range(10)]


def test_loader_whole_batches_equal_on_every_rank(tmp_path, rows):
    folder = write_shards(tmp_path / "s", rows, 4, per_shard=12)
    seen = []
    for rank in range(2):
        loader = ShardLoader(_stream(folder, rank=rank, world=2, shuffle_buffer=5), num_workers=2)
        assert loader.batch_size == 3 and loader.batches_per_epoch == 8  # 4 consumers x 12 samples / 3
        batches = list(loader)
        assert len(batches) == 8 and all(len(b["index"]) == 3 for b in batches)
        seen += _indices(batches)
    assert sorted(seen) == [s * SHARD_STRIDE + o for s in range(4) for o in range(12)]
    five = ShardLoader(_stream(write_shards(tmp_path / "t", rows, 5, per_shard=12), world=2), num_workers=2)
    assert five.batches_per_epoch == 2 * (15 // 3)  # each consumer: 1 whole shard + 1/4 of the fifth


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on 2 cores: rotation by 3
@pytest.mark.parametrize(("mode", "workers", "stop"), [("epoch", 2, 5), ("epoch", 0, 4), ("resampled", 3, 7)])
def test_mid_epoch_resume_continues_with_the_same_batches(tmp_path, rows, mode, workers, stop):
    folder = write_shards(tmp_path / "s", rows, 4, per_shard=9)
    options = {
        "shuffle_buffer": 6,
        "resampled": mode == "resampled",
        "samples_per_epoch": 36 if mode == "resampled" else None,
    }
    full = ShardLoader(_stream(folder, **options), num_workers=workers)
    full.set_epoch(1)
    expected = list(full)
    assert len(expected) == full.batches_per_epoch == 12
    first = ShardLoader(_stream(folder, **options), num_workers=workers)
    first.set_epoch(1)
    done = []
    for batch in first:
        done.append(batch)
        if len(done) == stop:
            break
    state = json.loads(json.dumps(first.state_dict()))  # plain values: survives any checkpoint format
    assert state["handed_out"] == stop
    second = ShardLoader(_stream(folder, **options), num_workers=workers)
    second.load_state_dict(state)
    _same(done + list(second), expected)
    if mode == "epoch":
        assert len(set(_indices(expected))) == 36  # every sample once
    with pytest.raises(ValueError, match="same topology"):
        ShardLoader(_stream(folder, **options), num_workers=workers + 2).load_state_dict(state)


def test_corrupt_samples_are_skipped_and_counted(tmp_path, rows):
    good = rows[0][0].read_bytes()
    damage = {3: good[: len(good) // 3], 11: b"garbage", 12: b""}
    folder = write_shards(tmp_path / "s", rows, 2, per_shard=8, gz=False, damage=damage)
    config = StreamConfig(batch_size=4, image_size=32, shuffle_buffer=0, shuffle_shards=False)
    stream = ShardStream(folder, config, captioner=PromptCaptioner(CLASSES, tokenizer=_tokenizer))
    loader = ShardLoader(stream, num_workers=2)
    with pytest.warns(UserWarning, match="repeats some to keep the ranks in step"):
        batches = list(loader)
    assert len(batches) == loader.batches_per_epoch == 4  # 2 workers x 8 // 4
    assert loader.skips.as_dict() == {"corrupt_image": 3}  # every damaged sample was reached
    assert len(set(_indices(batches))) == 13  # the 13 good ones, 3 repeated to fill the quota
    assert all(b["images"].shape[1:] == (3, 32, 32) for b in batches)


def test_sizes_json_or_counting(tmp_path, rows):
    folder = write_shards(tmp_path / "s", rows, 2, per_shard=5)
    shards = sorted(str(p) for p in folder.iterdir())
    assert shard_sizes(shards) == [5, 5]  # counted
    (folder / "sizes.json").write_text(json.dumps({"train-0000.tar.gz": 3, "train-0001.tar.gz": 4}))
    assert shard_sizes(shards) == [3, 4]  # the listing wins when it names every shard


def test_pipe_and_http_shards_equal_local_files(tmp_path, rows):
    folder = write_shards(tmp_path / "s", rows, 3, per_shard=6)
    local = list(ShardLoader(_stream(folder, shuffle_buffer=4), num_workers=0))
    piped = ShardLoader(
        _stream(f"pipe:cat {folder}/train-{{0000..0002}}.tar.gz", shuffle_buffer=4), num_workers=0
    )
    _same(list(piped), local)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/train-{{0000..0002}}.tar.gz"
        fetched = ShardLoader(_stream(url, shuffle_buffer=4), num_workers=0)
        assert fetched.stream.shards[0].startswith("http://127.0.0.1:")
        _same(list(fetched), local)
        with pytest.raises(ValueError, match="cannot fetch shard"):
            list(ShardLoader(_stream(url.replace("train-", "missing-"), shuffle_buffer=0), num_workers=0))
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="exited with status"):
        list(ShardLoader(_stream(f"pipe:cat {folder}/nothing-{{0..1}}.tar", shuffle_buffer=0), num_workers=0))
