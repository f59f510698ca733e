"""The second encryption layer: AES-256-GCM sealing with bound associated data.

A sealed message is ``version (1 byte, 0x01) || nonce (12 bytes) || ciphertext || tag (16 bytes)``.
The associated data binds who sent it, to whom, in which round and for what purpose
(:class:`SealContext`); the version byte is bound too. Opening with any other context, key,
or with a single changed or missing byte raises :class:`~fedledger.errors.SealError`, and
no plaintext, partial or whole, is ever returned then.

Nonces are 96 random bits per message: keep well under 2^32 messages per key (NIST SP
800-38D §8.3). Keys are 32 bytes, e.g. from :func:`generate_key` or HKDF
(:func:`fedledger.crypto.agreement.hkdf_sha256`).

Large messages (model updates) go through :func:`seal_records`: the same AES-256-GCM, over
records of ``record_size`` bytes sealed in parallel by a native kernel, as TLS 1.3 seals its
records (RFC 8446 §5.3): record i uses the nonce ``base XOR i``. Its layout is
``version (0x02) || base nonce (12) || record size (4, big-endian) || length (8, big-endian)
|| record 0 || record 1 || ...``, each record its ciphertext then its 16-byte tag. Record i's
associated data is the context's, then that 25-byte header, then i (8 bytes, big-endian), so
records cannot be dropped, reordered, moved between messages or have their length changed;
any change to any byte is a :class:`~fedledger.errors.SealError` and nothing is returned.

Objects too large to hold twice in memory (a 1 GB model) go through :func:`seal_records_stream`
and :func:`open_records_stream`: the same layout, byte for byte, read from and written to files
a batch of records at a time; the length in the header is the source file's size. The stream
opener checks every record before yielding its plaintext, so what it yields is authenticated,
but a caller that stops at an error has seen the records before it (all genuine).

>>> from fedledger.crypto import seal
>>> key = seal.generate_key()
>>> ctx = seal.SealContext(sender="st-marys", receiver="aggregator", round=3, purpose="update")
>>> seal.unseal(key, seal.seal(key, b"weights", ctx), ctx)
b'weights'
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_bytes
from fedledger.crypto._threads import num_threads
from fedledger.errors import InvalidArgument, InvalidArgumentType, SealError

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "OVERHEAD",
    "RECORD_SIZE",
    "TAG_SIZE",
    "SealContext",
    "generate_key",
    "open_records_stream",
    "seal",
    "seal_records",
    "seal_records_stream",
    "sealed_records_size",
    "unseal",
    "unseal_records",
    "unseal_records_into",
]

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
VERSION: Final = 1
_HEADER: Final = 1 + NONCE_SIZE
#: Bytes a sealed message adds to its plaintext.
OVERHEAD: Final = _HEADER + TAG_SIZE
#: cryptography's AEAD limit on one message.
MAX_PLAINTEXT: Final = 2**31 - 1 - TAG_SIZE
_DOMAIN: Final = b"fedledger/seal/v1\x00"
#: Default bytes per record of :func:`seal_records` (a whole number of 64 KiB vector chunks).
RECORD_SIZE: Final = 1 << 18
RECORDS_VERSION: Final = 2
_MIN_RECORD: Final = 16
_MAX_RECORD: Final = 1 << 30
_RECORDS_HEADER: Final = struct.Struct(">B12sIQ")  # version, base nonce, record size, length

try:
    from fedledger._ext import _seal as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_seal", exc) from exc


def _text(value: object, argument: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgumentType(argument, f"expected str, got {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(argument, "is not valid Unicode text (lone surrogate)") from None


@dataclass(frozen=True)
class SealContext:
    """What a sealed message is bound to: sender, receiver, round and purpose."""

    sender: str
    receiver: str
    round: int
    purpose: str

    def associated_data(self) -> bytes:
        """The AEAD associated data: a domain tag, the version, then each field length-prefixed."""
        parts = [_text(self.sender, "sender"), _text(self.receiver, "receiver"), _text(self.purpose, "purpose")]
        if isinstance(self.round, bool) or not isinstance(self.round, int):
            raise InvalidArgumentType("round", f"expected int, got {type(self.round).__name__}")
        if not 0 <= self.round < 2**64:
            raise InvalidArgument("round", f"must be in [0, 2**64), got {self.round}")
        out = [_DOMAIN, bytes([VERSION])]
        for part in parts:
            out.append(struct.pack(">I", len(part)))
            out.append(part)
        out.append(struct.pack(">Q", self.round))
        return b"".join(out)


def generate_key() -> bytes:
    """A fresh random 32-byte AES-256-GCM key."""
    return AESGCM.generate_key(bit_length=256)


def _key(key: object) -> AESGCM:
    return AESGCM(_raw_key(key))


def _context(context: object) -> bytes:
    if not isinstance(context, SealContext):
        raise InvalidArgumentType("context", f"expected SealContext, got {type(context).__name__}")
    return context.associated_data()


def seal(key: bytes, plaintext: bytes, context: SealContext) -> bytes:
    """Encrypt and authenticate ``plaintext`` for ``context`` under a 32-byte key."""
    aead = _key(key)
    aad = _context(context)
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise InvalidArgumentType("plaintext", f"expected bytes, got {type(plaintext).__name__}")
    if len(plaintext) > MAX_PLAINTEXT:
        raise InvalidArgument("plaintext", f"at most {MAX_PLAINTEXT} bytes per sealed message")
    nonce = os.urandom(NONCE_SIZE)
    return bytes([VERSION]) + nonce + _encrypt(aead, nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, context: SealContext) -> bytes:
    """Check and decrypt a sealed message; SealError if anything is wrong with it.

    Arguments of the wrong type or a key of the wrong size are programming errors and raise
    InvalidArgument(Type); everything about the sealed bytes themselves is a SealError.
    """
    aead = _key(key)
    aad = _context(context)
    view = _flat(sealed, "sealed")  # InvalidArgument(Type) unless contiguous bytes
    if len(view) < OVERHEAD:
        raise SealError("cannot open the sealed message")
    if view[0] != VERSION:
        raise SealError("cannot open the sealed message")
    return _decrypt(aead, bytes(view[1:_HEADER]), view[_HEADER:], aad)


def _encrypt(aead: AESGCM, nonce: bytes, plaintext: bytes | bytearray | memoryview, aad: bytes) -> bytes:
    """ciphertext || tag. The one place that encrypts (the Wycheproof tests call it directly)."""
    return aead.encrypt(nonce, plaintext, aad)


def _decrypt(aead: AESGCM, nonce: bytes, ciphertext_and_tag: bytes | memoryview, aad: bytes) -> bytes:
    """The plaintext, or SealError. The one place that decrypts: OpenSSL checks the tag before
    cryptography returns anything, so a failure never yields any plaintext."""
    try:
        return aead.decrypt(nonce, ciphertext_and_tag, aad)
    except (InvalidTag, ValueError, OverflowError):
        raise SealError("cannot open the sealed message") from None


# -- large messages: records --------------------------------------------------------------------


def _record_count(length: int, record_size: int) -> int:
    return max(1, -(-length // record_size))


def sealed_records_size(length: int, record_size: int = RECORD_SIZE) -> int:
    """The size of :func:`seal_records`'s output for a ``length``-byte plaintext."""
    return _RECORDS_HEADER.size + length + TAG_SIZE * _record_count(length, record_size)


