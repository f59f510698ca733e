"""Flower 1.42's own SecAgg+ round in one process: the peer of benches/bench_secagg.py.

The server is Flower's ``SecAggPlusWorkflow`` (``SecAggWorkflow`` for the full graph) with
``FedAvg``, run through a ``LegacyContext`` the way Flower's compatibility layer runs it. The
clients are Flower's ``secaggplus_mod`` wrapped around a "train" step that only hands back a
fixed float32 update, so no training cost is measured.

Between them sits ``InProcessGrid``, a ``flwr.serverapp.Grid`` with no network: pushing a
message assigns it an id, encodes it with Flower's protobuf serde
(``message_to_proto(...).SerializeToString()``), decodes it again on the client's side
(``ParseFromString`` and ``message_from_proto``), runs the client, and carries the reply back
the same way; pulling returns the stored replies. Clients run one after another, in the
caller's thread.

Measured, wall-clock: the whole ``workflow(grid, context)`` call (``total_s``); the time
inside each client's ``secaggplus_mod`` call, per client and per stage (their sum is
``clients_s``); encoding plus decoding of every message in both directions (``serde_s``);
the server is the rest (``server_s``). Bytes are the encoded sizes.

Dropout: the grid learns each client's neighborhood from the share-keys message the
server sends it (it names the neighbors whose keys it carries) and the threshold from the
setup message. When the masked-input stage starts it picks, in node-id order, the clients
to drop, taking one only if every neighborhood keeps at least the threshold of live
members, so the round can still finish. A dropped client receives the masked-input request
and never answers; the server stops writing to it.

Run alone: ``python benches/flower_peer.py N D K DROP_FRAC`` (K = 0: the full graph).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow, SecAggWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 1
STAGES = (Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK)


@dataclass
class PeerRound:
    """What one Flower round cost, and how close its mean came to plain FedAvg."""

    n: int
    d: int
    num_shares: int  # 0: the full graph (SecAgg)
    total_s: float
    cpu_s: float
    server_s: float
    clients_s: float
    serde_s: float
    per_client_ms: float  # median over the clients that took part in all four stages
    bytes_up: int
    bytes_down: int
    dropped: tuple[int, ...]
    max_abs_err: float
    stage_clients_s: dict[str, float]

    def line(self) -> str:
        k = "N (SecAgg)" if self.num_shares == 0 else str(self.num_shares)
        stages = ", ".join(f"{s}={v:.3f}" for s, v in self.stage_clients_s.items())
        return (
            f"N={self.n} D={self.d} K={k} drop={len(self.dropped)} | total {self.total_s:.3f} s "
            f"(cpu {self.cpu_s:.3f} s) | server {self.server_s:.3f} s | clients(sum) "
            f"{self.clients_s:.3f} s | serde {self.serde_s:.3f} s | per-client med "
            f"{self.per_client_ms:.1f} ms | up {self.bytes_up / 1e6:.1f} MB down "
            f"{self.bytes_down / 1e6:.1f} MB | max|err| {self.max_abs_err:.2e} | "
            f"client by stage (s): {stages}"
        )


class _Client:
    """One Flower client: its own Context and secaggplus_mod around a no-cost train step."""

    def __init__(self, node_id: int, update: np.ndarray, weight: int) -> None:
        self.node_id = node_id
        self.update = update
        self.weight = weight
        self.context = Context(run_id=RUN_ID, node_id=node_id, node_config={}, state=RecordDict(), run_config={})

    def _train(self, msg: Message, context: Context) -> Message:
        fitres = FitRes(
            status=Status(code=Code.OK, message=""),
            parameters=ndarrays_to_parameters([self.update]),
            num_examples=self.weight,
            metrics={},
        )
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    def handle(self, msg: Message) -> Message:
        return secaggplus_mod(msg, self.context, self._train)


class InProcessGrid(Grid):
    """A Grid that delivers every message through Flower's serde to clients in this process."""

    def __init__(self, clients: Sequence[_Client], drop_frac: float) -> None:
        self._run = Run.create_empty(RUN_ID)
        self.clients = {c.node_id: c for c in clients}
        self.drop_frac = drop_frac
        self.threshold = 0
        self.neighbors: dict[int, set[int]] = {}
        self.dropped: set[int] = set()
        self.replies: dict[str, Message] = {}
        self.next_id = 0
        self.serde_s = 0.0
        self.bytes = {"up": 0, "down": 0}
        self.client_s: dict[int, dict[str, float]] = defaultdict(dict)

    # -- Grid ------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(  # pylint: disable=too-many-arguments,R0917
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.clients)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        ids: list[str] = []
        for msg in batch:
            self.next_id += 1
            msg.metadata.__dict__["_message_id"] = f"ins-{self.next_id}"
            ids.append(msg.metadata.message_id)
        for msg in batch:
            self._deliver(msg, batch)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        # Every live client has answered by the time push_messages returns: one pull suffices.
        return self.pull_messages(self.push_messages(messages))

    # -- transport -------------------------------------------------------------------------
    def _wire(self, msg: Message, direction: str) -> Message:
        t0 = time.perf_counter()
        data = message_to_proto(msg).SerializeToString()
        proto = ProtoMessage()
        proto.ParseFromString(data)
        out = message_from_proto(proto)
        self.serde_s += time.perf_counter() - t0
        self.bytes[direction] += len(data)
        return out

    def _deliver(self, msg: Message, batch: list[Message]) -> None:
        received = self._wire(msg, "down")
        node_id = received.metadata.dst_node_id
        config = received.content.config_records[RECORD_KEY_CONFIGS]
        stage = str(config[Key.STAGE])
        self._observe(stage, node_id, config, batch)
        if node_id in self.dropped:
            return
        t0 = time.perf_counter()
        reply = self.clients[node_id].handle(received)
        dt = time.perf_counter() - t0
        self.client_s[node_id][stage] = self.client_s[node_id].get(stage, 0.0) + dt
        self.replies[msg.metadata.message_id] = self._wire(reply, "up")

    def _observe(self, stage: str, node_id: int, config: ConfigRecord, batch: list[Message]) -> None:
        """Read what the protocol needs for dropout from the messages the grid carries."""
        if stage == Stage.SETUP:
            self.threshold = int(config[Key.THRESHOLD])  # type: ignore[arg-type]
        elif stage == Stage.SHARE_KEYS:
            # The server sends each client the public keys of its neighborhood (itself
            # included), keyed by node id.
            self.neighbors[node_id] = {int(k) for k in config.keys() if k != Key.STAGE}
        elif stage == Stage.COLLECT_MASKED_VECTORS and self.drop_frac > 0 and not self.dropped:
            self.dropped = self._pick_drops({m.metadata.dst_node_id for m in batch})

    def _pick_drops(self, active: set[int]) -> set[int]:
        want = int(round(self.drop_frac * len(active)))
        chosen: set[int] = set()
        for node_id in sorted(active):
            if len(chosen) >= want:
                break
            trial = chosen | {node_id}
            if all(len(nb - trial) >= self.threshold for nb in self.neighbors.values()):
                chosen = trial
        return chosen


