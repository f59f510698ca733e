"""A validator or member node: its own ledger replica and key, ordering through etcd.

:class:`Node` runs :class:`~fedledger.node.driver.Driver` over an asyncio loop: one watch on the
chain's keyspace feeds it every change in revision order, a ticker gives it the time for round
timeouts, and one writer task makes its writes in the order it asked for them (a block's parts
before its slot). :func:`serve` adds a small HTTP interface for other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fedledger import encoding
from fedledger.errors import FedLedgerError, InvalidArgument, InvalidArgumentType, OrdererUnavailable
from fedledger.identity import Identity
from fedledger.ledger import Genesis, Ledger, SignedTreeHead, Transaction
from fedledger.ledger.contract import Contract
from fedledger.ledger.ledger import SubmitResult
from fedledger.node import protocol
from fedledger.node.driver import DEFAULT_KEEP_HEIGHTS, Action, Create, Delete, DeleteRange, Driver, Put
from fedledger.node.etcd import Etcd

log = logging.getLogger("fedledger.node")

#: Transactions per block at most: smaller blocks than a single-process ledger's, so that one
#: block's checking overlaps the next one's admission across the nodes (and each block's parts
#: stay few).
DEFAULT_NODE_BLOCK_TXS = 2000
#: Transactions checked in one go (a signature each) before the loop turns to consensus messages:
#: about 10 ms of work, so a vote or a proposal never waits long behind the mempool.
_SLICE = 100


class SQLiteVoteRecord:
    """The heights this validator voted at and for which header, in ``votes.sqlite``, written
    durably (``synchronous=FULL``) before a vote leaves the node: a restarted validator never
    signs a second header at a height."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS votes (height INTEGER PRIMARY KEY, round INTEGER NOT NULL, block BLOB NOT NULL)"
        )

    def voted(self, height: int) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT round, block FROM votes WHERE height = ?", (height,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def record(self, height: int, round_: int, block_hash: bytes) -> None:
        self._db.execute("INSERT INTO votes VALUES (?, ?, ?)", (height, round_, block_hash))

    def close(self) -> None:
        self._db.close()


