"""Hub loading against a loopback server that speaks the Hub's file protocol (HF_ENDPOINT), never the internet:
online download, offline reload from the cache, revision pinning, SHA256 refusal, missing files and repos, and
registry tags whose weights are on the Hub. Models are tiny open_clip / HF fixtures, compared at 1e-5."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import clipforge
from benchmarks.references import compare_open_clip, randomize_, sample_inputs
from clipforge.checkpoints import load_hub, registry, save
from clipforge.checkpoints.download import ChecksumError
from clipforge.checkpoints.hub import parse_hub_spec, weight_candidates
from clipforge.checkpoints.open_clip_config import config_from_open_clip
from clipforge.models import PRESETS, CLIPConfig, PreprocessConfig, get_config

open_clip = pytest.importorskip("open_clip")
huggingface_hub = pytest.importorskip("huggingface_hub")

TOL = 1e-5
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SQUASH = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bilinear",
    "resize_mode": "squash",
}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


def _etag(name: str, data: bytes) -> str:
    """The Hub's ETag: an LFS file's SHA256, a git file's blob SHA1."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """The part of the Hub that `hf_hub_download` talks to: HEAD/GET /{org}/{name}/resolve/{revision}/{file}
    answering with X-Repo-Commit and ETag (plus X-Linked-Etag/-Size for LFS files), and 404s with the Hub's
    X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound). Files in `corrupt` are served with one byte
    changed but their true ETag, as a broken transfer or a tampering mirror would."""

    def __init__(self):
        self.refs: dict[str, dict[str, str]] = {}  # repo -> {branch or tag: commit}
        self.commits: dict[str, dict[str, bytes]] = {}  # commit -> {file: bytes}
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                server._answer(self, body=False)

            def do_GET(self):
                server._answer(self, body=True)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def commit(self, repo: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> str:
        digest = hashlib.sha1(repo.encode())
        for name in sorted(files):
            digest.update(name.encode() + files[name])
        commit = digest.hexdigest()
        self.commits[commit] = dict(files)
        for ref in refs:
            self.refs.setdefault(repo, {})[ref] = commit
        return commit

    def gets(self, name: str) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + name))

    def _answer(self, handler, body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        parts = handler.path.split("?")[0].split("/", 5)  # "", org, name, "resolve", revision, file
        if len(parts) != 6 or parts[3] != "resolve":
            return self._error(handler, "RepoNotFound")
        repo, revision, name = f"{parts[1]}/{parts[2]}", *map(urllib.parse.unquote, parts[4:])
        if repo not in self.refs:
            return self._error(handler, "RepoNotFound")
        commit = revision if revision in self.commits else self.refs[repo].get(revision)
        if commit is None:
            return self._error(handler, "RevisionNotFound")
        data = self.commits[commit].get(name)
        if data is None:
            return self._error(handler, "EntryNotFound", commit)
        etag = _etag(name, data)
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{etag}"')
        if name.endswith(LFS_SUFFIXES):
            handler.send_header("X-Linked-Etag", f'"{etag}"')
            handler.send_header("X-Linked-Size", str(len(data)))
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data[:-1] + bytes([data[-1] ^ 1]) if name in self.corrupt else data)

    def _error(self, handler, code: str, commit: str | None = None) -> None:
        handler.send_response(404)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", code)
        if commit:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A loopback Hub as HF_ENDPOINT, a fresh Hub cache, and no other host reachable (any attempt fails the
    test at teardown, so nothing here can reach the internet)."""
    srv = HubServer()
    srv.thread.start()
    outside: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            outside.append(str(host))
            raise OSError(f"test_hub: {host} is not the loopback hub")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_HUB_OFFLINE", "CLIPFORGE_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no agent look-up
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    shutil.rmtree(tmp_path / "hf-cache", ignore_errors=True)  # model files (up to ~600 MB in the slow test)
    assert outside == [], f"tried to reach {outside}"


