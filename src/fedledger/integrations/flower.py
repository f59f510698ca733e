"""Flower (flwr 1.42, its Message API) with fedledger: every round recorded on a ledger, and
secure aggregation by fedledger's ``Masked`` (SecAgg+) or ``Paillier`` over Flower's own ``Grid``.

Server side, two wrapper strategies (in the style of Flower's differential-privacy wrappers):

- :class:`LedgerStrategy` wraps any Message-API strategy (``FedAvg``, ``FedAdam``,
  ``FedMedian``, ...) and records each round through :class:`~fedledger.federated.FederatedRound`:
  the participants, each site's update commitment and weight, the aggregate's content id and the
  hash of the new model. The server sees every update (the policy's aggregator is ``"plain"``).
- :class:`SecureAggregation` wraps a strategy that only needs the weighted mean of the updates
  (``FedAvg`` and the server-side optimizers built on it). Its train step runs fedledger's
  ``Masked`` stages over ``Grid.send_and_receive``, each under its own deadline (a node that does
  not answer in time is a dropout at that stage), records the round, and hands the wrapped
  strategy ONE reply holding the new model. A strategy that needs the individual updates
  (``FedMedian``, ``Krum``, ``Bulyan``, ...) is refused with :class:`~fedledger.errors.UnsupportedStrategy`.

Client side, :func:`fedledger_mod` is a ``ClientApp`` mod: it names the site in every train
reply (and signs the commitment of its update), and, when the server asks for secure
aggregation, keeps the wrapped train step's update on the node and answers the stages; the
server never receives the update itself, only masked vectors. Flower runs each message in a
fresh ``ClientApp`` process, so the mod keeps what a later stage needs in the node's
``Context.state`` (which stays on the node): the update, the weight, the stage messages
received so far and a 32-byte secret from which the site's round keys are drawn; a later
stage rebuilds the site's state by replaying them.

:class:`LoopbackGrid` is a ``Grid`` with no network: every node's ``ClientApp`` runs in this
process and every message goes through Flower's protobuf serde both ways (tests, examples and
benches; a real deployment uses Flower's SuperLink and SuperNodes).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from fedledger import encoding
from fedledger.aggregators import (
    AggregateResult,
    Envelope,
    Masked,
    MaskedClient,
    MaskedServer,
    Paillier,
    PaillierClient,
    PaillierServer,
    PaillierTrustee,
    Plain,
)
from fedledger.blobstore import BlobStore
from fedledger.crypto import masking, seal
from fedledger.crypto.paillier import KeyShare
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidSignature,
    MissingDependency,
    RoundFailed,
    SealError,
    UnsupportedStrategy,
)
from fedledger.federated import FederatedRound, RoundPlan, RoundRecord
from fedledger.heagg import HEAggServer
from fedledger.identity import Identity
from fedledger.ledger import Ledger
from fedledger.secagg import Stage

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import (
        Bulyan,
        DifferentialPrivacyServerSideAdaptiveClipping,
        DifferentialPrivacyServerSideFixedClipping,
        FedMedian,
        FedTrimmedAvg,
        FedXgbBagging,
        FedXgbCyclic,
        Krum,
        MultiKrum,
        QFedAvg,
        Strategy,
    )
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
except ImportError as exc:  # pragma: no cover - exercised without flwr installed
    raise MissingDependency("flwr", "flower", "fedledger.integrations.flower") from exc

__all__ = [
    "RECORD",
    "STATE_DIR",
    "LedgerStrategy",
    "LoopbackGrid",
    "SecureAggregation",
    "Trustee",
    "fedledger_mod",
]

log = logging.getLogger(__name__)

#: The name of fedledger's ConfigRecord in Flower messages (both directions).
RECORD: Final = "fedledger"
_STATE: Final = "fedledger.secagg"
#: The node config key naming the directory where a site keeps its round's update (sealed)
#: between stages; by default ``fedledger-flower`` in the system's temp directory.
STATE_DIR: Final = "fedledger-state-dir"
_SIGNED: Final = b"fedledger/flower/update/v1"
#: Strategies whose aggregation reads each update; secure aggregation gives only the sum.
_NEEDS_UPDATES: Final = (
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Bulyan,
    QFedAvg,
    FedXgbBagging,
    FedXgbCyclic,
    DifferentialPrivacyServerSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
)


# -- models as vectors -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The names, shapes and dtypes of a model's arrays, to flatten it into one float64 vector."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, arrays: ArrayRecord) -> _Layout:
        items = [(k, _values(arrays[k])) for k in arrays]
        return cls(tuple(k for k, _ in items), tuple(a.shape for _, a in items), tuple(a.dtype.str for _, a in items))

    def _parts(self, arrays: ArrayRecord, what: str) -> Iterator[tuple[int, NDArray[np.floating]]]:
        """Each array of ``arrays`` (checked against the layout) and where it starts in the vector."""
        if tuple(arrays) != self.keys:
            raise InvalidArgument(what, f"arrays {list(arrays)}, the model has {list(self.keys)}")
        at = 0
        for key, shape in zip(self.keys, self.shapes):
            a = _values(arrays[key])
            if a.shape != shape or a.dtype.kind != "f":
                raise InvalidArgument(what, f"{key!r}: shape {a.shape} dtype {a.dtype}, the model's {shape}")
            yield at, a
            at += a.size

    @property
    def size(self) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes)

    def flatten(self, arrays: ArrayRecord, what: str = "arrays") -> NDArray[np.float64]:
        out = np.empty(self.size, np.float64)
        for at, a in self._parts(arrays, what):
            out[at : at + a.size] = a.reshape(-1)
        return out

    def difference(self, trained: ArrayRecord, sent: ArrayRecord, what: str = "the train reply") -> NDArray[np.float64]:
        """``flatten(trained) - flatten(sent)``, in one vector (the same values, bit for bit)."""
        out = self.flatten(trained, what)
        for at, a in self._parts(sent, "the train message"):
            out[at : at + a.size] -= a.reshape(-1)
        return out

    def unflatten(self, vector: NDArray[np.floating]) -> ArrayRecord:
        out: dict[str, Array] = {}
        at = 0
        for key, shape, dtype in zip(self.keys, self.shapes, self.dtypes):
            size = int(np.prod(shape, dtype=np.int64))
            out[key] = Array(np.ascontiguousarray(vector[at : at + size].reshape(shape).astype(np.dtype(dtype))))
            at += size
        return ArrayRecord(out)


def _values(array: Array) -> NDArray[Any]:
    """An Array's values. Flower's ``Array.numpy()`` reads them into a new array (``np.load``);
    for its numpy serialization this reads numpy's own header and returns a read-only view of
    the bytes after it instead (every model array is read this way several times per round).
    Anything else, or anything the view cannot be sure of, goes through ``numpy()``."""
    if array.stype != "numpy.ndarray":
        return array.numpy()
    f = io.BytesIO(array.data)  # shares the bytes, no copy
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return array.numpy()
    except ValueError:
        return array.numpy()  # numpy's own error, from np.load
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.hasobject or len(array.data) - f.tell() != count * dtype.itemsize:
        return array.numpy()
    flat = np.frombuffer(array.data, dtype=dtype, count=count, offset=f.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


def _state_dir(context: Context) -> Path:
    configured = context.node_config.get(STATE_DIR)
    return Path(str(configured)) if configured else Path(tempfile.gettempdir()) / "fedledger-flower"


def _update_seal(context: Context, round_id: int) -> seal.SealContext:
    return seal.SealContext(f"node {context.node_id}", f"run {context.run_id}", round_id, "flower site update")


def _keep_update(context: Context, round_id: int, delta: NDArray[np.float64]) -> dict[str, Any]:
    """Write the site's update for a later stage: sealed under a fresh key, to a file of the
    node's (see :data:`STATE_DIR`); the fields for the round's state record come back (the key
    and the file's name: Context.state stays small, since Flower pushes the whole Context back
    from every ClientApp process, and a model-sized one can be lost on the way). Earlier
    rounds' files of this node and run go."""
    directory = _state_dir(context)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    prefix = f"{context.node_id}-{context.run_id}-"
    for stale in directory.glob(prefix + "*.update"):
        stale.unlink(missing_ok=True)
    path = directory / f"{prefix}{round_id}.update"
    key = seal.generate_key()
    plain = np.ascontiguousarray(delta, dtype=np.float64).data.cast("B")
    sealed = seal.seal_records(key, plain, _update_seal(context, round_id))
    temp = directory / f".{prefix}{round_id}.{os.urandom(6).hex()}.tmp"
    try:
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(sealed)
        os.replace(temp, path)  # a reader sees the whole file or none
    finally:
        temp.unlink(missing_ok=True)
    return {"update_file": str(path), "update_key": key}