class Node:
    """One consortium node: a ledger replica in ``data_dir`` holding only ``identity``'s key.

    ``genesis`` is the consortium's (every node starts from the same one); ``etcd`` lists the
    client URLs of the ordering cluster's members. A validator (``identity`` in the genesis
    validator set) proposes in its turn and votes; any node submits, follows and commits.
    Use ``async with Node(...) as node`` or :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        data_dir: str | Path,
        identity: Identity,
        genesis: Genesis,
        etcd: Sequence[str],
        *,
        name: str | None = None,
        contracts: Iterable[type[Contract]] = (),
        round_timeout: float = 2.0,
        batch_delay: float = 0.05,
        max_block_txs: int = DEFAULT_NODE_BLOCK_TXS,
        tick: float = 0.02,
        etcd_timeout: float = 5.0,
        keep_heights: int | None = DEFAULT_KEEP_HEIGHTS,
    ) -> None:
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected Identity, got {type(identity).__name__}")
        if not isinstance(genesis, Genesis):
            raise InvalidArgumentType("genesis", f"expected Genesis, got {type(genesis).__name__}")
        for what, value in (("round_timeout", round_timeout), ("batch_delay", batch_delay), ("tick", tick)):
            if not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidArgument(what, f"must be a non-negative number of seconds, got {value!r}")
        self.data_dir = Path(data_dir)
        self.identity = identity
        self.genesis = genesis
        self.name = name or identity.name
        if not self.name or "/" in self.name:
            raise InvalidArgument("name", f"must be a non-empty name without '/', got {self.name!r}")
        self._endpoints = list(etcd)
        self._contracts = tuple(contracts)
        self._round_timeout = float(round_timeout)
        self._batch_delay = float(batch_delay)
        self._max_block_txs = max_block_txs
        self._tick = float(tick)
        self._etcd_timeout = etcd_timeout
        if keep_heights is not None and (type(keep_heights) is not int or keep_heights < 1):
            raise InvalidArgument("keep_heights", f"must be a positive int or None, got {keep_heights!r}")
        self._keep_heights = keep_heights
        self._ledger: Ledger | None = None
        self._driver: Driver | None = None
        self._etcd: Etcd | None = None
        self._votes: SQLiteVoteRecord | None = None
        self._writes: asyncio.Queue[Action] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._committed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the replica, connect to etcd, replay what etcd holds that the replica lacks
        (catching up), then follow the chain."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        g = self.genesis
        local = [self.identity] if self.identity.verify_key in g.validators else []
        self._ledger = Ledger.open(
            self.data_dir / "ledger.sqlite",
            chain_id=g.chain_id,
            validators=g.validators,
            members=g.members,
            local_validators=local,
            contracts=self._contracts,
            max_block_txs=self._max_block_txs,
        )
        if self._ledger.genesis.hash != g.hash:
            self._ledger.close()
            raise InvalidArgument(
                "genesis", "this replica's genesis differs from the consortium's (other members or contracts)"
            )
        self._votes = SQLiteVoteRecord(self.data_dir / "votes.sqlite")
        self._driver = Driver(
            self._ledger,
            self.identity,
            self.name,
            self._votes,
            round_timeout=self._round_timeout,
            batch_delay=self._batch_delay,
            first_pool_seq=time.time_ns() // 1000,
            keep_heights=self._keep_heights,
        )
        self._etcd = await Etcd.connect(self._endpoints, timeout=self._etcd_timeout)
        revision = await self._read_all(check_head=True)
        missing = self._driver.missing_history()
        if missing is not None:
            self._driver.problems.append(
                f"etcd no longer holds block {missing} (pruned): start this node from a copy of a peer's replica"
            )
        self._tasks = [
            asyncio.create_task(self._watch(revision + 1)),
            asyncio.create_task(self._ticker()),
            asyncio.create_task(self._pool()),
            asyncio.create_task(self._writer()),
        ]

    async def _read_all(self, check_head: bool = False) -> int:
        """Feed the driver everything etcd holds for this chain, in revision order (catching up);
        the revision read."""
        assert self._etcd is not None and self._driver is not None
        g = self.genesis
        revision, items = await self._etcd.get_prefix(protocol.prefix(g.chain_id))
        if check_head:
            own = protocol.head_key(g.chain_id, self.name)
            self._check_own_head(next((value for key, value, _ in items if key == own), None))
        loop = asyncio.get_running_loop()
        for key, value, _ in sorted(items, key=lambda item: item[2]):
            height = self.ledger.height
            self._queue(self._driver.on_change(key, value, loop.time()), height)
        return revision

    async def stop(self) -> None:
        """Stop following; pending writes are dropped (the chain does not depend on them)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._etcd is not None:
            await self._etcd.close()
        if self._votes is not None:
            self._votes.close()
        if self._ledger is not None:
            self._ledger.close()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- use ------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        """This node's replica (read it; the node writes it)."""
        if self._ledger is None:
            raise InvalidArgument("node", "the node is not started")
        return self._ledger

    @property
    def problems(self) -> list[str]:
        """What this node saw go wrong: refused headers, votes or certificates, equivocations."""
        return [] if self._driver is None else list(self._driver.problems)

    @property
    def peer_heads(self) -> dict[str, SignedTreeHead]:
        """The latest signed tree head each node published (truncation checks: ``verify --head``)."""
        if self._driver is None:
            return {}
        out = {}
        for node, value in self._driver.heads.items():
            with contextlib.suppress(FedLedgerError, ValueError):
                out[node] = SignedTreeHead.from_json(value.decode())
        return out

    async def submit(self, txs: Sequence[Transaction | bytes]) -> list[SubmitResult]:
        """Admit transactions here and send the admitted ones to every node through etcd.

        A sender's transactions go to one node, in nonce order: a node admits a transaction
        only when it carries its sender's next nonce.
        """
        driver = self._started()
        results: list[SubmitResult] = []
        wire: list[bytes] = []
        ids: list[bytes] = []
        for start in range(0, len(txs), _SLICE):
            if start:
                await asyncio.sleep(0)  # let consensus messages through between slices
            done, more_wire, more_ids = driver.admit(txs[start : start + _SLICE])
            results += done
            wire += more_wire
            ids += more_ids
        for action in driver.share(wire, ids, asyncio.get_running_loop().time()):
            parsed = protocol.parse_key(driver.chain, action.key) if isinstance(action, Put) else None
            if isinstance(action, Put) and parsed is not None and parsed.kind == "pool" and self._etcd is not None:
                await self._etcd.put(action.key, action.value, ttl=action.ttl)  # in etcd when submit returns
            else:
                self._writes.put_nowait(action)
        return results

    async def wait_for_height(self, height: int, timeout: float) -> None:
        """Return once the replica holds block ``height``; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while self.ledger.height < height:
                self._committed.clear()
                await self._committed.wait()

    def status(self) -> dict[str, Any]:
        driver = self._started()
        ledger = driver.ledger
        return {
            "name": self.name,
            "chain": ledger.chain_id,
            "height": ledger.height,
            "round": driver.round,
            "log_size": ledger.log_size,
            "state_root": ledger.state_root.hex(),
            "pending": len(ledger.pending),
            "problems": driver.problems[-20:],
        }

    # -- the loops ------------------------------------------------------------------------

    def _started(self) -> Driver:
        if self._driver is None:
            raise InvalidArgument("node", "the node is not started")
        return self._driver

    def _check_own_head(self, value: bytes | None) -> None:
        """A replica behind the head it published before (its file lost blocks) says so; it catches
        up from etcd like any lagging node, and the head it published must then be in its chain."""
        if value is None:
            return
        ledger = self.ledger
        try:
            head = SignedTreeHead.from_json(value.decode())
        except (FedLedgerError, ValueError):
            return
        if ledger.height >= head.height:
            if ledger.block(head.height).hash != head.header.hash:
                self._started().problems.append(
                    f"this replica's block {head.height} differs from the head it published: it forked or was replaced"
                )
        else:
            self._started().problems.append(
                f"this replica is at height {ledger.height}, below the head {head.height} it published "
                "(its file lost blocks): catching up from etcd"
            )

    def _queue(self, actions: list[Action], height: int) -> None:
        """Queue the driver's writes; wake waiters when the replica moved past ``height``."""
        for action in actions:
            self._writes.put_nowait(action)
        if self.ledger.height != height:
            self._committed.set()

    async def _watch(self, revision: int) -> None:
        assert self._etcd is not None and self._driver is not None
        loop = asyncio.get_running_loop()
        prefix = protocol.prefix(self.genesis.chain_id)
        while True:
            try:
                async for event in self._etcd.watch_prefix(prefix, revision):
                    height = self.ledger.height
                    self._queue(self._driver.on_change(event.key, event.value, loop.time()), height)
                    revision = event.revision + 1
                return  # the client was closed
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a node must keep following whatever broke
                # Read everything again and resume after it: the rules ignore what they have seen.
                self._driver.problems.append(f"the watch broke ({type(exc).__name__}: {exc}); reading etcd again")
                log.warning("%s: watch broke: %s", self.name, exc)
                await asyncio.sleep(0.5)
                try:
                    revision = await self._read_all() + 1
                except Exception as again:  # noqa: BLE001
                    log.warning("%s: reading etcd again failed: %s", self.name, again)

    async def _ticker(self) -> None:
        assert self._driver is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            height = self.ledger.height
            self._queue(self._driver.on_tick(loop.time()), height)

    async def _pool(self) -> None:
        """Admit other nodes' transactions a batch at a time, yielding to consensus messages between."""
        assert self._driver is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._driver.pool_backlog:
                await asyncio.sleep(self._tick)
                continue
            if self._writes.qsize():
                await asyncio.sleep(0.001)  # consensus writes go first
                continue
            height = self.ledger.height
            self._queue(self._driver.admit_pool(loop.time(), _SLICE), height)
            await asyncio.sleep(0)

    async def _writer(self) -> None:
        assert self._etcd is not None
        while True:
            action = await self._writes.get()
            while True:
                try:
                    if isinstance(action, Put):
                        await self._etcd.put(action.key, action.value, ttl=action.ttl)
                    elif isinstance(action, Create):
                        await self._etcd.create(action.key, action.value)
                    elif isinstance(action, Delete):
                        await self._etcd.delete(action.key)
                    elif isinstance(action, DeleteRange):
                        await self._etcd.delete_range(action.start, action.end)
                    break
                except OrdererUnavailable as exc:
                    # No etcd majority: nothing can be ordered; retry the same write, in order.
                    log.warning("%s: %s; retrying", self.name, exc)
                    await asyncio.sleep(0.5)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one refused write must not stop the node
                    self._started().problems.append(f"a write to etcd failed ({type(exc).__name__}: {exc})")
                    log.warning("%s: write failed: %s", self.name, exc)
                    break