def _tiny_open_clip(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_(open_clip.CLIP(**TINY_OPEN_CLIP).float().eval(), seed)


def _open_clip_repo(model: torch.nn.Module, preprocess: dict | None = None) -> dict[str, bytes]:
    """The files an open_clip Hub repo holds (open_clip's push_to_hf_hub layout)."""
    config = {"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": preprocess or {}}
    state_dict = {k: v.contiguous() for k, v in model.state_dict().items()}
    return {
        "open_clip_config.json": json.dumps(config).encode(),
        "open_clip_model.safetensors": safetensors_bytes(state_dict),
    }


def _assert_parity(ours, reference) -> None:
    images, text = sample_inputs(ours, batch=2, seed=3)
    assert max(compare_open_clip(ours, reference, images, text).values()) <= TOL


def test_hub_spec_parsing():
    assert parse_hub_spec("hf-hub:laion/CLIP-ViT-B-32@v1").revision == "v1"
    assert parse_hub_spec("hf-hub:laion/CLIP-ViT-B-32").revision is None
    for bad in ("hf-hub:laion", "hf-hub:a/b/c", "hf-hub:/b", "hf-hub:a/b@"):
        with pytest.raises(ValueError, match="expected 'hf-hub:org/name'"):
            parse_hub_spec(bad)


def test_weight_file_candidates_follow_open_clip():
    default = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    assert weight_candidates("") == weight_candidates("open_clip_pytorch_model.bin") == default
    assert weight_candidates("pytorch_model.bin") == ("pytorch_model.safetensors", "pytorch_model.bin")
    assert weight_candidates("weights.npz") == ("weights.npz",)


def test_online_download_then_offline_reload_from_the_cache(hub, monkeypatch):
    reference = _tiny_open_clip(seed=1)
    hub.commit("org/tiny", _open_clip_repo(reference, SQUASH))
    model, preprocess = clipforge.load("hf-hub:org/tiny", device="cpu")
    _assert_parity(model, reference)
    assert model.config.activation == "gelu" and model.config.vision.heads == 2
    assert preprocess.config == PreprocessConfig(32, (0.5,) * 3, (0.5,) * 3, "bilinear", "squash")
    assert hub.gets("open_clip_model.safetensors") == 1
    seen = len(hub.requests)
    for switch in ("HF_HUB_OFFLINE", "CLIPFORGE_OFFLINE"):  # either switch: cache only, no request
        monkeypatch.setenv(switch, "1")
        again, _ = clipforge.load("hf-hub:org/tiny", device="cpu")
        monkeypatch.delenv(switch)
        assert torch.equal(again.visual.proj, model.visual.proj)
    assert len(hub.requests) == seen
    online_again = load_hub("hf-hub:org/tiny")  # online, cached: HEAD requests only, no second download
    assert torch.equal(online_again.visual.proj, model.visual.proj)
    assert hub.gets("open_clip_model.safetensors") == 1


def test_revision_pinning_by_tag_and_commit(hub, monkeypatch):
    old, new = _tiny_open_clip(seed=2), _tiny_open_clip(seed=3)
    old_commit = hub.commit("org/moving", _open_clip_repo(old), refs=("main", "v1"))
    hub.commit("org/moving", _open_clip_repo(new), refs=("main",))  # main moves on; v1 stays
    _assert_parity(load_hub("hf-hub:org/moving"), new)
    _assert_parity(load_hub("hf-hub:org/moving@v1"), old)
    _assert_parity(load_hub(f"hf-hub:org/moving@{old_commit}"), old)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_parity(load_hub("hf-hub:org/moving@v1"), old)  # the tag's commit is remembered in the cache
    with pytest.raises(FileNotFoundError, match="offline mode is on"):
        load_hub("hf-hub:org/moving@v2")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(FileNotFoundError, match="no revision 'v2'"):
        load_hub("hf-hub:org/moving@v2")


def test_corrupted_download_is_refused_and_not_cached(hub, tmp_path):
    hub.commit("org/bad", _open_clip_repo(_tiny_open_clip(seed=4)))
    hub.corrupt.add("open_clip_model.safetensors")
    with pytest.raises(ChecksumError, match="twice; removed from the cache"):
        load_hub("hf-hub:org/bad")
    assert hub.gets("open_clip_model.safetensors") == 2  # fetched once more, then refused
    blobs = tmp_path / "hf-cache" / "models--org--bad" / "blobs"
    assert all(len(blob.name) != 64 for blob in blobs.iterdir())  # no LFS blob left, only the git config


def test_corrupted_cache_entry_is_refetched_online_and_refused_offline(hub, tmp_path, monkeypatch):
    reference = _tiny_open_clip(seed=5)
    hub.commit("org/flaky", _open_clip_repo(reference))
    load_hub("hf-hub:org/flaky")
    (blob,) = [
        b for b in (tmp_path / "hf-cache" / "models--org--flaky" / "blobs").iterdir() if len(b.name) == 64
    ]
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")
    with pytest.raises(ChecksumError, match="cached file .* delete it"):
        load_hub("hf-hub:org/flaky")
    monkeypatch.delenv("CLIPFORGE_OFFLINE")
    _assert_parity(load_hub("hf-hub:org/flaky"), reference)
    assert hub.gets("open_clip_model.safetensors") == 2


def test_missing_files_and_repos_are_clear_errors(hub, monkeypatch):
    files = _open_clip_repo(_tiny_open_clip(seed=6))
    hub.commit("org/no-weights", {"open_clip_config.json": files["open_clip_config.json"]})
    hub.commit("org/empty", {"README.md": b"nothing here"})
    with pytest.raises(
        FileNotFoundError, match="none of open_clip_model.safetensors, open_clip_pytorch_model.bin"
    ):
        load_hub("hf-hub:org/no-weights")
    with pytest.raises(
        FileNotFoundError, match="none of open_clip_config.json, config.json found in the repo"
    ):
        load_hub("hf-hub:org/empty")
    with pytest.raises(FileNotFoundError, match="no such repository"):
        load_hub("hf-hub:org/nobody")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="in the cache, and offline mode is on"):
        load_hub("hf-hub:org/never-fetched")


