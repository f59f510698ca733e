"""The blob store: content-addressed, sealed at rest, erasable by crypto-shredding.

Layout of a store directory (see docs/security-blobstore.md for the threat model)::

    master.key           the store master key (32 bytes, with a checksum), mode 0600
    lock                 writers hold it (flock) while they change keys/, objects/, erased/
    owners/<token>       one per open store, locked while it is open: names its temp files
    keys/<cid>           the object's data key and length, sealed under the wrap key
    objects/<cid>        the sealed object (the local backend; any Backend may hold these)
    erased/<keyed id>    a tombstone: this object was shredded

Keys: the master key derives (HKDF-SHA256) a wrap key, which seals every data key, and an id
key, which makes keyed ids (HMAC-SHA256 of a CID). Each object is sealed under its own random
data key as AES-256-GCM records (:func:`fedledger.crypto.seal.seal_records`). Shredding
destroys the data key, so no copy of the ciphertext can be opened again.

Any number of stores, in any processes, may have one directory open and write to it: each
put, put_file and shred makes its changes under the directory's ``lock`` (and a thread lock),
so an object's key and sealed file always come from the same put, and a shredded object cannot
come back. Readers take no lock.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import mmap
import os
import secrets
import struct
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, cast

from fedledger.blobstore.backend import (
    Backend,
    LocalBackend,
    Owner,
    PendingObject,
    fsync_directory,
    start_writeback,
    write_durably,
    write_synced_temp,
)
from fedledger.blobstore.cid import cid_of_digest, digest_of_cid
from fedledger.crypto import seal
from fedledger.crypto._threads import num_threads
from fedledger.crypto.agreement import hkdf_sha256
from fedledger.errors import CorruptBlob, Erased, InvalidArgument, InvalidArgumentType, NotFound, SealError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from fedledger.identity import Identity
    from fedledger.ledger import Ledger, Transaction

__all__ = ["ERASE_KIND", "BlobReader", "BlobStat", "BlobStore"]

ERASE_KIND: Final = "blob.erase"
_MAGIC: Final = b"FLBLOBK1"
_MASTER_SIZE: Final = len(_MAGIC) + 32 + 16
_KEY_RECORD: Final = struct.Struct(">32sQ")  # data key, plaintext length
_OBJECT_CONTEXT: Final = seal.SealContext("fedledger.blobstore", "at-rest", 0, "object")


def _key_context(cid: str) -> seal.SealContext:
    return seal.SealContext("fedledger.blobstore", "at-rest", 0, f"data-key {cid}")


@dataclass(frozen=True)
class BlobStat:
    """What the store knows about an object without decrypting it: its plaintext size (from
    the authenticated key record) and the size of its sealed form."""

    cid: str
    size: int
    sealed_size: int


class BlobReader(io.RawIOBase):
    """A read-only binary stream over one object's plaintext (from :meth:`BlobStore.open`).

    Every byte it returns belongs to a record that authenticated under the object's data key;
    the last batch is returned only after the whole plaintext hashed to the object's CID, so a
    mismatch raises :class:`CorruptBlob` before the reader reaches its end.
    """

    def __init__(self, chunks: Iterator[bytes], source: BinaryIO) -> None:
        super().__init__()
        self._chunks = chunks
        self._source = source
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._buf):
            try:
                self._buf, self._pos = next(self._chunks), 0
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf) - self._pos)
        memoryview(b)[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


class BlobStore:
    """A local content-addressed store of sealed objects (see the module doc).

    >>> import tempfile
    >>> store = BlobStore(tempfile.mkdtemp())
    >>> cid = store.put(b"hello world\\n")
    >>> cid
    'bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4'
    >>> store.get(cid)
    b'hello world\\n'
    """

    def __init__(self, path: str | os.PathLike[str], *, backend: Backend | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._keys = self.path / "keys"
        self._erased = self.path / "erased"
        self._owner = Owner(self.path / "owners")
        for directory in (self._keys, self._erased):
            directory.mkdir(exist_ok=True)
            self._owner.remove_stale(directory)  # a crash's, never those of a store still open
        self._thread_lock = threading.Lock()
        self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        weakref.finalize(self, os.close, self._lock_fd)
        self.backend: Backend = (
            backend if backend is not None else LocalBackend(self.path / "objects", owner=self._owner)
        )
        master = self._master_key()
        self._wrap_key = hkdf_sha256(master, salt=b"", info=b"fedledger/blobstore/wrap/v1", length=32)
        self._id_key = hkdf_sha256(master, salt=b"", info=b"fedledger/blobstore/keyed-id/v1", length=32)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the store's writer lock: this process's threads, then other processes (flock)."""
        with self._thread_lock:
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- keys -----------------------------------------------------------------------------

    def _master_key(self) -> bytes:
        path = self.path / "master.key"
        if not path.exists():
            master = secrets.token_bytes(32)
            body = _MAGIC + master
            with self._writing():  # two stores created at once agree on one master key
                if not path.exists():
                    write_durably(path, body + hashlib.sha256(body).digest()[:16])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CorruptBlob(f"cannot read the store's master key: {exc}") from None
        body = data[: len(_MAGIC) + 32]
        if (
            len(data) != _MASTER_SIZE
            or not data.startswith(_MAGIC)
            or not hmac.compare_digest(data[len(body) :], hashlib.sha256(body).digest()[:16])
        ):
            raise CorruptBlob("the store's master key file is corrupted")
        return body[len(_MAGIC) :]

    def keyed_id(self, cid: str) -> bytes:
        """HMAC-SHA256 of ``cid`` under this store's id key: names an object on the ledger
        without naming its content (a plain hash of known content is a dictionary attack away)."""
        digest_of_cid(cid)
        return self._keyed_id(cid)

    def _keyed_id(self, cid: str) -> bytes:  # cid already checked, or made by cid_of_digest
        return hmac.new(self._id_key, cid.encode("ascii"), hashlib.sha256).digest()

    def _tombstone(self, cid: str) -> Path:
        return self._erased / self._keyed_id(cid).hex()

    def _check_not_erased(self, cid: str) -> None:
        if self._tombstone(cid).exists():
            raise Erased(f"object {cid} was erased (crypto-shredded)")

    def _sealed_key_temp(self, cid: str, data_key: bytes, length: int) -> Path:
        """The wrapped data key in a synced temp file of keys/, to be renamed to keys/<cid>."""
        sealed = seal.seal(self._wrap_key, _KEY_RECORD.pack(data_key, length), _key_context(cid))
        return write_synced_temp(self._owner.temp_name(self._keys), sealed)

    def _load_key(self, cid: str) -> tuple[bytes, int]:
        """(data key, plaintext length); Erased, NotFound or CorruptBlob."""
        self._check_not_erased(cid)
        try:
            sealed = (self._keys / cid).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {cid}") from None
        try:
            record = seal.unseal(self._wrap_key, sealed, _key_context(cid))
        except SealError:
            raise CorruptBlob(f"the data key of {cid} fails its check") from None
        if len(record) != _KEY_RECORD.size:
            raise CorruptBlob(f"the data key of {cid} is malformed")
        data_key, length = _KEY_RECORD.unpack(record)
        return data_key, length

    # -- writing ----------------------------------------------------------------------------

    def _stored(self, cid: str) -> bool:
        return (self._keys / cid).is_file() and self.backend.exists(cid)

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data``; return its CID once the object and its key are durable."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("data", f"expected bytes, got {type(data).__name__}")
        view = memoryview(data)
        if not view.c_contiguous:
            raise InvalidArgument("data", "must be contiguous")
        view = view.cast("B")
        data_key = seal.generate_key()
        # An I/O thread creates the object's file, seals (on the cores the hash leaves free),
        # writes and syncs, while this thread hashes and writes the key (creating a file costs
        # about as much as hashing 1 MiB here, so neither waits for the other's); the renames
        # wait for both.
        written = _io_pool().submit(_create_seal_write_sync, self.backend, data_key, view)
        return self._finish(written, data_key, lambda: (hashlib.sha256(view).digest(), len(view)))

    def put_file(self, source: str | os.PathLike[str] | BinaryIO) -> str:
        """Store the content of a file (a path, or a binary file open for reading from its
        position to its end), streaming: memory stays a few records whatever its size."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return self.put_file(f)
        data_key = seal.generate_key()
        hasher = hashlib.sha256()
        pending = self.backend.create()
        try:
            # Read and sealed here, hashed and written by threads of the sealer's; the writer
            # never waits for the disk to make bytes durable (see _ObjectSink), so the disk
            # works while the cores do and the fsync below finds little left to do.
            sink = _ObjectSink(pending)
            length = seal.seal_records_stream(
                data_key,
                source,
                cast(BinaryIO, sink),
                _OBJECT_CONTEXT,
                observe=hasher.update,
                threads=_sealing_threads(),
            )
            sink.finish()
            pending.sync()
        except BaseException:
            pending.abort()
            raise
        done: Future[PendingObject] = Future()
        done.set_result(pending)
        return self._finish(done, data_key, lambda: (hasher.digest(), length))

    def _finish(
        self,
        written: Future[PendingObject],
        data_key: bytes,
        hashed: Callable[[], tuple[bytes, int]],
    ) -> str:
        """Hash (``hashed``), write the key to a synced temp file, wait for the object to be
        written and synced (``written`` gives the pending object, or the error after which it
        was aborted), then under the writer lock: check the id is not erased nor stored, and
        make the key and the object visible and durable (:meth:`_commit`); both are durable
        before this returns. Whatever fails, the temp files go."""
        key_temp: Path | None = None
        pending: PendingObject | None = None
        committed = False
        try:
            try:
                digest, length = hashed()
                cid = cid_of_digest(digest)
                self._check_not_erased(cid)
                if not self._stored(cid):
                    key_temp = self._sealed_key_temp(cid, data_key, length)
            finally:
                futures.wait([written])  # the I/O thread is done with the file before it is dropped
                if written.exception() is None:
                    pending = written.result()
            pending = written.result()  # raises what the I/O thread raised
            if key_temp is not None:
                with self._writing():
                    self._check_not_erased(cid)
                    has_key, has_object = (self._keys / cid).is_file(), self.backend.exists(cid)
                    if not (has_key and has_object):
                        self._commit(cid, pending, key_temp, lone=has_key or has_object)
                        key_temp = None
                        committed = True
        finally:
            if pending is not None and not committed:
                pending.abort()
            if key_temp is not None:
                key_temp.unlink(missing_ok=True)
        return cid

    def _commit(self, cid: str, pending: PendingObject, key_temp: Path, *, lone: bool) -> None:
        """Rename the key and the object into place and sync both directories (the writer lock
        held, both files already synced). With neither there, the usual case, both renames
        go first, then the two directory syncs (where one journal commit holds both renames,
        as on ext4, the second sync finds nothing left to do): a crash leaves neither, one
        alone, or both, and one alone is not stored (:meth:`_stored`), so nothing is
        readable until both are durable. Where a crash left one alone (``lone``), the order
        is strict instead, since the old one beside the new one would look stored and fail
        every read: a lone object is deleted first, then the key is renamed and synced before
        the object appears."""
        if not lone:
            os.replace(key_temp, self._keys / cid)
            pending.commit(cid)  # the object's rename, then its directory's sync
            fsync_directory(self._keys)
            return
        if self.backend.exists(cid):
            self.backend.delete(cid)
        os.replace(key_temp, self._keys / cid)
        fsync_directory(self._keys)
        pending.commit(cid)

    # -- reading ----------------------------------------------------------------------------

    def has(self, cid: str) -> bool:
        """Whether the object is stored and readable in principle (not erased)."""
        digest_of_cid(cid)
        return not self._tombstone(cid).exists() and self._stored(cid)

    def stat(self, cid: str) -> BlobStat:
        """Size and sealed size; Erased, NotFound, or CorruptBlob if the key fails its check."""
        digest_of_cid(cid)
        _, length = self._load_key(cid)
        sealed_size = self.backend.size(cid)
        return BlobStat(cid, length, sealed_size)

    def get(self, cid: str) -> bytes:
        """The object's bytes, checked against its CID; Erased, NotFound or CorruptBlob."""
        digest = digest_of_cid(cid)
        data_key, length = self._load_key(cid)
        with self.backend.open(cid) as f:
            sealed = f.read()
        try:
            plain = seal.unseal_records(data_key, sealed, _OBJECT_CONTEXT)
        except SealError:
            raise CorruptBlob(f"object {cid} fails its check") from None
        if len(plain) != length or not hmac.compare_digest(hashlib.sha256(plain).digest(), digest):
            raise CorruptBlob(f"object {cid} does not hash to its id")
        return plain

    def open(self, cid: str) -> io.BufferedReader:
        """A binary stream over the object's bytes (for objects too large to hold in memory).

        Errors as :meth:`get`: an object that fails its check raises :class:`CorruptBlob` from
        ``read`` before the stream's last batch, never at EOF silently.
        """
        digest = digest_of_cid(cid)
        data_key, length = self._load_key(cid)
        source = self.backend.open(cid)
        try:
            size = self.backend.size(cid)
            chunks = seal.open_records_stream(data_key, source, _OBJECT_CONTEXT, size=size)
        except BaseException:
            source.close()
            raise
        return io.BufferedReader(BlobReader(_verified(chunks, digest, length, cid), source), 1 << 20)

    # -- erasure ------------------------------------------------------------------------------

    def shred(self, cid: str, *, ledger: Ledger, identity: Identity, reason: str) -> Transaction:
        """Erase an object by destroying its data key, and record it on ``ledger``.

        In order: the ``blob.erase`` transaction (keyed id and reason, never the CID) is
        signed by ``identity`` and admitted to ``ledger``'s mempool (a refusal changes
        nothing here); a tombstone is written durably, so :meth:`get` raises :class:`Erased`
        from then on; the key file is overwritten and removed; the local ciphertext is
        deleted. Returns the transaction; the validators commit it with the next block.
        """
        from fedledger.ledger import Transaction

        if not isinstance(reason, str) or not reason:
            raise InvalidArgument("reason", "must be non-empty text")
        keyed_id = self.keyed_id(cid)
        with self._writing():  # no put of this id, nor another shred of it, runs meanwhile
            self._check_not_erased(cid)
            if not (self._keys / cid).is_file() and not self.backend.exists(cid):
                raise NotFound(f"no object {cid}")
            # A key or object that fails its check is erased all the same.
            tx = Transaction.create(
                identity,
                kind=ERASE_KIND,
                payload={"keyed_id": keyed_id, "reason": reason},
                nonce=ledger.next_nonce(identity),
                chain_id=ledger.chain_id,
            )
            ledger.submit(tx)
            self._destroy(cid)
        return tx

    def _destroy(self, cid: str) -> None:
        write_durably(self._tombstone(cid), b"", self._owner)
        key = self._keys / cid
        try:
            size = key.stat().st_size
            with open(key, "r+b") as f:  # overwrite in place first (a bound, not a guarantee: see the docs)
                f.write(secrets.token_bytes(size))
                f.flush()
                os.fsync(f.fileno())
            key.unlink()
        except FileNotFoundError:
            pass
        fsync_directory(self._keys)
        self.backend.delete(cid)