def _raw_key(key: object) -> bytes:
    raw = as_bytes(key, "key")
    if len(raw) != KEY_SIZE:
        raise InvalidArgument("key", f"an AES-256-GCM key is {KEY_SIZE} bytes, got {len(raw)}")
    return raw


def _flat(value: object, argument: str) -> memoryview:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgumentType(argument, f"expected bytes, got {type(value).__name__}")
    view = memoryview(value)
    if not view.c_contiguous:
        raise InvalidArgument(argument, "must be contiguous")
    return view.cast("B")


def _check_threads(threads: object) -> int:
    """``threads`` if given (a positive int), else the process setting (:func:`fedledger.set_num_threads`)."""
    if threads is None:
        return num_threads()
    if type(threads) is not int:
        raise InvalidArgumentType("threads", f"expected int, got {type(threads).__name__}")
    if threads < 1:
        raise InvalidArgument("threads", f"must be >= 1, got {threads}")
    return threads


def seal_records(
    key: bytes,
    plaintext: bytes | bytearray | memoryview,
    context: SealContext,
    *,
    record_size: int = RECORD_SIZE,
    threads: int | None = None,
) -> bytes:
    """Encrypt and authenticate a large ``plaintext`` for ``context`` as AES-256-GCM records
    (see the module doc), sealed in parallel on ``threads`` threads (by default
    the process setting (:func:`fedledger.set_num_threads`))."""
    nthreads = _check_threads(threads)
    raw = _raw_key(key)
    aad = _context(context)
    data = _flat(plaintext, "plaintext")
    if type(record_size) is not int or not _MIN_RECORD <= record_size <= _MAX_RECORD:
        raise InvalidArgument("record_size", f"must be an int in [{_MIN_RECORD}, {_MAX_RECORD}], got {record_size!r}")
    if len(data) >= 2**63:  # pragma: no cover - not addressable
        raise InvalidArgument("plaintext", "too long")
    base = os.urandom(NONCE_SIZE)
    header = _RECORDS_HEADER.pack(RECORDS_VERSION, base, record_size, len(data))
    rc, out = _k.seal_records(raw, base, aad + header, True, data, record_size, header, nthreads)
    if rc != _k.OK:  # pragma: no cover - OpenSSL failure
        raise MemoryError(f"sealing kernel failed (code {rc})")
    return out


