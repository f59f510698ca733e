"""What a finished aggregation round leaves on record: who took part, who fell out and why,
what each survivor committed to and declared, and the parameters that interpret the sum.

A :class:`RoundOutcome` is frozen, and has one canonical record form (:meth:`~RoundOutcome.to_record`,
plain values of the :mod:`fedledger.encoding` data model: str, int, bytes, bool, lists and
maps with str keys; no floats) and one byte form (:meth:`~RoundOutcome.record_bytes`), which
a ledger can store as a transaction payload. The same round gives the same bytes.

The names are not SecAgg's alone (``commitments``, ``weights``, ``survivors``, ``params``):
any aggregation protocol that sums committed, weighted inputs fills the same shape, naming
itself in ``protocol`` and putting what is particular to it in ``params``.

The aggregate itself is not in the record (it is as long as the model); its commitment is:
``aggregate_root``, the vector root (:func:`fedledger.crypto.masking.vector_root`) of the
exact ring sum's little-endian bytes, weight slot included.

>>> from fedledger.secagg import RoundOutcome
>>> out = RoundOutcome(protocol="demo/v1", round_id=3, participants=("a", "b", "c", "d"),
...                    survivors=("a", "b", "c"), dropouts={"d": "masked_input"},
...                    commitments={c: bytes(32) for c in "abc"}, weights={"a": 1, "b": 2, "c": 3},
...                    length=10, ring_bits=32, aggregate_root=bytes(32))
>>> out.total_weight
6
>>> RoundOutcome.from_bytes(out.record_bytes()) == out
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from fedledger import encoding
from fedledger.errors import EncodingError, InvalidArgument, InvalidArgumentType

__all__ = ["RECORD_TYPE", "RoundOutcome"]

#: The ``type`` of an outcome record.
RECORD_TYPE: Final = "fedledger/round-outcome/v1"
_PARAMS_DOMAIN: Final = b"fedledger/round-params/v1\x00"
_KEYS: Final = frozenset(
    {
        "type",
        "protocol",
        "round",
        "participants",
        "survivors",
        "dropouts",
        "rejections",
        "misbehaving",
        "commitments",
        "weights",
        "total_weight",
        "length",
        "ring_bits",
        "params",
        "params_digest",
        "aggregate_root",
    }
)

#: A value of ``params``: a scalar of the encoding data model (no float: write one with
#: ``float.hex`` as a str, which is exact).
Param = str | int | bytes | bool | None


def _frozen_map(value: object, what: str, kind: type) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentType(what, f"expected a mapping, got {type(value).__name__}")
    for k, v in value.items():
        if type(k) is not str:
            raise InvalidArgumentType(what, f"keys must be str, got {type(k).__name__}")
        if type(v) is not kind and not (kind is str and isinstance(v, str)):
            raise InvalidArgumentType(f"{what}[{k!r}]", f"expected {kind.__name__}, got {type(v).__name__}")
    # str() turns a str subclass (a stage enum member) into the plain str the record holds.
    return MappingProxyType({k: (str(v) if kind is str else v) for k, v in sorted(value.items())})


def _names(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, frozenset, set)):
        raise InvalidArgumentType(what, f"expected a collection of str, got {type(value).__name__}")
    if any(type(v) is not str for v in value):
        raise InvalidArgumentType(what, "every name must be a str")
    names = tuple(sorted(value))
    if len(set(names)) != len(names):
        raise InvalidArgument(what, "names repeat")
    return names


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise InvalidArgumentType(what, f"expected int, got {type(value).__name__}")
    if not lo <= value < hi:
        raise InvalidArgument(what, f"must be in [{lo}, {hi}), got {encoding.short_repr(value)}")
    return value


@dataclass(frozen=True, eq=True)
class RoundOutcome:
    """The record of a finished round. Every collection is sorted and read-only.

    - ``protocol``: who produced it (e.g. ``"fedledger/secagg/v1"``); ``round_id``.
    - ``participants``: the clients invited; ``survivors``: those whose input is in the sum.
    - ``dropouts``: client -> the stage at which it went missing (no message or a refused one);
      a survivor listed here went missing after its input was in the sum (e.g. at unmask).
    - ``rejections``: client -> why its message was refused (it counts as dropped there).
    - ``misbehaving``: client -> what it did wrong that did not stop the round.
    - ``commitments``: survivor -> the 32-byte vector root its input was signed under.
    - ``weights``: survivor -> its declared (signed) weight; ``total_weight`` is their sum.
    - ``length``: parameters per input; ``ring_bits``: the ring Z_(2^bits) of the sum.
    - ``aggregate_root``: the vector root of the exact ring sum (b"" if not recorded).
    - ``params``: the protocol's parameters needed to interpret the sum (scalars by name);
      :attr:`params_digest` commits to them.
    """

    protocol: str
    round_id: int
    participants: tuple[str, ...]
    survivors: tuple[str, ...]
    commitments: Mapping[str, bytes]
    weights: Mapping[str, int]
    length: int
    ring_bits: int
    aggregate_root: bytes = b""
    dropouts: Mapping[str, str] = field(default_factory=dict)
    rejections: Mapping[str, str] = field(default_factory=dict)
    misbehaving: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Param] = field(default_factory=dict)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if type(self.protocol) is not str or not self.protocol:
            raise InvalidArgumentType("protocol", "expected a non-empty str")
        _int(self.round_id, "round_id", 0, 2**63)
        _int(self.length, "length", 0, 2**63)
        _int(self.ring_bits, "ring_bits", 0, 2**16)
        if type(self.aggregate_root) is not bytes or len(self.aggregate_root) not in (0, 32):
            raise InvalidArgument("aggregate_root", 'expected 32 bytes (or b"")')
        put(self, "participants", _names(self.participants, "participants"))
        put(self, "survivors", _names(self.survivors, "survivors"))
        for name in ("dropouts", "rejections", "misbehaving"):
            put(self, name, _frozen_map(getattr(self, name), name, str))
        put(self, "commitments", _frozen_map(self.commitments, "commitments", bytes))
        put(self, "weights", _frozen_map(self.weights, "weights", int))
        if not isinstance(self.params, Mapping):
            raise InvalidArgumentType("params", f"expected a mapping, got {type(self.params).__name__}")
        for k, v in self.params.items():
            if type(k) is not str or (v is not None and type(v) not in (str, int, bytes, bool)):
                raise InvalidArgumentType(
                    f"params[{k!r}]", "expected str keys and str, int, bytes, bool or None values"
                )
        put(self, "params", MappingProxyType(dict(sorted(self.params.items()))))
        everyone = set(self.participants)
        alive = set(self.survivors)
        if not alive <= everyone:
            raise InvalidArgument("survivors", f"not participants: {sorted(alive - everyone)[:5]}")
        for name in ("dropouts", "rejections", "misbehaving"):
            stray = set(getattr(self, name)) - everyone
            if stray:
                raise InvalidArgument(name, f"not participants: {sorted(stray)[:5]}")
        if set(self.commitments) != alive or any(len(r) != 32 for r in self.commitments.values()):
            raise InvalidArgument("commitments", "expected one 32-byte root per survivor, no more")
        if set(self.weights) != alive or any(w < 1 for w in self.weights.values()):
            raise InvalidArgument("weights", "expected one weight >= 1 per survivor, no more")

    @property
    def total_weight(self) -> int:
        """The sum of the survivors' declared weights."""
        return sum(self.weights.values())

    @property
    def params_digest(self) -> bytes:
        """SHA-256 of the canonical encoding of ``params`` (what a ledger can index by)."""
        return hashlib.sha256(_PARAMS_DOMAIN + encoding.encode(dict(self.params))).digest()

    def to_record(self) -> dict[str, encoding.Value]:
        """The canonical record: plain values only (str, int, bytes, bool, lists, str-keyed maps)."""
        return {
            "type": RECORD_TYPE,
            "protocol": self.protocol,
            "round": self.round_id,
            "participants": list(self.participants),
            "survivors": list(self.survivors),
            "dropouts": dict(self.dropouts),
            "rejections": dict(self.rejections),
            "misbehaving": dict(self.misbehaving),
            "commitments": dict(self.commitments),
            "weights": dict(self.weights),
            "total_weight": self.total_weight,
            "length": self.length,
            "ring_bits": self.ring_bits,
            "params": dict(self.params),
            "params_digest": self.params_digest,
            "aggregate_root": self.aggregate_root,
        }

    def record_bytes(self) -> bytes:
        """``encoding.encode(self.to_record())``: the same round gives the same bytes."""
        return encoding.encode(self.to_record())

    @classmethod
    def from_record(cls, record: object) -> RoundOutcome:
        """The outcome a :meth:`to_record` record describes; EncodingError if it is not one
        (unknown or missing keys, wrong types, inconsistent names, a total or digest that
        does not match)."""
        if not isinstance(record, dict) or set(record) != _KEYS:
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise EncodingError(f"not a round outcome record: keys {encoding.short_repr(got)}")
        if record["type"] != RECORD_TYPE:
            raise EncodingError(f"not a round outcome record: type {encoding.short_repr(record['type'])}")
        try:
            out = cls(
                protocol=record["protocol"],
                round_id=record["round"],
                participants=record["participants"],
                survivors=record["survivors"],
                dropouts=record["dropouts"],
                rejections=record["rejections"],
                misbehaving=record["misbehaving"],
                commitments=record["commitments"],
                weights=record["weights"],
                length=record["length"],
                ring_bits=record["ring_bits"],
                params=record["params"],
                aggregate_root=record["aggregate_root"],
            )
        except InvalidArgument as exc:
            raise EncodingError(f"round outcome record: {exc}") from None
        if record["total_weight"] != out.total_weight or type(record["total_weight"]) is not int:
            raise EncodingError("round outcome record: total_weight is not the sum of the weights")
        if record["params_digest"] != out.params_digest:
            raise EncodingError("round outcome record: params_digest does not match params")
        if list(record["participants"]) != list(out.participants) or list(record["survivors"]) != list(out.survivors):
            raise EncodingError("round outcome record: names must be sorted")
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundOutcome:
        """The outcome of :meth:`record_bytes`; EncodingError if the bytes are not one."""
        return cls.from_record(encoding.decode(data))
