"""A SIGKILL at any instant of a put leaves each object whole or absent, and never loses one
that put acknowledged; what a power loss can leave (a key or an object alone) is not stored,
and the next put of the content replaces it in an order that never pairs old with new."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blobstore_crash_child import payload

import fedledger.blobstore.backend as backend_module
import fedledger.blobstore.store as store_module
from fedledger import BlobStore
from fedledger.blobstore.backend import LocalBackend, PendingObject
from fedledger.errors import NotFound

HERE = Path(__file__).parent
KILLS = 32


def test_sigkill_during_put_leaves_whole_objects_or_none(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rnd = random.Random(2026)
    acknowledged: dict[str, bytes] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    mid_put = 0  # kills that left a put's temp file behind: they landed inside a put
    for run in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(HERE / "blobstore_crash_child.py"), str(path), str(run)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first == "ready\n", first
        line = child.stdout.readline()  # one put done, then kill during a later one
        assert line.startswith("stored "), line
        time.sleep(rnd.uniform(0.0, 0.03))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        complete = [line] + out.split("\n")[:-1]  # a last line without its newline was cut by the kill
        for entry in complete:
            _, i, cid = entry.split()
            acknowledged[cid] = payload(run, int(i))

        mid_put += any(p.name.startswith(".tmp-") for d in ("objects", "keys") for p in (path / d).iterdir())
        store = BlobStore(path)  # reopening removes the crash's temp files
        for cid, data in acknowledged.items():
            assert store.get(cid) == data, f"run {run}: lost acknowledged object {cid}"
        objects = list((path / "objects").iterdir())
        assert not [p for p in objects if p.name.startswith(".tmp-")]
        for p in objects:  # whatever is there, acknowledged or cut off, is whole and correct
            assert store.has(p.name)
            data = store.get(p.name)  # checks the content against its id
            with store.open(p.name) as f:
                assert f.read() == data
        for k in (path / "keys").iterdir():  # a key without its object is absent, not partial
            if not (path / "objects" / k.name).exists():
                assert not store.has(k.name)
                try:
                    store.get(k.name)
                except NotFound:
                    pass
                else:  # pragma: no cover
                    raise AssertionError(f"{k.name} readable without its object")
    assert len(acknowledged) >= KILLS
    assert mid_put >= KILLS // 2, f"only {mid_put} of {KILLS} kills landed inside a put"
    assert time.monotonic() - started < 120


# -- what a power loss can leave ---------------------------------------------------------------
#
# A put renames the key and the object, then syncs both directories at once, so a power loss
# (unlike a SIGKILL, which loses nothing the kernel holds) can leave either rename without the
# other. These tests build those states by hand.


class _Recording:
    """A LocalBackend that logs deletes and commits (and whether the key was in place)."""

    def __init__(self, inner: LocalBackend, keys: Path, log: list[str]) -> None:
        self._inner, self._keys, self._log = inner, keys, log

    def create(self) -> PendingObject:
        pending = self._inner.create()
        outer = self

        class Pending:
            file = pending.file

            def sync(self) -> None:
                pending.sync()

            def commit(self, name: str) -> None:
                outer._log.append("commit, key in place" if (outer._keys / name).is_file() else "commit, no key")
                pending.commit(name)

            def abort(self) -> None:
                pending.abort()

        return Pending()

    def delete(self, name: str) -> None:
        self._log.append("delete object")
        self._inner.delete(name)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def _recording_store(path: Path, log: list[str], monkeypatch: pytest.MonkeyPatch) -> BlobStore:
    real_sync = store_module.fsync_directory

    def sync(directory: Path) -> None:
        log.append(f"sync {directory.name}/")
        real_sync(directory)

    monkeypatch.setattr(store_module, "fsync_directory", sync)
    monkeypatch.setattr(backend_module, "fsync_directory", sync)
    backend = LocalBackend(path / "objects")
    return BlobStore(path, backend=_Recording(backend, path / "keys", log))


@pytest.mark.parametrize("lone", ["object", "key"])
def test_a_lone_key_or_object_is_not_stored_and_the_next_put_replaces_it(
    tmp_path: Path, lone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    data = payload(3, 300_000)
    cid = BlobStore(path).put(data)
    old_key = (path / "keys" / cid).read_bytes()
    (path / ("keys" if lone == "object" else "objects") / cid).unlink()  # the other rename was lost
    store = BlobStore(path)
    assert not store.has(cid)
    with pytest.raises(NotFound):
        store.get(cid)

    log: list[str] = []
    assert _recording_store(path, log, monkeypatch).put(data) == cid
    # Strict order: a lone object (sealed under a lost key) goes first, then the new key is made
    # durable, and only then does the new object appear; never an old file beside a new one.
    if lone == "object":
        assert log == ["delete object", "sync objects/", "sync keys/", "commit, key in place", "sync objects/"]
    else:
        assert log == ["sync keys/", "commit, key in place", "sync objects/"]
    assert (path / "keys" / cid).read_bytes() != old_key  # a new data key
    assert BlobStore(path).get(cid) == data


def test_a_new_put_renames_the_key_before_the_object_and_syncs_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    BlobStore(path).put(b"")  # the store's master key and directories exist
    log: list[str] = []
    store = _recording_store(path, log, monkeypatch)
    cid = store.put(payload(4, 100_000))
    # Both renames (the key's first), then both directory syncs.
    assert log == ["commit, key in place", "sync objects/", "sync keys/"]
    log.clear()
    assert store.put(payload(4, 100_000)) == cid and log == []  # stored: nothing written again
    assert BlobStore(path).get(cid) == payload(4, 100_000)
