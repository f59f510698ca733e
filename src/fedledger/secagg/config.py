"""The parameters of a secure-aggregation round, and the neighbor graph they define."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Union

from fedledger.crypto import masking
from fedledger.errors import InvalidArgument, InvalidArgumentType

__all__ = ["MIN_SURVIVORS", "NeighborView", "SecAggConfig", "neighbor_graph", "neighbour_graph"]

_GRAPH_DOMAIN: Final = b"fedledger/secagg/graph/v1\x00"

#: The floor of :attr:`SecAggConfig.min_survivors`: no configuration can go below it.
MIN_SURVIVORS: Final = 3

Neighbors = Union[int, None, Literal["auto"]]


@dataclass(frozen=True)
class SecAggConfig:
    """What every party of a round agrees on before it starts.

    - ``threshold``: shares needed to reconstruct a client's secrets, out of its
      neighborhood (itself and its neighbors). None: a majority, m // 2 + 1 for a
      neighborhood of m. It must exceed m / 2 (else a server could obtain both secrets of a
      client from two disjoint halves) and be at most m.
    - ``neighbors``: k, each client's number of neighbors in a k-regular random graph
      (SecAgg+); ``"auto"`` picks k = 2 * ceil(log2 n); ``None`` is the full graph (SecAgg).
    - ``bits``: the ring Z_(2^bits), 32 or 64; the wire carries bits / 8 bytes per parameter.
    - ``clip``: every parameter is clipped to [-clip, clip] before quantization.
    - ``max_weight``: the largest sample count (weight) a client may declare; 1 means
      plain sums. The scale leaves room for n * max_weight * clip. Each client declares its
      weight in its signed masked input: weights are public to the aggregator.
    - ``min_survivors``: the fewest masked inputs a sum may hold, at least
      :data:`MIN_SURVIVORS` (3); the server will not ask for shares, and a client will not
      reveal any, for a smaller survivor set (a sum of two is a difference away from each
      input). A policy may raise it, never lower it.
    - ``scale``: explicit quantization scale; None picks the largest that cannot overflow.
    - ``round_id``: bound into every message, seal and mask key (replays from another round
      are rejected).
    - ``graph_seed``: the seed of the neighbor graph; empty means SHA-256 of the round id.
      In a deployment take it from the ledger (e.g. the last block hash), not from the server.
    - ``seal_inputs``: seal each masked vector to the server (AES-256-GCM records under the
      client-server key): the second encryption layer. The revealed shares are always sealed
      to the server; see docs/security-secagg.md for what each layer protects.
    """

    threshold: int | None = None
    neighbors: Neighbors = "auto"
    bits: int = 32
    clip: float = 1.0
    max_weight: int = 1
    min_survivors: int = 3
    scale: float | None = None
    round_id: int = 1
    graph_seed: bytes = b""
    seal_inputs: bool = True

    def __post_init__(self) -> None:
        if self.threshold is not None and type(self.threshold) is not int:
            raise InvalidArgumentType("threshold", f"expected None or int, got {type(self.threshold).__name__}")
        if self.threshold is not None and self.threshold < 1:
            raise InvalidArgument("threshold", f"must be None or an int >= 1, got {self.threshold!r}")
        if not (
            self.neighbors is None or self.neighbors == "auto" or (type(self.neighbors) is int and self.neighbors >= 1)
        ):
            raise InvalidArgument("neighbors", f"must be 'auto', None or an int >= 1, got {self.neighbors!r}")
        if self.bits not in masking.RING_BITS:
            raise InvalidArgument("bits", f"must be 32 or 64, got {self.bits!r}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)):
            raise InvalidArgumentType("clip", f"expected a number, got {type(self.clip).__name__}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise InvalidArgument("clip", f"must be a finite number > 0, got {self.clip!r}")
        if type(self.max_weight) is not int:
            raise InvalidArgumentType("max_weight", f"expected int, got {type(self.max_weight).__name__}")
        if self.max_weight < 1:
            raise InvalidArgument("max_weight", f"must be an int >= 1, got {self.max_weight!r}")
        if type(self.min_survivors) is not int:
            raise InvalidArgumentType("min_survivors", f"expected int, got {type(self.min_survivors).__name__}")
        if self.min_survivors < MIN_SURVIVORS:
            raise InvalidArgument(
                "min_survivors",
                f"must be an int >= {MIN_SURVIVORS} (it can be raised, never lowered), got {self.min_survivors!r}",
            )
        if self.scale is not None and not isinstance(self.scale, float):
            raise InvalidArgumentType("scale", f"expected None or float, got {type(self.scale).__name__}")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise InvalidArgument("scale", f"must be None or a finite float > 0, got {self.scale!r}")
        if type(self.round_id) is not int:
            raise InvalidArgumentType("round_id", f"expected int, got {type(self.round_id).__name__}")
        if not 0 <= self.round_id < 2**63:
            raise InvalidArgument("round_id", f"must be an int in [0, 2**63), got {self.round_id!r}")
        if type(self.seal_inputs) is not bool:
            raise InvalidArgumentType("seal_inputs", f"expected bool, got {type(self.seal_inputs).__name__}")
        if type(self.graph_seed) is not bytes:
            raise InvalidArgumentType("graph_seed", f"expected bytes, got {type(self.graph_seed).__name__}")

    def degree(self, n: int) -> int:
        """k for n clients: the number of neighbors of each client (n - 1 for the full graph)."""
        if type(n) is not int:
            raise InvalidArgumentType("n", f"expected int, got {type(n).__name__}")
        if n < 1:
            raise InvalidArgument("n", f"the number of clients must be an int >= 1, got {n!r}")
        if self.neighbors is None:
            return n - 1
        k = 2 * math.ceil(math.log2(n)) if self.neighbors == "auto" else self.neighbors
        if k >= n - 1:
            return n - 1
        if k % 2 and n % 2:
            k += 1  # no k-regular graph with k and n both odd: one more neighbor each
        return min(k, n - 1)

    def neighborhood(self, n: int) -> int:
        """m: how many parties hold shares of each client's secrets (itself and k neighbors)."""
        return self.degree(n) + 1

    def neighbourhood(self, n: int) -> int:
        """Deprecated spelling of :meth:`neighborhood`."""
        warnings.warn(
            "SecAggConfig.neighbourhood is deprecated; use SecAggConfig.neighborhood", DeprecationWarning, stacklevel=2
        )
        return self.neighborhood(n)

    def threshold_for(self, n: int) -> int:
        """t for n clients, checked against the neighborhood size."""
        m = self.neighborhood(n)
        t = m // 2 + 1 if self.threshold is None else self.threshold
        if not m / 2 < t <= m:
            raise InvalidArgument("threshold", f"must be in ({m / 2}, {m}] for a neighborhood of {m} (n={n}), got {t}")
        return t

    def scale_for(self, n: int) -> float:
        """The quantization scale for n clients; QuantizationError if the sum could overflow."""
        if self.scale is None:
            return masking.quantization_scale(n, bits=self.bits, clip=float(self.clip), max_weight=self.max_weight)
        masking.check_scale(n, bits=self.bits, clip=float(self.clip), max_weight=self.max_weight, scale=self.scale)
        return self.scale

    def seed(self) -> bytes:
        return (
            self.graph_seed
            or hashlib.sha256(b"fedledger/secagg/round/v1\x00" + self.round_id.to_bytes(8, "big")).digest()
        )


