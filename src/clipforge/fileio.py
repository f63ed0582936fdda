"""Writing outputs safely: a file appears under its final name only when it is complete.

Every writer goes through a temporary name beside the target (`.<name>.<random>.partial<suffix>`), is
fsynced, and is renamed over the target in one step; on any failure the temporary file is removed, so a
crash, a full disk or a read-only folder leaves either the old file or none, never a torn one. Failures are
raised as `OSError` naming the *final* path (libraries report a full disk as anything from a bare
`OSError('... written')` to a `RuntimeError` from a C++ assert; see `_write_failure`).

`check_output_dir` / `check_output_file` run before any work: a command refuses an output it could not
write (an existing file where a folder is wanted, a read-only folder, a wrong extension) up front, not
after an hour of embedding.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets

try:
    import resource
except ImportError:  # not on Windows
    resource = None
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

_PROBE_BYTES = 1 << 16


class OutputInUseError(ValueError):
    """An output folder holds another job's results; the message says what differs and how to proceed."""


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")


def is_temp_name(name: str) -> bool:
    """True for the temporary names this module writes (for cleaning up after a kill -9)."""
    return name.startswith(".") and ".partial" in name


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """`mkdir -p path`, with an OSError that says which part is in the way."""
    path = Path(path)
    blocker = _existing_ancestor(path)
    if blocker != path and not blocker.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create {what}: {blocker} is a file", os.fspath(path))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{what} is an existing file, not a folder", os.fspath(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _named(error, path, f"cannot create {what}") from error
    return path


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _writable(folder: Path) -> bool:
    mode = os.W_OK | os.X_OK
    if os.access in os.supports_effective_ids:
        return os.access(folder, mode, effective_ids=True)
    return os.access(folder, mode)


def check_output_dir(path: str | os.PathLike, flag: str = "output folder") -> Path:
    """Refuse, before any work, a folder that cannot be created or written (read-only, or a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{flag}: is an existing file, not a folder", os.fspath(path))
    existing = _existing_ancestor(path)
    if not existing.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"{flag}: cannot be created, {existing} is a file", os.fspath(path)
        )
    if not _writable(existing):
        reason = (
            "not writable (a read-only folder?)"
            if existing == path.absolute()
            else f"cannot be created, {existing} is not writable"
        )
        raise PermissionError(errno.EACCES, f"{flag}: {reason}", os.fspath(path))
    return path


def check_output_file(
    path: str | os.PathLike, suffixes: Sequence[str] | None = None, flag: str = "output file"
) -> Path:
    """Refuse, before any work, a file name with a wrong extension, an existing folder, or an unwritable
    folder. `suffixes`: allowed lower-case extensions such as (".csv", ".json"); None for any."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{flag}: is a folder, give a file name", os.fspath(path))
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path}: use a file name ending in {' or '.join(suffixes)}")
    check_output_dir(path.parent, f"{flag}'s folder")
    return path


def _named(error: OSError, path: Path, action: str = "cannot write") -> OSError:
    """The same OSError, naming the final path (not a temp name) and what was being done."""
    reason = error.strerror or str(error) or type(error).__name__
    code = error.errno if error.errno is not None else errno.EIO
    named = type(error)(code, f"{action}: {reason}", os.fspath(path))
    return named if isinstance(named, OSError) else OSError(code, f"{action}: {reason}", os.fspath(path))


@contextlib.contextmanager
def named_write_errors(path: str | os.PathLike, partial: str | os.PathLike | None = None) -> Iterator[None]:
    """For files written piece by piece outside atomic_write (a spool, a shard filled sample by sample):
    an OSError in the block is re-raised naming `path` ("cannot write: File too large"), and the `partial`
    file, if given, is removed first so nothing torn is left behind."""
    try:
        yield
    except OSError as error:
        if partial is not None:
            _discard(Path(partial))
        raise _named(error, Path(path)) from error


