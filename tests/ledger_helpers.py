"""Deterministic identities and ledgers for the ledger tests (also used by the crash child)."""

from __future__ import annotations

import hashlib

from fedledger.crypto.agreement import AgreementKey
from fedledger.crypto.signing import SigningKey
from fedledger.identity import Identity
from fedledger.ledger import ValidatorSet

CHAIN = "test-chain"
STAKES = [40, 30, 20, 10]


def identity(name: str) -> Identity:
    """The same keys for the same name, so a reopened ledger matches its genesis."""
    seed = hashlib.sha256(name.encode()).digest()
    return Identity(name, SigningKey.from_bytes(seed), AgreementKey.from_bytes(hashlib.sha256(seed).digest()))


def validators() -> list[Identity]:
    return [identity(f"validator-{i}") for i in range(len(STAKES))]


def validator_set(vals: list[Identity] | None = None, stakes: list[int] | None = None) -> ValidatorSet:
    vals = validators() if vals is None else vals
    return ValidatorSet({v.verify_key: s for v, s in zip(vals, stakes or STAKES)})


def sites(n: int = 3) -> list[Identity]:
    return [identity(f"hospital-{i}") for i in range(n)]
