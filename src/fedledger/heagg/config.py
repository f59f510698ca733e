"""The parameters of a Paillier aggregation round, the trusted dealer, and the derivations
both sides compute alike (seal keys and contexts)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from fedledger import encoding
from fedledger.crypto import agreement
from fedledger.crypto.paillier import KeyShare, PackingLayout, PublicKey, generate_keypair
from fedledger.crypto.seal import SealContext
from fedledger.errors import InvalidArgument, InvalidArgumentType, InvalidKey

__all__ = ["MIN_SURVIVORS", "Dealing", "HEAggConfig", "deal"]

#: The floor of :attr:`HEAggConfig.min_survivors`: no configuration can go below it.
MIN_SURVIVORS: Final = 3
UPDATE_PURPOSE: Final = "fedledger/heagg/update"
PARTIAL_PURPOSE: Final = "fedledger/heagg/partial"


@dataclass(frozen=True)
class HEAggConfig:
    """What every party of a round agrees on before it starts.

    - ``bits``: each value is quantized to a ``bits``-bit signed integer (2..32).
    - ``clip``: values are clipped to [-clip, clip] first; the scale is (2^(bits-1) - 1) / clip.
    - ``max_total_weight``: the largest sum of declared weights a round may hold (the packing
      layout's ``max_summands``: each slot has room for that many summands).
    - ``min_survivors``: the fewest updates a sum may hold, at least :data:`MIN_SURVIVORS`;
      the aggregator will not ask for a decryption, and a trustee will not give one, for
      fewer. A policy may raise it, never lower it.
    - ``round_id``: bound into every message and seal.
    - ``seal_updates``: seal each site's ciphertexts to the aggregator (AES-256-GCM), the
      second layer; False only to measure what it costs (the ciphertexts still hide the
      update from anyone without t trustees' shares). Partial decryptions are always sealed.
    """

    bits: int = 16
    clip: float = 1.0
    max_total_weight: int = 128
    min_survivors: int = MIN_SURVIVORS
    round_id: int = 1
    seal_updates: bool = True

    def __post_init__(self) -> None:
        for name in ("bits", "max_total_weight", "min_survivors", "round_id"):
            if type(getattr(self, name)) is not int:
                raise InvalidArgumentType(name, f"expected int, got {type(getattr(self, name)).__name__}")
        if not 2 <= self.bits <= 32:
            raise InvalidArgument("bits", f"must be in [2, 32], got {self.bits}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)):
            raise InvalidArgumentType("clip", f"expected a number, got {type(self.clip).__name__}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise InvalidArgument("clip", f"must be a finite number > 0, got {self.clip!r}")
        if self.max_total_weight < 1:
            raise InvalidArgument("max_total_weight", f"must be >= 1, got {self.max_total_weight}")
        if self.min_survivors < MIN_SURVIVORS:
            raise InvalidArgument(
                "min_survivors",
                f"must be >= {MIN_SURVIVORS} (it can be raised, never lowered), got {self.min_survivors}",
            )
        if not 0 <= self.round_id < 2**63:
            raise InvalidArgument("round_id", f"must be in [0, 2**63), got {self.round_id}")

    def layout(self, public_key: PublicKey, dimension: int) -> PackingLayout:
        """The packing layout of every update of the round (fixed by the receiver, never the wire)."""
        return PackingLayout.create(
            public_key.bits, dimension, bits=self.bits, clip=float(self.clip), max_summands=self.max_total_weight
        )

    def scale(self) -> float:
        """Quantized units per unit of value."""
        return ((1 << (self.bits - 1)) - 1) / float(self.clip)

    def params(
        self, public_key: PublicKey, dimension: int, trustees: Mapping[str, int], threshold: int
    ) -> dict[str, encoding.Value]:
        """The round's public parameters as the aggregator announces them and a site checks them."""
        return {
            "bits": self.bits,
            "clip": float(self.clip),
            "max_total_weight": self.max_total_weight,
            "min_survivors": self.min_survivors,
            "dimension": dimension,
            "key": public_key.fingerprint(),
            "trustees": dict(trustees),
            "threshold": threshold,
        }


@dataclass(frozen=True)
class Dealing:
    """What the trusted dealer hands out: the public key (to everyone) and one
    :class:`~fedledger.crypto.paillier.KeyShare` per trustee (each to its trustee alone)."""

    public_key: PublicKey
    shares: Mapping[str, KeyShare]
    threshold: int

    @property
    def trustees(self) -> dict[str, int]:
        """Trustee name -> share index."""
        return {name: share.index for name, share in self.shares.items()}


def deal(trustees: Sequence[str], threshold: int, *, key_bits: int = 2048, insecure_for_tests: bool = False) -> Dealing:
    """The trusted dealer: a fresh Paillier key of safe primes, split t-of-n among
    ``trustees`` (Shoup / Damgard-Jurik threshold Paillier), the private key then dropped.

    The dealer sees the whole private key while it deals: whoever runs this must be trusted
    not to keep it (see docs/security-heagg.md)."""
    if isinstance(trustees, (str, bytes)) or any(type(t) is not str for t in trustees):
        raise InvalidArgumentType("trustees", "expected a sequence of trustee names")
    names = list(trustees)
    if len(set(names)) != len(names) or not names:
        raise InvalidArgument("trustees", "expected distinct trustee names, at least one")
    if type(threshold) is not int:
        raise InvalidArgumentType("threshold", f"expected int, got {type(threshold).__name__}")
    if not 1 <= threshold <= len(names):
        raise InvalidArgument("threshold", f"must be in [1, {len(names)}], got {threshold}")
    pk, sk = generate_keypair(key_bits, insecure_for_tests=insecure_for_tests, safe_primes=True)
    shares = sk.split(threshold, len(names))
    del sk
    return Dealing(pk, dict(zip(sorted(names), shares)), threshold)


def seal_key(own: agreement.AgreementKey, peer: bytes, round_id: int) -> bytes:
    """The AES-256-GCM key between a party's fresh X25519 key and the aggregator's round key
    (the same both ways). InvalidKey for a low-order peer key."""
    try:
        agreement.AgreementPublicKey(peer).check_registrable()
    except ValueError as exc:
        raise InvalidKey(f"unusable X25519 key: {exc}") from None
    ctx = encoding.encode(["fedledger/heagg/seal-key/v1", round_id])
    return agreement.pairwise_seed(own, peer, context=ctx, length=32)


def context(sender: str, receiver: str, round_id: int, purpose: str) -> SealContext:
    return SealContext(sender=sender, receiver=receiver, round=round_id, purpose=purpose)
