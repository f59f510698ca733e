"""fedledger blob put|get|stat|shred: outputs and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ledger_helpers import CHAIN, identity, validator_set

from fedledger import Ledger
from fedledger.blobstore import cid_of


def run(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "fedledger", "blob", *args], capture_output=True, input=stdin, env=env)


def test_put_get_stat_and_exit_codes(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    data = os.urandom(300_000)
    (tmp_path / "model.bin").write_bytes(data)
    out = run("put", store, str(tmp_path / "model.bin"))
    assert out.returncode == 0, out.stderr
    cid = out.stdout.decode().strip()
    assert cid == cid_of(data)
    assert run("put", store, "-", stdin=b"hello world\n").stdout.decode().strip() == cid_of(b"hello world\n")
    assert run("get", store, cid).stdout == data
    assert run("get", store, cid, "-o", str(tmp_path / "back.bin")).returncode == 0
    assert (tmp_path / "back.bin").read_bytes() == data
    info = json.loads(run("stat", store, cid).stdout)
    assert info == {"cid": cid, "size": len(data), "sealed_size": len(data) + 25 + 16 * 2}

    assert run("get", store, cid_of(b"absent")).returncode == 3
    assert run("get", store, "not-a-cid").returncode == 2
    assert run("put", store, str(tmp_path / "missing.bin")).returncode == 2

    obj = tmp_path / "store" / "objects" / cid
    raw = bytearray(obj.read_bytes())
    raw[1000] ^= 1
    obj.write_bytes(raw)
    bad = run("get", store, cid, "-o", str(tmp_path / "never.bin"))
    assert bad.returncode == 1 and b"FAILED" in bad.stderr
    assert not (tmp_path / "never.bin").exists()


def test_shred_records_on_the_ledger(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    site = identity("hospital-cli")
    site.save(tmp_path / "site.id", "pw")
    ledger_path = tmp_path / "l.db"
    with Ledger.open(ledger_path, chain_id=CHAIN, validators=validator_set([site], [1])):
        pass
    cid = run("put", store, "-", stdin=b"a patient record").stdout.decode().strip()
    args = ("shred", store, cid, "--ledger", str(ledger_path), "--identity", str(tmp_path / "site.id"))
    wrong = run(*args, "--reason", "request", env={**os.environ, "FEDLEDGER_IDENTITY_PASSWORD": "nope"})
    assert wrong.returncode == 2
    assert run("get", store, cid).stdout == b"a patient record"
    out = run(*args, "--reason", "erasure request", env={**os.environ, "FEDLEDGER_IDENTITY_PASSWORD": "pw"})
    assert out.returncode == 0, out.stderr
    assert b"in block 1" in out.stdout
    gone = run("get", store, cid)
    assert gone.returncode == 3 and b"erased" in gone.stderr
    with Ledger.open(ledger_path, read_only=True) as ledger:
        ledger.verify()
        (tx,) = ledger.block(1).transactions
        assert tx.kind == "blob.erase" and tx.payload["reason"] == "erasure request"  # type: ignore[index]
    verify = subprocess.run(
        [sys.executable, "-m", "fedledger", "ledger", "verify", str(ledger_path)], capture_output=True
    )
    assert verify.returncode == 0
