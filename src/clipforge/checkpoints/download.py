"""Download with a cache, SHA256 verification, retries and an offline mode.

A file appears in the cache only after its SHA256 matched: bytes go to a temp file beside the
target, are hashed while written, and are renamed into place atomically. A cached file is
re-hashed on every use (as openai/CLIP does), so a corrupted cache entry is detected. The expected
digest may be a prefix of at least 8 hex digits, as open_clip's release file names publish it.

Environment: CLIPFORGE_CACHE (default ~/.cache/clipforge), CLIPFORGE_OFFLINE=1 (cache only).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK_BYTES = 1 << 20


class ChecksumError(ValueError):
    """Downloaded bytes do not have the expected SHA256."""


def cache_dir() -> Path:
    return Path(os.environ.get("CLIPFORGE_CACHE") or Path.home() / ".cache" / "clipforge")


def offline_mode() -> bool:
    return os.environ.get("CLIPFORGE_OFFLINE", "").lower() in ("1", "true", "yes")


MIN_PREFIX_DIGITS = 8


def check_sha256(expected: str, where: str) -> str:
    """`expected` lower-cased (a full SHA256 or a prefix of one: digests are compared with startswith), or a
    ValueError naming `where` if it is not 8-64 hex digits."""
    expected = expected.lower()
    if not (MIN_PREFIX_DIGITS <= len(expected) <= 64 and all(c in "0123456789abcdef" for c in expected)):
        raise ValueError(f"{where}: expected SHA256 {expected!r} is not 8 to 64 hex digits")
    return expected


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    sha256: str,
    filename: str | None = None,
    cache: str | os.PathLike | None = None,
    offline: bool | None = None,
    timeout_s: float = 60.0,
    retries: int = 3,
    progress: bool = True,
) -> Path:
    """The path of `url`'s file in the cache, downloading and verifying it if needed.

    `offline` (default: CLIPFORGE_OFFLINE) never touches the network. Network errors are retried
    `retries` times with backoff; a checksum mismatch is not (the server sent the wrong bytes)."""
    target = Path(cache or cache_dir()) / (filename or url.rsplit("/", 1)[-1])
    sha256 = check_sha256(sha256, url)
    if target.is_file():
        if sha256_file(target).startswith(sha256):
            return target
        if offline if offline is not None else offline_mode():
            raise ChecksumError(f"{target}: cached file has the wrong SHA256 (expected {sha256}); delete it")
        target.unlink()
    if offline if offline is not None else offline_mode():
        raise FileNotFoundError(
            f"{target}: not in the cache and offline mode is on (CLIPFORGE_OFFLINE=1 or offline=True); "
            f"download {url} there (SHA256 {sha256}) or turn offline mode off"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            return _fetch(url, sha256, target, timeout_s, progress)
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets, short reads
            if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500:
                raise ConnectionError(f"{url}: HTTP {err.code} {err.reason}") from None
            if attempt == retries:
                raise ConnectionError(
                    f"{url}: download failed after {retries + 1} attempt(s): {err}"
                ) from err
            time.sleep(min(2.0**attempt, 30.0))
    raise AssertionError("unreachable")


def _fetch(url: str, sha256: str, target: Path, timeout_s: float, progress: bool) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "clipforge"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise ConnectionError(f"{url}: connection closed after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        if not digest.hexdigest().startswith(sha256):
            raise ChecksumError(
                f"{url}: SHA256 {digest.hexdigest()} does not match the expected {sha256}; not cached"
            )
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
