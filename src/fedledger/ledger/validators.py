"""The stake-weighted validator set: quorum, hashing, and Tendermint-style proposer priority."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

from fedledger import encoding
from fedledger.crypto.signing import PUBLIC_KEY_SIZE, VerifyKey
from fedledger.errors import InvalidArgument, InvalidArgumentType

__all__ = ["MAX_VALIDATORS", "ValidatorSet"]

_MAX_STAKE: Final = 2**53
#: Validators in one set at most (a consortium's validators; bounds work on untrusted input).
MAX_VALIDATORS: Final = 1024


def _key(value: object, argument: str) -> VerifyKey:
    if isinstance(value, VerifyKey):
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) == PUBLIC_KEY_SIZE:
        return VerifyKey(bytes(value))
    raise InvalidArgumentType(argument, f"expected a VerifyKey or 32 bytes, got {type(value).__name__}")


class ValidatorSet:
    """Validators' Ed25519 keys and their stakes. Immutable.

    A quorum is strictly more than 2/3 of the total stake. Keys with zero stake are dropped.

    >>> from fedledger.crypto.signing import SigningKey
    >>> keys = [SigningKey.from_bytes(bytes([i]) * 32).verify_key for i in range(4)]
    >>> vs = ValidatorSet(dict(zip(keys, [40, 30, 20, 10])))
    >>> vs.total, vs.is_quorum(keys[:2]), vs.is_quorum(keys[:3])
    (100, False, True)
    """

    __slots__ = ("_hash", "_order", "_stakes", "_total")

    def __init__(self, stakes: Mapping[VerifyKey, int] | Mapping[bytes, int]) -> None:
        if not isinstance(stakes, Mapping):
            raise InvalidArgumentType("stakes", f"expected a mapping of key to stake, got {type(stakes).__name__}")
        if len(stakes) > MAX_VALIDATORS:
            raise InvalidArgument("stakes", f"at most {MAX_VALIDATORS} validators, got {len(stakes)}")
        parsed: dict[bytes, int] = {}
        for key, stake in stakes.items():
            vk = _key(key, "stakes")
            if type(stake) is not int:
                raise InvalidArgumentType(
                    f"stakes[{vk.to_bytes().hex()[:16]}]", f"stake must be int, got {type(stake).__name__}"
                )
            if not 0 <= stake <= _MAX_STAKE:
                raise InvalidArgument(
                    f"stakes[{vk.to_bytes().hex()[:16]}]", f"stake must be in [0, 2**53], got {stake}"
                )
            vk.check_registrable()
            if stake:
                parsed[vk.to_bytes()] = stake
        if not parsed:
            raise InvalidArgument("stakes", "a validator set needs at least one validator with stake")
        self._order: tuple[bytes, ...] = tuple(sorted(parsed))
        self._stakes = parsed
        self._total = sum(parsed.values())
        self._hash = hashlib.sha256(encoding.encode(self.to_value())).digest()

    @property
    def total(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        raw = key.to_bytes() if isinstance(key, VerifyKey) else key
        return raw in self._stakes

    def keys(self) -> list[VerifyKey]:
        """The validators' keys, sorted by their bytes."""
        return [VerifyKey(k) for k in self._order]

    def raw_keys(self) -> tuple[bytes, ...]:
        return self._order

    def stake(self, key: VerifyKey | bytes) -> int:
        """The stake of ``key`` (0 if it is not a validator)."""
        raw = key.to_bytes() if isinstance(key, VerifyKey) else key
        return self._stakes.get(raw, 0)

    def signed_stake(self, keys: Iterable[VerifyKey | bytes]) -> int:
        """Total stake of the distinct validators among ``keys``."""
        seen = {k.to_bytes() if isinstance(k, VerifyKey) else k for k in keys}
        return sum(self._stakes.get(k, 0) for k in seen)

    def is_quorum(self, keys: Iterable[VerifyKey | bytes]) -> bool:
        """True if the distinct validators among ``keys`` hold more than 2/3 of the stake."""
        return 3 * self.signed_stake(keys) > 2 * self._total

    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding (what block headers commit to)."""
        return self._hash

    def to_value(self) -> list[encoding.Value]:
        """``[[key, stake], ...]`` sorted by key: the canonical, encodable form."""
        return [[k, self._stakes[k]] for k in self._order]

    @classmethod
    def from_value(cls, value: object) -> ValidatorSet:
        """The inverse of :meth:`to_value`, for values decoded from storage or the wire.

        Strict: a list of at most :data:`MAX_VALIDATORS` distinct ``[32-byte key, int stake]``
        pairs; anything else is :class:`InvalidArgument` (or :class:`InvalidKey` for a key that
        is not a registrable Ed25519 key), never another exception.
        """
        if type(value) is not list:
            raise InvalidArgumentType("validators", f"expected [[key, stake], ...], got {type(value).__name__}")
        if len(value) > MAX_VALIDATORS:
            raise InvalidArgument("validators", f"at most {MAX_VALIDATORS} validators, got {len(value)}")
        stakes: dict[bytes, int] = {}
        for i, pair in enumerate(value):
            if type(pair) is not list or len(pair) != 2:
                raise InvalidArgument(f"validators[{i}]", "expected [key, stake]")
            key, stake = pair
            if type(key) is not bytes or len(key) != PUBLIC_KEY_SIZE:
                raise InvalidArgumentType(
                    f"validators[{i}]", f"key must be {PUBLIC_KEY_SIZE} bytes, got {type(key).__name__}"
                )
            if type(stake) is not int:
                raise InvalidArgumentType(f"validators[{i}]", f"stake must be an int, got {type(stake).__name__}")
            if key in stakes:
                raise InvalidArgument(f"validators[{i}]", "the same key appears twice")
            stakes[key] = stake
        return cls(stakes)

    def with_stake(self, key: VerifyKey | bytes, stake: int) -> ValidatorSet:
        """A copy with ``key``'s stake set (0 removes it)."""
        raw = key.to_bytes() if isinstance(key, VerifyKey) else key
        stakes = dict(self._stakes)
        stakes[raw] = stake
        return ValidatorSet(stakes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ValidatorSet):
            return NotImplemented
        return self._stakes == other._stakes

    def __hash__(self) -> int:
        return hash(self._hash)

    def __repr__(self) -> str:
        body = ", ".join(f"{k.hex()[:8]}:{self._stakes[k]}" for k in self._order)
        return f"ValidatorSet({body})"


def advance_priorities(vs: ValidatorSet, priorities: Mapping[bytes, int]) -> tuple[bytes, dict[bytes, int]]:
    """One step of Tendermint's proposer selection; returns (proposer, new priorities).

    Every validator's priority grows by its stake; the highest (ties: smallest key) proposes
    and pays the total stake back. A validator new to the set starts at -1.125 x total, as in
    Tendermint, so that joining does not jump the queue. Over any window each validator
    proposes in proportion to its stake.
    """
    start = -(9 * vs.total) // 8
    prio = {k: priorities.get(k, start) + vs.stake(k) for k in vs.raw_keys()}
    proposer = max(vs.raw_keys(), key=lambda k: (prio[k], [-b for b in k]))
    prio[proposer] -= vs.total
    return proposer, prio