def _kept_update(context: Context, state: ConfigRecord) -> NDArray[np.float64]:
    """The update :func:`_keep_update` wrote for the round of ``state``; InvalidArgument if the
    file is gone or fails its check (a site that cannot answer drops out of the round)."""
    path, key, round_id = state.get("update_file"), state.get("update_key"), state.get("round")
    if type(path) is not str or type(key) is not bytes or type(round_id) is not int:
        raise InvalidArgument("state", "this node's round state is damaged")
    try:
        sealed = Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidArgument("state", f"this node's update for round {round_id} ({path}) is gone") from None
    try:
        plain = seal.unseal_records(key, sealed, _update_seal(context, round_id))
    except SealError:
        raise InvalidArgument("state", f"this node's update for round {round_id} ({path}) fails its check") from None
    if len(plain) % 8:
        raise InvalidArgument("state", f"this node's update for round {round_id} ({path}) is malformed")
    return np.frombuffer(plain, np.float64)


def _end_round(context: Context) -> None:
    """Forget the site's round: its state record and its update's file."""
    state = context.state.config_records.pop(_STATE, None)
    path = state.get("update_file") if state is not None else None
    if type(path) is str:
        Path(path).unlink(missing_ok=True)


def _only_arrays(content: RecordDict, what: str) -> ArrayRecord:
    records = list(content.array_records.values())
    if len(records) != 1:
        raise InvalidArgument(what, f"expected one ArrayRecord, got {len(records)}")
    return records[0]


def _commitment(vector: NDArray[np.float64]) -> bytes:
    """The update commitment: the RFC 9162 root of the vector's little-endian float64 bytes."""
    return masking.vector_root(np.ascontiguousarray(vector, dtype="<f8").tobytes())


def _signed_body(policy: str, round_id: int, root: bytes) -> bytes:
    return encoding.encode([_SIGNED, policy, round_id, root])


def _envelopes_to_bytes(envs: Iterable[Envelope]) -> bytes:
    return encoding.encode([[e.stage, e.sender, e.receiver, e.data] for e in envs])


def _envelopes_from_bytes(data: object) -> list[Envelope]:
    if type(data) is not bytes:
        raise InvalidArgument("envelopes", "expected bytes")
    try:
        items = encoding.decode(data)
    except EncodingError as exc:
        raise InvalidArgument("envelopes", str(exc)) from None
    out = []
    for item in items if type(items) is list else [None]:
        if (
            type(item) is not list
            or len(item) != 4
            or not all(type(x) is str for x in item[:3])
            or type(item[3]) is not bytes
        ):
            raise InvalidArgument("envelopes", "not a list of [stage, sender, receiver, data]")
        out.append(Envelope(item[0], item[1], item[2], item[3]))  # type: ignore[arg-type]
    return out


