"""Federated rounds: one round among the sites of a training policy, aggregated by a
:mod:`fedledger.aggregators` aggregator, its aggregate in a blob store and its record on the
ledger. See :class:`FederatedRound`."""

from __future__ import annotations

from fedledger.federated.round import (
    AGGREGATE_TYPE,
    CohortCheck,
    FederatedRound,
    RoundOutput,
    RoundPlan,
    RoundRecord,
    aggregate_output,
    load_aggregate,
    model_hash,
)

__all__ = [
    "AGGREGATE_TYPE",
    "CohortCheck",
    "FederatedRound",
    "RoundOutput",
    "RoundPlan",
    "RoundRecord",
    "aggregate_output",
    "load_aggregate",
    "model_hash",
]
