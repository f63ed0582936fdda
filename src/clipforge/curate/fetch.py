"""Image fetchers: anything with `fetch(ref) -> bytes` that raises `FetchError` on failure plugs in.

`HttpFetcher` retries connection errors, timeouts, HTTP 429 and 5xx with exponential backoff, and gives
up at once on other 4xx (the image is gone; retrying only wastes the host's time).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class FetchError(Exception):
    """An image could not be fetched; `reason` is a short tag for the drop statistics."""

    def __init__(self, ref: str, reason: str, detail: str = ""):
        super().__init__(f"{ref}: {reason}{f' ({detail})' if detail else ''}")
        self.ref, self.reason = ref, reason


class Fetcher(Protocol):
    def fetch(self, ref: str) -> bytes: ...


@dataclass(frozen=True)
class HttpFetcher:
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 32 << 20
    user_agent: str = "clipforge-curate/0.1"

    def fetch(self, ref: str) -> bytes:
        last_detail = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                request = urllib.request.Request(ref, headers={"User-Agent": self.user_agent})
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    data = response.read(self.max_bytes + 1)
                if len(data) > self.max_bytes:
                    raise FetchError(ref, "too_large", f"> {self.max_bytes} bytes")
                return data
            except urllib.error.HTTPError as err:
                last_detail = f"HTTP {err.code}"
                if err.code != 429 and err.code < 500:
                    raise FetchError(ref, "http_error", last_detail) from err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last_detail = str(getattr(err, "reason", err))
        raise FetchError(ref, "gave_up", f"{self.retries + 1} attempts, last: {last_detail}")


@dataclass(frozen=True)
class LocalFetcher:
    def fetch(self, ref: str) -> bytes:
        path = Path(ref[len("file://") :] if ref.startswith("file://") else ref)
        try:
            return path.read_bytes()
        except OSError as err:
            raise FetchError(ref, "missing_file", err.strerror or "") from err


@dataclass(frozen=True)
class AutoFetcher:
    """http(s):// goes to `http`, anything else is a local path."""

    http: Fetcher = HttpFetcher()
    local: Fetcher = LocalFetcher()

    def fetch(self, ref: str) -> bytes:
        if not ref:
            raise FetchError(ref, "no_image_reference")
        if ref.startswith(("http://", "https://")):
            return self.http.fetch(ref)
        return self.local.fetch(os.fspath(ref))
