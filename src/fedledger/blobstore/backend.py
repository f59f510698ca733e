"""Where sealed objects live: a small protocol, and the local directory that implements it.

A backend stores and returns sealed bytes only; it never sees a key or plaintext, so any
replica of it (a backup, an IPFS node, a cloud bucket) is as unreadable as the ciphertext.
Keys never go to a backend: they stay in the store's own directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Protocol

from fedledger.errors import NotFound

__all__ = ["Backend", "LocalBackend", "PendingObject", "fsync_directory", "write_durably"]


class PendingObject(Protocol):
    """An object being written: ``file`` takes the bytes; ``sync`` makes those written so far
    durable (not yet visible); ``commit`` makes them durable and visible under ``name``
    atomically (all or nothing, even if the process is killed); ``abort`` drops them."""

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


def _temp_name(directory: Path) -> Path:
    return directory / f".tmp-{secrets.token_hex(8)}"


def write_durably(path: Path, data: bytes) -> None:
    """Write ``path`` atomically and durably: a temp file in the same directory, fsync, rename
    over ``path``, fsync the directory. A crash leaves the old file or the new one, never a mix."""
    tmp = _temp_name(path.parent)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


class _LocalPending:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._tmp = _temp_name(directory)
        self.file: BinaryIO = open(os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "w+b")

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def commit(self, name: str) -> None:
        self.sync()
        self.file.close()
        os.replace(self._tmp, self._directory / name)
        fsync_directory(self._directory)

    def abort(self) -> None:
        self.file.close()
        self._tmp.unlink(missing_ok=True)


class LocalBackend:
    """Sealed objects as files in one directory, each named by its CID. Temp files (``.tmp-*``)
    left by a crash are removed when the backend is opened."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".tmp-*"):
            stale.unlink(missing_ok=True)

    def create(self) -> PendingObject:
        return _LocalPending(self.directory)

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