def _write_failure(error: BaseException, tmp: Path, path: Path) -> BaseException:
    """What to raise for an exception while writing `tmp`: libraries report a full disk in many ways
    (torch: RuntimeError 'unexpected pos', faiss: 'write error', numpy: 'requested and N written'), so
    when the writer did not raise a proper OSError, try to append a few more bytes to the file: if the
    disk refuses those too, the disk was the cause and that OSError is what the user needs to see."""
    if isinstance(error, OSError) and error.errno is not None:
        return _named(error, path)
    if not isinstance(error, Exception):
        return error  # KeyboardInterrupt, SystemExit
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, bytes(_PROBE_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as probe:
        return _named(probe, path)
    if isinstance(error, OSError):
        return _named(error, path)
    return error


def _check_complete(tmp: Path, expected_size: int | None = None) -> None:
    """Some writers do not report a write the disk refused part-way (numpy's `tofile` and faiss only
    print or ignore the error of their last flush), so a file is checked before it gets its final name:
    the bytes the writer meant to write must all be there, the file must be below the process's file-size
    limit, and the disk must not be full. An OSError here goes through `_write_failure`'s probe, which
    names the real cause (EFBIG, ENOSPC)."""
    size = tmp.stat().st_size
    if expected_size is not None and size < expected_size:
        raise OSError(f"short write: {size} of {expected_size} bytes reached the disk")
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE) if resource else (None, None)
    if soft is not None and soft != resource.RLIM_INFINITY and size >= soft:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    with contextlib.suppress(OSError):
        if os.statvfs(tmp.parent).f_bavail == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        _fsync_file(folder)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


class _Pending:
    """A temp file on its way to a final name; `min_size`: bytes its writer is known to have written."""

    def __init__(self, path: Path):
        self.final, self.tmp, self.min_size = path, _temp_path(path), None


@contextlib.contextmanager
def _pending(path: Path) -> Iterator[_Pending]:
    ensure_dir(path.parent)
    pending = _Pending(path)
    try:
        yield pending
        if not pending.tmp.is_file():
            raise FileNotFoundError(errno.ENOENT, "the writer produced no file", os.fspath(path))
        _fsync_file(pending.tmp)
        _check_complete(pending.tmp, pending.min_size)
        os.replace(pending.tmp, path)
    except BaseException as error:
        failure = _write_failure(error, pending.tmp, path)
        _discard(pending.tmp)
        if failure is error:
            raise
        raise failure from error
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that want a file *name* (faiss, ONNX, PIL): yields a temp path beside `path`, renamed
    to `path` when the block succeeds (and the file is complete, see `_check_complete`), removed when not."""
    with _pending(Path(path)) as pending:
        yield pending.tmp


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write via `write(fileobj)` into a temp file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    with _pending(path) as pending, open(pending.tmp, "wb") as f:
        write(f)
        f.flush()
        pending.min_size = f.tell()  # where the writer left off: the file must be at least this long
        os.fsync(f.fileno())
    return path


class StagedFiles:
    """Outputs that must appear together (e.g. image.onnx + text.onnx + onnx.json): each is written to a
    temp name by `path(final)`; `commit()` renames them in the order staged, so put the file that marks
    the set complete last. Leaving the `with` block by an exception removes every temp file."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        ensure_dir(final.parent)
        tmp = _temp_path(final)
        self._staged.append((tmp, final))
        return tmp

    def commit(self) -> list[Path]:
        for tmp, final in self._staged:
            if not tmp.is_file():
                raise FileNotFoundError(errno.ENOENT, "the writer produced no file", os.fspath(final))
            _fsync_file(tmp)
            try:
                _check_complete(tmp)
            except OSError as error:
                raise _write_failure(error, tmp, final) from error
        for tmp, final in self._staged:
            os.replace(tmp, final)
        for folder in {final.parent for _, final in self._staged}:
            _fsync_dir(folder)
        committed = [final for _, final in self._staged]
        self._staged = []
        return committed

    def discard(self) -> None:
        for tmp, _ in self._staged:
            _discard(tmp)
        self._staged = []

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if error is None:
            return None
        failure = self._failure(error)
        self.discard()
        if failure is not error:
            raise failure from error
        return None

    def _failure(self, error: BaseException) -> BaseException:
        """The error named by the final path of the file being written (the one it names, else the last
        staged file that exists)."""
        named = getattr(error, "filename", None)
        for tmp, final in self._staged:
            if named is not None and os.fspath(named) == os.fspath(tmp):
                return _write_failure(error, tmp, final)
        existing = [(tmp, final) for tmp, final in self._staged if tmp.exists()]
        if not existing or named is not None:
            return error
        return _write_failure(error, *existing[-1])


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8; characters that stand for undecodable bytes of a file name (surrogate escapes) are written
    back as those bytes, so a path read from the file system is written the way the file system has it."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_text(path: str | os.PathLike, what: str = "text file") -> str:
    """A UTF-8 text file (a leading byte-order mark, as Excel and Notepad write, is dropped); a file in
    another encoding is a ValueError naming the file and the first bad byte."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path}:{line}: {what} is not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """A UTF-8 JSON file; invalid JSON is a ValueError naming the file, line and column."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}:{error.lineno}:{error.colno}: {what} is not valid JSON ({error.msg})"
            + (" -- the file is empty" if not text.strip() else "")
        ) from None
