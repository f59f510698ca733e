"""How put_file writes an object: directly (``O_DIRECT``), through the page cache where the file
system refuses direct writes (at once or part-way), or to a backend whose file is no OS file; the
stored object is the same sealed layout every way."""

from __future__ import annotations

import errno
import fcntl
import io
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from fedledger import BlobStore
from fedledger.blobstore import PendingObject, cid_of
from fedledger.blobstore import store as store_module
from fedledger.crypto import seal
from fedledger.errors import NotFound

O_DIRECT = getattr(os, "O_DIRECT", 0)
BATCH = 64 << 10  # the direct-write batch, small here so that a few records cross several
SIZES = [0, 1, 4095, 4096, 4097, BATCH - 1, BATCH, BATCH + 4097, seal.RECORD_SIZE + 1, 3 * seal.RECORD_SIZE + 12345]


def content(size: int) -> bytes:
    return (size.to_bytes(8, "big") * (size // 8 + 1))[:size]


class _Writes:
    """os.write, counting the writes to descriptors open with O_DIRECT; after ``allowed`` of
    them, refuses the next ones with EINVAL (as a file system without direct I/O does)."""

    def __init__(self, allowed: int | None) -> None:
        self.allowed = allowed
        self.direct = 0
        self.refused = 0
        self._write = os.write

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        if O_DIRECT and fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT:
            if self.allowed is not None and self.direct >= self.allowed:
                self.refused += 1
                raise OSError(errno.EINVAL, "direct I/O refused")
            self.direct += 1
        return self._write(fd, data)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_DIRECT_BATCH", BATCH)
    monkeypatch.setattr(store_module, "_WRITEBACK_EVERY", 3 * BATCH)


def _put_and_check(store: BlobStore, tmp_path: Path, data: bytes) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    cid = store.put_file(source)
    assert cid == cid_of(data)
    assert store.get(cid) == data
    with store.open(cid) as f:
        assert f.read() == data
    assert (store.path / "objects" / cid).stat().st_size == seal.sealed_records_size(len(data))


@pytest.mark.skipif(not O_DIRECT, reason="no O_DIRECT here")
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("allowed", [None, 0, 2], ids=["direct", "refused", "refused-part-way"])
def test_put_file_writes_directly_or_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_batches: None, size: int, allowed: int | None
) -> None:
    writes = _Writes(allowed)
    monkeypatch.setattr(os, "write", writes)
    store = BlobStore(tmp_path / "store")
    _put_and_check(store, tmp_path, content(size))
    sealed = seal.sealed_records_size(size)
    attempts = sealed // BATCH + (sealed % BATCH >= 4096)  # full batches, then the aligned rest
    if allowed is None:
        assert (writes.direct, writes.refused) == (attempts, 0)
    else:  # one refusal turns direct writes off for the rest of the object
        assert (writes.direct, writes.refused) == (min(attempts, allowed), int(attempts > allowed))
    monkeypatch.undo()
    _put_and_check(store, tmp_path, content(size) + b"!")  # the store writes on afterwards


@pytest.mark.parametrize("size", SIZES)
def test_put_file_without_direct_io_writes_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_batches: None, size: int
) -> None:
    monkeypatch.setattr(store_module, "_O_DIRECT", 0)
    _put_and_check(BlobStore(tmp_path / "store"), tmp_path, content(size))


class _MemoryPending:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.file: BinaryIO = io.BytesIO()
        self._objects = objects

    def sync(self) -> None:
        pass

    def commit(self, name: str) -> None:
        self._objects[name] = self.file.getvalue()  # type: ignore[attr-defined]

    def abort(self) -> None:
        self.file.close()


class _MemoryBackend:
    """A backend whose files are BytesIO (no descriptor to write directly or sync by range)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def create(self) -> PendingObject:
        return _MemoryPending(self.objects)

    def open(self, name: str) -> BinaryIO:
        if name not in self.objects:
            raise NotFound(name)
        return io.BytesIO(self.objects[name])

    def size(self, name: str) -> int:
        return len(self.objects[name])

    def exists(self, name: str) -> bool:
        return name in self.objects

    def delete(self, name: str) -> None:
        self.objects.pop(name, None)


@pytest.mark.parametrize("size", [0, 4097, BATCH + 1, 2 * seal.RECORD_SIZE + 5])
def test_put_file_to_a_backend_without_os_files(tmp_path: Path, small_batches: None, size: int) -> None:
    backend = _MemoryBackend()
    store = BlobStore(tmp_path / "store", backend=backend)
    data = content(size)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    cid = store.put_file(source)
    assert store.get(cid) == data
    assert len(backend.objects[cid]) == seal.sealed_records_size(size)