def _records_header(sealed: memoryview) -> tuple[bytes, int, int, bytes]:
    """(base nonce, record size, length, header) of well-framed sealed records, else SealError."""
    if len(sealed) < _RECORDS_HEADER.size:
        raise SealError("cannot open the sealed message")
    header = bytes(sealed[: _RECORDS_HEADER.size])
    version, base, record_size, length = _RECORDS_HEADER.unpack(header)
    if (
        version != RECORDS_VERSION
        or not _MIN_RECORD <= record_size <= _MAX_RECORD
        or len(sealed) != sealed_records_size(length, record_size)
    ):
        raise SealError("cannot open the sealed message")
    return base, record_size, length, header


def unseal_records_into(
    key: bytes, sealed: bytes | memoryview, context: SealContext, out: bytearray | memoryview
) -> None:
    """Check and decrypt :func:`seal_records` output into ``out``, a writable buffer of exactly
    the plaintext's length (reusable: no allocation per message). SealError if anything is
    wrong; ``out`` then holds zeros, never partial plaintext."""
    raw = _raw_key(key)
    aad = _context(context)
    view = _flat(sealed, "sealed")
    target = _flat(out, "out")
    if target.readonly:
        raise InvalidArgument("out", "must be writable")
    try:
        base, record_size, length, header = _records_header(view)
        if length != len(target):
            raise SealError(f"the sealed message holds {length} bytes, the buffer takes {len(target)}")
    except SealError:
        target[:] = bytes(len(target))
        raise
    rc = _k.open_records(
        raw, base, aad + header, True, view[_RECORDS_HEADER.size :], record_size, target, num_threads()
    )
    if rc != _k.OK:  # the kernel has wiped ``out``
        raise SealError("cannot open the sealed message")


def unseal_records(key: bytes, sealed: bytes | memoryview, context: SealContext) -> bytes:
    """Check and decrypt :func:`seal_records` output; SealError if anything is wrong with it."""
    _raw_key(key)
    _context(context)
    _, _, length, _ = _records_header(_flat(sealed, "sealed"))
    out = bytearray(length)
    unseal_records_into(key, sealed, context, out)
    return bytes(out)


# -- large messages as streams ----------------------------------------------------------------

#: Records per batch of the stream sealer and opener (4 MiB at the default record size).
STREAM_BATCH: Final = 16
#: Batches the stream sealer lets each of its hashing and writing stages fall behind.
STREAM_DEPTH: Final = 2


def _record_nonce(base: bytes, i: int) -> bytes:
    """The kernel's per-record nonce: ``base`` XOR i, i big-endian in the last 8 bytes."""
    return base[:4] + (int.from_bytes(base[4:], "big") ^ i).to_bytes(8, "big")


def _check_record_size(record_size: object) -> int:
    if type(record_size) is not int or not _MIN_RECORD <= record_size <= _MAX_RECORD:
        raise InvalidArgument("record_size", f"must be an int in [{_MIN_RECORD}, {_MAX_RECORD}], got {record_size!r}")
    return record_size


