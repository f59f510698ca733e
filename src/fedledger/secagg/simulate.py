"""An in-process driver for one round: both sides, every message through bytes."""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import EncodingError, FedLedgerError, InvalidArgument, InvalidArgumentType, RoundFailed
from fedledger.identity import Identity
from fedledger.secagg.client import ClippedValuesWarning, RandomBytes, SecAggClient
from fedledger.secagg.config import SecAggConfig
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
from fedledger.secagg.server import SecAggServer

__all__ = ["DROPOUT_STAGES", "RoundReport", "RoundResult", "run_round"]

#: The stages before which a client may vanish (``dropouts`` values).
DROPOUT_STAGES: Final = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK)
SERVER_NAME: Final = "aggregator"

M = TypeVar("M", bound=Message)

#: intercept(stage, sender, receiver, data) -> data to deliver, or None to drop the message.
Intercept = Callable[[str, str, str, bytes], "bytes | None"]


@dataclass
class RoundReport:
    """What a round cost and who fell out of it.

    ``bytes_up``/``bytes_down``: bytes sent client -> server / server -> client, per stage.
    ``seconds``: wall time per stage, split into ``"server"`` and ``"clients"`` (the sum over
    clients); a message's encoding counts as its sender's time, its parsing as the
    receiver's. ``client_seconds``: each client's total compute. ``dropped``: client -> stage
    it went missing at (no message or a rejected one); ``rejected``: client -> why its
    message was refused; ``misbehaving``: clients caught cheating without stopping the round;
    ``outcome``: the server's frozen :class:`~fedledger.secagg.RoundOutcome` (what a ledger
    records), read through ``survivors``, ``commitments`` (client -> the vector root of its
    masked input in the sum; see :func:`fedledger.crypto.masking.vector_root`) and ``weights``
    (client -> the weight it declared in its signed masked input, for the inputs in the sum).
    ``dropped``, ``rejected`` and ``misbehaving`` are kept up to date while the round runs
    (``rejected`` also lists messages the wire could not parse, which no server saw).
    """

    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    client_seconds: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    misbehaving: dict[str, str] = field(default_factory=dict)
    #: Client -> how many of its update's values were clipped (only clients that clipped any).
    #: The simulator knows because it holds every client; no protocol message carries it.
    clipped: dict[str, int] = field(default_factory=dict)
    #: The frozen record of the round, once it finished (None while it runs).
    outcome: RoundOutcome | None = None

    @property
    def survivors(self) -> tuple[str, ...]:
        return self.outcome.survivors if self.outcome is not None else ()

    @property
    def commitments(self) -> Mapping[str, bytes]:
        return self.outcome.commitments if self.outcome is not None else {}

    @property
    def weights(self) -> Mapping[str, int]:
        return self.outcome.weights if self.outcome is not None else {}

    @property
    def total_bytes_up(self) -> int:
        return sum(self.bytes_up.values())

    @property
    def total_bytes_down(self) -> int:
        return sum(self.bytes_down.values())


@dataclass
class RoundResult:
    """``aggregate``: the dequantized sum of weight * clip(update) over the clients whose
    masked input arrived (``report.survivors``); ``total_weight``: their weights' sum."""

    aggregate: NDArray[np.float64]
    total_weight: int
    scale: float
    report: RoundReport

    @property
    def outcome(self) -> RoundOutcome:
        """The round's frozen record (``report.outcome``)."""
        assert self.report.outcome is not None
        return self.report.outcome

    @property
    def mean(self) -> NDArray[np.float64]:
        """The weighted average: aggregate / total_weight."""
        return self.aggregate / self.total_weight


class _Wire:
    """Carries messages as bytes. Encoding counts as the sender's time, parsing as the
    receiver's: ``last_encode`` / ``last_decode`` hold the seconds of the latest send."""

    def __init__(self, report: RoundReport, intercept: Intercept | None) -> None:
        self.report = report
        self.intercept = intercept
        self.up: dict[str, int] = defaultdict(int)
        self.down: dict[str, int] = defaultdict(int)
        self.last_encode = 0.0
        self.last_decode = 0.0

    def send(self, msg: Message, kind: type[M], up: bool) -> M | None:
        t0 = time.perf_counter()
        data = msg.to_bytes()
        self.last_encode = time.perf_counter() - t0
        self.last_decode = 0.0
        if self.intercept is not None:
            new = self.intercept(msg.STAGE, msg.sender, msg.receiver, data)
            if new is None:
                return None
            data = new
        (self.up if up else self.down)[msg.STAGE] += len(data)
        t0 = time.perf_counter()
        try:
            return kind.from_bytes(data)
        except EncodingError as exc:
            if up:
                self.report.rejected.setdefault(msg.sender, f"{msg.STAGE}: malformed ({exc})")
            return None
        finally:
            self.last_decode = time.perf_counter() - t0


