"""The genesis record: a chain's id, its first validator set, its first members and the
contracts it pins (name, version, SHA-256 of the contract module's source).

Its hash is what block 1 links to, and it is the trust anchor an auditor keeps: receipts and
consistency proofs are checked against its chain id and validator set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final, cast

from fedledger import encoding
from fedledger.errors import (
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    NotALedger,
    TamperedLedger,
    UnsupportedVersion,
)
from fedledger.identity import IdentityCard
from fedledger.ledger.contract import Contract
from fedledger.ledger.state import LedgerState
from fedledger.ledger.store import LedgerStore
from fedledger.ledger.transaction import check_name
from fedledger.ledger.validators import ValidatorSet

__all__ = ["GENESIS_TYPE", "Genesis", "read_or_create_genesis"]

#: The most contracts a genesis may pin.
MAX_PINNED: Final = 256

GENESIS_TYPE: Final = "fedledger.genesis/2"
#: Genesis types of older versions, refused with UnsupportedVersion.
OLD_GENESIS_TYPES: Final = frozenset({"fedledger.genesis/1"})


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    validators: ValidatorSet
    members: tuple[IdentityCard, ...]
    #: Pinned contracts, ``(name, version, code hash)`` sorted by name.
    contracts: tuple[tuple[str, int, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        return encoding.encode(
            {
                "type": GENESIS_TYPE,
                "chain": self.chain_id,
                "validators": self.validators.to_value(),
                "members": [c.to_bytes() for c in self.members],
                "contracts": [list(c) for c in self.contracts],
            }
        )

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Genesis:
        value = encoding.decode(data)
        if type(value) is dict and type(value.get("type")) is str and value["type"] in OLD_GENESIS_TYPES:
            raise UnsupportedVersion(
                f"genesis: {value['type']!r} was written by an older fedledger; this version reads {GENESIS_TYPE!r}"
            )
        if (
            type(value) is not dict
            or value.get("type") != GENESIS_TYPE
            or set(value) != {"type", "chain", "validators", "members", "contracts"}
        ):
            raise EncodingError("genesis: not a fedledger genesis record")
        pins = value["contracts"]
        if (
            type(pins) is not list
            or len(pins) > MAX_PINNED
            or not all(
                type(p) is list
                and len(p) == 3
                and type(p[0]) is str
                and type(p[1]) is int
                and 1 <= p[1] < 2**31
                and type(p[2]) is bytes
                and len(p[2]) == 32
                for p in pins
            )
        ):
            raise EncodingError("genesis: contracts must be [[name, version, 32-byte code hash], ...]")
        contracts = tuple((str(p[0]), int(p[1]), bytes(p[2])) for p in pins)  # type: ignore[index, arg-type]
        if [c[0] for c in contracts] != sorted({c[0] for c in contracts}):
            raise EncodingError("genesis: contracts must be sorted by name, each name once")
        if type(value["chain"]) is not str:
            raise EncodingError("genesis: chain must be text")
        members = value["members"]
        if type(members) is not list or not all(type(m) is bytes for m in members):
            raise EncodingError("genesis: members must be identity cards")
        return cls(
            value["chain"],
            ValidatorSet.from_value(value["validators"]),
            tuple(IdentityCard.from_bytes(cast(bytes, m)) for m in members),
            contracts,
        )

    def to_json(self) -> str:
        """The genesis record as JSON: readable fields plus the exact ``record`` (hex) they come from."""
        return json.dumps(
            {
                "type": GENESIS_TYPE,
                "chain_id": self.chain_id,
                "hash": self.hash.hex(),
                "validators": [[k.to_bytes().hex(), self.validators.stake(k)] for k in self.validators.keys()],
                "contracts": [[name, version, code.hex()] for name, version, code in self.contracts],
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
            or set(value) != {"type", "chain_id", "hash", "validators", "contracts", "record"}
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
        if any(value[k] != readable[k] for k in ("chain_id", "hash", "validators", "contracts")):
            raise EncodingError("genesis JSON: chain_id, hash, validators or contracts disagree with the record")
        return genesis

    def initial_state(self, bindings: dict[tuple[str, bytes], type[Contract]] | None = None) -> LedgerState:
        """The state before block 1, with the contract classes this process offers bound."""
        return LedgerState(
            self.chain_id,
            self.validators,
            {c.verify_key.to_bytes(): c for c in self.members},
            contracts={name: (version, code) for name, version, code in self.contracts},
            bindings=dict(bindings or {}),
        )


def read_or_create_genesis(
    store: LedgerStore,
    chain_id: str | None,
    validators: ValidatorSet | None,
    cards: list[IdentityCard],
    contracts: tuple[tuple[str, int, bytes], ...] = (),
) -> Genesis:
    """The store's genesis record, checked against the arguments given; or a new one, written.

    Creating needs ``chain_id`` and ``validators``; opening checks that any argument given
    matches the stored record. A record that does not parse is :class:`TamperedLedger`.
    """
    stored = store.get_meta("genesis")
    if stored is None and getattr(store, "read_only", False):
        raise NotALedger(f"{getattr(store, 'path', 'the store')} holds no genesis record")
    if stored is None:
        if store.count("blocks") or store.count("txs"):
            raise TamperedLedger(0, "the genesis record is missing but blocks are stored")
        if chain_id is None or validators is None:
            raise InvalidArgument("validators", "a new ledger needs chain_id and validators")
        if not isinstance(validators, ValidatorSet):
            raise InvalidArgumentType("validators", f"expected ValidatorSet, got {type(validators).__name__}")
        for i, card in enumerate(cards):
            try:
                card.verify()
            except FedLedgerError as exc:
                raise InvalidArgument(f"members[{i}]", f"identity card does not verify: {exc}") from None
        genesis = Genesis(chain_id, validators, tuple(cards), contracts)
        check_name(chain_id, "chain_id")
        store.put_meta("genesis", genesis.to_bytes())
    else:
        try:
            genesis = Genesis.from_bytes(stored)
        except UnsupportedVersion:
            raise
        except FedLedgerError as exc:
            raise TamperedLedger(0, f"genesis record is corrupt: {exc}") from None
        except (ValueError, TypeError, KeyError, OverflowError, MemoryError, RecursionError) as exc:
            # Defence in depth: Genesis.from_bytes raises only our errors on any input.
            raise TamperedLedger(0, f"genesis record is corrupt: {type(exc).__name__}") from None
        if chain_id is not None and chain_id != genesis.chain_id:
            raise InvalidArgument("chain_id", f"this ledger is {genesis.chain_id!r}, not {chain_id!r}")
        if validators is not None and validators != genesis.validators:
            raise InvalidArgument("validators", "differ from this ledger's genesis validators")
        if cards and tuple(c.to_bytes() for c in cards) != tuple(c.to_bytes() for c in genesis.members):
            raise InvalidArgument("members", "differ from this ledger's genesis members")
    return genesis
