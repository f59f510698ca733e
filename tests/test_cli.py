"""The fedledger command line: outputs and exit codes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from ledger_helpers import CHAIN, sites, validator_set, validators

from fedledger import Ledger, Transaction


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedledger", *args], capture_output=True, text=True)


@pytest.fixture
def ledger_file(tmp_path: Path) -> tuple[Path, list[Transaction]]:
    path = tmp_path / "l.db"
    vals, people = validators(), sites(2)
    txs = [
        Transaction.create(p, kind="note", payload={"i": i}, nonce=i, chain_id=CHAIN) for i in range(3) for p in people
    ]
    with Ledger.open(
        path, chain_id=CHAIN, validators=validator_set(vals), local_validators=vals, members=[p.card() for p in people]
    ) as ledger:
        ledger.submit_many(txs[:4])
        ledger.commit()
        ledger.submit_many(txs[4:])
        ledger.commit()
    return path, txs


def test_info_prints_the_build_report() -> None:
    out = run("info")
    assert out.returncode == 0
    assert "_merkle" in json.loads(out.stdout)["modules"]


def test_verify_show_export_prove(ledger_file, tmp_path: Path) -> None:
    path, txs = ledger_file
    out = run("ledger", "verify", str(path))
    assert out.returncode == 0 and "2 blocks, 6 transactions" in out.stdout
    summary = json.loads(run("ledger", "show", str(path)).stdout)
    assert summary["height"] == 2 and summary["log_size"] == 6
    block = json.loads(run("ledger", "show", str(path), "--height", "2").stdout)
    assert [t["id"] for t in block["transactions"]] == [t.id.hex() for t in txs[4:]]
    lines = run("ledger", "export", str(path)).stdout.splitlines()
    assert [json.loads(line)["height"] for line in lines] == [1, 2]
    receipt = run("ledger", "prove", str(path), txs[2].id.hex())
    assert receipt.returncode == 0
    (tmp_path / "r.json").write_text(receipt.stdout)
    vals = tmp_path / "vals.json"
    vals.write_text(json.dumps([[k.hex(), s] for k, s in validator_set().to_value()]))
    ok = run("receipt", "verify", str(tmp_path / "r.json"), "--validators", str(vals), "--chain-id", CHAIN)
    assert ok.returncode == 0 and txs[2].id.hex() in ok.stdout
    bad = json.loads(receipt.stdout)
    bad["log_index"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    failed = run("receipt", "verify", str(tmp_path / "bad.json"), "--validators", str(vals), "--chain-id", CHAIN)
    assert failed.returncode == 1 and "FAILED" in failed.stderr


def test_exit_codes_for_tampering_missing_and_bad_input(ledger_file, tmp_path: Path) -> None:
    path, txs = ledger_file
    assert run("ledger", "verify", str(tmp_path / "none.db")).returncode == 3
    assert run("ledger", "prove", str(path), "zz").returncode == 2
    assert run("ledger", "prove", str(path), "00" * 32).returncode == 3
    assert run("ledger", "show", str(path), "--height", "9").returncode == 3
    assert run("ledger").returncode == 2  # argparse: missing action
    db = sqlite3.connect(path)
    (data,) = db.execute("SELECT data FROM txs WHERE seq = 1").fetchone()
    flipped = bytearray(data)
    flipped[-1] ^= 1  # the signature's last byte
    db.execute("UPDATE txs SET data = ? WHERE seq = 1", (bytes(flipped),))
    db.commit()
    db.close()
    out = run("ledger", "verify", str(path))
    assert out.returncode == 1 and "height 1" in out.stderr


def test_version_and_help_have_no_markup() -> None:
    from fedledger import __version__

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"fedledger {__version__}"
    for args in ((), ("ledger",), ("ledger", "show"), ("receipt", "verify")):
        text = run(*args, "--help").stdout
        assert "``" not in text and ":class:" not in text and ":meth:" not in text


def test_show_force_prints_a_tampered_file_marked_unverified(ledger_file, tmp_path: Path) -> None:
    path, txs = ledger_file
    db = sqlite3.connect(path)
    db.execute("UPDATE txs SET nonce = 77 WHERE seq = 0")
    db.commit()
    db.close()
    plain = run("ledger", "show", str(path))
    assert plain.returncode == 1 and plain.stdout == ""
    forced = run("ledger", "show", str(path), "--force", "--height", "1")
    assert forced.returncode == 1
    shown = json.loads(forced.stdout)
    assert "nothing below is verified" in shown["UNVERIFIED"] and "indexed columns" in shown["UNVERIFIED"]
    assert shown["blocks"] == 2 and shown["genesis"]["chain_id"] == CHAIN
    assert [t["id"] for t in shown["block"]["transactions"]] == [t.id.hex() for t in txs[:4]]


def test_prove_says_why_a_refused_or_pending_transaction_has_no_receipt() -> None:
    from fedledger.errors import NotFound

    vals, people = validators(), sites(1)
    ledger = Ledger.memory(
        chain_id=CHAIN, validators=validator_set(vals), local_validators=vals, members=[p.card() for p in people]
    )
    refused = Transaction.create(people[0], kind="note", payload=1, nonce=5, chain_id=CHAIN)
    pending = Transaction.create(people[0], kind="note", payload=2, nonce=0, chain_id=CHAIN)
    assert [r.accepted for r in ledger.submit_many([refused, pending])] == [False, True]
    with pytest.raises(NotFound, match="refused: ReplayedTransaction"):
        ledger.prove(refused.id)
    with pytest.raises(NotFound, match="pending"):
        ledger.prove(pending.id)
    ledger.commit()
    assert ledger.prove(pending.id).entry.log_index == 0
