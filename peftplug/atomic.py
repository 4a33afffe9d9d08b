"""Writes that either happen completely or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): saving and loading one directory at once is unsupported
    fcntl = None  # type: ignore[assignment]

COMMIT_STEPS = (
    "write-payload",
    "write-record",
    "fsync-directory",
    "commit-record",
    "fsync-commit",
    "install-payload",
    "fsync-install",
)
"""The steps of ``commit_with_record`` in order; the record's rename is the commit point."""

step_hook: Callable[[str], None] | None = None
"""Called with each step's name just before it runs; tests set it to kill a save at that step."""


def atomic_write_files(files: Mapping[Path, bytes]) -> None:
    """Write every file to a temporary name beside it, fsync all, then rename them into place.

    Nothing is renamed until every temporary file is complete, so a failure while writing
    (a full disk, an interrupt) leaves the previous files untouched.
    """
    temporaries: dict[Path, str] = {}
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
            )
            temporaries[path] = temporary
            os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp makes it private (0600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    for directory in {path.parent for path in files}:
        _fsync_directory(directory)


def commit_with_record(
    directory: Path, payload: tuple[str, bytes], record: tuple[str, bytes], digest: str
) -> None:
    """Replace a payload file and the record naming it by ``digest`` (its SHA-256) as one unit.

    Both are written under staged names and fsynced; renaming the record into place commits;
    then the payload is renamed in. A process killed after the commit leaves the new payload
    staged under its digest for ``finish_commit`` to install, so readers see both files old or
    both new. An error before the commit removes the staged files and leaves the old ones. Call
    it under ``directory_lock``, after ``finish_commit``.
    """
    (payload_name, payload_data), (record_name, record_data) = payload, record
    staged_payload = directory / staged_name(payload_name, digest)
    staged_record = directory / staged_name(record_name, digest)
    try:
        _step("write-payload")
        _write_synced(staged_payload, payload_data)
        _step("write-record")
        _write_synced(staged_record, record_data)
        _step("fsync-directory")  # the staged names must be durable before the commit is
        _fsync_directory(directory)
    except BaseException:
        for staged in (staged_payload, staged_record):
            with contextlib.suppress(OSError):
                staged.unlink()
        raise
    _step("commit-record")
    os.replace(staged_record, directory / record_name)
    _step("fsync-commit")
    _fsync_directory(directory)
    _step("install-payload")
    os.replace(staged_payload, directory / payload_name)
    _step("fsync-install")
    _fsync_directory(directory)


def finish_commit(
    directory: Path, payload_name: str, record_name: str, committed: str | None
) -> None:
    """Install a committed payload a killed save left staged, then remove every leftover.

    ``committed`` is the digest the record in place names (``None``: no readable record). Only
    the payload staged under that digest, and only if its content has that digest, belongs to
    the commit; every other staged or temporary file of the two names comes from a save that
    never committed. Best effort: in a read-only directory nothing changes.
    """
    if committed is not None:
        staged = directory / staged_name(payload_name, committed)
        with contextlib.suppress(OSError):
            if hashlib.sha256(staged.read_bytes()).hexdigest() == committed:
                os.replace(staged, directory / payload_name)
                _fsync_directory(directory)
    for name in (payload_name, record_name):
        for pattern in (f".{name}.*.staged", f".{name}.*.tmp"):  # .tmp: atomic_write_files'
            for leftover in directory.glob(pattern):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def staged_name(name: str, digest: str) -> str:
    """The hidden name a file with content ``digest`` has before it is renamed to ``name``."""
    return f".{name}.{digest}.staged"


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` itself (no lock file), released if the process dies.

    Best effort: where the directory cannot be opened or locked, the caller runs unlocked.
    """
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # e.g. a network file system without flock
                fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def _write_synced(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # modes follow umask
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so set it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
