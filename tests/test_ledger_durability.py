"""A crash at any instant never loses a committed block; any change to stored content is caught."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_helpers import CHAIN, sites, validator_set, validators

from fedledger import Ledger, Transaction
from fedledger.errors import FedLedgerError

HERE = Path(__file__).parent
KILLS = 50


def test_sigkill_at_random_instants_never_loses_a_committed_block(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rnd = random.Random(2026)
    committed: list[int] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(HERE / "ledger_crash_child.py"), str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.startswith("ready"), first
        # Let this run commit one block, then kill at a random instant of the following ones.
        line = child.stdout.readline()
        assert line.startswith("committed "), line
        committed.append(int(line.split()[1]))
        time.sleep(rnd.uniform(0.0, 0.04))  # ~5-20 ms a block: kills land mid-commit
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        complete = out.split("\n")[:-1]  # a line without its newline was cut by the kill
        committed += [int(line.split()[1]) for line in complete if line.startswith("committed ")]
        with Ledger.open(path) as ledger:
            ledger.verify()
            assert not committed or ledger.height >= max(committed), f"kill {kill}: lost a committed block"
            # The snapshot is written in the block's SQLite transaction: never one without the other.
            assert ledger.opened_from == ledger.height and ledger.blocks_replayed == 0, f"kill {kill}"
            for h in committed[-3:]:
                assert ledger.block(h).height == h
    assert len(committed) >= KILLS
    with Ledger.open(path) as ledger:
        assert all(ledger.block(h).height == h for h in committed)


def _content(ledger: Ledger) -> list[tuple[bytes, bytes, tuple[bytes, ...]]]:
    out = []
    for h in range(1, ledger.height + 1):
        b = ledger.block(h)
        out.append((b.header.to_bytes(), b.certificate.to_bytes(), tuple(t.to_bytes() for t in b.transactions)))
    return out


def test_flipped_bytes_in_the_file_are_reported_or_change_nothing(tmp_path: Path) -> None:
    original = tmp_path / "ledger.db"
    vals = validators()
    people = sites(2)
    with Ledger.open(
        original,
        chain_id=CHAIN,
        validators=validator_set(vals),
        local_validators=vals,
        members=[p.card() for p in people],
    ) as ledger:
        for h in range(4):
            ledger.submit_many(
                [
                    Transaction.create(p, kind="note", payload={"h": h, "data": "x" * 40}, nonce=h, chain_id=CHAIN)
                    for p in people
                ]
            )
            ledger.commit()
        expected = _content(ledger)
    assert not Path(str(original) + "-wal").exists() or Path(str(original) + "-wal").stat().st_size == 0
    data = original.read_bytes()
    rnd = random.Random(7)
    detected = silent_harmless = 0
    trial_path = tmp_path / "trial.db"
    for trial in range(1000):
        flipped = bytearray(data)
        pos = rnd.randrange(len(flipped))
        flipped[pos] ^= 1 << rnd.randrange(8)
        for suffix in ("-wal", "-shm"):
            Path(str(trial_path) + suffix).unlink(missing_ok=True)
        trial_path.write_bytes(bytes(flipped))
        try:
            with Ledger.open(trial_path) as ledger:
                ledger.verify()
                content = _content(ledger)
        except FedLedgerError:
            detected += 1
            continue
        assert content == expected, f"trial {trial}: byte {pos} changed ledger content silently"
        silent_harmless += 1
    assert detected > 50, (detected, silent_harmless)  # the flips did hit ledger data
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_durability_levels_are_validated(tmp_path: Path) -> None:
    vals = validators()
    with pytest.raises(FedLedgerError, match="durability"):
        Ledger.open(tmp_path / "x.db", chain_id=CHAIN, validators=validator_set(vals), durability="fast")
