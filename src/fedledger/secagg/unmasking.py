"""The server's unmasking arithmetic: the sum checks and robust secret recovery. Pure."""

from __future__ import annotations

import hmac
import math
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Final

import numpy as np
from numpy.typing import NDArray

from fedledger.crypto import agreement, shamir
from fedledger.errors import FedLedgerError, RoundFailed

__all__ = ["MAX_SUBSETS", "check_sum", "derives", "recover"]

#: Share subsets the server tries per secret at most before it gives up on a dealer.
MAX_SUBSETS: Final = 64


def check_sum(
    acc: NDArray[np.unsignedinteger], weights: Mapping[str, int], scale: float, *, bits: int, clip: float
) -> int:
    """The total weight, once the unmasked sum passed the two checks a client cannot
    dodge without per-client range proofs (RoundFailed naming the check otherwise):

    - weight check: the weight slot equals the sum of the survivors' declared weights;
    - range check: every coordinate, read as a signed ring element, lies within
      ±Σ_i (⌊clip · w_i · scale⌋ + 1), the most that honest clients whose clipped values
      are weighted by their declared weights can produce (the +1 is stochastic rounding).
    """
    signed = acc.view(np.int32 if bits == 32 else np.int64)
    total = sum(weights.values())
    slot = int(signed[-1])
    if slot != total:
        raise RoundFailed(
            f"weight check: the unmasked weight slot is {slot}, the survivors declared {total} in all; "
            "some client's weight slot differs from the weight it signed; the round returns no aggregate"
        )
    bound = sum(math.floor(clip * w * scale) + 1 for w in weights.values())
    values = signed[:-1]
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < -bound or hi > bound:
            worst = int(np.argmax(values)) if hi > bound else int(np.argmin(values))
            raise RoundFailed(
                f"range check: coordinate {worst} of the unmasked sum is {int(values[worst]) / scale:.6g}, outside "
                f"±{bound / scale:.6g} (the declared weights {total} times clip {clip:g}, plus rounding); "
                "some client sent values beyond its clip; the round returns no aggregate"
            )
    return total


def recover(shares: list[shamir.Share], t: int, check: Callable[[bytes], bool]) -> tuple[bytes | None, bool]:
    """``(secret, consistent)`` from digest-checked shares, robust to a dealer that dealt some bad ones.

    Shares are grouped by commitment (with t > m / 2 at most one group can reach t). Within a
    group the first t shares are tried, then every leave-one-out choice (which finds one bad
    share), then seeded random t-subsets, at most MAX_SUBSETS in all, until one combines to the
    commitment and passes ``check``. ``secret`` is None when none does; ``consistent`` is
    False when the dealer's shares disagreed (it needed more than the first try).
    """
    groups: dict[bytes, list[shamir.Share]] = {}
    for s in shares:
        groups.setdefault(s.commitment, []).append(s)
    for group in sorted(groups.values(), key=len, reverse=True):
        if len(group) < t:
            continue
        for tries, subset in enumerate(_subsets(group, t)):
            if tries >= MAX_SUBSETS:
                break
            try:
                secret = shamir.combine(subset)
            except FedLedgerError:
                continue
            if check(secret):
                return secret, tries == 0 and len(groups) == 1
    return None, False


def _subsets(group: list[shamir.Share], t: int) -> Iterator[list[shamir.Share]]:
    yield group[:t]
    if len(group) == t:
        return
    # Leaving out one of the first t + 1 gives every distinct leave-one-out choice of t
    # (leaving out a later share would give group[:t] again).
    for i in range(t):
        yield group[:i] + group[i + 1 : t + 1]
    rng = random.Random(len(group) * 1_000_003 + t)  # not secret: which subsets to try
    while True:
        yield sorted(rng.sample(group, t), key=lambda s: s.index)


def derives(secret: bytes, public: bytes) -> bool:
    """True if the X25519 private key ``secret`` has public key ``public``."""
    if len(secret) != 32:
        return False
    key = agreement.AgreementKey.from_bytes(secret)
    return hmac.compare_digest(key.public_key.to_bytes(), public)
