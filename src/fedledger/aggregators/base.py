"""The aggregator protocol: what a federated round, or a downstream framework, drives.

An aggregator computes the weighted sum of the sites' updates (FedAvg by sample count) without
showing any one site's update to anyone but that site: ``Masked`` (SecAgg+), ``Paillier``
(packed homomorphic encryption with t-of-n trustees) or ``Plain`` (the baseline, sealed but
not hidden from the aggregator). Every update message is sealed (AEAD) to its receiver
whatever the aggregator: the second layer.

Two ways to drive one:

- in process: ``aggregator.run(updates, weights=None, dropouts=None)`` plays every site and the
  server and returns an :class:`AggregateResult`;
- message by message, for a real transport: ``aggregator.server(...)`` and
  ``aggregator.client(...)`` give state machines that exchange :class:`Envelope` s. The server
  starts a stage (``start``), collects what arrives (``collect``), and when every expected
  message is in, or the transport's deadline passed, ``advance`` closes the stage with whoever
  answered (the rest are dropouts at that stage) and says what to send next; ``finish`` gives
  the result once ``done``. A client answers each envelope addressed to it (``respond``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["AggregateResult", "Aggregator", "AggregatorClient", "AggregatorServer", "Envelope"]


@dataclass(frozen=True)
class Envelope:
    """One message: its stage, sender and receiver names, and its signed (and, for updates,
    sealed) bytes. Transports carry envelopes as they are; receivers check everything."""

    stage: str
    sender: str
    receiver: str
    data: bytes


@dataclass(frozen=True)
class AggregateResult:
    """What a round's aggregation gives, and what a ledger records of it.

    ``aggregate`` is the weighted sum over ``survivors`` of weight x update (dequantized;
    within the aggregator's quantization bound of the exact sum), ``total_weight`` the sum of
    their declared weights, so ``mean = aggregate / total_weight`` is FedAvg.
    ``commitments`` maps each survivor to its update commitment (the RFC 9162 root of its
    update's encrypted or masked bytes as it signed them), ``weights`` each survivor to its
    declared (signed) weight, ``dropouts`` each missing site to the stage it went missing at.
    ``parameters`` are the aggregator's public settings (name, bits, clip, threshold, ...),
    recorded with the round. ``bytes_up``/``bytes_down`` count client -> server and server ->
    client bytes per site; ``seconds`` is wall time per party role (``"server"``, and each
    site's name); ``stage_seconds`` splits the same time by stage (the stage a message
    belongs to; ``"close <stage>"`` for the server's work when a stage closes) into
    ``"server"`` and ``"parties"`` (sites and trustees together).
    """

    aggregator: str
    aggregate: NDArray[np.float64]
    total_weight: int
    survivors: tuple[str, ...]
    commitments: Mapping[str, bytes]
    weights: Mapping[str, int]
    dropouts: Mapping[str, str]
    parameters: Mapping[str, object]
    bytes_up: Mapping[str, int] = field(default_factory=dict)
    bytes_down: Mapping[str, int] = field(default_factory=dict)
    seconds: Mapping[str, float] = field(default_factory=dict)
    stage_seconds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def mean(self) -> NDArray[np.float64]:
        """The weighted average (FedAvg): ``aggregate / total_weight``."""
        return self.aggregate / self.total_weight


@runtime_checkable
class AggregatorClient(Protocol):
    """One site's side of one round."""

    name: str

    def start(self, update: NDArray[np.floating], weight: int) -> list[Envelope]:
        """Take this site's update and weight; the envelopes to send first (may be none)."""
        ...

    def respond(self, message: Envelope) -> list[Envelope]:
        """Answer one envelope from the server; the envelopes to send back (may be none)."""
        ...


@runtime_checkable
class AggregatorServer(Protocol):
    """The aggregator's side of one round."""

    @property
    def stage(self) -> str:
        """The stage being collected."""
        ...

    @property
    def done(self) -> bool:
        """Whether :meth:`finish` can be called."""
        ...

    def start(self) -> list[Envelope]:
        """Open the round; the envelopes to send first (may be none)."""
        ...

    def collect(self, message: Envelope) -> None:
        """Take one envelope from a site (a bad one makes that site a dropout, never an error)."""
        ...

    def expecting(self) -> frozenset[str]:
        """The sites whose envelope for the current stage has not arrived yet."""
        ...

    def advance(self) -> list[Envelope]:
        """Close the current stage with whoever answered; the envelopes of the next stage.

        Raises :class:`~fedledger.errors.RoundFailed` when too few sites remain to finish.
        """
        ...

    def finish(self) -> AggregateResult:
        """The result, once :attr:`done`."""
        ...


@runtime_checkable
class Aggregator(Protocol):
    """A way to aggregate: its name, its public parameters, and the two ways to drive it."""

    name: str

    @property
    def parameters(self) -> Mapping[str, object]:
        """Public settings, recorded with each round (no secrets)."""
        ...

    def run(
        self,
        updates: Mapping[str, NDArray[np.floating]],
        weights: Mapping[str, int] | None = None,
        dropouts: Mapping[str, str] | None = None,
        *,
        round_id: int = 1,
    ) -> AggregateResult:
        """Play one round in this process: every site of ``updates`` and the server.

        ``dropouts`` maps a site to the stage before which it vanishes (the stage names are
        the aggregator's; see its ``STAGES``). Raises RoundFailed past the aggregator's
        tolerance, and a typed error for bad input before anything is sent.
        """
        ...
