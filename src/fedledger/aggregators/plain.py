"""``Plain``: the baseline. Each site sends weight x update as float32 (or float64) bytes,
sealed (AES-256-GCM) to the aggregator and signed; the aggregator sums. Nothing is hidden
from the aggregator: it sees every site's weighted update. The seal hides them from
everyone else on the wire."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, Final

import numpy as np
from numpy.typing import NDArray

from fedledger import encoding
from fedledger.aggregators._common import (
    check_inputs,
    check_update,
    check_weight,
    envelope,
    min_survivors,
    play,
)
from fedledger.aggregators.base import AggregateResult, Envelope
from fedledger.crypto import agreement, masking, seal
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidSignature,
    RoundFailed,
    SecAggError,
)
from fedledger.heagg import config as hc
from fedledger.heagg.messages import Announce, EncryptedUpdate
from fedledger.identity import Identity

__all__ = ["Plain", "PlainClient", "PlainServer"]

PROTOCOL: Final = "fedledger/plain/v1"
PURPOSE: Final = "fedledger/plain/update"


class PlainAnnounce(Announce):
    """The aggregator's round key and parameters (``announce``), under the plain protocol's name."""

    PROTOCOL: ClassVar[str] = PROTOCOL


class PlainUpdate(EncryptedUpdate):
    """A site's weighted update (``update``): the tail is its float bytes sealed to the
    aggregator, ``root`` their RFC 9162 root (the commitment)."""

    PROTOCOL: ClassVar[str] = PROTOCOL


_DTYPES: Final = {"float32": np.float32, "float64": np.float64}


class PlainClient:
    """One site: :meth:`start` takes the update and weight, :meth:`respond` answers the
    aggregator's ``announce`` with the sealed, signed ``update``."""

    def __init__(
        self,
        identity: Identity,
        *,
        server: str,
        verify_keys: Mapping[str, VerifyKey],
        dtype: str = "float32",
        round_id: int = 1,
        random_bytes: Callable[[int], bytes] | None = None,
        sealed: bool = True,
    ) -> None:
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected an Identity, got {type(identity).__name__}")
        self.identity = identity
        self.name = identity.name
        self.sealed = bool(sealed)
        self.server = server
        self.dtype = dtype
        self.round_id = round_id
        self._keys = dict(verify_keys)
        self._rand = random_bytes or os.urandom
        self._update: NDArray[np.floating] | None = None
        self._weight = 1
        #: Why this site stopped answering ("" while it has not).
        self.error = ""

    def start(self, update: NDArray[np.floating], weight: int) -> list[Envelope]:
        self._update = check_update(update, "update")
        self._weight = check_weight(weight, "weight")
        return []

    def respond(self, message: Envelope) -> list[Envelope]:
        try:
            return [envelope(self._answer(message))]
        except FedLedgerError as exc:
            self.error = f"{message.stage}: {exc}"
            return []

    def _answer(self, message: Envelope) -> PlainUpdate:
        if self._update is None:
            raise SecAggError(f"{self.name}: not started")
        ann = PlainAnnounce.from_bytes(message.data)
        if ann.round_id != self.round_id or ann.sender != self.server or ann.receiver != self.name:
            raise SecAggError(f"{self.name}: an announcement of another round, sender or receiver", ann.sender)
        key = self._keys.get(self.server)
        if key is None:
            raise SecAggError(f"{self.name}: no key for {self.server!r}")
        ann.verify(key)
        if ann.params.get("dtype") != self.dtype or ann.params.get("dimension") != self._update.shape[0]:
            raise SecAggError(f"{self.name}: the round's dtype or dimension is not this site's", self.server)
        data = (self._update.astype(np.float64) * self._weight).astype(_DTYPES[self.dtype]).tobytes()
        eph = agreement.AgreementKey.from_bytes(self._rand(32))
        if ann.params.get("sealed", True) is not self.sealed:
            raise SecAggError(f"{self.name}: the round's sealing is not this site's", self.server)
        sealed = (
            seal.seal_records(
                hc.seal_key(eph, ann.server_key, self.round_id),
                data,
                hc.context(self.name, self.server, self.round_id, PURPOSE),
            )
            if self.sealed
            else data
        )
        msg = PlainUpdate(
            round_id=self.round_id,
            sender=self.name,
            receiver=self.server,
            weight=self._weight,
            root=masking.vector_root(data),
            site_key=eph.public_key.to_bytes(),
            tail=sealed,
        )
        return msg.signed(self.identity)


