"""A SIGKILL at any instant of a put leaves each object whole or absent, and never loses one
that put acknowledged."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from blobstore_crash_child import payload

from fedledger import BlobStore
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