def _read_exactly(source: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = source.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def seal_records_stream(
    key: bytes,
    source: BinaryIO,
    sink: BinaryIO,
    context: SealContext,
    *,
    record_size: int = RECORD_SIZE,
    observe: Callable[[bytes], object] | None = None,
    threads: int | None = None,
) -> int:
    """Seal the rest of the file ``source`` (from its position to its end) into ``sink`` in
    exactly :func:`seal_records`'s layout; return the plaintext's length.

    The length in the header is the file's size (``os.fstat``) less its position; a file that
    grows or shrinks while it is read is an :class:`InvalidArgument`. Memory stays near
    ``STREAM_BATCH * (2 * STREAM_DEPTH + 2)`` records whatever the size. Three stages overlap:
    a batch is read and sealed (on ``threads`` threads, by default
    the process setting (:func:`fedledger.set_num_threads`)) while ``observe`` (for example a hash's ``update``)
    is called with earlier batches of plaintext, in order, in a thread of its own, and a thread
    writes earlier sealed batches to ``sink`` (hashlib, the kernel and file writes all release
    the GIL). Every call to ``observe`` and ``sink.write`` has returned when this returns.
    """
    raw = _raw_key(key)
    aad = _context(context)
    record_size = _check_record_size(record_size)
    nthreads = _check_threads(threads)
    try:
        length = os.fstat(source.fileno()).st_size - source.tell()
    except (AttributeError, OSError) as exc:
        raise InvalidArgument("source", f"must be a regular file open for reading ({exc})") from None
    if length < 0:  # pragma: no cover - a position past the end
        raise InvalidArgument("source", "its position is past its end")
    base = os.urandom(NONCE_SIZE)
    header = _RECORDS_HEADER.pack(RECORDS_VERSION, base, record_size, length)
    sink.write(header)
    prefix = aad + header
    count = _record_count(length, record_size)
    batch = record_size * STREAM_BATCH

    def seal_one(i: int, chunk: memoryview) -> bytes:
        rc, out = _k.seal_records(
            raw, _record_nonce(base, i), prefix + i.to_bytes(8, "big"), False, chunk, record_size, b"", 1
        )
        if rc != _k.OK:  # pragma: no cover - OpenSSL failure
            raise MemoryError(f"sealing kernel failed (code {rc})")
        return out

    def write_all(parts: list[bytes]) -> None:
        for part in parts:
            sink.write(part)

    def settle(queue: deque[Future[object]], keep: int) -> None:
        while len(queue) > keep:
            queue.popleft().result()

    with ExitStack() as stack:
        sealers = ThreadPoolExecutor(max_workers=nthreads) if nthreads > 1 else None
        observer = ThreadPoolExecutor(max_workers=1) if observe is not None else None
        writer = ThreadPoolExecutor(max_workers=1)
        for pool in (sealers, observer, writer):
            if pool is not None:  # on an error, queued work is dropped and running work finishes
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        seen: deque[Future[object]] = deque()
        written: deque[Future[object]] = deque()
        done, index = 0, 0
        while index < count:
            want = min(batch, length - done)
            data = _read_exactly(source, want)
            if len(data) != want:
                raise InvalidArgument("source", f"the file shrank while it was sealed ({done + len(data)} of {length})")
            if observer is not None and data:
                seen.append(observer.submit(observe, data))  # type: ignore[arg-type]
            view = memoryview(data)
            starts = range(0, max(len(data), 1), record_size)
            indices = range(index, index + len(starts))
            chunks = [view[a : a + record_size] for a in starts]
            sealed = list(sealers.map(seal_one, indices, chunks) if sealers else map(seal_one, indices, chunks))
            written.append(writer.submit(write_all, sealed))
            settle(written, STREAM_DEPTH)
            settle(seen, STREAM_DEPTH)
            index += len(starts)
            done += len(data)
        settle(written, 0)
        settle(seen, 0)
    if source.read(1):
        raise InvalidArgument("source", f"the file grew while it was sealed (past {length} bytes)")
    return length


def open_records_stream(
    key: bytes, source: BinaryIO, context: SealContext, *, size: int | None = None
) -> Iterator[bytes]:
    """Check and decrypt :func:`seal_records` output read from ``source`` (from its position;
    ``size`` bytes, by default the rest of the file), yielding the plaintext a batch at a time.

    Each batch is yielded only after every record in it is authenticated; any failure raises
    :class:`SealError` (the header is checked against ``size`` before anything is yielded). A
    zero-length message yields nothing.
    """
    raw = _raw_key(key)
    aad = _context(context)
    if size is None:
        try:
            size = os.fstat(source.fileno()).st_size - source.tell()
        except (AttributeError, OSError) as exc:
            raise InvalidArgument("source", f"must be a regular file or come with its size ({exc})") from None
    header = _read_exactly(source, _RECORDS_HEADER.size)
    if len(header) != _RECORDS_HEADER.size:
        raise SealError("cannot open the sealed message")
    version, base, record_size, length = _RECORDS_HEADER.unpack(header)
    if (
        version != RECORDS_VERSION
        or not _MIN_RECORD <= record_size <= _MAX_RECORD
        or size != sealed_records_size(length, record_size)
    ):
        raise SealError("cannot open the sealed message")
    prefix = aad + header
    count = _record_count(length, record_size)
    step = record_size + TAG_SIZE

    def open_one(i: int, chunk: memoryview) -> bytearray:
        out = bytearray(len(chunk) - TAG_SIZE)
        rc = _k.open_records(
            raw, _record_nonce(base, i), prefix + i.to_bytes(8, "big"), False, chunk, record_size, out, 1
        )
        if rc != _k.OK:
            raise SealError("cannot open the sealed message")
        return out

    with ThreadPoolExecutor(max_workers=max(1, num_threads())) as pool:
        index, done = 0, 0
        while index < count:
            n = min(STREAM_BATCH, count - index)
            plain = min(length - done, n * record_size)
            data = _read_exactly(source, plain + n * TAG_SIZE)
            if len(data) != plain + n * TAG_SIZE:
                raise SealError("cannot open the sealed message")
            view = memoryview(data)
            parts = list(
                pool.map(open_one, range(index, index + n), [view[j * step : (j + 1) * step] for j in range(n)])
            )
            index += n
            done += plain
            if plain:
                yield b"".join(parts)
