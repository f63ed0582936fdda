"""WebDataset output: tar shards of `samples_per_shard` samples (the last may be shorter), each sample
`<key>.jpg` (image), `<key>.txt` (caption), `<key>.json` (metadata), plus a manifest of the shards.

Tar headers carry fixed times and owners, so the same kept pairs give byte-identical shards."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from clipforge.fileio import atomic_write_json, named_write_errors


class ShardWriter:
    def __init__(self, out_dir: str | os.PathLike, prefix: str = "curated", samples_per_shard: int = 10_000):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.samples_per_shard = prefix, samples_per_shard
        self.shards: list[dict] = []
        self._tar: tarfile.TarFile | None = None
        self._path: Path | None = None
        self._in_shard = 0
        self.total = 0

    def write(self, key: str, jpeg: bytes, caption: str, meta: dict) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/' (WebDataset splits on them)")
        if self._tar is None:
            self._open()
        with self._errors_named():
            for ext, data in (
                ("jpg", jpeg),
                ("txt", caption.encode("utf-8")),
                ("json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")),
            ):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
                self._tar.addfile(info, io.BytesIO(data))
        self._in_shard += 1
        self.total += 1
        if self._in_shard == self.samples_per_shard:
            self._close()

    def _open(self) -> None:
        self._path = self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tar = tarfile.open(self._path.with_suffix(".tar.tmp"), "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (open across writes)
        self._in_shard = 0

    def _errors_named(self):
        """A failed write (a full disk) names the shard and leaves no partial .tar.tmp behind."""
        return named_write_errors(self._path, partial=self._path.with_suffix(".tar.tmp"))

    def _close(self) -> None:
        tmp = self._path.with_suffix(".tar.tmp")
        with self._errors_named():
            self._tar.close()
        os.replace(tmp, self._path)
        digest = hashlib.sha256(self._path.read_bytes()).hexdigest()
        self.shards.append(
            {
                "file": self._path.name,
                "samples": self._in_shard,
                "bytes": self._path.stat().st_size,
                "sha256": digest,
            }
        )
        self._tar, self._path = None, None

    def finish(self, manifest_name: str = "manifest.json", extra: dict | None = None) -> Path:
        """Close the open shard and write the manifest (shards, counts, sha256)."""
        if self._tar is not None:
            self._close()
        manifest = {"format": "webdataset", "fields": ["jpg", "txt", "json"], "samples": self.total}
        manifest.update(extra or {})
        manifest["shards"] = self.shards
        return atomic_write_json(self.out_dir / manifest_name, manifest)