def run_round(
    updates: Mapping[str, NDArray[np.floating]],
    config: SecAggConfig,
    dropouts: Mapping[str, str] | None = None,
    *,
    weights: Mapping[str, int] | None = None,
    identities: Mapping[str, Identity] | None = None,
    intercept: Intercept | None = None,
    client_class: Mapping[str, type[SecAggClient]] | None = None,
    random_bytes: Callable[[str], RandomBytes] | None = None,
) -> RoundResult:
    """Run one round in this process: a :class:`SecAggServer` and one :class:`SecAggClient`
    per entry of ``updates`` (client id -> 1-D float array, all of one length), every message
    passed through ``to_bytes``/``from_bytes``.

    ``dropouts`` maps a client to the stage before which it vanishes: ``"share_keys"``,
    ``"masked_input"`` or ``"unmask"`` (or ``"advertise_keys"``: never shows up).
    ``weights`` are sample counts (default 1; at most ``config.max_weight``). ``updates`` are
    what is aggregated: a model's change, clipped to ``[-config.clip, config.clip]``, not its
    weights (values beyond the clip are clipped: one :class:`ClippedValuesWarning` and
    ``report.clipped`` say how many, per client).
    ``identities`` (default: fresh ones; the server is ``"aggregator"``), ``intercept``
    (sees and may replace or drop every message in transit), ``client_class`` (a client's
    implementation) and ``random_bytes`` (a client's randomness source) exist for tests.

    RoundFailed if the round cannot complete (too many dropouts for the threshold, fewer
    than ``config.min_survivors`` inputs, or an unmasked sum that fails the weight or range
    check); its message adds why clients stopped at that stage, when they did. The server's
    own checks turn every bad client message into a dropout instead.
    """
    if not isinstance(config, SecAggConfig):
        raise InvalidArgumentType("config", f"expected a SecAggConfig, got {type(config).__name__}")
    for what, value in (
        ("updates", updates),
        ("dropouts", dropouts),
        ("weights", weights),
        ("identities", identities),
        ("client_class", client_class),
    ):
        if value is not None and not isinstance(value, Mapping):
            raise InvalidArgumentType(what, f"expected a mapping, got {type(value).__name__}")
    for c, ident in (identities or {}).items():
        if not isinstance(ident, Identity):
            raise InvalidArgumentType(f"identities[{c!r}]", f"expected an Identity, got {type(ident).__name__}")
    drops = dict(dropouts or {})
    for c, stage in drops.items():
        if c not in updates:
            raise InvalidArgument("dropouts", f"unknown client {c!r}")
        if stage not in DROPOUT_STAGES:
            raise InvalidArgument("dropouts", f"{c!r}: stage must be one of {DROPOUT_STAGES}, got {stage!r}")
    ids = sorted(updates)
    if not ids:
        raise InvalidArgument("updates", "no clients")
    for c, u in updates.items():
        if np.asarray(u).dtype not in (np.float32, np.float64):
            raise InvalidArgumentType(
                f"updates[{c!r}]", f"expected float32 or float64 values, got {np.asarray(u).dtype}"
            )
    dims = {np.asarray(u).shape for u in updates.values()}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise InvalidArgument("updates", "every update must be a 1-D array of the same length")
    dimension = next(iter(dims))[0]
    if len(ids) < config.min_survivors:
        raise InvalidArgument("updates", f"{len(ids)} clients, fewer than min_survivors={config.min_survivors}")
    config.threshold_for(len(ids))  # InvalidArgument: no usable threshold for this many clients
    config.scale_for(len(ids))  # QuantizationError: the sum could overflow the ring
    idents = dict(identities or {})
    for c in [*ids, SERVER_NAME]:
        if c not in idents:
            idents[c] = Identity.generate(c)
    verify_keys = {name: ident.verify_key for name, ident in idents.items()}
    report = RoundReport()
    wire = _Wire(report, intercept)
    server = SecAggServer(
        idents[SERVER_NAME],
        config,
        clients=ids,
        verify_keys=verify_keys,
        dimension=dimension,
        random_bytes=random_bytes(SERVER_NAME) if random_bytes else None,
    )
    classes = dict(client_class or {})
    clients = {
        c: classes.get(c, SecAggClient)(
            idents[c],
            config,
            server=SERVER_NAME,
            verify_keys=verify_keys,
            random_bytes=random_bytes(c) if random_bytes else None,
        )
        for c in ids
    }
    client_time: dict[str, float] = defaultdict(float)
    server_time: dict[str, float] = {}
    gone: set[str] = set()

    def present(c: str, stage: str) -> bool:
        if c in gone:
            return False
        if drops.get(c) == stage:
            gone.add(c)
            return False
        return True

    def client_step(
        stage: str,
        inbox: Mapping[str, Message | None],
        act: Callable[[SecAggClient, Any], Message],
        kind: type[M],
        receive: Callable[[M], object] | None = None,
    ) -> list[M]:
        """Each present client acts on its inbox message; its reply goes over the wire to
        the server: collected, or handed to ``receive`` at once (the server streams it)."""
        delivered: list[M] = []
        spent = served = 0.0
        for c in ids:
            if not present(c, stage):
                continue
            msg = inbox.get(c)
            if msg is None and stage != Stage.ADVERTISE_KEYS:
                gone.add(c)  # nothing arrived for it: it cannot go on
                continue
            t0 = time.perf_counter()
            try:
                out = act(clients[c], msg)
            except FedLedgerError as exc:
                report.rejected.setdefault(c, f"{stage}: the client stopped ({type(exc).__name__}: {exc})")
                gone.add(c)
                dt = time.perf_counter() - t0
                spent += dt
                client_time[c] += dt
                continue
            dt = time.perf_counter() - t0
            got = wire.send(out, kind, up=True)
            del out
            dt += wire.last_encode
            spent += dt
            client_time[c] += dt
            served += wire.last_decode
            if got is None:
                continue
            if receive is None:
                delivered.append(got)
            else:
                t0 = time.perf_counter()
                receive(got)
                served += time.perf_counter() - t0
        report.seconds.setdefault(stage, {})["clients"] = spent
        server_time[stage] = served
        return delivered

    def broadcast(msgs: Mapping[str, Message], kind: type[M]) -> dict[str, M | None]:
        return {c: wire.send(m, kind, up=False) for c, m in msgs.items()}

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        except RoundFailed as exc:
            stopped = sorted(
                (c, why) for c, why in report.rejected.items() if why.startswith(f"{stage}: the client stopped")
            )
            if not stopped:
                raise
            listed = "; ".join(f"{c}: {why.split(': ', 1)[1]}" for c, why in stopped[:5])
            more = f" (and {len(stopped) - 5} more)" if len(stopped) > 5 else ""
            raise RoundFailed(f"{exc}; clients that stopped at {stage}: {listed}{more}", exc.client) from None
        finally:
            spent = time.perf_counter() - t0 + server_time.get(stage, 0.0)
            report.seconds.setdefault(stage, {})["server"] = spent
            report.dropped = dict(server.dropped)
            for c, why in server.rejected.items():
                report.rejected.setdefault(c, why)
            report.misbehaving = dict(server.misbehaving)

    weight_of = dict(weights or {})
    adverts = client_step(Stage.ADVERTISE_KEYS, {}, lambda cl, _m: cl.advertise_keys(), AdvertiseKeys)
    directories = broadcast(timed(Stage.ADVERTISE_KEYS, lambda: server.key_directories(adverts)), KeyDirectory)
    shares = client_step(Stage.SHARE_KEYS, directories, lambda cl, m: cl.share_keys(m), ShareKeys)
    relayed = broadcast(timed(Stage.SHARE_KEYS, lambda: server.relay_shares(shares)), RelayedShares)
    # Masked inputs stream into the server's running sum as they arrive. Each client warns
    # about clipped values; the simulator gathers the counts into one warning and the report.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClippedValuesWarning)
        client_step(
            Stage.MASKED_INPUT,
            relayed,
            lambda cl, m: cl.masked_input(m, np.asarray(updates[cl.name]), weight_of.get(cl.name, 1)),
            MaskedInput,
            server.receive_masked_input,
        )
    report.clipped = {name: cl.clipped for name, cl in sorted(clients.items()) if cl.clipped}
    if report.clipped:
        warnings.warn(
            f"{len(report.clipped)} of {len(clients)} clients had update values outside ±{float(config.clip):g}, "
            f"clipped ({sum(report.clipped.values())} values in all; see report.clipped): secure aggregation "
            "sums updates (a model's change), not weights; send the change, or raise SecAggConfig.clip",
            ClippedValuesWarning,
            stacklevel=2,
        )
    requests = broadcast(timed(Stage.MASKED_INPUT, lambda: server.unmask_requests()), UnmaskRequest)
    responses = client_step(Stage.UNMASK, requests, lambda cl, m: cl.unmask(m), UnmaskResponse)
    result = timed(Stage.UNMASK, lambda: server.aggregate(responses))
    report.bytes_up = dict(wire.up)
    report.bytes_down = dict(wire.down)
    report.client_seconds = dict(client_time)
    report.outcome = result.outcome
    return RoundResult(result.aggregate, result.total_weight, result.scale, report)
