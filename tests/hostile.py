"""Shared fixtures for the hostile-input tests and the fuzz targets: deterministic valid
encodings of every core format, and the rule every decoder must keep (only FedLedgerError
escapes, within bounded time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fedledger import encoding
from fedledger.crypto.agreement import AgreementKey
from fedledger.crypto.signing import SigningKey
from fedledger.errors import FedLedgerError
from fedledger.identity import Identity
from fedledger.ledger.block import BlockHeader, Certificate, Vote
from fedledger.ledger.transaction import Transaction

#: Seconds any single decode of a small hostile input may take (generous: CI machines are slow).
TIME_LIMIT = 2.0


def identity(i: int) -> Identity:
    """A deterministic identity (fixed seeds), so encodings are the same on every run."""
    return Identity(
        f"hospital-{i}", SigningKey.from_bytes(bytes([i + 1]) * 32), AgreementKey.from_bytes(bytes([i + 101]) * 32)
    )


def samples() -> dict[str, bytes]:
    """One valid canonical encoding of each core format."""
    alice, bob = identity(0), identity(1)
    tx = Transaction.create(
        alice,
        kind="model.update",
        nonce=7,
        chain_id="consortium-1",
        payload={"round": 3, "digest": bytes(range(32)), "weights": [1, -2, 3.5, None, True]},
    )
    header = BlockHeader(
        "consortium-1",
        5,
        bytes(32),
        bytes(range(32)),
        1,
        9,
        bytes([7]) * 32,
        bytes([8]) * 32,
        alice.verify_key.to_bytes(),
        1_700_000_000_000,
        bytes([9]) * 32,
        bytes([10]) * 32,
    )
    votes = [Vote.create(alice, header), Vote.create(bob, header)]
    return {
        "transaction": tx.to_bytes(),
        "header": header.to_bytes(),
        "vote": votes[0].to_bytes(),
        "certificate": Certificate.from_votes(votes).to_bytes(),
        "card": alice.card().to_bytes(),
    }


def only_fedledger_errors(fn: Callable[..., Any], *args: Any) -> FedLedgerError | None:
    """Call ``fn(*args)``; return the FedLedgerError it raised (None if it returned). Any other
    exception propagates (the test fails on it), and so does taking longer than TIME_LIMIT."""
    start = time.perf_counter()
    try:
        fn(*args)
        error = None
    except FedLedgerError as exc:
        error = exc
        assert str(exc), f"{type(exc).__name__} without a message"
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT, f"{getattr(fn, '__qualname__', fn)} took {elapsed:.2f}s"
    return error


def replace_field(value: encoding.Value, key: str | int, new: encoding.Value) -> bytes:
    """Canonical encoding of ``value`` (a decoded map or list) with one field replaced."""
    if isinstance(value, dict):
        copy: Any = dict(value)
    else:
        assert isinstance(value, list)
        copy = list(value)
    copy[key] = new
    return encoding.encode(copy)
