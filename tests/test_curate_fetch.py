"""The URL fetcher against a loopback http.server only: success, retries, give-up, timeouts."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clipforge.curate.fetch import AutoFetcher, FetchError, HttpFetcher, LocalFetcher


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        hits = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/ok.jpg" or (self.path == "/flaky.jpg" and hits >= 3):
            body = b"image:" + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/slow.jpg":
            time.sleep(1.0)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(503 if self.path in ("/flaky.jpg", "/down.jpg") else 404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.hits
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_http_fetcher(server):
    base, hits = server
    fetcher = HttpFetcher(timeout_s=0.3, retries=2, backoff_s=0.01)
    assert fetcher.fetch(f"{base}/ok.jpg") == b"image:/ok.jpg"
    assert fetcher.fetch(f"{base}/flaky.jpg") == b"image:/flaky.jpg"  # two 503s, then 200
    assert hits["/flaky.jpg"] == 3
    with pytest.raises(FetchError) as err:
        fetcher.fetch(f"{base}/missing.jpg")
    assert err.value.reason == "http_error" and hits["/missing.jpg"] == 1  # 404: no retry
    with pytest.raises(FetchError) as err:
        fetcher.fetch(f"{base}/down.jpg")
    assert err.value.reason == "gave_up" and hits["/down.jpg"] == 3
    t0 = time.perf_counter()
    with pytest.raises(FetchError) as err:
        HttpFetcher(timeout_s=0.2, retries=1, backoff_s=0.01).fetch(f"{base}/slow.jpg")
    assert err.value.reason == "gave_up" and time.perf_counter() - t0 < 0.9
    with pytest.raises(FetchError) as err:
        HttpFetcher(max_bytes=4).fetch(f"{base}/ok.jpg")
    assert err.value.reason == "too_large"


def test_auto_fetcher_dispatch(server, tmp_path):
    base, _ = server
    (tmp_path / "a.jpg").write_bytes(b"local")
    fetcher = AutoFetcher(http=HttpFetcher(timeout_s=0.5, retries=0))
    assert fetcher.fetch(f"{base}/ok.jpg") == b"image:/ok.jpg"
    assert fetcher.fetch(str(tmp_path / "a.jpg")) == b"local"
    assert LocalFetcher().fetch(f"file://{tmp_path / 'a.jpg'}") == b"local"
    for ref, reason in ((str(tmp_path / "b.jpg"), "missing_file"), ("", "no_image_reference")):
        with pytest.raises(FetchError) as err:
            fetcher.fetch(ref)
        assert err.value.reason == reason
