"""What the aggregators share: the input checks, the minimum-cohort rule, and the
in-process driver that plays a round's envelopes between a server and its parties."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar, Final, Protocol

import numpy as np
from numpy.typing import NDArray

from fedledger.aggregators.base import AggregateResult, AggregatorClient, AggregatorServer, Envelope
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import InvalidArgument, InvalidArgumentType, SecAggError
from fedledger.identity import Identity

__all__ = ["MIN_SURVIVORS", "SERVER", "Inputs", "check_inputs", "drive", "min_survivors", "play"]

#: No aggregator sums fewer updates than this, whatever the policy says.
MIN_SURVIVORS: Final = 3
#: The aggregator's name in :meth:`run`.
SERVER: Final = "aggregator"
_MAX_ADVANCES: Final = 16


def min_survivors(min_cohort: object) -> int:
    """The one minimum-cohort rule: the policy's ``min_cohort``, never below :data:`MIN_SURVIVORS`."""
    if type(min_cohort) is not int:
        raise InvalidArgumentType("min_cohort", f"expected int, got {type(min_cohort).__name__}")
    if min_cohort < 1:
        raise InvalidArgument("min_cohort", f"must be >= 1, got {min_cohort}")
    return max(min_cohort, MIN_SURVIVORS)


def check_update(update: object, what: str, like: NDArray[np.floating] | None = None) -> NDArray[np.floating]:
    """``update`` if it is a 1-D float32/float64 array of finite values (of ``like``'s shape
    and dtype when given); a typed error otherwise."""
    if not isinstance(update, np.ndarray) or update.dtype not in (np.float32, np.float64):
        raise InvalidArgumentType(what, "expected a 1-D float32 or float64 numpy array")
    if update.ndim != 1:
        raise InvalidArgument(what, f"must be 1-D, got shape {update.shape}")
    if like is not None and (update.shape != like.shape or update.dtype != like.dtype):
        raise InvalidArgument(
            what, f"shape {update.shape} and dtype {update.dtype}, the others {like.shape} and {like.dtype}"
        )
    if update.size and not np.isfinite(update).all():
        raise InvalidArgument(what, "holds NaN or infinite values")
    return update


def check_weight(weight: object, what: str) -> int:
    if type(weight) is not int:
        raise InvalidArgumentType(what, f"expected an int sample count, got {type(weight).__name__}")
    if weight < 1:
        raise InvalidArgument(what, f"must be >= 1, got {weight}")
    return weight


@dataclass(frozen=True)
class Inputs:
    """Checked inputs of :meth:`run`."""

    ids: tuple[str, ...]
    updates: dict[str, NDArray[np.floating]]
    weights: dict[str, int]
    dropouts: dict[str, str]
    dimension: int


def check_inputs(
    updates: object,
    weights: object,
    dropouts: object,
    *,
    stages: Iterable[str],
    floor: int,
    others: Mapping[str, Iterable[str]] | None = None,
) -> Inputs:
    """Every check :meth:`run` makes before anything is sent. ``stages`` are the sites'
    dropout stages; ``others`` maps other parties (trustees) to their dropout stages."""
    for what, value in (("updates", updates), ("weights", weights), ("dropouts", dropouts)):
        if value is not None and not isinstance(value, Mapping):
            raise InvalidArgumentType(what, f"expected a mapping, got {type(value).__name__}")
    assert isinstance(updates, Mapping)
    if not updates:
        raise InvalidArgument("updates", "no updates")
    if any(type(c) is not str for c in updates):
        raise InvalidArgumentType("updates", "site names must be str")
    ids = tuple(sorted(updates))
    first = check_update(updates[ids[0]], f"updates[{ids[0]!r}]")
    arrays = {c: check_update(updates[c], f"updates[{c!r}]", first) for c in ids}
    ws = dict(weights or {})  # type: ignore[call-overload]
    for c, w in ws.items():
        if c not in updates:
            raise InvalidArgument("weights", f"unknown site {c!r}")
        check_weight(w, f"weights[{c!r}]")
    drops = dict(dropouts or {})  # type: ignore[call-overload]
    site_stages = tuple(stages)
    other = {k: tuple(v) for k, v in (others or {}).items()}
    for c, stage in drops.items():
        allowed = site_stages if c in updates else other.get(c)
        if allowed is None:
            raise InvalidArgument("dropouts", f"unknown site {c!r}")
        if stage not in allowed:
            raise InvalidArgument("dropouts", f"{c!r}: stage must be one of {allowed}, got {stage!r}")
    if len(ids) < floor:
        raise InvalidArgument("updates", f"{len(ids)} sites, fewer than the minimum cohort {floor}")
    return Inputs(ids, arrays, {c: ws.get(c, 1) for c in ids}, drops, int(first.shape[0]))


def _respond(party: Party, env: Envelope) -> Callable[[], list[Envelope]]:
    return lambda: party.respond(env)