def _permutation(n: int, seed: bytes) -> list[int]:
    """A uniformly random permutation of range(n): Fisher-Yates over SHAKE-256(seed), with
    rejection sampling so that every draw is exactly uniform."""
    stream = hashlib.shake_256(_GRAPH_DOMAIN + seed).digest(16 * n + 1024)
    pos = 0
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            if pos + 8 > len(stream):  # pragma: no cover - astronomically unlikely
                stream += hashlib.shake_256(_GRAPH_DOMAIN + seed + stream[-32:]).digest(1024)
            r = int.from_bytes(stream[pos : pos + 8], "little")
            pos += 8
            if r < limit:
                break
        j = r % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def neighbor_graph(ids: Sequence[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """The deterministic k-regular neighbor graph on ``ids`` (sorted first).

    k >= n - 1 gives the complete graph. Otherwise the ids are placed on a cycle in a random
    order drawn from ``seed`` and each is joined to the k // 2 nearest on either side, plus
    the diametrically opposite one when k is odd (n is then even): a Harary graph on a random
    permutation, as in Bell et al. (CCS'20).
    """
    view = NeighborView(ids, k, seed)
    return {c: view[c] for c in view}


def neighbour_graph(ids: Sequence[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Deprecated spelling of :func:`neighbor_graph`."""
    warnings.warn(
        "fedledger.secagg.neighbour_graph is deprecated; use fedledger.secagg.neighbor_graph",
        DeprecationWarning,
        stacklevel=2,
    )
    return neighbor_graph(ids, k, seed)


class NeighborView(Mapping[str, frozenset[str]]):
    """:func:`neighbor_graph` as a read-only mapping that builds a row when it is first
    asked for: a client needs its own row and its neighbors', not all n."""

    def __init__(self, ids: Sequence[str], k: int, seed: bytes) -> None:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or any(type(c) is not str for c in ids):
            raise InvalidArgumentType("ids", "must be a sequence of str client ids")
        if type(k) is not int:
            raise InvalidArgumentType("k", f"expected int, got {type(k).__name__}")
        if k < 0:
            raise InvalidArgument("k", f"must be an int >= 0, got {k!r}")
        if type(seed) is not bytes:
            raise InvalidArgumentType("seed", f"expected bytes, got {type(seed).__name__}")
        order = sorted(ids)
        n = len(order)
        if len(set(order)) != n:
            raise InvalidArgument("ids", "duplicate client ids")
        self._complete = k >= n - 1
        if not self._complete and k % 2 and n % 2:
            raise InvalidArgument("k", f"no {k}-regular graph on {n} nodes (both odd)")
        self._order = order
        self._k = k
        self._perm = order if self._complete else [order[i] for i in _permutation(n, seed)]
        self._pos = {c: i for i, c in enumerate(self._perm)}
        self._rows: dict[str, frozenset[str]] = {}
        self._everyone: frozenset[str] | None = None

    def __getitem__(self, c: str) -> frozenset[str]:
        row = self._rows.get(c)
        if row is not None:
            return row
        i = self._pos[c]  # KeyError for a non-member, as a dict
        if self._complete:
            if self._everyone is None:
                self._everyone = frozenset(self._order)
            row = self._everyone - {c}
        else:
            perm, n = self._perm, len(self._perm)
            near = [perm[(i + d) % n] for d in range(1, self._k // 2 + 1)]
            near += [perm[(i - d) % n] for d in range(1, self._k // 2 + 1)]
            if self._k % 2:
                near.append(perm[(i + n // 2) % n])
            row = frozenset(near)
        self._rows[c] = row
        return row

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)