@contextmanager
def _server_identity() -> Iterator[None]:
    """Flower's messages take their run and source from TaskIdentity; restore it afterwards."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """FedAvg's sampling and the workflow's neighbour shuffle use the global ``random``."""
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


def run_round(
    updates: Sequence[np.ndarray],
    num_shares: int,
    drop_frac: float,
    *,
    weight: int = 100,
    max_weight: float = 1000.0,
    seed: int = 1,
) -> PeerRound:
    """One SecAgg+ round of Flower's code over ``updates`` (client i is node i + 1).

    ``num_shares`` is Flower's: 3 is its example's setting (two neighbors and the client
    itself, threshold 2); 0 runs the full graph (``SecAggWorkflow``, threshold 51%).
    """
    n, d = len(updates), int(updates[0].shape[0])
    clients = [_Client(i + 1, u, weight) for i, u in enumerate(updates)]
    grid = InProcessGrid(clients, drop_frac)
    workflow: SecAggPlusWorkflow
    if num_shares == 0:
        workflow = SecAggWorkflow(reconstruction_threshold=0.51, max_weight=max_weight)
    else:
        workflow = SecAggPlusWorkflow(
            num_shares=num_shares,
            reconstruction_threshold=num_shares // 2 + 1,
            max_weight=max_weight,
        )

    with _server_identity(), _seeded(seed):
        strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0)
        manager = SimpleClientManager()
        for c in clients:
            manager.register(GridClientProxy(c.node_id, grid, RUN_ID))
        base = Context(run_id=RUN_ID, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={})
        context = LegacyContext(
            context=base, config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=manager
        )
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters([np.zeros(d, np.float32)]), keep_input=True
        )

        t0, c0 = time.perf_counter(), time.process_time()
        workflow(grid, context)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0

    params = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    got = parameters_to_ndarrays(params)[0]
    alive = [c for c in clients if c.node_id not in grid.dropped]
    ref = sum(c.update.astype(np.float64) for c in alive) / len(alive)  # equal weights
    clients_s = sum(sum(v.values()) for v in grid.client_s.values())
    full = [sum(v.values()) for v in grid.client_s.values() if len(v) == len(STAGES)]
    by_stage = {s: sum(v.get(s, 0.0) for v in grid.client_s.values()) for s in STAGES}
    return PeerRound(
        n=n,
        d=d,
        num_shares=num_shares,
        total_s=total,
        cpu_s=cpu,
        server_s=total - clients_s - grid.serde_s,
        clients_s=clients_s,
        serde_s=grid.serde_s,
        per_client_ms=1e3 * statistics.median(full),
        bytes_up=grid.bytes["up"],
        bytes_down=grid.bytes["down"],
        dropped=tuple(sorted(grid.dropped)),
        max_abs_err=float(np.max(np.abs(got - ref))),
        stage_clients_s=by_stage,
    )


def main(argv: Sequence[str]) -> int:
    if len(argv) != 4:
        print("usage: python benches/flower_peer.py N D K DROP_FRAC   (K = 0: full graph)")
        return 2
    n, d, k, frac = int(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    rng = np.random.default_rng(0)
    ups = [(rng.standard_normal(d) * 0.05).astype(np.float32) for _ in range(n)]
    print(run_round(ups, k, frac).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