def _collect(server: AggregatorServer, env: Envelope) -> Callable[[], list[Envelope]]:
    def run() -> list[Envelope]:
        server.collect(env)
        return []

    return run


class Party(Protocol):
    """A party of a round other than the server: it answers envelopes addressed to it."""

    def respond(self, message: Envelope) -> list[Envelope]: ...


@dataclass
class Traffic:
    bytes_up: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_down: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    #: stage -> {"server": s, "parties": s}
    stages: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))


Intercept = Callable[[Envelope], "Envelope | None"]


def drive(
    server: AggregatorServer,
    parties: Mapping[str, Party],
    starts: Mapping[str, Callable[[], list[Envelope]]],
    dropouts: Mapping[str, str],
    *,
    intercept: Intercept | None = None,
) -> AggregateResult:
    """Play a round: the server starts, each site starts, every envelope is delivered (a
    party leaves before the first message it would send at its dropout stage, and takes no
    part after), the server advances when nothing is in flight, until it is done. The
    result carries bytes per party (up: to the server, down: from it) and seconds per role."""
    traffic = Traffic()
    gone: set[str] = set()

    def timed(role: str, fn: Callable[[], list[Envelope]], stage: str) -> list[Envelope]:
        t0 = time.perf_counter()
        try:
            return list(fn())
        finally:
            spent = time.perf_counter() - t0
            traffic.seconds[role] += spent
            traffic.stages[stage]["server" if role == "server" else "parties"] += spent

    queue: deque[Envelope] = deque(timed("server", server.start, "start"))
    for name, start in starts.items():
        queue.extend(timed(name, start, "start"))
    for _ in range(_MAX_ADVANCES):
        while queue:
            env = queue.popleft()
            if intercept is not None:
                changed = intercept(env)
                if changed is None:
                    continue
                env = changed
            if env.receiver in parties:
                if env.receiver in gone:
                    continue
                traffic.bytes_down[env.receiver] += len(env.data)
                queue.extend(timed(env.receiver, _respond(parties[env.receiver], env), env.stage))
            else:
                if env.sender in gone or dropouts.get(env.sender) == env.stage:
                    gone.add(env.sender)
                    continue
                traffic.bytes_up[env.sender] += len(env.data)
                timed("server", _collect(server, env), env.stage)
        if server.done:
            break
        queue.extend(timed("server", server.advance, f"close {server.stage}"))
    else:  # pragma: no cover - a server that never finishes
        raise SecAggError("the round did not finish")
    result = server.finish()
    return replace(
        result,
        bytes_up=dict(traffic.bytes_up),
        bytes_down=dict(traffic.bytes_down),
        seconds=dict(traffic.seconds),
        stage_seconds={k: dict(v) for k, v in traffic.stages.items()},
    )


class _Wire(Protocol):
    STAGE: ClassVar[str]

    @property
    def sender(self) -> str: ...

    @property
    def receiver(self) -> str: ...

    def to_bytes(self) -> bytes: ...


def envelope(message: _Wire) -> Envelope:
    """A message as an envelope: its stage, sender, receiver and bytes."""
    return Envelope(str(message.STAGE), message.sender, message.receiver, message.to_bytes())


def starter(client: AggregatorClient, update: NDArray[np.floating], weight: int) -> Callable[[], list[Envelope]]:
    """What :func:`drive` calls to start ``client`` with its update and weight."""
    return lambda: client.start(update, weight)


class _Factory(Protocol):
    def server(
        self,
        identity: Identity,
        *,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        round_id: int,
    ) -> AggregatorServer: ...

    def client(
        self, identity: Identity, *, server: str, verify_keys: Mapping[str, VerifyKey], round_id: int
    ) -> AggregatorClient: ...


def play(
    aggregator: _Factory,
    inp: Inputs,
    round_id: int,
    *,
    others: Iterable[str] = (),
    make_other: Callable[[Identity, Mapping[str, VerifyKey]], Party] | None = None,
) -> AggregateResult:
    """One round in this process: fresh identities for the sites, the ``others`` (parties that
    start with no update, e.g. trustees, made by ``make_other``) and the server; every envelope
    through :func:`drive`."""
    extra = list(others)
    idents = {c: Identity.generate(c) for c in [*inp.ids, *extra, SERVER]}
    keys = {c: i.verify_key for c, i in idents.items()}
    server = aggregator.server(
        idents[SERVER], sites=inp.ids, verify_keys=keys, dimension=inp.dimension, round_id=round_id
    )
    clients = {c: aggregator.client(idents[c], server=SERVER, verify_keys=keys, round_id=round_id) for c in inp.ids}
    parties: dict[str, Party] = dict(clients)
    for name in extra:
        assert make_other is not None
        parties[name] = make_other(idents[name], keys)
    starts = {c: starter(clients[c], inp.updates[c], inp.weights[c]) for c in inp.ids}
    return drive(server, parties, starts, inp.dropouts)