_IO_POOL: ThreadPoolExecutor | None = None
_IO_LOCK = threading.Lock()


def _io_pool() -> ThreadPoolExecutor:
    """One I/O thread pool for the process (a thread started per put costs more than the put)."""
    global _IO_POOL
    with _IO_LOCK:
        if _IO_POOL is None:
            _IO_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fedledger-blobstore")
        return _IO_POOL


def _sealing_threads() -> int:
    """Threads for sealing while one core hashes: the rest of the process's, at least one (on
    two cores, an OpenMP team of two beside the hash only contends with it)."""
    return max(1, num_threads() - 1)


def _create_seal_write_sync(backend: Backend, data_key: bytes, view: memoryview) -> PendingObject:
    """A new pending object holding ``view`` sealed, synced; aborted if anything fails."""
    pending = backend.create()
    try:
        sealed = seal.seal_records(data_key, view, _OBJECT_CONTEXT, threads=_sealing_threads())
        pending.file.write(sealed)
        pending.sync()
    except BaseException:
        pending.abort()
        raise
    return pending


#: put_file starts the writeback of its object each time this many more bytes are written
#: (when it writes through the page cache).
_WRITEBACK_EVERY: Final = 32 << 20
#: put_file's direct writes (``O_DIRECT``): their offsets, lengths and memory are multiples of
#: this (a page, and the logical block size of nearly every disk), each up to _DIRECT_BATCH bytes.
_DIRECT_ALIGN: Final = 4096
_DIRECT_BATCH: Final = 8 << 20
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)  # Linux, some BSDs; 0 elsewhere


