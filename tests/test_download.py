"""Downloads against a loopback HTTP server: caching, SHA256 verification, interrupted transfers,
offline mode, and `load_pretrained(name, "openai")` through the registry."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch

from benchmarks.references import compare_open_clip, sample_inputs, tiny_open_clip, trace_open_clip
from clipforge.checkpoints import load_pretrained, registry
from clipforge.checkpoints.download import ChecksumError, cache_dir, download
from clipforge.checkpoints.openai import infer_config
from clipforge.checkpoints.torchscript import read_torchscript_weights
from clipforge.models.config import OPENAI_PRESETS, PRESETS

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Server:
    """Serves `files` (path -> bytes) on 127.0.0.1; paths in `truncate` send half and close."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if self.path in server.truncate else data)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_file_is_downloaded_verified_and_cached(server, tmp_path):
    server.files["/m/model.pt"] = PAYLOAD
    path = download(server.url("/m/model.pt"), _sha(PAYLOAD), cache=tmp_path, progress=False)
    assert path == tmp_path / "model.pt" and path.read_bytes() == PAYLOAD
    again = download(server.url("/m/model.pt"), _sha(PAYLOAD), cache=tmp_path, progress=False)
    assert again == path and server.requests == ["/m/model.pt"]  # the second call made no request
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_corrupt_file_is_rejected_and_not_cached(server, tmp_path):
    server.files["/corrupt.pt"] = PAYLOAD[:-1] + b"\x00"
    with pytest.raises(ChecksumError, match="does not match"):
        download(server.url("/corrupt.pt"), _sha(PAYLOAD), cache=tmp_path, progress=False, retries=2)
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 1  # wrong bytes are not retried


def test_interrupted_download_leaves_no_file(server, tmp_path):
    server.files["/cut.pt"] = PAYLOAD
    server.truncate.add("/cut.pt")
    with pytest.raises(ConnectionError, match="2 attempt"):
        download(server.url("/cut.pt"), _sha(PAYLOAD), cache=tmp_path, progress=False, retries=1, timeout_s=5)
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 2


def test_corrupted_cache_entry_is_replaced(server, tmp_path):
    server.files["/model.pt"] = PAYLOAD
    (tmp_path / "model.pt").write_bytes(b"stale")
    path = download(server.url("/model.pt"), _sha(PAYLOAD), cache=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_offline_mode_with_empty_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="offline mode is on"):
        download("http://127.0.0.1:9/model.pt", _sha(PAYLOAD), progress=False)
    with pytest.raises(FileNotFoundError, match="RN50.pt: not in the cache"):
        load_pretrained("RN50", "openai")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CLIPFORGE_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "clipforge")


def test_registry_has_every_openai_preset_with_sha_in_url():
    for name in OPENAI_PRESETS:
        entry = registry.get_pretrained(name)
        assert len(entry.sha256) == 64 and f"/{entry.sha256}/" in entry.url
        assert entry.url.startswith("https://openaipublic.azureedge.net/clip/models/")
    assert registry.get_pretrained("ViT-L/14@336px").filename == "ViT-L-14-336px.pt"
    assert registry.get_pretrained("RN50-quickgelu").model == "RN50"
    with pytest.raises(KeyError, match="available"):
        registry.get_pretrained("RN50", "laion2b")


def test_load_pretrained_downloads_a_torchscript_file(server, tmp_path, monkeypatch):
    reference = tiny_open_clip("vit", seed=11)
    trace_open_clip(reference, tmp_path / "tiny.pt")
    data = (tmp_path / "tiny.pt").read_bytes()
    server.files["/clip/tiny-openai.pt"] = data
    entry = registry.PretrainedEntry(
        "tiny-openai", "openai", server.url("/clip/tiny-openai.pt"), _sha(data), "quick_gelu"
    )
    monkeypatch.setitem(registry.PRETRAINED, ("tiny-openai", "openai"), entry)
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPFORGE_OFFLINE", raising=False)
    with pytest.warns(UserWarning, match="head counts"):  # tiny shapes: no preset, heads are OpenAI's default
        config = infer_config(read_torchscript_weights(tmp_path / "tiny.pt"), "quick_gelu")
    monkeypatch.setitem(PRESETS, "tiny-openai", config)
    model = load_pretrained("tiny-openai", "openai")
    images, text = sample_inputs(model, 2)
    assert max(compare_open_clip(model, reference, images, text).values()) <= 1e-5
    assert (tmp_path / "cache" / "tiny-openai.pt").is_file()
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")  # now served from the cache alone
    again = load_pretrained("tiny-openai", "openai")
    assert torch.equal(again.visual.proj, model.visual.proj) and len(server.requests) == 1