class PlainServer:
    """The aggregator: ``announce`` to every site, collect ``update`` s, sum."""

    def __init__(
        self,
        identity: Identity,
        *,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        dtype: str = "float32",
        min_survivors: int = 3,
        round_id: int = 1,
        parameters: Mapping[str, object] | None = None,
        sealed: bool = True,
    ) -> None:
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected an Identity, got {type(identity).__name__}")
        if dtype not in _DTYPES:
            raise InvalidArgument("dtype", f"must be 'float32' or 'float64', got {dtype!r}")
        self.identity = identity
        self.name = identity.name
        self.sites = frozenset(sites)
        self.dimension = dimension
        self.dtype = dtype
        self.sealed = bool(sealed)
        self.min_survivors = min_survivors
        self.round_id = round_id
        self.parameters = dict(parameters or {})
        self._keys = dict(verify_keys)
        self._round_key = agreement.AgreementKey.generate()
        self._stage = "announce"
        self._sum = np.zeros(dimension, dtype=np.float64)
        self.rejected: dict[str, str] = {}
        self.dropped: dict[str, str] = {}
        self.commitments: dict[str, bytes] = {}
        self.weights: dict[str, int] = {}
        self._result: AggregateResult | None = None

    @property
    def stage(self) -> str:
        return self._stage

    @property
    def done(self) -> bool:
        return self._result is not None

    def expecting(self) -> frozenset[str]:
        return self.sites - set(self.commitments) if self._stage == "update" else frozenset()

    def start(self) -> list[Envelope]:
        if self._stage != "announce":
            raise SecAggError(f"aggregator: cannot start at stage {self._stage!r}")
        self._stage = "update"
        ids = tuple(sorted(self.sites))
        params: dict[str, encoding.Value] = {
            "dtype": self.dtype,
            "dimension": self.dimension,
            "min_survivors": self.min_survivors,
            "sealed": self.sealed,
        }
        srv = self._round_key.public_key.to_bytes()
        return [
            envelope(
                PlainAnnounce(
                    round_id=self.round_id,
                    sender=self.name,
                    receiver=c,
                    participants=ids,
                    server_key=srv,
                    params=params,
                ).signed(self.identity)
            )
            for c in ids
        ]

    def _reject(self, who: str, why: str) -> None:
        if who in self.sites:
            self.rejected.setdefault(who, f"update: {why}")

    def collect(self, message: Envelope) -> None:
        if self._stage != "update":
            raise SecAggError(f"aggregator: nothing is collected at stage {self._stage!r}")
        try:
            msg = PlainUpdate.from_bytes(message.data)
        except EncodingError as exc:
            self._reject(message.sender, f"malformed ({exc})")
            return
        who = msg.sender
        if who not in self.sites or who in self.commitments:
            return
        try:
            if msg.round_id != self.round_id or msg.receiver != self.name:
                raise SecAggError(f"a message of round {msg.round_id} to {msg.receiver!r}")
            msg.verify(self._keys[who])
            width = np.dtype(_DTYPES[self.dtype]).itemsize
            data = (
                seal.unseal_records(
                    hc.seal_key(self._round_key, msg.site_key, self.round_id),
                    msg.tail,
                    hc.context(who, self.name, self.round_id, PURPOSE),
                )
                if self.sealed
                else bytes(msg.tail)
            )
            if len(data) != self.dimension * width or masking.vector_root(data) != msg.root:
                raise SecAggError("the opened update is not the length or root it signed")
            values = np.frombuffer(data, dtype=_DTYPES[self.dtype])
            if not np.isfinite(values).all():
                raise SecAggError("NaN or infinite values")
            if not 1 <= msg.weight < 2**63:
                raise SecAggError(f"declared weight {msg.weight}")
        except (FedLedgerError, KeyError, ValueError) as exc:
            why = f"bad signature ({exc})" if isinstance(exc, InvalidSignature) else str(exc)
            self._reject(who, why)
            return
        self._sum += values
        self.commitments[who] = msg.root
        self.weights[who] = msg.weight
        self.rejected.pop(who, None)

    def advance(self) -> list[Envelope]:
        if self._stage != "update":
            raise SecAggError(f"aggregator: cannot advance at stage {self._stage!r}")
        for c in sorted(self.sites - set(self.commitments)):
            self.dropped.setdefault(c, "update")
        survivors = tuple(sorted(self.commitments))
        if len(survivors) < self.min_survivors:
            self._stage = "failed"
            raise RoundFailed(
                f"after update: only {len(survivors)} update(s) arrived, fewer than min_survivors={self.min_survivors}"
            )
        self._stage = "done"
        self._result = AggregateResult(
            aggregator="plain",
            aggregate=self._sum,
            total_weight=sum(self.weights.values()),
            survivors=survivors,
            commitments=dict(self.commitments),
            weights=dict(self.weights),
            dropouts=dict(self.dropped),
            parameters=self.parameters,
        )
        return []

    def finish(self) -> AggregateResult:
        if self._result is None:
            raise SecAggError(f"aggregator: no result at stage {self._stage!r}")
        return self._result


class Plain:
    """The baseline aggregator (see the module doc). ``min_cohort``: the training policy's
    minimum cohort (the floor is max(min_cohort, 3)); ``dtype``: ``"float32"`` or
    ``"float64"`` on the wire."""

    name = "plain"
    STAGES: ClassVar[tuple[str, ...]] = ("update",)

    def __init__(self, min_cohort: int = 3, *, dtype: str = "float32", sealed: bool = True) -> None:
        self.min_survivors = min_survivors(min_cohort)
        if dtype not in _DTYPES:
            raise InvalidArgument("dtype", f"must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = dtype
        self.sealed = bool(sealed)

    @property
    def parameters(self) -> Mapping[str, object]:
        return {"name": self.name, "dtype": self.dtype, "min_survivors": self.min_survivors, "sealed": self.sealed}

    def server(
        self,
        identity: Identity,
        *,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        round_id: int = 1,
    ) -> PlainServer:
        return PlainServer(
            identity,
            sites=sites,
            verify_keys=verify_keys,
            dimension=dimension,
            dtype=self.dtype,
            min_survivors=self.min_survivors,
            round_id=round_id,
            parameters=self.parameters,
            sealed=self.sealed,
        )

    def client(
        self, identity: Identity, *, server: str, verify_keys: Mapping[str, VerifyKey], round_id: int = 1
    ) -> PlainClient:
        return PlainClient(
            identity, server=server, verify_keys=verify_keys, dtype=self.dtype, round_id=round_id, sealed=self.sealed
        )

    def run(
        self,
        updates: Mapping[str, NDArray[np.floating]],
        weights: Mapping[str, int] | None = None,
        dropouts: Mapping[str, str] | None = None,
        *,
        round_id: int = 1,
    ) -> AggregateResult:
        inp = check_inputs(updates, weights, dropouts, stages=self.STAGES, floor=self.min_survivors)
        return play(self, inp, round_id)