def _weight(metrics: Iterable[MetricRecord], key: str) -> int:
    for record in metrics:
        if key in record:
            value = record[key]
            if isinstance(value, (int, float)) and float(value).is_integer() and value >= 1:
                return int(value)
            raise InvalidArgument(key, f"must be a positive whole number, got {value!r}")
    raise InvalidArgument(key, "missing from the reply's metrics")


def _mean_metrics(replies: Sequence[tuple[RecordDict, int]], key: str) -> MetricRecord:
    """The weighted average of the replies' numeric metrics, and ``key`` = the total weight."""
    total = sum(w for _, w in replies)
    sums: dict[str, float] = {}
    for content, w in replies:
        for record in content.metric_records.values():
            for name, value in record.items():
                if name != key and isinstance(value, (int, float)):
                    sums[name] = sums.get(name, 0.0) + w * float(value)
    out: dict[str, Any] = {name: s / total for name, s in sums.items()}
    out[key] = total
    return MetricRecord(out)


# -- the server side ---------------------------------------------------------------------------


def _policy_min_cohort(ledger: Ledger, policy: str) -> int:
    state = ledger.view("training", "get_policy", policy=policy)
    return int(state["min_cohort"])


class _Recorded(Strategy):
    """What both wrappers share: the wrapped strategy, the FederatedRound that records, the
    sites (name -> anything with ``verify_key``) and which node answered as which site."""

    def __init__(
        self,
        strategy: Strategy,
        ledger: Ledger,
        *,
        policy: str,
        coordinator: Identity,
        store: BlobStore,
        sites: Mapping[str, Any],
        aggregator: Any,
        cohorts: Mapping[str, Sequence[bytes]] | None,
        weighted_by_key: str,
        purpose: str,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise InvalidArgumentType("strategy", f"expected a flwr Strategy, got {type(strategy).__name__}")
        self.strategy = strategy
        self.rounds = FederatedRound(
            ledger,
            policy=policy,
            coordinator=coordinator,
            aggregator=aggregator,
            store=store,
            sites=sites,
            purpose=purpose,
        )
        self.sites = dict(sites)
        self.cohorts = {name: tuple((cohorts or {}).get(name, ())) for name in self.sites}
        self.weighted_by_key = weighted_by_key
        #: One RoundRecord per round, as recorded on the ledger.
        self.records: list[RoundRecord] = []
        self._node_site: dict[int, str] = {}
        self._sent: set[int] = set()
        self._layout: _Layout | None = None
        self._base: NDArray[np.float64] | None = None
        self._round = 0

    # the parts that are the wrapped strategy's own
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info("%s recording on policy %r, wrapping:", type(self).__name__, self.rounds.policy)
        self.strategy.summary()

    def _configure(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, extra: Mapping[str, Any]
    ) -> list[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._layout = _Layout.of(arrays)
        self._base = self._layout.flatten(arrays)
        self._round = int(self.rounds.policy_state()["rounds"]) + 1
        self._sent = {m.metadata.dst_node_id for m in messages}
        record = ConfigRecord(
            {
                "policy": self.rounds.policy,
                "round": self._round,
                "server": self.rounds.coordinator.name,
                "weighted_by_key": self.weighted_by_key,
                **extra,
            }
        )
        for m in messages:
            m.content.config_records[RECORD] = record
        return messages

    def _sites_of(self, replies: Iterable[Message]) -> dict[str, tuple[Message, ConfigRecord, int]]:
        """The train replies that name a site of the round, one per site: site -> (reply,
        its fedledger record, its weight). Others are left out (logged). The names are claims
        until a signature shows them (:meth:`_learn`)."""
        out: dict[str, tuple[Message, ConfigRecord, int]] = {}
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error() or node not in self._sent:
                continue
            record = msg.content.config_records.get(RECORD)
            site = record.get("site") if record is not None else None
            if record is None or type(site) is not str or site not in self.sites or site in out:
                log.warning("node %s: a train reply without a site of the round; left out", node)
                continue
            try:
                weight = _weight(msg.content.metric_records.values(), self.weighted_by_key)
            except InvalidArgument as exc:
                log.warning("node %s (%s): %s; left out", node, site, exc)
                continue
            out[site] = (msg, record, weight)
        return out

    def _learn(self, sites: Mapping[str, Message]) -> None:
        """Remember which node answered as which site, once the site's signature showed it."""
        for site, msg in sites.items():
            self._node_site[msg.metadata.src_node_id] = site

    def _silent(self, answered: Iterable[str]) -> dict[str, str]:
        """Sites known from earlier rounds whose node was asked to train and did not answer."""
        done = set(answered)
        return {s: "train" for n, s in self._node_site.items() if n in self._sent and s not in done}

    def _begin(self, sites: Iterable[str]) -> RoundPlan:
        names = sorted(sites)
        return self.rounds.begin(names, {n: self.cohorts[n] for n in names})


class LedgerStrategy(_Recorded):
    """Record every round of ``strategy`` (any Message-API strategy) on ``ledger``.

    ``policy`` is a training policy on the ledger whose aggregator is ``"plain"`` (the server
    sees each update); ``coordinator`` signs the records; ``store`` keeps the aggregate;
    ``sites`` maps each site's name to its Identity (or identity card: only ``verify_key`` is
    read); ``cohorts`` the patients each site trains on (checked against consent each round;
    none by default). Clients run :func:`fedledger_mod`, which names the site in its reply and
    signs the commitment of its update; a reply without a valid one is left out of the round.

    The recorded model is the wrapped strategy's new model; the arrays handed on are that
    model as recorded (``records[-1].model``) in the arrays' own dtypes.
    """

    def __init__(
        self,
        strategy: Strategy,
        ledger: Ledger,
        *,
        policy: str,
        coordinator: Identity,
        store: BlobStore,
        sites: Mapping[str, Any],
        cohorts: Mapping[str, Sequence[bytes]] | None = None,
        weighted_by_key: str = "num-examples",
        purpose: str = "HRESCH",
    ) -> None:
        if isinstance(strategy, SecureAggregation):
            raise UnsupportedStrategy(type(strategy).__name__, "SecureAggregation records its rounds itself")
        super().__init__(
            strategy,
            ledger,
            policy=policy,
            coordinator=coordinator,
            store=store,
            sites=sites,
            aggregator=Plain(_policy_min_cohort(ledger, policy)),
            cohorts=cohorts,
            weighted_by_key=weighted_by_key,
            purpose=purpose,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._configure(server_round, arrays, config, grid, {"secure": False})

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert self._layout is not None and self._base is not None
        layout, base = self._layout, self._base
        joined: dict[str, tuple[Message, int, bytes]] = {}
        for site, (msg, record, weight) in self._sites_of(replies).items():
            try:
                vector = layout.flatten(_only_arrays(msg.content, "reply"), "reply")
                root = _commitment(vector)
                signature = record.get("signature")
                if type(signature) is not bytes:
                    raise InvalidSignature("no signature")
                self.sites[site].verify_key.verify(_signed_body(self.rounds.policy, self._round, root), signature)
            except (InvalidArgument, InvalidSignature) as exc:
                log.warning("%s: %s; left out", site, exc)
                continue
            joined[site] = (msg, weight, root)
        self._learn({s: m for s, (m, _, _) in joined.items()})
        silent = self._silent(joined)
        plan = self._begin([*joined, *silent])
        arrays, metrics = self.strategy.aggregate_train(server_round, [m for m, _, _ in joined.values()])
        if plan.round != self._round:
            why = f"the sites signed round {self._round}, the ledger is at round {plan.round}"
            self.records.append(self.rounds.complete(plan, why, base, dropouts=silent))
            return None, metrics
        if arrays is None:
            self.records.append(self.rounds.complete(plan, "the strategy gave no model", base, dropouts=silent))
            return None, metrics
        model = layout.flatten(arrays, "the strategy's arrays")
        total = sum(w for _, w, _ in joined.values())
        result = AggregateResult(
            "plain",
            (model - base) * total,
            total,
            tuple(sorted(joined)),
            {s: root for s, (_, _, root) in joined.items()},
            {s: w for s, (_, w, _) in joined.items()},
            silent,
            {"name": "plain", "strategy": type(self.strategy).__name__, "framework": "flwr"},
        )
        rec = self.rounds.complete(plan, result, base)
        self.records.append(rec)
        if rec.status != "done" or rec.model is None:
            return None, metrics
        return layout.unflatten(rec.model), metrics


class SecureAggregation(_Recorded):
    """Secure aggregation for ``strategy`` (FedAvg, or one built on the weighted mean), each
    round recorded on ``ledger``.

    The arguments are :class:`LedgerStrategy`'s, plus ``aggregator`` (a
    :class:`~fedledger.aggregators.Masked`, default ``Masked(min_cohort)`` of the policy, whose
    aggregator must be ``"masked"``; the clients' :func:`fedledger_mod` must hold the same
    settings) and ``stage_timeout``: how long each stage waits for the nodes (a node that has
    not answered by then is a dropout at that stage). The round completes when at least the
    aggregator's minimum survivors remain; below that it is recorded as failed and the model
    stays as it was.

    Sites send model deltas (their trained model minus the global model), clipped to
    ``aggregator.clip``. The wrapped strategy receives one reply: the new model (the global
    model plus the weighted mean of the deltas, as recorded) with the total weight under
    ``weighted_by_key`` and the weighted mean of the sites' other train metrics.
    """

    def __init__(
        self,
        strategy: Strategy,
        ledger: Ledger,
        *,
        policy: str,
        coordinator: Identity,
        store: BlobStore,
        sites: Mapping[str, Any],
        cohorts: Mapping[str, Sequence[bytes]] | None = None,
        aggregator: Masked | Paillier | None = None,
        trustees: Mapping[str, tuple[Any, int]] | None = None,
        stage_timeout: float = 60.0,
        weighted_by_key: str = "num-examples",
        purpose: str = "HRESCH",
    ) -> None:
        _check_strategy(strategy)
        if aggregator is None:
            aggregator = Masked(_policy_min_cohort(ledger, policy))
        if not isinstance(aggregator, (Masked, Paillier)):
            raise InvalidArgumentType(
                "aggregator", f"expected a Masked or Paillier aggregator, got {type(aggregator).__name__}"
            )
        if not isinstance(stage_timeout, (int, float)) or not stage_timeout > 0:
            raise InvalidArgument("stage_timeout", f"must be a positive number of seconds, got {stage_timeout!r}")
        super().__init__(
            strategy,
            ledger,
            policy=policy,
            coordinator=coordinator,
            store=store,
            sites=sites,
            aggregator=aggregator,
            cohorts=cohorts,
            weighted_by_key=weighted_by_key,
            purpose=purpose,
        )
        self.aggregator = aggregator
        #: Paillier's trustees: name -> (Identity or identity card, the index of its key share).
        self.trustees = {name: (card, int(index)) for name, (card, index) in (trustees or {}).items()}
        if isinstance(aggregator, Paillier):
            if aggregator.dealing.shares:
                raise InvalidArgument(
                    "aggregator",
                    "the coordinator holds the dealing's public key only: Dealing(public_key, {}, threshold)",
                )
            if len(self.trustees) < aggregator.threshold:
                raise InvalidArgument("trustees", f"fewer than the threshold {aggregator.threshold}")
        self.stage_timeout = float(stage_timeout)
        #: Seconds between two pulls of a stage's replies.
        self.poll_interval = 0.5
        #: Seconds per stage of the last round (server side, wall clock, waiting included).
        self.stage_seconds: dict[str, float] = {}
        self._grid: Grid | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._grid = grid
        extra = {"secure": True, "aggregator": encoding.encode(_settings(self.aggregator))}
        return self._configure(server_round, arrays, config, grid, extra)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert self._layout is not None and self._base is not None and self._grid is not None
        layout, base, grid = self._layout, self._base, self._grid
        t0 = time.perf_counter()
        self.stage_seconds = {}
        joined = self._sites_of(replies)
        silent = self._silent(joined)
        plan = self._begin([*joined, *silent])
        if plan.round != self._round:
            why = f"the sites keyed round {self._round}, the ledger is at round {plan.round}"
            self.records.append(self.rounds.complete(plan, why, base, dropouts=silent))
            return None, None
        self.stage_seconds["train"] = time.perf_counter() - t0
        outcome = self._secure_round(grid, server_round, plan, joined, base.shape[0])
        if isinstance(outcome, tuple):
            why, dropped = outcome
            gone = {k: v for k, v in dropped.items() if k in self.trustees}
            if gone:  # the record's dropouts are sites; the trustees are named in the reason
                why = f"{why} (trustees missing: {gone})"
            sites_gone = {k: v for k, v in dropped.items() if k not in self.trustees}
            self.records.append(self.rounds.complete(plan, why, base, dropouts={**silent, **sites_gone}))
            log.warning("round %s failed: %s", plan.round, why)
            return None, None
        t1 = time.perf_counter()
        self._learn({s: joined[s][0] for s in outcome.survivors})
        # the record's dropouts are sites; trustees that did not decrypt go with the parameters
        params = dict(outcome.parameters)
        gone = {k: v for k, v in outcome.dropouts.items() if k in self.trustees}
        if gone:
            params["trustee_dropouts"] = gone
        sites_gone = {k: v for k, v in outcome.dropouts.items() if k not in self.trustees}
        result = replace(outcome, dropouts={**silent, **sites_gone}, parameters=params)
        rec = self.rounds.complete(plan, result, base)
        self.records.append(rec)
        self.stage_seconds["record"] = time.perf_counter() - t1
        if rec.status != "done" or rec.model is None:
            return None, None
        survivors = [(joined[s][0].content, joined[s][2]) for s in result.survivors]
        content = RecordDict(
            {"arrays": layout.unflatten(rec.model), "metrics": _mean_metrics(survivors, self.weighted_by_key)}
        )
        one = Message(content, SUPERLINK_NODE_ID, "train", group_id=str(server_round))
        return self.strategy.aggregate_train(server_round, [one])

    def _secure_round(
        self,
        grid: Grid,
        server_round: int,
        plan: RoundPlan,
        joined: Mapping[str, tuple[Message, ConfigRecord, int]],
        dimension: int,
    ) -> AggregateResult | tuple[str, dict[str, str]]:
        coordinator = self.rounds.coordinator
        keys: dict[str, VerifyKey] = {n: s.verify_key for n, s in self.sites.items()}
        keys.update({n: card.verify_key for n, (card, _) in self.trustees.items()})
        keys[coordinator.name] = coordinator.verify_key
        node_of = {site: msg.metadata.src_node_id for site, (msg, _, _) in joined.items()}
        for _, (msg, record, _) in joined.items():  # the nodes that host a trustee (Paillier)
            trustee = record.get("trustee")
            if type(trustee) is str and trustee in self.trustees:
                node_of.setdefault(trustee, msg.metadata.src_node_id)
        parties: dict[int, set[str]] = {}
        for name, node in node_of.items():
            parties.setdefault(node, set()).add(name)
        dropped: dict[str, str] = {}
        try:
            server: PaillierServer | MaskedServer
            if isinstance(self.aggregator, Paillier):  # the trustees' share indices, no share
                inner = HEAggServer(
                    coordinator,
                    self.aggregator.config(plan.round),
                    self.aggregator.dealing.public_key,
                    sites=sorted(joined),
                    trustees={n: index for n, (_, index) in self.trustees.items()},
                    threshold=self.aggregator.threshold,
                    verify_keys=keys,
                    dimension=dimension,
                )
                server = PaillierServer(inner, self.aggregator.parameters)
            else:
                server = self.aggregator.server(
                    coordinator, sites=sorted(joined), verify_keys=keys, dimension=dimension, round_id=plan.round
                )
            out = server.start()
            for site, (_, record, _) in joined.items():
                for env in _envelopes_from_bytes(record.get("envelopes")):
                    if env.sender == site:
                        server.collect(env)
            for _ in range(8):
                if out:
                    self._stage(grid, server, server_round, out, node_of, parties)
                if server.done:
                    break
                for site in server.expecting():
                    dropped.setdefault(site, server.stage)
                t0, closing = time.perf_counter(), server.stage
                out = server.advance()
                self.stage_seconds[f"close {closing}"] = time.perf_counter() - t0
            return server.finish()
        except RoundFailed as exc:
            return str(exc), dropped
        except FedLedgerError as exc:
            return f"{type(exc).__name__}: {exc}", dropped

    def _stage(
        self,
        grid: Grid,
        server: PaillierServer | MaskedServer,
        server_round: int,
        out: list[Envelope],
        node_of: Mapping[str, int],
        parties: Mapping[int, set[str]],
    ) -> None:
        """Send one stage's envelopes to their nodes and collect what comes back in time."""
        by_node: dict[int, list[Envelope]] = {}
        for env in out:
            if env.receiver in node_of:  # a trustee with no node in the round never answers
                by_node.setdefault(node_of[env.receiver], []).append(env)
        t0 = time.perf_counter()
        messages = [
            Message(
                RecordDict({RECORD: ConfigRecord({"stage": envs[0].stage, "envelopes": _envelopes_to_bytes(envs)})}),
                node,
                "train",
                group_id=str(server_round),
            )
            for node, envs in by_node.items()
        ]
        answers = _exchange(grid, messages, self.stage_timeout, self.poll_interval)
        for reply in answers:
            senders = parties.get(reply.metadata.src_node_id, set())
            answer = None if reply.has_error() else reply.content.config_records.get(RECORD)
            if answer is None:
                continue
            try:
                envs = _envelopes_from_bytes(answer.get("envelopes"))
            except InvalidArgument:
                continue
            for env in envs:
                if env.sender in senders:
                    server.collect(env)
        self.stage_seconds[server.stage] = time.perf_counter() - t0


def _exchange(grid: Grid, messages: list[Message], timeout: float, poll: float) -> list[Message]:
    """``grid.send_and_receive`` with a shorter pull interval (Flower's sleeps 3 s between
    pulls): push, then pull every ``poll`` seconds until every node answered or ``timeout``."""
    if isinstance(grid, LoopbackGrid):  # every live node has answered when the push returns
        return list(grid.send_and_receive(messages))
    waiting = set(grid.push_messages(messages))
    end = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        got = list(grid.pull_messages(waiting))
        replies.extend(got)
        waiting.difference_update(m.metadata.reply_to_message_id for m in got)
        if not waiting or time.monotonic() >= end:
            break
        time.sleep(min(poll, max(0.0, end - time.monotonic())))
    return replies


def _check_strategy(strategy: object) -> None:
    """Refuse a strategy whose aggregation reads the individual updates (also when wrapped)."""
    seen = 0
    while strategy is not None and seen < 8:
        if isinstance(strategy, _NEEDS_UPDATES):
            raise UnsupportedStrategy(
                type(strategy).__name__,
                "it reads each client's update (median, trimmed mean, Krum-style selection, per-client "
                "clipping or loss weighting); secure aggregation gives the server only the weighted sum",
            )
        strategy = getattr(strategy, "strategy", None)
        seen += 1


def _settings(aggregator: Masked | Paillier) -> dict[str, Any]:
    """The settings a site must share with the server (encodable; compared on the client).
    For Paillier: the public key's fingerprint instead of the trustees' number (a site holds
    the public key only)."""
    out = dict(aggregator.parameters)
    if isinstance(aggregator, Paillier):
        out.pop("trustees", None)
        jwk = aggregator.dealing.public_key.to_jwk()
        out["public_key"] = hashlib.sha256(encoding.encode({k: str(v) for k, v in jwk.items()})).digest()
    return out


# -- the client side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trustee:
    """A Paillier trustee hosted on a site's node: its identity (named as in the dealing, not
    a site's name), its key share, and the policy's sites (a decryption request must carry
    the signed updates of at least the minimum of them)."""

    identity: Identity
    share: KeyShare
    sites: tuple[str, ...]


def _stream(seed: bytes) -> Callable[[int], bytes]:
    """Deterministic secret bytes from ``seed`` (SHAKE-256 over seed and a counter): the same
    draws when a later stage replays the earlier ones."""
    counter = itertools.count()

    def draw(n: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(n)

    return draw


# Live clients of this process, by (node, run, round): a fresh process rebuilds from the Context.
_LIVE: dict[tuple[int, int, int], tuple[MaskedClient, int]] = {}
_LIVE_LOCK = threading.Lock()


def fedledger_mod(
    identity: Identity | Callable[[Context], Identity],
    verify_keys: Mapping[str, VerifyKey] | Callable[[Context], Mapping[str, VerifyKey]],
    *,
    aggregator: Masked | Paillier | None = None,
    trustee: Trustee | Callable[[Context], Trustee | None] | None = None,
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The client side of :class:`LedgerStrategy` and :class:`SecureAggregation`: a mod for
    ``ClientApp(mods=[...])``.

    ``identity`` is this site's Identity (or a function of the node's Context that loads it:
    Flower builds the ClientApp in each message's process); ``verify_keys`` maps the server's
    (the coordinator's) and the sites' names to their keys (or a function of the Context);
    ``aggregator`` holds the secure aggregation settings this site accepts (default
    ``Masked()``): a server asking for others is refused. For ``Paillier``, the site's
    aggregator holds the dealing's public key only (``Dealing(public_key, {}, threshold)``),
    and a node that hosts a trustee passes ``trustee`` (or a function of the Context giving
    it). Messages without fedledger's record pass through untouched.
    """
    masked = aggregator or Masked()
    if not isinstance(masked, (Masked, Paillier)):
        raise InvalidArgumentType("aggregator", f"expected Masked or Paillier, got {type(masked).__name__}")

    def resolve(value: Any, context: Context) -> Any:
        return value(context) if callable(value) else value

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if not msg.metadata.message_type.startswith("train") or RECORD not in msg.content.config_records:
            return call_next(msg, context)
        record = msg.content.config_records[RECORD]
        me: Identity = resolve(identity, context)
        keys: Mapping[str, VerifyKey] = resolve(verify_keys, context)
        host: Trustee | None = resolve(trustee, context)
        if "stage" in record:
            if isinstance(masked, Paillier):
                return _answer_paillier(msg, context, record, me, keys, masked, host)
            return _answer_stage(msg, context, record, me, keys, masked)
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        try:
            return _answer_train(msg, reply, context, record, me, keys, masked, host)
        except FedLedgerError as exc:
            return Message(Error(code=0, reason=f"fedledger: {exc}"), reply_to=msg)

    return mod


def _answer_train(
    msg: Message,
    reply: Message,
    context: Context,
    record: ConfigRecord,
    me: Identity,
    keys: Mapping[str, VerifyKey],
    masked: Masked | Paillier,
    host: Trustee | None,
) -> Message:
    policy, round_id, server = record.get("policy"), record.get("round"), record.get("server")
    if type(policy) is not str or type(round_id) is not int or type(server) is not str:
        raise InvalidArgument("message", "a fedledger train message without policy, round and server")
    if server not in keys:
        raise InvalidArgument("server", f"{server!r} is not a known party")
    key = str(record.get("weighted_by_key", "num-examples"))
    weight = _weight(reply.content.metric_records.values(), key)
    sent = _only_arrays(msg.content, "the train message")
    layout = _Layout.of(sent)
    replied = _only_arrays(reply.content, "the train reply")
    if not record.get("secure"):
        root = _commitment(layout.flatten(replied, "the train reply"))
        signed = ConfigRecord({"site": me.name, "signature": me.sign(_signed_body(policy, round_id, root))})
        reply.content.config_records[RECORD] = signed
        return reply
    asked = record.get("aggregator")
    try:
        settings = encoding.decode(asked) if type(asked) is bytes else None
    except EncodingError:
        settings = None
    if settings != _settings(masked):
        raise InvalidArgument(
            "aggregator", f"the server asks for {settings!r}; this site accepts {_settings(masked)!r}"
        )
    delta = layout.difference(replied, sent)
    seed = os.urandom(32)
    _end_round(context)  # a round this node did not finish is over
    kept = _keep_update(context, round_id, delta)
    context.state.config_records[_STATE] = ConfigRecord(
        {"round": round_id, "server": server, "seed": seed, "weight": weight, "inbox": _envelopes_to_bytes([]), **kept}
    )
    tag: dict[str, Any] = {"site": me.name}
    if isinstance(masked, Paillier):  # the site encrypts when the server announces the round
        envs: list[Envelope] = []
        if host is not None:
            tag["trustee"] = host.identity.name
    else:
        client = MaskedClient(me, masked.config(round_id), server=server, verify_keys=keys, random_bytes=_stream(seed))
        envs = client.start(delta, weight)
        with _LIVE_LOCK:  # a round this node did not finish is over: forget its client
            for stale in [k for k in _LIVE if k[:2] == (context.node_id, context.run_id)]:
                del _LIVE[stale]
            _LIVE[(context.node_id, context.run_id, round_id)] = (client, 0)
    tag["envelopes"] = _envelopes_to_bytes(envs)
    content = RecordDict({RECORD: ConfigRecord(tag)})
    for name, metrics in reply.content.metric_records.items():
        content.metric_records[name] = metrics
    return Message(content, reply_to=msg)


def _answer_stage(
    msg: Message,
    context: Context,
    record: ConfigRecord,
    me: Identity,
    keys: Mapping[str, VerifyKey],
    masked: Masked,
) -> Message:
    """Answer one stage: the site's client (live in this process, or rebuilt from the
    Context by replaying the round's earlier stages) responds to the server's envelopes."""
    state = context.state.config_records.get(_STATE)
    try:
        if state is None:
            raise InvalidArgument("state", "no round in progress on this node")
        round_id, server, seed, weight = state["round"], state["server"], state["seed"], state["weight"]
        if type(round_id) is not int or type(server) is not str or type(seed) is not bytes or type(weight) is not int:
            raise InvalidArgument("state", "this node's round state is damaged")
        inbox = _envelopes_from_bytes(state["inbox"])
        incoming = _envelopes_from_bytes(record.get("envelopes"))
        where = (context.node_id, context.run_id, round_id)
        with _LIVE_LOCK:
            live = _LIVE.get(where)
        if live is not None and live[1] == len(inbox):
            client = live[0]
        else:  # a fresh process: replay the round so far (the same secrets, from the seed)
            client = MaskedClient(
                me, masked.config(round_id), server=server, verify_keys=keys, random_bytes=_stream(seed)
            )
            client.start(_kept_update(context, state), weight)
            for env in inbox:
                client.respond(env)
        out: list[Envelope] = []
        for env in incoming:
            if env.receiver != me.name:
                raise InvalidArgument("envelopes", f"an envelope for {env.receiver!r}")
            out.extend(client.respond(env))
        if client.error:
            raise InvalidArgument("stage", client.error)
    except FedLedgerError as exc:
        return Message(Error(code=0, reason=f"fedledger: {exc}"), reply_to=msg)
    inbox.extend(incoming)
    last = any(env.stage == Stage.UNMASK_REQUEST for env in incoming)
    with _LIVE_LOCK:
        if last:  # the round is over for this site: forget it
            _LIVE.pop(where, None)
        else:
            _LIVE[where] = (client, len(inbox))
    if last:
        _end_round(context)
    else:
        state["inbox"] = _envelopes_to_bytes(inbox)
    return Message(RecordDict({RECORD: ConfigRecord({"envelopes": _envelopes_to_bytes(out)})}), reply_to=msg)


def _answer_paillier(
    msg: Message,
    context: Context,
    record: ConfigRecord,
    me: Identity,
    keys: Mapping[str, VerifyKey],
    paillier: Paillier,
    host: Trustee | None,
) -> Message:
    """Answer a Paillier stage: ``announce`` (the site encrypts its update) or, on a node that
    hosts a trustee, ``decrypt_request`` (the trustee's partial decryption)."""
    state = context.state.config_records.get(_STATE)
    try:
        if state is None:
            raise InvalidArgument("state", "no round in progress on this node")
        round_id, server, weight = state["round"], state["server"], state["weight"]
        if type(round_id) is not int or type(server) is not str or type(weight) is not int:
            raise InvalidArgument("state", "this node's round state is damaged")
        delta = _kept_update(context, state)
        out: list[Envelope] = []
        done = False
        for env in _envelopes_from_bytes(record.get("envelopes")):
            party: PaillierClient | PaillierTrustee
            if env.stage == "announce" and env.receiver == me.name:
                party = PaillierClient(me, paillier.config(round_id), paillier.dealing, server=server, verify_keys=keys)
                party.start(delta, weight)
                done = host is None
            elif env.stage == "decrypt_request" and host is not None and env.receiver == host.identity.name:
                party = PaillierTrustee(
                    host.identity,
                    paillier.config(round_id),
                    host.share,
                    server=server,
                    sites=host.sites,
                    verify_keys=keys,
                    dimension=int(delta.shape[0]),
                )
                done = True
            else:
                raise InvalidArgument("envelopes", f"{env.stage!r} for {env.receiver!r} is not this node's")
            out.extend(party.respond(env))
            if party.error:
                raise InvalidArgument("stage", party.error)
    except FedLedgerError as exc:
        return Message(Error(code=0, reason=f"fedledger: {exc}"), reply_to=msg)
    if done:
        _end_round(context)
    return Message(RecordDict({RECORD: ConfigRecord({"envelopes": _envelopes_to_bytes(out)})}), reply_to=msg)


# -- a Grid without a network ------------------------------------------------------------------


class LoopbackGrid(Grid):
    """A ``Grid`` whose nodes run ``app`` in this process: node ``i`` (1..n) has its own
    Context (``node_configs[i-1]`` as its node config, its own state); every message goes
    through Flower's protobuf serde both ways, and nodes answer one after another.

    :meth:`stop` makes a node vanish (it never answers again); ``before_deliver``, when set,
    is called with each message before it is delivered (tests stop nodes from there). Use it
    as a context manager around the server's calls: Flower's messages take their run and
    sender from the process's task identity, which it sets for the duration.
    """

    def __init__(self, app: ClientApp, node_configs: Sequence[Mapping[str, Any]], *, run_id: int = 1) -> None:
        self.app = app
        self._run = Run.create_empty(run_id)
        # The nodes keep their updates in a directory of this grid's (unless their configs name
        # one), removed with the grid: grids in other processes number their nodes alike.
        state_dir = tempfile.mkdtemp(prefix="fedledger-loopback-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, state_dir, True)
        self.contexts = {
            i + 1: Context(
                run_id=run_id,
                node_id=i + 1,
                node_config={STATE_DIR: state_dir, **cfg},
                state=RecordDict(),
                run_config={},
            )
            for i, cfg in enumerate(node_configs)
        }
        self.stopped: set[int] = set()
        self.before_deliver: Callable[[Message], None] | None = None
        self.serde_seconds = 0.0
        self.client_seconds = 0.0
        self.bytes_down = 0
        self.bytes_up = 0
        self._replies: dict[str, Message] = {}
        self._next = 0
        self._saved: list[tuple[Any, Any, Any]] = []

    def __enter__(self) -> LoopbackGrid:
        self._saved.append((TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id))
        self._as(SUPERLINK_NODE_ID)
        return self

    def __exit__(self, *exc: object) -> None:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = self._saved.pop()

    def _as(self, node_id: int) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = self._run.run_id, node_id, 1

    def stop(self, node_id: int) -> None:
        """The node vanishes: it answers nothing from now on."""
        self.stopped.add(node_id)

    # -- Grid ----------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.stopped]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids: list[str] = []
        batch = list(messages)
        for msg in batch:
            self._next += 1
            msg.metadata.__dict__["_message_id"] = f"loopback-{self._next}"
            ids.append(msg.metadata.message_id)
        for msg in batch:
            if self.before_deliver is not None:
                self.before_deliver(msg)
            self._deliver(msg)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        # Every live node has answered when push_messages returns; a stopped one never will.
        return self.pull_messages(self.push_messages(messages))

    # -- transport -------------------------------------------------------------------------------
    def _wire(self, msg: Message) -> tuple[Message, int]:
        t0 = time.perf_counter()
        data = message_to_proto(msg).SerializeToString()
        proto = ProtoMessage()
        proto.ParseFromString(data)
        out = message_from_proto(proto)
        self.serde_seconds += time.perf_counter() - t0
        return out, len(data)

    def _deliver(self, msg: Message) -> None:
        node = msg.metadata.dst_node_id
        if node in self.stopped or node not in self.contexts:
            return
        received, size = self._wire(msg)
        self.bytes_down += size
        t0 = time.perf_counter()
        self._as(node)
        try:
            reply = self.app(received, self.contexts[node])
        except Exception as exc:  # noqa: BLE001 - a ClientApp that raises answers with an error, as in Flower
            reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=received)
        finally:
            self._as(SUPERLINK_NODE_ID)
        self.client_seconds += time.perf_counter() - t0
        back, size = self._wire(reply)
        self.bytes_up += size
        self._replies[msg.metadata.message_id] = back