class _ObjectSink:
    """``pending.file`` for the stream sealer's writer thread (one thread: no locking).

    Where the file is an OS file on Linux-like systems, the sealed bytes go to the disk
    directly (``O_DIRECT``), in aligned batches of _DIRECT_BATCH bytes from an aligned buffer:
    no page-cache copy on the cores that seal and hash, and the disk writes while they work.
    Where the file system refuses direct writes (``EINVAL``: tmpfs, some network file systems)
    or ``O_DIRECT`` is not there, the bytes go through the page cache, and every
    _WRITEBACK_EVERY bytes the sink starts the disk writing them without waiting
    (:func:`start_writeback`). Either way nothing here waits for the disk to make bytes
    durable: :meth:`finish`, then the pending object's ``sync`` (an ``fsync``), does that.
    A blocking sync here would stop the writer, then (two batches later) the reader and
    sealer, for as long as the disk takes.
    """

    def __init__(self, pending: PendingObject) -> None:
        self._file = pending.file
        self._fd: int | None = None
        self._written = 0  # the file's length so far (what this sink has written, and before)
        self._started = 0  # the end of the range whose writeback has been started
        self._raw = False  # writing with os.write on the descriptor (then finish re-syncs the file object's position)
        self._flags = 0
        self._buffer: mmap.mmap | None = None
        self._filled = 0
        try:
            self._fd, self._written = self._file.fileno(), self._file.tell()
        except (AttributeError, OSError, ValueError):  # a backend's file that is no OS file
            self._fd = None
            return
        self._started = self._written
        if _O_DIRECT and fcntl is not None and self._written % _DIRECT_ALIGN == 0:
            try:
                self._file.flush()
                self._flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags | _O_DIRECT)
            except OSError:
                return
            self._buffer = mmap.mmap(-1, _DIRECT_BATCH)  # page-aligned
            self._raw = True

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view and self._buffer is not None:
            n = min(len(view), _DIRECT_BATCH - self._filled)
            self._buffer[self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == _DIRECT_BATCH:
                self._write_staged(_DIRECT_BATCH)
        if view:  # direct writes are off, or were refused
            if self._raw:
                self._write_raw(view)
            else:
                self._file.write(view)
                self._written += len(view)
            if self._fd is not None and self._written - self._started >= _WRITEBACK_EVERY:
                if not self._raw:
                    self._file.flush()  # the bytes must be in the kernel's page cache first
                start_writeback(self._fd, self._started, self._written - self._started)
                self._started = self._written
        return len(data)

    def _write_raw(self, view: memoryview) -> None:
        assert self._fd is not None
        while view:
            n = os.write(self._fd, view)  # at the descriptor's offset: the file's end
            self._written += n
            view = view[n:]

    def _write_staged(self, n: int) -> None:
        """Write the first ``n`` staged bytes directly (``n`` a multiple of _DIRECT_ALIGN) and
        keep the rest staged; if the file system refuses, turn direct writes off and write
        all that is staged through the page cache."""
        assert self._buffer is not None and self._fd is not None
        buffer = self._buffer
        with memoryview(buffer) as staged:
            done = 0
            try:
                while done < n:
                    w = os.write(self._fd, staged[done:n])
                    done += w
                    self._written += w
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._end_direct()  # a refused write wrote nothing
                self._write_raw(staged[done : self._filled])
                self._filled = 0
            else:
                rest = self._filled - n
                staged[:rest] = staged[n : self._filled]
                self._filled = rest
        if self._buffer is None:
            buffer.close()

    def _end_direct(self) -> None:
        """Write through the page cache from now on."""
        assert self._fd is not None and fcntl is not None
        fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)
        self._buffer = None
        self._started = self._written

    def finish(self) -> None:
        """Write what is staged (its unaligned tail through the page cache) and leave the file
        object at the file's end; the caller syncs it."""
        if self._buffer is not None and self._filled >= _DIRECT_ALIGN:
            self._write_staged(self._filled - self._filled % _DIRECT_ALIGN)
        buffer = self._buffer
        if buffer is not None:
            self._end_direct()
            with memoryview(buffer) as staged:
                self._write_raw(staged[: self._filled])
            self._filled = 0
            buffer.close()
        if self._raw:
            self._file.seek(0, os.SEEK_END)  # its cached position predates the os.write calls


def _verified(chunks: Iterator[bytes], digest: bytes, length: int, cid: str) -> Iterator[bytes]:
    """The plaintext batches, the last held back until the whole hashes to ``digest``."""
    hasher = hashlib.sha256()
    held: bytes | None = None
    total = 0
    try:
        for chunk in chunks:
            if held is not None:
                yield held
            hasher.update(chunk)
            total += len(chunk)
            held = chunk
    except SealError:
        raise CorruptBlob(f"object {cid} fails its check") from None
    if total != length or not hmac.compare_digest(hasher.digest(), digest):
        raise CorruptBlob(f"object {cid} does not hash to its id")
    if held is not None:
        yield held
