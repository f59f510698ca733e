"""The blob store: CIDs against the multiformats library and published IPFS ids, round trips,
streaming memory, erasure by crypto-shredding on the ledger, tampering, bad input."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cid as libcid
import multihash as libmultihash
import pytest
from ledger_helpers import CHAIN, identity, sites, validator_set, validators

from fedledger import BlobStore, Ledger, Transaction
from fedledger.blobstore import cid_of, cid_of_digest, digest_of_cid
from fedledger.crypto import seal
from fedledger.crypto.agreement import hkdf_sha256
from fedledger.errors import (
    CorruptBlob,
    Erased,
    InvalidArgument,
    InvalidTransaction,
    NotFound,
    SealError,
    UnauthorizedSender,
)

R = seal.RECORD_SIZE
BATCH = seal.STREAM_BATCH * R
EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


def library_cid(data: bytes) -> str:
    """The multiformats library's own CIDv1 (raw, sha2-256, base32) of ``data``."""
    multihash = libmultihash.digest(data, "sha2-256").encode()
    return libcid.make_cid(1, "raw", multihash).encode("base32").decode()


def content(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(f"{seed}".encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


# -- content ids ---------------------------------------------------------------------------------


def test_known_ipfs_ids() -> None:
    # The empty raw block and "hello world\n" as raw leaves: the ids IPFS gives them (the
    # second is what ipfs/boxo's gateway example test serves as "hello world\n").
    assert cid_of(b"") == EMPTY_CID
    assert cid_of(b"hello world\n") == HELLO_CID


@pytest.mark.parametrize("size", [0, 1, 31, 32, 1000, R, R + 1])
def test_ids_match_the_library(size: int) -> None:
    data = content(size, seed=size)
    assert cid_of(data) == library_cid(data)
    assert digest_of_cid(cid_of(data)) == hashlib.sha256(data).digest()


def test_ids_of_many_digests_match_the_library_text() -> None:
    for i in range(300):
        digest = hashlib.sha256(i.to_bytes(4, "big")).digest()
        expected = libcid.make_cid(1, "raw", libmultihash.encode(digest, "sha2-256")).encode("base32").decode()
        assert cid_of_digest(digest) == expected
        assert digest_of_cid(expected) == digest


def test_a_different_byte_is_a_different_id() -> None:
    assert cid_of(b"hello world\n") != cid_of(b"hello world!")


@pytest.mark.parametrize(
    "text",
    [
        "",
        HELLO_CID.upper(),
        "B" + HELLO_CID[1:],
        HELLO_CID[:-1],
        HELLO_CID + "a",
        "QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB",  # CIDv0 (dag-pb)
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",  # dag-pb codec
        "../../etc/passwd",
        "bafkrei" + "/" * 52,
    ],
)
def test_anything_but_a_canonical_raw_sha256_cid_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        digest_of_cid(text)


def test_digest_must_be_32_bytes() -> None:
    with pytest.raises(InvalidArgument):
        cid_of_digest(b"\x00" * 31)


# -- round trips ---------------------------------------------------------------------------------

SIZES = [0, 1, 15, 16, 17, R - 1, R, R + 1, 2 * R, BATCH - 1, BATCH, BATCH + 1, BATCH + R + 7]


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_in_memory_and_streamed(store: BlobStore, tmp_path: Path, size: int) -> None:
    data = content(size, seed=size)
    cid = store.put(data)
    assert cid == cid_of(data) == library_cid(data)
    assert store.has(cid)
    assert store.get(cid) == data
    with store.open(cid) as f:
        assert f.read() == data
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    other = BlobStore(tmp_path / "other")
    assert other.put_file(source) == cid
    assert other.get(cid) == data
    with other.open(cid) as f:
        got = b"".join(iter(lambda: f.read(12345), b""))
    assert got == data
    stat = other.stat(cid)
    assert stat.size == size and stat.sealed_size == seal.sealed_records_size(size)


def test_put_is_idempotent_and_survives_reopening(store: BlobStore) -> None:
    cid = store.put(b"model weights")
    assert store.put(bytearray(b"model weights")) == cid
    again = BlobStore(store.path)
    assert again.get(cid) == b"model weights"


def test_unknown_id_is_not_found(store: BlobStore) -> None:
    assert not store.has(HELLO_CID)
    for call in (store.get, store.stat, store.open):
        with pytest.raises(NotFound):
            call(HELLO_CID)


def test_bad_input_is_typed(store: BlobStore) -> None:
    with pytest.raises(InvalidArgument):
        store.get("not a cid")
    with pytest.raises(InvalidArgument):
        store.put("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, R - 1, R, R + 1, BATCH + 3])
def test_streaming_sealer_writes_the_records_layout(tmp_path: Path, size: int) -> None:
    key, ctx = seal.generate_key(), seal.SealContext("a", "b", 7, "p")
    data = content(size, seed=size + 1)
    (tmp_path / "in").write_bytes(data)
    seen = bytearray()
    with open(tmp_path / "in", "rb") as src, open(tmp_path / "out", "wb") as dst:
        assert seal.seal_records_stream(key, src, dst, ctx, observe=seen.extend) == size
    assert bytes(seen) == data
    sealed = (tmp_path / "out").read_bytes()
    assert len(sealed) == seal.sealed_records_size(size)
    assert seal.unseal_records(key, sealed, ctx) == data  # the whole-buffer opener reads it
    whole = seal.seal_records(key, data, ctx)
    with open(tmp_path / "whole", "wb") as f:
        f.write(whole)
    with open(tmp_path / "whole", "rb") as f:  # and the stream opener reads the whole-buffer sealer's
        assert b"".join(seal.open_records_stream(key, f, ctx)) == data
    with open(tmp_path / "out", "rb") as f, pytest.raises(SealError):
        b"".join(seal.open_records_stream(key, f, seal.SealContext("a", "b", 8, "p")))


_RSS_CHILD = textwrap.dedent(
    """
    import os, resource, sys
    from fedledger import BlobStore

    def peak():
        # VmHWM: this process's own peak (ru_maxrss also holds the parent's, from before exec)
        try:
            with open(os.path.join(os.sep, "proc", "self", "status")) as f:  # Linux procfs
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    size, root = int(sys.argv[1]), sys.argv[2]
    store = BlobStore(os.path.join(root, "store"))
    src = os.path.join(root, "big")
    with open(src, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    store.put(b"warm up")
    with store.open(store.put(b"warm up")) as f:
        f.read()
    base = peak()
    cid = store.put_file(src)
    n = 0
    with store.open(cid) as f:
        while block := f.read(1 << 20):
            n += len(block)
    assert n == size
    print(peak() - base)
    """
)


def test_streaming_keeps_memory_bounded(tmp_path: Path) -> None:
    # The bench puts and reads 1 GiB in under 256 MiB above the baseline; here 256 MiB in the
    # proportional 64 MiB: this fails if anything holds the object, plain or sealed. What it
    # takes (about 40 MiB, the same for 1 GiB) is a few 4 MiB batches per stage and the
    # threads' arenas, so a smaller object could not keep the proportion.
    size = 256 << 20
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(size), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < size // 4, f"peak RSS grew by {int(out.stdout) >> 20} MiB"


# -- erasure -------------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    vals = validators()
    return Ledger.open(
        tmp_path / "l.db",
        chain_id=CHAIN,
        validators=validator_set(vals),
        local_validators=vals,
        members=[p.card() for p in sites(2)],
    )


def test_shred_erases_records_and_the_ledger_verifies(store: BlobStore, ledger: Ledger, tmp_path: Path) -> None:
    site = sites(1)[0]
    data = b"patient-level export " * 1000
    cid = store.put(data)
    keep = store.put(b"an aggregate that stays")
    copy = tmp_path / "copied-away"
    shutil.copy(store.path / "objects" / cid, copy)

    tx = store.shred(cid, ledger=ledger, identity=site, reason="GDPR art. 17 request")
    ledger.commit()
    ledger.verify()

    with pytest.raises(Erased):
        store.get(cid)
    with pytest.raises(Erased):
        store.stat(cid)
    with pytest.raises(Erased):
        store.open(cid)
    with pytest.raises(Erased):
        store.put(data)  # the same content cannot come back under the erased id
    assert not list((store.path / "objects").glob(".tmp-*"))  # and the refused put left nothing behind
    with pytest.raises(Erased):
        store.shred(cid, ledger=ledger, identity=site, reason="again")
    assert not store.has(cid)
    assert BlobStore(store.path).get(keep) == b"an aggregate that stays"
    with pytest.raises(Erased):
        BlobStore(store.path).get(cid)

    # The ledger names the keyed id and the reason, never the CID or its digest.
    recorded = ledger.get(tx.id)
    assert recorded.kind == "blob.erase"
    assert recorded.payload == {"keyed_id": store.keyed_id(cid), "reason": "GDPR art. 17 request"}
    raw = recorded.to_bytes()
    assert cid.encode() not in raw and digest_of_cid(cid) not in raw
    assert ledger.height == 1 and [t.id for t in ledger.block(1).transactions] == [tx.id]

    # Nothing the store keeps opens the copy of the ciphertext.
    sealed = copy.read_bytes()
    assert not (store.path / "objects" / cid).exists() and not (store.path / "keys" / cid).exists()
    candidates = _every_key_the_store_keeps(store)
    assert len(candidates) >= 4
    for key in candidates:
        for ctx in (seal.SealContext("fedledger.blobstore", "at-rest", 0, "object"),):
            with pytest.raises(SealError):
                seal.unseal_records(key, sealed, ctx)


def _every_key_the_store_keeps(store: BlobStore) -> list[bytes]:
    """Every 32-byte window of every file left in the store, and the keys derived from the master."""
    keys = set()
    for path in store.path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            keys |= {data[i : i + 32] for i in range(0, max(1, len(data) - 31)) if len(data) >= 32}
    master = (store.path / "master.key").read_bytes()[8:40]
    for info in (b"fedledger/blobstore/wrap/v1", b"fedledger/blobstore/keyed-id/v1"):
        keys.add(hkdf_sha256(master, salt=b"", info=info, length=32))
    for path in (store.path / "keys").iterdir():  # the data keys of the objects still stored
        name = path.name
        record = seal.unseal(
            hkdf_sha256(master, salt=b"", info=b"fedledger/blobstore/wrap/v1", length=32),
            path.read_bytes(),
            seal.SealContext("fedledger.blobstore", "at-rest", 0, f"data-key {name}"),
        )
        keys.add(record[:32])
    return sorted(keys)


def test_an_object_with_a_corrupted_key_can_still_be_shredded(store: BlobStore, ledger: Ledger) -> None:
    cid = store.put(b"x" * 100)
    key = store.path / "keys" / cid
    key.write_bytes(b"\x00" * len(key.read_bytes()))
    with pytest.raises(CorruptBlob):
        store.get(cid)
    store.shred(cid, ledger=ledger, identity=sites(1)[0], reason="corrupted, erase anyway")
    with pytest.raises(Erased):
        store.get(cid)
    assert not key.exists() and not (store.path / "objects" / cid).exists()


def test_non_contiguous_input_is_refused(store: BlobStore) -> None:
    with pytest.raises(InvalidArgument):
        store.put(memoryview(b"abcdef")[::2])


def test_shred_by_a_non_member_changes_nothing(store: BlobStore, ledger: Ledger) -> None:
    cid = store.put(b"x")
    with pytest.raises(UnauthorizedSender):
        store.shred(cid, ledger=ledger, identity=identity("outsider"), reason="no")
    assert store.get(cid) == b"x"
    with pytest.raises(NotFound):
        store.shred(HELLO_CID, ledger=ledger, identity=sites(1)[0], reason="absent")
    with pytest.raises(InvalidArgument):
        store.shred(cid, ledger=ledger, identity=sites(1)[0], reason="")


@pytest.mark.parametrize(
    "payload",
    [
        {"keyed_id": b"\x01" * 31, "reason": "r"},
        {"keyed_id": b"\x01" * 33, "reason": "r"},
        {"keyed_id": "01" * 32, "reason": "r"},
        {"keyed_id": b"\x01" * 32, "reason": b"r"},
        {"keyed_id": b"\x01" * 32, "reason": ""},
        {"keyed_id": b"\x01" * 32, "reason": "r" * 1025},
        {"keyed_id": b"\x01" * 32},
        {"keyed_id": b"\x01" * 32, "reason": "r", "cid": HELLO_CID},
        [b"\x01" * 32, "r"],
    ],
)
def test_the_erase_kind_checks_its_payload_strictly(ledger: Ledger, payload: object) -> None:
    site = sites(1)[0]
    tx = Transaction.create(site, kind="blob.erase", payload=payload, nonce=0, chain_id=CHAIN)  # type: ignore[arg-type]
    with pytest.raises(InvalidTransaction):
        ledger.submit(tx)
    good = Transaction.create(
        site, kind="blob.erase", payload={"keyed_id": b"\x01" * 32, "reason": "r"}, nonce=0, chain_id=CHAIN
    )
    ledger.submit(good)


# -- tampering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [0, 1, 13, 20, 25, 26, 1000, -17, -1])
def test_a_flipped_byte_in_an_object_is_corrupt_blob(store: BlobStore, where: int) -> None:
    data = content(2 * R + 5, seed=3)
    cid = store.put(data)
    path = store.path / "objects" / cid
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x01
    path.write_bytes(raw)
    with pytest.raises(CorruptBlob):
        store.get(cid)
    with pytest.raises(CorruptBlob), store.open(cid) as f:
        f.read()


def test_a_truncated_or_swapped_object_is_corrupt_blob(store: BlobStore) -> None:
    a, b = store.put(content(R + 9, seed=4)), store.put(content(R + 9, seed=5))
    objects = store.path / "objects"
    sealed_a = (objects / a).read_bytes()
    (objects / a).write_bytes((objects / b).read_bytes())
    with pytest.raises(CorruptBlob):
        store.get(a)
    (objects / a).write_bytes(sealed_a[:-1])
    with pytest.raises(CorruptBlob):
        store.get(a)
    with pytest.raises(CorruptBlob), store.open(a) as f:
        f.read()


@pytest.mark.parametrize("where", [0, 12, 30, -1])
def test_a_flipped_byte_in_a_key_file_is_corrupt_blob(store: BlobStore, where: int) -> None:
    cid = store.put(b"weights")
    path = store.path / "keys" / cid
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x80
    path.write_bytes(raw)
    for call in (store.get, store.stat, store.open):
        with pytest.raises(CorruptBlob):
            call(cid)


def test_a_key_file_moved_to_another_object_is_corrupt_blob(store: BlobStore) -> None:
    a, b = store.put(b"a"), store.put(b"b")
    keys = store.path / "keys"
    (keys / a).write_bytes((keys / b).read_bytes())
    with pytest.raises(CorruptBlob):
        store.get(a)


@pytest.mark.parametrize("where", [0, 8, 39, 40, -1])
def test_a_flipped_byte_in_the_master_key_is_corrupt_blob(store: BlobStore, where: int) -> None:
    store.put(b"x")
    path = store.path / "master.key"
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x04
    path.write_bytes(raw)
    with pytest.raises(CorruptBlob):
        BlobStore(store.path)
