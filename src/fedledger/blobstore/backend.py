"""Where sealed objects live: a small protocol, and the local directory that implements it.

A backend stores and returns sealed bytes only; it never sees a key or plaintext, so any
replica of it (a backup, an IPFS node, a cloud bucket) is as unreadable as the ciphertext.
Keys never go to a backend: they stay in the store's own directory.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final, Protocol, cast

from fedledger.errors import NotFound

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Backend",
    "LocalBackend",
    "PendingObject",
    "Owner",
    "fsync_directory",
    "start_writeback",
    "write_durably",
    "write_synced_temp",
]


class PendingObject(Protocol):
    """An object being written: ``file`` takes the bytes, in order; ``sync`` makes those
    written so far durable (not yet visible); ``commit`` makes them durable and visible under
    ``name`` atomically (all or nothing, even if the process is killed); ``abort`` drops them."""

    file: BinaryIO

    def sync(self) -> None: ...

    def commit(self, name: str) -> None: ...

    def abort(self) -> None: ...


class Backend(Protocol):
    """Put and get sealed bytes by name (a CID string, already checked to be a safe name)."""

    def create(self) -> PendingObject: ...

    def open(self, name: str) -> BinaryIO:
        """The sealed bytes for reading, positioned at 0; NotFound if absent."""
        ...

    def size(self, name: str) -> int: ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None:
        """Remove the object if present (no error if absent)."""
        ...


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: sync_file_range's flag that starts writeback of a range's dirty pages without waiting for it.
_SYNC_FILE_RANGE_WRITE: Final = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2) from the C library, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - a C library without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_SYNC_FILE_RANGE: Final = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to the disk,
    without waiting for them (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; the call
    releases the GIL). Makes nothing durable: an ``fsync`` must follow, and finds less to do.
    Does nothing where the call is not available or fails."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _release(fd: int, lock: Path) -> None:
    lock.unlink(missing_ok=True)
    os.close(fd)


class Owner:
    """One writer's name for its temp files, ``.tmp-<token>-<random>``, and the lock file
    ``<owners>/<token>`` it holds (``flock``) for as long as it lives.

    :meth:`remove_stale` removes only the temp files whose owner's lock is free or gone (its
    process ended, for example killed mid-write), never those of a writer still running, in
    this process or another. Without ``flock`` (not POSIX) every other temp file counts as stale.
    """

    def __init__(self, owners: Path) -> None:
        self.owners = owners
        owners.mkdir(exist_ok=True)
        while True:
            self.token = secrets.token_hex(8)
            lock = owners / self.token
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            if fcntl is None:  # pragma: no cover - not POSIX
                break
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # a cleaner that found the file before it was locked may have removed it
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:  # pragma: no cover - a race of microseconds
                pass
            os.close(fd)  # pragma: no cover
        self._release = weakref.finalize(self, _release, fd, lock)
        for other in owners.iterdir():  # the lock files of owners that are gone
            if other.name != self.token:
                _remove_if_gone(other, [other])

    def close(self) -> None:
        self._release()

    def temp_name(self, directory: Path) -> Path:
        """A new temp file name of this owner's in ``directory``."""
        return directory / f".tmp-{self.token}-{secrets.token_hex(8)}"

    def remove_stale(self, directory: Path) -> None:
        """Remove the temp files in ``directory`` of owners that are gone."""
        found: dict[str, list[Path]] = {}
        for path in directory.glob(".tmp-*"):
            token = path.name.split("-")[1]
            if token != self.token:
                found.setdefault(token, []).append(path)
        for token, paths in found.items():
            _remove_if_gone(self.owners / token, paths)


def _remove_if_gone(lock: Path, paths: list[Path]) -> None:
    """Remove ``paths`` unless an :class:`Owner` holds ``lock``; the check holds the lock while
    it removes, so that no new owner can take that lock file meanwhile."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError):
            pass  # an owner's lock file is in place before its first temp file and outlives its last
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its owner is running
        for path in paths:
            path.unlink(missing_ok=True)
    finally:
        if fd is not None:
            os.close(fd)


def _temp_name(directory: Path) -> Path:
    return directory / f".tmp-{secrets.token_hex(8)}"


def write_synced_temp(tmp: Path, data: bytes) -> Path:
    """A new file ``tmp`` holding ``data``, synced (durable once renamed and its directory
    synced); the caller renames or removes it."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_durably(path: Path, data: bytes, owner: Owner | None = None) -> None:
    """Write ``path`` atomically and durably: a temp file in the same directory (``owner``'s if
    given), fsync, rename over ``path``, fsync the directory. A crash leaves the old file or the
    new one, never a mix."""
    tmp = write_synced_temp(owner.temp_name(path.parent) if owner is not None else _temp_name(path.parent), data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


class _LocalPending:
    def __init__(self, directory: Path, tmp: Path) -> None:
        self._directory = directory
        self._tmp = tmp
        self.file: BinaryIO = open(os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "w+b")
        self._synced = -1  # the file's length when it was last synced
        self._committed = False

    def sync(self) -> None:
        self.file.flush()
        end = self.file.tell()
        if end != self._synced:  # the file is written in order: a new length means new bytes
            os.fsync(self.file.fileno())
            self._synced = end

    def commit(self, name: str) -> None:
        self.sync()
        self.file.close()
        os.replace(self._tmp, self._directory / name)
        self._committed = True
        fsync_directory(self._directory)

    def abort(self) -> None:
        self.file.close()
        if not self._committed:
            self._tmp.unlink(missing_ok=True)


class LocalBackend:
    """Sealed objects as files in one directory, each named by its CID. Temp files (``.tmp-*``)
    left by a crash are removed when a backend is opened on the directory; those of a writer
    still running (another backend, here or in another process) are left alone (see
    :class:`Owner`; ``owner`` is the store's, by default one with its lock files in the
    directory's sibling ``owners``)."""

    def __init__(self, directory: str | os.PathLike[str], *, owner: Owner | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._owner = owner if owner is not None else Owner(self.directory.parent / "owners")
        self._owner.remove_stale(self.directory)

    def create(self) -> PendingObject:
        return _LocalPending(self.directory, self._owner.temp_name(self.directory))

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.directory / name, "rb")
        except FileNotFoundError:
            raise NotFound(f"no object {name}") from None

    def size(self, name: str) -> int:
        try:
            return (self.directory / name).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no object {name}") from None

    def exists(self, name: str) -> bool:
        return (self.directory / name).is_file()

    def delete(self, name: str) -> None:
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            return
        fsync_directory(self.directory)
