"""Secure aggregation: SecAgg (Bonawitz et al., CCS'17) with the sparse neighbor graph of
SecAgg+ (Bell et al., CCS'20), as pure state machines plus an in-process driver.

The server learns the sum of the surviving clients' quantized updates and, of any one of
them, only its declared weight (sample count, public and recorded), as long as fewer than
``threshold`` of a client's neighborhood collude with it (fewer than 2t - m of its m
holders, if the server also lies about who dropped: raise the threshold for an untrusted
aggregator); dropouts up to the threshold never lose the round. No honest party helps
unmask a sum of fewer than ``min_survivors`` (at least 3) inputs. The unmasked sum must
pass a weight check (its weight slot equals the declared weights' sum) and a range check
(every coordinate within the declared weights times the clip); a malicious client can
still move the sum anywhere inside that range. Everything on the wire is signed; revealed
shares and, by default, masked vectors are sealed to the server. See docs/security-secagg.md.

>>> import numpy as np
>>> from fedledger import secagg
>>> updates = {f"site-{i}": np.full(4, 0.25 * i) for i in range(5)}
>>> res = secagg.run_round(updates, secagg.SecAggConfig(neighbors=None), dropouts={"site-4": "masked_input"})
>>> np.round(res.aggregate, 6).tolist()
[1.5, 1.5, 1.5, 1.5]
>>> sorted(res.report.dropped.items())
[('site-4', 'masked_input')]
"""

from __future__ import annotations

from fedledger.secagg.client import ClippedValuesWarning, SecAggClient
from fedledger.secagg.config import MIN_SURVIVORS, SecAggConfig, neighbor_graph, neighbour_graph
from fedledger.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    Message,
    RelayedShares,
    ShareKeys,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from fedledger.secagg.outcome import RoundOutcome
from fedledger.secagg.server import Aggregate, SecAggServer
from fedledger.secagg.simulate import DROPOUT_STAGES, RoundReport, RoundResult, run_round

__all__ = [
    "DROPOUT_STAGES",
    "MIN_SURVIVORS",
    "AdvertiseKeys",
    "Aggregate",
    "ClippedValuesWarning",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "RelayedShares",
    "RoundOutcome",
    "RoundReport",
    "RoundResult",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "ShareKeys",
    "Stage",
    "UnmaskRequest",
    "UnmaskResponse",
    "neighbor_graph",
    "neighbour_graph",
    "run_round",
]
