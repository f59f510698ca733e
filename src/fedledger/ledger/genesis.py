"""The genesis record: a chain's id, its first validator set and its first members.

Its hash is what block 1 links to, and it is the trust anchor an auditor keeps: receipts and
consistency proofs are checked against its chain id and validator set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final, cast

from fedledger import encoding
from fedledger.errors import EncodingError
from fedledger.identity import IdentityCard
from fedledger.ledger.state import LedgerState
from fedledger.ledger.validators import ValidatorSet

__all__ = ["GENESIS_TYPE", "Genesis"]

GENESIS_TYPE: Final = "fedledger.genesis/1"


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    validators: ValidatorSet
    members: tuple[IdentityCard, ...]

    def to_bytes(self) -> bytes:
        return encoding.encode(
            {
                "type": GENESIS_TYPE,
                "chain": self.chain_id,
                "validators": self.validators.to_value(),
                "members": [c.to_bytes() for c in self.members],
            }
        )

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Genesis:
        value = encoding.decode(data)
        if (
            type(value) is not dict
            or value.get("type") != GENESIS_TYPE
            or set(value) != {"type", "chain", "validators", "members"}
        ):
            raise EncodingError("genesis: not a fedledger genesis record")
        if type(value["chain"]) is not str:
            raise EncodingError("genesis: chain must be text")
        members = value["members"]
        if type(members) is not list or not all(type(m) is bytes for m in members):
            raise EncodingError("genesis: members must be identity cards")
        return cls(
            value["chain"],
            ValidatorSet.from_value(value["validators"]),
            tuple(IdentityCard.from_bytes(cast(bytes, m)) for m in members),
        )

    def to_json(self) -> str:
        """The genesis record as JSON: readable fields plus the exact ``record`` (hex) they come from."""
        return json.dumps(
            {
                "type": GENESIS_TYPE,
                "chain_id": self.chain_id,
                "hash": self.hash.hex(),
                "validators": [[k.to_bytes().hex(), self.validators.stake(k)] for k in self.validators.keys()],
                "record": self.to_bytes().hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, document: str | bytes) -> Genesis:
        """Parse :meth:`to_json`'s output (EncodingError if malformed or inconsistent)."""
        try:
            value = json.loads(document)
        except (ValueError, RecursionError) as exc:
            raise EncodingError(f"genesis JSON: not JSON ({type(exc).__name__})") from None
        if (
            type(value) is not dict
            or set(value) != {"type", "chain_id", "hash", "validators", "record"}
            or value["type"] != GENESIS_TYPE
            or type(value["record"]) is not str
        ):
            raise EncodingError("genesis JSON: expected what `fedledger ledger genesis` prints")
        try:
            record = bytes.fromhex(value["record"])
        except ValueError:
            raise EncodingError("genesis JSON: record is not hex") from None
        genesis = cls.from_bytes(record)
        readable = json.loads(genesis.to_json())
        if any(value[k] != readable[k] for k in ("chain_id", "hash", "validators")):
            raise EncodingError("genesis JSON: chain_id, hash or validators disagree with the record")
        return genesis

    def initial_state(self) -> LedgerState:
        return LedgerState(self.chain_id, self.validators, {c.verify_key.to_bytes(): c for c in self.members})
