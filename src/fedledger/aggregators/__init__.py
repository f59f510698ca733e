"""Aggregators: how a federated round sums the sites' updates. See :mod:`.base` for the protocol."""

from __future__ import annotations

from fedledger.aggregators.base import AggregateResult, Aggregator, AggregatorClient, AggregatorServer, Envelope

__all__ = ["AggregateResult", "Aggregator", "AggregatorClient", "AggregatorServer", "Envelope"]
