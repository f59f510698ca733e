"""Block headers, validator votes, commit certificates and equivocation evidence.

Every one of these is a pure message: canonical CBOR in and out, no I/O, so validators can
run in other processes and exchange them over any transport.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from fedledger import encoding
from fedledger.crypto import signing
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    EncodingError,
    InvalidArgument,
    InvalidEvidence,
    InvalidSignature,
    UnsupportedVersion,
)

if TYPE_CHECKING:
    from fedledger.identity import Identity
    from fedledger.ledger.validators import ValidatorSet

__all__ = ["BlockHeader", "Certificate", "Evidence", "Outcome", "Vote"]

#: The header format this version writes and reads. Version 2 added the state and outcome roots.
HEADER_VERSION: Final = 2
HEADER_TYPE: Final = f"fedledger.block/{HEADER_VERSION}"
#: Header types of older versions: refused with UnsupportedVersion (never read as tampering).
OLD_HEADER_TYPES: Final = frozenset({"fedledger.block/1"})
VOTE_TYPE: Final = "fedledger.vote/2"
HASH_SIZE: Final = 32
_HEADER_KEYS: Final = frozenset(
    {
        "type",
        "chain",
        "height",
        "prev",
        "tx_root",
        "tx_count",
        "log_size",
        "log_root",
        "validators",
        "proposer",
        "time",
        "state_root",
        "outcome_root",
        "round",
    }
)


#: Heights, counts, sizes and times are below 2**63, as nonces are: they fit a signed 64-bit column.
_MAX_INT: Final = 2**63


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise EncodingError(what)


@dataclass(frozen=True)
class BlockHeader:
    """What validators sign. ``hash`` is SHA-256 of the canonical encoding."""

    chain_id: str
    height: int
    prev_hash: bytes
    tx_root: bytes
    tx_count: int
    log_size: int
    log_root: bytes
    validators_hash: bytes
    proposer: bytes
    time_ms: int
    #: Merkle root over every entry of the replicated state after this block (statetree).
    state_root: bytes
    #: RFC 9162 root over this block's call outcomes, one per transaction, in block order.
    outcome_root: bytes
    #: The round at this height (0 first; a later round's proposer supersedes a silent one).
    round: int = 0

    @property
    def version(self) -> int:
        return HEADER_VERSION

    def to_bytes(self) -> bytes:
        return encoding.encode(
            {
                "type": HEADER_TYPE,
                "chain": self.chain_id,
                "height": self.height,
                "prev": self.prev_hash,
                "tx_root": self.tx_root,
                "tx_count": self.tx_count,
                "log_size": self.log_size,
                "log_root": self.log_root,
                "validators": self.validators_hash,
                "proposer": self.proposer,
                "time": self.time_ms,
                "state_root": self.state_root,
                "outcome_root": self.outcome_root,
                "round": self.round,
            }
        )

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> BlockHeader:
        value = encoding.decode(data)
        if type(value) is dict and type(value.get("type")) is str and value["type"] in OLD_HEADER_TYPES:
            raise UnsupportedVersion(
                f"block header: {value['type']!r} was written by an older fedledger "
                f"(this version reads {HEADER_TYPE!r}, which adds the state and outcome roots)"
            )
        if type(value) is not dict or set(value) != _HEADER_KEYS:
            raise EncodingError(f"block header: expected the keys {sorted(_HEADER_KEYS)}")
        f = value
        _require(
            type(f["type"]) is str and f["type"] == HEADER_TYPE,
            f"block header: type is {encoding.short_repr(f['type'])}, expected {HEADER_TYPE!r}",
        )
        for name in ("prev", "tx_root", "log_root", "validators", "proposer", "state_root", "outcome_root"):
            _require(type(f[name]) is bytes and len(f[name]) == HASH_SIZE, f"block header: {name} must be 32 bytes")  # type: ignore[arg-type]
        for name in ("height", "tx_count", "log_size", "time", "round"):
            _require(
                type(f[name]) is int and 0 <= f[name] < _MAX_INT,  # type: ignore[operator]
                f"block header: {name} must be an integer in [0, 2**63)",
            )
        _require(type(f["chain"]) is str, "block header: chain must be text")
        fields = cast(dict[str, Any], f)  # every field's type was checked above
        return cls(
            fields["chain"],
            fields["height"],
            fields["prev"],
            fields["tx_root"],
            fields["tx_count"],
            fields["log_size"],
            fields["log_root"],
            fields["validators"],
            fields["proposer"],
            fields["time"],
            fields["state_root"],
            fields["outcome_root"],
            fields["round"],
        )


@dataclass(frozen=True)
class Vote:
    """A validator's signature on one block header hash at one (height, round)."""

    chain_id: str
    height: int
    block_hash: bytes
    validator: VerifyKey
    signature: bytes
    round: int = 0

    @staticmethod
    def signed_body(chain_id: str, height: int, round: int, block_hash: bytes) -> bytes:
        return encoding.encode(
            {"type": VOTE_TYPE, "chain": chain_id, "height": height, "round": round, "block": block_hash}
        )

    @classmethod
    def create(cls, validator: Identity, header: BlockHeader) -> Vote:
        """``validator`` signs ``header``."""
        block_hash = header.hash
        body = cls.signed_body(header.chain_id, header.height, header.round, block_hash)
        return cls(header.chain_id, header.height, block_hash, validator.verify_key, validator.sign(body), header.round)

    def verify(self) -> None:
        """InvalidSignature unless the signature is the validator's over this vote."""
        signing.verify(
            self.validator, self.signed_body(self.chain_id, self.height, self.round, self.block_hash), self.signature
        )

    def to_bytes(self) -> bytes:
        return encoding.encode(
            [self.chain_id, self.height, self.round, self.block_hash, self.validator.to_bytes(), self.signature]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Vote:
        value = encoding.decode(data)
        if not (type(value) is list and len(value) == 6):
            raise EncodingError("vote: expected [chain, height, round, block_hash, validator, signature]")
        chain, height, round_, block_hash, validator, sig = value
        _require(
            type(chain) is str
            and type(height) is int
            and 0 <= height < _MAX_INT
            and type(round_) is int
            and 0 <= round_ < _MAX_INT,
            "vote: chain must be text, height and round integers in [0, 2**63)",
        )
        _require(type(block_hash) is bytes and len(block_hash) == HASH_SIZE, "vote: block hash must be 32 bytes")
        _require(type(validator) is bytes and len(validator) == signing.PUBLIC_KEY_SIZE, "vote: bad validator key")
        _require(type(sig) is bytes and len(sig) == signing.SIGNATURE_SIZE, "vote: signature must be 64 bytes")
        return cls(chain, height, block_hash, VerifyKey(validator), sig, round_)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Certificate:
    """The votes that finalized a block: ``(validator key, signature)`` pairs sorted by key."""

    signatures: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def from_votes(cls, votes: list[Vote]) -> Certificate:
        pairs = {v.validator.to_bytes(): v.signature for v in votes}
        return cls(tuple(sorted(pairs.items())))

    def to_bytes(self) -> bytes:
        return encoding.encode([[k, s] for k, s in self.signatures])

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        value = encoding.decode(data)
        if type(value) is not list or not all(
            type(p) is list and len(p) == 2 and type(p[0]) is bytes and type(p[1]) is bytes for p in value
        ):
            raise EncodingError("certificate: expected [[key, signature], ...]")
        for i, p in enumerate(value):
            _require(
                len(p[0]) == signing.PUBLIC_KEY_SIZE and len(p[1]) == signing.SIGNATURE_SIZE,  # type: ignore[index, arg-type]
                f"certificate: entry {i} must be a 32-byte key and a 64-byte signature",
            )
        pairs = tuple((p[0], p[1]) for p in value)  # type: ignore[index]
        if list(pairs) != sorted(pairs) or len({k for k, _ in pairs}) != len(pairs):
            raise EncodingError("certificate: signers must be distinct and sorted")
        return cls(pairs)  # type: ignore[arg-type]

    def verify(self, header: BlockHeader, validators: ValidatorSet) -> None:
        """InvalidSignature unless validators holding > 2/3 of the stake signed ``header``.

        Every listed signature must verify and belong to a validator of the set; a single bad
        one rejects the certificate (a certificate is produced by honest code, never padded).
        """
        if not self.signatures:
            raise InvalidSignature("certificate: no signatures", "quorum")
        body = Vote.signed_body(header.chain_id, header.height, header.round, header.hash)
        keys = [k for k, _ in self.signatures]
        for k in keys:
            if k not in validators:
                raise InvalidSignature(f"certificate: {k.hex()[:16]} is not a validator of this block", "not-validator")
        ok = signing.verify_batch(keys, [body] * len(keys), [s for _, s in self.signatures])
        if not ok.all():
            bad = keys[int((~ok).nonzero()[0][0])]
            raise InvalidSignature(f"certificate: the vote of {bad.hex()[:16]} does not verify", "mismatch")
        if not validators.is_quorum(keys):
            raise InvalidSignature(
                f"certificate: signers hold {validators.signed_stake(keys)} of {validators.total} stake, "
                "not more than 2/3",
                "quorum",
            )


@dataclass(frozen=True)
class Evidence:
    """Two votes by one validator for different blocks at one (height, round): proof of
    equivocation. Votes in different rounds of one height are not: a later round supersedes a
    silent proposer, and an honest validator votes once per round."""

    first: Vote
    second: Vote

    def check(self, chain_id: str) -> None:
        """InvalidEvidence unless the two votes really are a signed equivocation on ``chain_id``."""
        a, b = self.first, self.second
        if a.chain_id != chain_id or b.chain_id != chain_id:
            raise InvalidEvidence("evidence: a vote is for another chain")
        if a.validator != b.validator:
            raise InvalidEvidence("evidence: the votes are by different validators")
        if (a.height, a.round) != (b.height, b.round):
            raise InvalidEvidence("evidence: the votes are for different heights or rounds")
        if a.block_hash == b.block_hash:
            raise InvalidEvidence("evidence: the votes are for the same block")
        for which, vote in (("first", a), ("second", b)):
            try:
                vote.verify()
            except InvalidSignature as exc:
                raise InvalidEvidence(f"evidence: the {which} vote's signature does not verify: {exc}") from None

    def to_value(self) -> encoding.Value:
        return {"first": self.first.to_bytes(), "second": self.second.to_bytes()}

    @classmethod
    def from_value(cls, value: object) -> Evidence:
        if type(value) is not dict or set(value) != {"first", "second"}:
            raise InvalidEvidence("evidence: expected {'first': vote, 'second': vote}")
        try:
            return cls(Vote.from_bytes(value["first"]), Vote.from_bytes(value["second"]))
        except (EncodingError, InvalidArgument) as exc:
            raise InvalidEvidence(f"evidence: {exc}") from None


#: The reason an outcome gives when the call was accepted.
ACCEPTED: Final = ""


@dataclass(frozen=True)
class Outcome:
    """What one transaction of a block did: accepted (``ok``) or denied by its contract with a
    ``reason``, and the value it returned. Committed in the header's ``outcome_root``, so a
    receipt can prove that a call was denied.

    Transactions of kinds other than contract calls are always accepted with value None (a
    transaction those kinds refuse never enters a block).
    """

    tx_id: bytes
    ok: bool
    reason: str = ACCEPTED
    value: encoding.Value = None

    def to_bytes(self) -> bytes:
        """The outcome leaf: canonical CBOR ``[tx_id, ok, reason, value]`` (encoded once)."""
        cached = self.__dict__.get("_bytes")
        if cached is None:
            cached = encoding.encode([self.tx_id, self.ok, self.reason, self.value])
            object.__setattr__(self, "_bytes", cached)
        return cached

    @classmethod
    def from_bytes(cls, data: bytes) -> Outcome:
        value = encoding.decode(data)
        if not (type(value) is list and len(value) == 4):
            raise EncodingError("outcome: expected [tx_id, ok, reason, value]")
        tx_id, ok, reason, result = value
        _require(type(tx_id) is bytes and len(tx_id) == HASH_SIZE, "outcome: tx_id must be 32 bytes")
        _require(type(ok) is bool and type(reason) is str, "outcome: ok must be a bool and reason text")
        _require(ok == (reason == ACCEPTED), "outcome: a denied call gives a reason, an accepted one none")
        return cls(tx_id, ok, reason, result)  # type: ignore[arg-type]
