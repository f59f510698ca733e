"""An in-process driver for one Paillier round: every party, every message through bytes."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Final

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import EncodingError, FedLedgerError, InvalidArgument, InvalidArgumentType
from fedledger.heagg.client import HEAggClient, HEAggTrustee, check_update
from fedledger.heagg.config import Dealing, HEAggConfig
from fedledger.heagg.messages import Message
from fedledger.heagg.server import HEAggResult, HEAggServer
from fedledger.identity import Identity

__all__ = ["DROPOUT_STAGES", "SERVER_NAME", "RoundStats", "run_round"]

#: ``dropouts`` values: a site vanishes before ``"update"``, a trustee before ``"partial_decryption"``.
DROPOUT_STAGES: Final = ("update", "partial_decryption")
SERVER_NAME: Final = "aggregator"

#: intercept(stage, sender, receiver, data) -> data to deliver, or None to drop the message.
Intercept = Callable[[str, str, str, bytes], "bytes | None"]


class RoundStats:
    """Bytes sent up (party -> aggregator) and down, and seconds, per party (and ``"server"``)."""

    def __init__(self) -> None:
        self.bytes_up: dict[str, int] = defaultdict(int)
        self.bytes_down: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)


def run_round(
    updates: Mapping[str, NDArray[np.floating]],
    config: HEAggConfig,
    dealing: Dealing,
    *,
    weights: Mapping[str, int] | None = None,
    dropouts: Mapping[str, str] | None = None,
    client_class: Mapping[str, type[HEAggClient]] | None = None,
    intercept: Intercept | None = None,
    stats: RoundStats | None = None,
) -> HEAggResult:
    """Run one round in this process: an :class:`HEAggServer`, one :class:`HEAggClient` per
    entry of ``updates`` and one :class:`HEAggTrustee` per share of ``dealing``, every
    message through ``to_bytes``/``from_bytes``, fresh identities.

    ``dropouts`` maps a site to ``"update"`` (it never sends its update) or a trustee to
    ``"partial_decryption"``. ``weights`` are sample counts (default 1). ``client_class``
    and ``intercept`` (sees, may replace or drop, every message in transit) are for tests.
    RoundFailed if the round cannot complete."""
    if not isinstance(config, HEAggConfig):
        raise InvalidArgumentType("config", f"expected an HEAggConfig, got {type(config).__name__}")
    if not isinstance(dealing, Dealing):
        raise InvalidArgumentType("dealing", f"expected a Dealing, got {type(dealing).__name__}")
    ids = sorted(updates)
    if not ids:
        raise InvalidArgument("updates", "no sites")
    arrays = {c: check_update(updates[c], f"updates[{c!r}]") for c in ids}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise InvalidArgument("updates", "every update must have the same length")
    dimension = int(next(iter(shapes))[0])
    drops = dict(dropouts or {})
    for who, stage in drops.items():
        want = "update" if who in updates else "partial_decryption" if who in dealing.shares else None
        if want is None or stage != want:
            raise InvalidArgument(
                "dropouts", f"{who!r} at {stage!r}: sites drop at 'update', trustees at 'partial_decryption'"
            )
    weight_of = dict(weights or {})
    st = stats or RoundStats()
    idents = {name: Identity.generate(name) for name in [*ids, *dealing.shares, SERVER_NAME]}
    keys = {name: i.verify_key for name, i in idents.items()}
    t0 = time.perf_counter()
    server = HEAggServer(
        idents[SERVER_NAME],
        config,
        dealing.public_key,
        sites=ids,
        trustees=dealing.trustees,
        threshold=dealing.threshold,
        verify_keys=keys,
        dimension=dimension,
    )
    classes = dict(client_class or {})
    clients = {
        c: classes.get(c, HEAggClient)(idents[c], config, dealing.public_key, server=SERVER_NAME, verify_keys=keys)
        for c in ids
    }
    trustees = {
        t: HEAggTrustee(idents[t], config, share, server=SERVER_NAME, sites=ids, verify_keys=keys, dimension=dimension)
        for t, share in dealing.shares.items()
    }
    announces = server.start()
    st.seconds["server"] += time.perf_counter() - t0

    def wire(msg: Message, up: bool) -> Message | None:
        data = msg.to_bytes()
        if intercept is not None:
            new = intercept(msg.STAGE, msg.sender, msg.receiver, data)
            if new is None:
                return None
            data = new
        party = msg.sender if up else msg.receiver
        (st.bytes_up if up else st.bytes_down)[party] += len(data)
        try:
            return HEAggServer.parse(msg.STAGE, data)
        except EncodingError:
            return None

    def deliver(msg: Message) -> None:
        got = wire(msg, up=True)
        if got is not None:
            t0 = time.perf_counter()
            server.collect(got)
            st.seconds["server"] += time.perf_counter() - t0

    for ann in announces:
        c = ann.receiver
        if drops.get(c) == "update":
            continue
        got = wire(ann, up=False)
        t0 = time.perf_counter()
        try:
            out = clients[c].encrypt_update(got, arrays[c], weight_of.get(c, 1))  # type: ignore[arg-type]
        except FedLedgerError:
            continue
        finally:
            st.seconds[c] += time.perf_counter() - t0
        deliver(out)
    t0 = time.perf_counter()
    requests = server.advance()
    st.seconds["server"] += time.perf_counter() - t0
    for req in requests:
        t = req.receiver
        if drops.get(t) == "partial_decryption":
            continue
        got = wire(req, up=False)
        t0 = time.perf_counter()
        try:
            part = trustees[t].partial_decrypt(got)  # type: ignore[arg-type]
        except FedLedgerError:
            continue
        finally:
            st.seconds[t] += time.perf_counter() - t0
        deliver(part)
    t0 = time.perf_counter()
    server.advance()
    st.seconds["server"] += time.perf_counter() - t0
    return server.finish()