def serve(node: Node, host: str, port: int, loop: asyncio.AbstractEventLoop) -> ThreadingHTTPServer:
    """An HTTP interface to ``node`` on ``host:port``, in a thread (stop it with ``shutdown()``):

    - ``POST /txs``: a CBOR list of transactions' wire bytes; answers a JSON list of
      ``{"id", "accepted", "reason"}``;
    - ``GET /status``: height, round, log size, state root, pending count, recent problems;
    - ``GET /head``: the replica's signed tree head (``fedledger ledger head`` format);
    - ``GET /heads``: the heads the other nodes published.
    """

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            log.debug("%s: " + format, node.name, *args)

        def _reply(self, status: int, document: object) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _run(self, coro: Any, timeout: float = 60.0) -> Any:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

        def do_GET(self) -> None:  # noqa: N802 - the base's name
            try:
                if self.path == "/status":
                    self._reply(200, self._run(_call(node.status)))
                elif self.path == "/head":
                    head = self._run(_call(node.ledger.tree_head))
                    self._reply(200, json.loads(head.to_json()))
                elif self.path == "/heads":
                    heads = self._run(_call(lambda: node.peer_heads))
                    self._reply(200, {k: json.loads(v.to_json()) for k, v in heads.items()})
                else:
                    self._reply(404, {"error": f"no such path {self.path!r}"})
            except FedLedgerError as exc:
                self._reply(409, {"error": f"{type(exc).__name__}: {exc}"})

        def do_POST(self) -> None:  # noqa: N802 - the base's name
            if self.path != "/txs":
                self._reply(404, {"error": f"no such path {self.path!r}"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                items = encoding.decode(self.rfile.read(length))
                if type(items) is not list or not all(type(i) is bytes for i in items):
                    raise InvalidArgument("body", "expected a CBOR list of transactions' wire bytes")
                results = self._run(node.submit(items))  # type: ignore[arg-type]
            except (FedLedgerError, ValueError) as exc:
                self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self._reply(
                200,
                [
                    {"id": r.tx_id.hex() if r.tx_id else None, "accepted": r.accepted, "reason": r.reason}
                    for r in results
                ],
            )

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name=f"fedledger-node-http-{node.name}", daemon=True).start()
    return server


async def _call(fn: Any) -> Any:
    """Run ``fn`` on the node's loop (the replica is not shared across threads)."""
    return fn()
