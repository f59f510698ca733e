"""Several stores on one directory at once, in several processes: puts of the same content never
pair one put's key with another's object, a shred is never undone by a put in flight, and
opening a store never removes another writer's temp files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from ledger_helpers import sites
from test_blobstore import ledger  # noqa: F401 - the fixture

from fedledger import BlobStore, Ledger
from fedledger.blobstore import cid_of
from fedledger.errors import Erased

HERE = Path(__file__).parent

# Puts the shared contents (and some of its own) in a loop, half of them with put_file, until
# ``rounds`` are done; an Erased refusal is counted, not raised.
_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fedledger import BlobStore
    from fedledger.errors import Erased
    path, name, rounds, shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = BlobStore(path)
    source = Path(path).parent / f"source-{name}"
    print("ready", flush=True)
    sys.stdin.readline()
    refused = 0
    for r in range(rounds):
        for i in range(shared + 1):
            data = f"shared {i}".encode() * (1000 + 97 * i) if i < shared else f"{name} {r}".encode() * 3000
            try:
                if (r + i) % 2:
                    source.write_bytes(data)
                    store.put_file(source)
                else:
                    store.put(data)
            except Erased:
                refused += 1
    print("done", refused, flush=True)
    """
)


def _shared(i: int) -> bytes:
    return f"shared {i}".encode() * (1000 + 97 * i)


def _start(path: Path, name: str, rounds: int, shared: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), name, str(rounds), str(shared)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    return child


def _go(*children: subprocess.Popen[str]) -> None:
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()


def _finish(child: subprocess.Popen[str]) -> int:
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0, out
    return int(out.split()[-1])


def test_two_processes_putting_the_same_content_leave_every_object_readable(tmp_path: Path) -> None:
    path = tmp_path / "store"
    BlobStore(path)  # one master key, before the writers start
    shared = 8
    children = [_start(path, name, rounds=15, shared=shared) for name in ("a", "b")]
    _go(*children)
    for child in children:
        assert _finish(child) == 0
    store = BlobStore(path)
    for i in range(shared):  # each key opens its own object: no put's key went with another's object
        assert store.get(cid_of(_shared(i))) == _shared(i)
    for name in ("a", "b"):
        for r in range(15):
            data = f"{name} {r}".encode() * 3000
            assert store.get(cid_of(data)) == data
    leftovers = [p for d in ("objects", "keys", "erased") for p in (path / d).iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert sorted(p.name for p in (path / "keys").iterdir()) == sorted(p.name for p in (path / "objects").iterdir())


def test_a_shred_is_not_undone_by_puts_in_flight_in_another_process(tmp_path: Path, ledger: Ledger) -> None:  # noqa: F811
    # Without the writer lock a put that checked for a tombstone just before a shred could
    # write the key back after it; that window is microseconds, so this run shows the
    # outcome (nothing comes back, the puts are refused), not that the window is closed.
    path = tmp_path / "store"
    store = BlobStore(path)
    site = sites(1)[0]
    shared = 6
    child = _start(path, "a", rounds=60, shared=shared)
    _go(child)
    cids = [cid_of(_shared(i)) for i in range(shared)]
    for cid in cids:  # shred each shared object while the child keeps putting it
        deadline = time.monotonic() + 60
        while not store.has(cid):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        store.shred(cid, ledger=ledger, identity=site, reason="erasure request")
    refused = _finish(child)
    assert refused > 0  # the child did try to put erased content back
    for cid in cids:
        assert not (path / "keys" / cid).exists(), "a put brought an erased object's key back"
        assert not (path / "objects" / cid).exists()
        assert not store.has(cid)


def test_opening_a_store_leaves_another_writers_temp_files_alone(tmp_path: Path) -> None:
    path = tmp_path / "store"
    first = BlobStore(path)
    pending = first.backend.create()  # an object in flight, as in a put
    pending.file.write(b"sealed bytes")
    in_flight = [p for p in (path / "objects").iterdir() if p.name.startswith(".tmp-")]
    assert len(in_flight) == 1
    dead = path / "objects" / ".tmp-0123456789abcdef-0123456789abcdef"  # an owner that is gone
    dead.write_bytes(b"left by a crash")
    old_style = path / "keys" / ".tmp-0123456789abcdef"  # named as before owners
    old_style.write_bytes(b"left by a crash")

    BlobStore(path)  # a second store, same process (another process would be the same)
    assert in_flight[0].exists()
    assert not dead.exists() and not old_style.exists()
    pending.commit("x")
    assert (path / "objects" / "x").read_bytes() == b"sealed bytes"


def test_threads_of_one_store_put_the_same_content_at_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    data = [os.urandom(300_000) for _ in range(4)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                for d in data:
                    store.put(d)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for d in data:
        assert store.get(cid_of(d)) == d


def test_a_put_of_erased_content_is_refused_in_every_store(tmp_path: Path, ledger: Ledger) -> None:  # noqa: F811
    path = tmp_path / "store"
    first, second = BlobStore(path), BlobStore(path)
    cid = first.put(b"to be erased")
    first.shred(cid, ledger=ledger, identity=sites(1)[0], reason="erasure request")
    try:
        second.put(b"to be erased")
    except Erased:
        pass
    else:  # pragma: no cover
        raise AssertionError("an erased object came back through another store")