def test_pytorch_bin_weights_and_an_unsupported_config(hub):
    reference = _tiny_open_clip(seed=7)
    files = _open_clip_repo(reference)
    pickled = _torch_bytes(safetensors_load(files["open_clip_model.safetensors"]))
    hub.commit(
        "org/bin",
        {"open_clip_config.json": files["open_clip_config.json"], "open_clip_pytorch_model.bin": pickled},
    )
    _assert_parity(load_hub("hf-hub:org/bin"), reference)
    config = {
        "model_cfg": {**TINY_OPEN_CLIP, "vision_cfg": {**TINY_OPEN_CLIP["vision_cfg"], "ls_init_value": 0.1}}
    }
    hub.commit("org/exotic", {**files, "open_clip_config.json": json.dumps(config).encode()})
    with pytest.raises(ValueError, match="open_clip_config.json: vision_cfg.ls_init_value=0.1: layer scale"):
        load_hub("hf-hub:org/exotic")
    assert hub.gets("open_clip_model.safetensors") == 0  # refused before the weights were fetched


def test_hf_transformers_folder_on_the_hub(hub, tmp_path):
    ours = randomize_(clipforge.CLIP(get_config("tiny-vit")).eval(), seed=8)
    folder = save(ours, tmp_path / "hf", "hf")
    hub.commit("org/tiny-hf", {p.name: p.read_bytes() for p in Path(folder).iterdir()})
    loaded = clipforge.create_model("hf-hub:org/tiny-hf")
    images, text = sample_inputs(ours, batch=2, seed=9)
    with torch.no_grad():
        assert (loaded.encode_image(images) - ours.encode_image(images)).abs().max() <= TOL
        assert (loaded.encode_text(text) - ours.encode_text(text)).abs().max() <= TOL
    with pytest.raises(ValueError, match="carries its own weights"):
        clipforge.create_model("hf-hub:org/tiny-hf", pretrained="openai")


def test_registry_tag_on_the_hub_downloads_and_brings_its_preprocessing(hub, monkeypatch):
    """A tag whose weights are only on the Hub (most open_clip tags): fetched with huggingface_hub, the tag's
    preprocessing in the config and both transforms, its activation winning over the preset's."""
    reference = _tiny_open_clip(seed=10)
    hub.commit("org/tagged", _open_clip_repo(reference))
    name = "tiny-hub"
    config = config_from_open_clip(TINY_OPEN_CLIP)
    monkeypatch.setitem(PRESETS, name, config)
    squash = PreprocessConfig(224, (0.5,) * 3, (0.5,) * 3, "bilinear", "squash")  # size: the model's wins
    entry = registry.PretrainedEntry(name, "webli", "", "", "gelu", hf_hub="org/tagged", preprocess=squash)
    monkeypatch.setitem(registry.PRETRAINED, (name, "webli"), entry)
    model, train, evaluate = clipforge.create_model_and_transforms(name, pretrained="WebLI")
    _assert_parity(model, reference)
    assert model.config.preprocess == PreprocessConfig(32, (0.5,) * 3, (0.5,) * 3, "bilinear", "squash")
    assert train.config == evaluate.config == model.config.preprocess
    assert isinstance(model.config, CLIPConfig) and hub.gets("open_clip_model.safetensors") == 1


def safetensors_load(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


def _torch_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


@pytest.mark.slow
def test_a_real_registry_entry_end_to_end(hub):
    """ViT-B-32:laion2b_s34b_b79k as the registry has it (GELU, weights only on the Hub), full size, with
    random weights served under its real repo id."""
    entry = registry.get_pretrained("ViT-B-32", "laion2b_s34b_b79k")
    assert (entry.source, entry.activation) == ("hf_hub", "gelu")
    torch.manual_seed(11)
    reference = randomize_(open_clip.create_model("ViT-B-32").eval(), seed=11)
    state_dict = {k: v.contiguous() for k, v in reference.state_dict().items()}
    hub.commit(entry.hf_hub, {"open_clip_model.safetensors": safetensors_bytes(state_dict)})
    model, _, preprocess = clipforge.create_model_and_transforms("ViT-B-32", pretrained="laion2b_s34b_b79k")
    images, text = sample_inputs(model, batch=2, seed=12)
    assert max(compare_open_clip(model, reference, images, text).values()) <= 1e-4
    assert preprocess.config == entry.preprocess
