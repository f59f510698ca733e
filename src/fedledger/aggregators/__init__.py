"""Aggregators: how a federated round sums the sites' updates. See :mod:`.base` for the
protocol and docs/aggregators.md for the three of them: :class:`Plain`, :class:`Masked`
(SecAgg+) and :class:`Paillier` (packed Paillier, t-of-n trustees)."""

from __future__ import annotations

from fedledger.aggregators._common import MIN_SURVIVORS
from fedledger.aggregators.base import AggregateResult, Aggregator, AggregatorClient, AggregatorServer, Envelope
from fedledger.aggregators.masked import Masked, MaskedClient, MaskedServer
from fedledger.aggregators.paillier import Paillier, PaillierClient, PaillierServer, PaillierTrustee
from fedledger.aggregators.plain import Plain, PlainClient, PlainServer

__all__ = [
    "MIN_SURVIVORS",
    "AggregateResult",
    "Aggregator",
    "AggregatorClient",
    "AggregatorServer",
    "Envelope",
    "Masked",
    "MaskedClient",
    "MaskedServer",
    "Paillier",
    "PaillierClient",
    "PaillierServer",
    "PaillierTrustee",
    "Plain",
    "PlainClient",
    "PlainServer",
]
