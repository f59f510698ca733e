"""``Masked``: SecAgg+ (:mod:`fedledger.secagg`) behind the aggregator protocol. The
aggregator sees masked vectors only, and learns the survivors' sum (and each one's declared
weight); masked vectors and revealed shares are sealed to it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from fedledger.aggregators._common import (
    check_inputs,
    check_update,
    check_weight,
    envelope,
    min_survivors,
    play,
)
from fedledger.aggregators.base import AggregateResult, Envelope
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import EncodingError, FedLedgerError, InvalidArgument, InvalidSignature, SecAggError
from fedledger.identity import Identity
from fedledger.secagg import (
    DROPOUT_STAGES,
    AdvertiseKeys,
    Aggregate,
    KeyDirectory,
    MaskedInput,
    Message,
    RelayedShares,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareKeys,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from fedledger.secagg.client import RandomBytes

__all__ = ["Masked", "MaskedClient", "MaskedServer"]

_UP: dict[str, type[Message]] = {
    Stage.ADVERTISE_KEYS: AdvertiseKeys,
    Stage.SHARE_KEYS: ShareKeys,
    Stage.MASKED_INPUT: MaskedInput,
    Stage.UNMASK: UnmaskResponse,
}
_NEXT: dict[str, str] = {
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.UNMASK,
    Stage.UNMASK: Stage.DONE,
}


class MaskedClient:
    """One site: a :class:`~fedledger.secagg.SecAggClient` answering envelopes. :meth:`start`
    sends ``advertise_keys``; :meth:`respond` answers ``key_directory``, ``relayed_shares``
    and ``unmask_request``. A message the client refuses is answered with nothing (the site
    drops out at that stage; :attr:`error` says why). ``random_bytes`` draws the site's round
    secrets (``os.urandom`` by default; a seeded stream replays a site in another process)."""

    client_class: type[SecAggClient] = SecAggClient

    def __init__(
        self,
        identity: Identity,
        config: SecAggConfig,
        *,
        server: str,
        verify_keys: Mapping[str, VerifyKey],
        random_bytes: RandomBytes | None = None,
    ) -> None:
        self.name = identity.name
        self.client = self.client_class(
            identity, config, server=server, verify_keys=verify_keys, random_bytes=random_bytes
        )
        self._update: NDArray[np.floating] | None = None
        self._weight = 1
        self._max_weight = config.max_weight
        self.error = ""

    def start(self, update: NDArray[np.floating], weight: int) -> list[Envelope]:
        self._update = check_update(update, "update")
        self._weight = check_weight(weight, "weight")
        if weight > self._max_weight:
            raise InvalidArgument("weight", f"{weight} exceeds max_weight={self._max_weight}")
        return [envelope(self.client.advertise_keys())]

    def respond(self, message: Envelope) -> list[Envelope]:
        try:
            out: Message
            if message.stage == Stage.KEY_DIRECTORY:
                out = self.client.share_keys(KeyDirectory.from_bytes(message.data))
            elif message.stage == Stage.RELAYED_SHARES:
                assert self._update is not None
                out = self.client.masked_input(RelayedShares.from_bytes(message.data), self._update, self._weight)
            elif message.stage == Stage.UNMASK_REQUEST:
                out = self.client.unmask(UnmaskRequest.from_bytes(message.data))
            else:
                raise SecAggError(f"{self.name}: unexpected stage {message.stage!r}")
        except FedLedgerError as exc:
            self.error = f"{message.stage}: {exc}"
            return []
        return [envelope(out)]


class MaskedServer:
    """The aggregator: a :class:`~fedledger.secagg.SecAggServer` collecting envelopes. Its
    :attr:`stage` is the stage of the client messages being collected: ``advertise_keys``,
    ``share_keys``, ``masked_input``, ``unmask`` (masked inputs are added as they arrive)."""

    def __init__(
        self,
        identity: Identity,
        config: SecAggConfig,
        *,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        parameters: Mapping[str, object] | None = None,
    ) -> None:
        self.server = SecAggServer(identity, config, clients=sites, verify_keys=verify_keys, dimension=dimension)
        self.config = config
        self.parameters = dict(parameters or {})
        self._keys = dict(verify_keys)
        self._stage: str = Stage.ADVERTISE_KEYS
        self._expected = frozenset(self.server.clients)
        self._heard: set[str] = set()
        self._inbox: list[Message] = []
        self._aggregate: Aggregate | None = None

    @property
    def stage(self) -> str:
        return str(self._stage)

    @property
    def done(self) -> bool:
        return self._aggregate is not None

    def expecting(self) -> frozenset[str]:
        return self._expected - self._heard

    def start(self) -> list[Envelope]:
        return []

    def collect(self, message: Envelope) -> None:
        kind = _UP.get(self._stage)
        if kind is None:
            raise SecAggError(f"aggregator: nothing is collected at stage {self._stage!r}")
        try:
            msg = kind.from_bytes(message.data)
        except EncodingError as exc:
            if message.sender in self.server.clients and message.sender not in self._heard:
                self.server.rejected.setdefault(message.sender, f"{self._stage}: malformed ({exc})")
            return
        if self._stage == Stage.MASKED_INPUT:
            if self.server.receive_masked_input(msg):  # type: ignore[arg-type]
                self._heard.add(msg.sender)
            return
        key = self._keys.get(msg.sender)
        try:
            if key is None:
                raise InvalidSignature("unknown sender")
            msg.verify_signature(key)
        except InvalidSignature:
            pass
        else:
            self._heard.add(msg.sender)
        self._inbox.append(msg)

    def advance(self) -> list[Envelope]:
        stage, inbox = self._stage, self._inbox
        self._inbox = []
        self._heard = set()
        out: Mapping[str, Message]
        if stage == Stage.ADVERTISE_KEYS:
            out = self.server.key_directories(inbox)  # type: ignore[arg-type]
        elif stage == Stage.SHARE_KEYS:
            out = self.server.relay_shares(inbox)  # type: ignore[arg-type]
        elif stage == Stage.MASKED_INPUT:
            out = self.server.unmask_requests()
        elif stage == Stage.UNMASK:
            self._aggregate = self.server.aggregate(inbox)  # type: ignore[arg-type]
            out = {}
        else:
            raise SecAggError(f"aggregator: cannot advance at stage {stage!r}")
        self._stage = _NEXT[stage]
        self._expected = frozenset(out)
        return [envelope(m) for m in out.values()]

    def finish(self) -> AggregateResult:
        agg = self._aggregate
        if agg is None:
            raise SecAggError(f"aggregator: no result at stage {self._stage!r}")
        out = agg.outcome
        params = dict(self.parameters)
        params.update(
            threshold=out.params["threshold"],
            neighbors=out.params["degree"],
            scale=agg.scale,
            min_survivors=self.config.min_survivors,
        )
        return AggregateResult(
            aggregator="masked",
            aggregate=agg.aggregate,
            total_weight=agg.total_weight,
            survivors=agg.survivors,
            commitments=dict(out.commitments),
            weights=dict(agg.weights),
            dropouts={c: str(getattr(s, "value", s)) for c, s in self.server.dropped.items()},
            parameters=params,
        )


class Masked:
    """SecAgg+ as an aggregator. ``min_cohort``: the policy's minimum cohort (the floor is
    max(min_cohort, 3)); ``bits`` (32 or 64), ``clip``, ``max_weight`` (the largest weight a
    site may declare), ``neighbors`` (``"auto"``, an int, or None for the full graph) and
    ``threshold`` (None: a majority of each neighborhood) are :class:`~fedledger.secagg.SecAggConfig`'s.
    Dropout stages: secagg's (``advertise_keys``, ``share_keys``, ``masked_input``, ``unmask``)."""

    name = "masked"
    STAGES: ClassVar[tuple[str, ...]] = tuple(str(s) for s in DROPOUT_STAGES)

    def __init__(
        self,
        min_cohort: int = 3,
        *,
        bits: int = 32,
        clip: float = 1.0,
        max_weight: int = 1000,
        neighbors: int | None | str = "auto",
        threshold: int | None = None,
        sealed: bool = True,
    ) -> None:
        self.min_survivors = min_survivors(min_cohort)
        self.sealed = bool(sealed)
        self.bits = bits
        self.clip = clip
        self.max_weight = max_weight
        self.neighbors = neighbors
        self.threshold = threshold
        self.config(1)  # the settings are checked here, not at the first round

    def config(self, round_id: int) -> SecAggConfig:
        return SecAggConfig(
            threshold=self.threshold,
            neighbors=self.neighbors,  # type: ignore[arg-type]
            bits=self.bits,
            clip=self.clip,
            max_weight=self.max_weight,
            min_survivors=self.min_survivors,
            round_id=round_id,
            seal_inputs=self.sealed,
        )

    @property
    def parameters(self) -> Mapping[str, object]:
        return {
            "name": self.name,
            "bits": self.bits,
            "clip": float(self.clip),
            "max_weight": self.max_weight,
            "neighbors": self.neighbors,
            "threshold": self.threshold,
            "min_survivors": self.min_survivors,
            "sealed": self.sealed,
        }

    def server(
        self,
        identity: Identity,
        *,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        round_id: int = 1,
    ) -> MaskedServer:
        return MaskedServer(
            identity,
            self.config(round_id),
            sites=sites,
            verify_keys=verify_keys,
            dimension=dimension,
            parameters=self.parameters,
        )

    def client(
        self, identity: Identity, *, server: str, verify_keys: Mapping[str, VerifyKey], round_id: int = 1
    ) -> MaskedClient:
        return MaskedClient(identity, self.config(round_id), server=server, verify_keys=verify_keys)

    def run(
        self,
        updates: Mapping[str, NDArray[np.floating]],
        weights: Mapping[str, int] | None = None,
        dropouts: Mapping[str, str] | None = None,
        *,
        round_id: int = 1,
    ) -> AggregateResult:
        inp = check_inputs(updates, weights, dropouts, stages=self.STAGES, floor=self.min_survivors)
        for c, w in inp.weights.items():
            if w > self.max_weight:
                raise InvalidArgument(f"weights[{c!r}]", f"{w} exceeds max_weight={self.max_weight}")
        cfg = self.config(round_id)
        cfg.threshold_for(len(inp.ids))
        cfg.scale_for(len(inp.ids))
        return play(self, inp, round_id)
