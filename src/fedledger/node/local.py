"""A consortium on one machine, for trying fedledger's nodes, for examples, tests and benches:
a real etcd cluster (:class:`LocalEtcd`) and one ``fedledger node run`` process per validator
(:class:`LocalConsortium`), each with its own replica and only its own key.

Production consortia run etcd and the nodes on their own machines (``fedledger node --help``);
this module only starts processes on this one. It needs Debian's ``etcd-server`` (or any
``etcd`` 3.4+ on the PATH) and the node extra.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import fedledger
from fedledger.errors import InvalidArgument, NodeError
from fedledger.identity import Identity
from fedledger.ledger import Genesis, Ledger, Transaction
from fedledger.node import cli, client

__all__ = ["LocalConsortium", "LocalEtcd"]


ETCD = shutil.which("etcd")


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together, so all distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


_SETPRIV = shutil.which("setpriv")


def _tied(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs it when the thread that starts it ends (the main
    thread: when this process dies, even by SIGKILL). util-linux's ``setpriv`` sets it, in the
    child, before it runs ``argv``: no Python code runs between fork and exec (a ``preexec_fn``
    would, which can deadlock or crash beside gRPC's threads)."""
    if (
        _SETPRIV is None
        or not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return argv
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


class LocalEtcd:
    """``members`` etcd processes on loopback (one Raft cluster); a context manager that starts
    and stops them all. Each member's data directory and log are under ``base_dir``.

    Ports are picked free when the object is made and kept across ``restart``."""

    def __init__(self, base_dir: Path, members: int = 3, listen_all: bool = False) -> None:
        self.base_dir = Path(base_dir)
        self.listen_all = listen_all  # clients may also come from other network namespaces
        self.members = members
        ports = _free_ports(2 * members)
        self._client_ports, self._peer_ports = ports[:members], ports[members:]
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * members

    @property
    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self._client_ports]

    def start(self, timeout: float = 20.0) -> None:
        """Start every member and wait until each one answers its health check. A port taken
        between picking it and binding it (another process on this machine) means new ports and
        a second try."""
        for attempt in range(2):
            try:
                for i in range(self.members):
                    self._spawn(i, "new")
                for i in range(self.members):
                    self._wait_healthy(i, timeout)
                return
            except RuntimeError:
                self.stop()
                logs = "".join((self.base_dir / f"n{i}.log").read_text(errors="replace") for i in range(self.members))
                if attempt or "address already in use" not in logs:
                    raise
                for i in range(self.members):
                    shutil.rmtree(self.base_dir / f"n{i}", ignore_errors=True)
                ports = _free_ports(2 * self.members)
                self._client_ports, self._peer_ports = ports[: self.members], ports[self.members :]
            except BaseException:
                self.stop()
                raise

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (no clean shutdown) and reap it."""
        process = self._processes[i]
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            self._processes[i] = None

    def leader(self) -> int:
        """The index of the member that leads now (each running member asked through etcd's JSON
        gateway whether it is the leader)."""
        for i, url in enumerate(self.client_urls):
            if self._processes[i] is None:
                continue
            request = urllib.request.Request(f"{url}/v3/maintenance/status", data=b"{}")
            with urllib.request.urlopen(request, timeout=2) as reply:
                status = json.loads(reply.read())
            if status["header"]["member_id"] == status["leader"]:
                return i
        raise RuntimeError("no running member leads")

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: it hangs, its connections stay open (``resume`` or ``kill`` it)."""
        process = self._processes[i]
        if process is not None:
            process.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        process = self._processes[i]
        if process is not None:
            process.send_signal(signal.SIGCONT)

    def restart(self, *members: int, timeout: float = 20.0) -> None:
        """Start these members again on their data directories and ports; wait until they answer
        (restart them together when the others are down: a member without a quorum never does)."""
        for i in members:
            self.kill(i)
            self._spawn(i, "existing")
        for i in members:
            self._wait_healthy(i, timeout)

    def stop(self) -> None:
        for i in range(self.members):
            self.kill(i)

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, i: int, state: str) -> None:
        if ETCD is None:
            raise FileNotFoundError("etcd is not installed (sh scripts/system-deps.sh installs etcd-server)")
        name = f"n{i}"
        peers = ",".join(f"n{j}=http://127.0.0.1:{port}" for j, port in enumerate(self._peer_ports))
        command = [
            ETCD,
            f"--name={name}",
            f"--data-dir={self.base_dir / name}",
            f"--listen-client-urls=http://{'0.0.0.0' if self.listen_all else '127.0.0.1'}:{self._client_ports[i]}",
            f"--advertise-client-urls={self.client_urls[i]}",
            f"--listen-peer-urls=http://127.0.0.1:{self._peer_ports[i]}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self._peer_ports[i]}",
            f"--initial-cluster={peers}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=fedledger-local",
        ]
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.base_dir / f"{name}.log", "ab") as log:
            self._processes[i] = subprocess.Popen(
                _tied(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _wait_healthy(self, i: int, timeout: float) -> None:
        """Until member ``i`` reports itself healthy (it has a leader and answers reads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self._processes[i]
            if process is None or process.poll() is not None:
                raise RuntimeError(f"etcd member n{i} exited; see {self.base_dir / f'n{i}.log'}")
            try:
                with urllib.request.urlopen(f"{self.client_urls[i]}/health", timeout=1) as reply:
                    if b'"health":"true"' in reply.read().replace(b" ", b""):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"etcd member n{i} not healthy after {timeout} s; see {self.base_dir / f'n{i}.log'}")


#: Where the fedledger package lives, for the node processes' PYTHONPATH.
_SRC = str(Path(fedledger.__file__).parents[1])


class LocalConsortium:
    """Validators with ``stakes`` (node i holds validator i's key) and ``members`` that submit,
    identities and genesis made by ``fedledger node init`` in ``base/consortium``, ordering
    through a :class:`LocalEtcd` of 3 members. A context manager; :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        base: str | Path,
        stakes: Sequence[int],
        members: int = 8,
        *,
        round_timeout: float = 1.0,
        password: str = "local-consortium",
        contracts: Sequence[type[Any]] = (),
        etcd_listen_all: bool = False,
        chain_id: str = "local-consortium",
    ) -> None:
        if not stakes:
            raise InvalidArgument("stakes", "a consortium needs at least one validator")
        self.base = Path(base)
        self.stakes = list(stakes)
        self.names = [f"v{i}" for i in range(len(self.stakes))]
        self.member_names = [f"m{i}" for i in range(members)]
        self.round_timeout = round_timeout
        self.password = password
        if not contracts:
            from fedledger.contracts import BUILTIN

            contracts = list(BUILTIN)
        self.contracts = list(contracts)
        self.genesis: Genesis = cli.init(
            self.base / "consortium",
            chain_id,
            list(zip(self.names, self.stakes)),
            self.member_names,
            self.contracts,
            password,
        )
        self.etcd = LocalEtcd(self.base / "etcd", members=3, listen_all=etcd_listen_all)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.urls: dict[int, str] = {}
        self._identities: dict[str, Identity] = {}
        self._nonces: dict[str, int] = {}

    def identity(self, name: str) -> Identity:
        if name not in self._identities:
            self._identities[name] = Identity.load(self.base / "consortium" / f"{name}.identity", self.password)
        return self._identities[name]

    def data(self, i: int) -> Path:
        """Node i's folder (its replica is ``ledger.sqlite`` there)."""
        return self.base / f"node-{i}"

    # -- processes ----------------------------------------------------------------------

    def start(self) -> None:
        self.etcd.start()
        for i in range(len(self.stakes)):
            self.start_node(i, wait=False)
        for i in range(len(self.stakes)):
            self._wait_ready(i)

    def node_command(self, i: int, etcd: Sequence[str], listen: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fedledger",
            "node",
            "run",
            "--genesis",
            str(self.base / "consortium" / "genesis.json"),
            "--identity",
            str(self.base / "consortium" / f"{self.names[i]}.identity"),
            "--data",
            str(self.data(i)),
            "--etcd",
            ",".join(etcd),
            "--listen",
            listen,
            "--round-timeout",
            str(self.round_timeout),
        ]

    def start_node(self, i: int, wait: bool = True, command: list[str] | None = None) -> None:
        """Start node i (``command``: another way to run it, e.g. in a network namespace)."""
        log = open(self.base / f"node-{i}.log", "ab")  # noqa: SIM115 - the process owns it
        env = {**os.environ, "PYTHONPATH": _SRC, "FEDLEDGER_IDENTITY_PASSWORD": self.password}
        argv = command or self.node_command(i, self.etcd.client_urls, "127.0.0.1:0")
        self.processes[i] = subprocess.Popen(_tied(argv), stdout=subprocess.PIPE, stderr=log, env=env)
        if wait:
            self._wait_ready(i)

    def _wait_ready(self, i: int) -> None:
        process = self.processes[i]
        assert process.stdout is not None
        line = process.stdout.readline()  # the ready line (or EOF if it died)
        if not line:
            raise NodeError(f"node {i} exited before it was ready:\n{self.log(i)}")
        self.urls[i] = json.loads(line)["listen"]

    def log(self, i: int, chars: int = 3000) -> str:
        return (self.base / f"node-{i}.log").read_text(errors="replace")[-chars:]

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send node i ``sig`` and reap it (NodeError, with its log, if it does not stop in 30 s)."""
        process = self.processes.pop(i)
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise NodeError(
                f"node {i} did not stop within 30 s of signal {sig}; its log ends:\n{self.log(i)}"
            ) from None

    def stop(self) -> None:
        stuck = []
        for i in list(self.processes):
            try:
                self.kill_node(i, signal.SIGTERM)
            except NodeError as exc:
                stuck.append(str(exc))
        self.etcd.stop()
        if stuck:
            raise NodeError("; ".join(stuck))

    def __enter__(self) -> LocalConsortium:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use --------------------------------------------------------------------------------

    def notes(self, member: str, count: int) -> list[Transaction]:
        """``count`` signed ``note`` transactions from ``member``, continuing its nonces."""
        identity = self.identity(member)
        start = self._nonces.get(member, 0)
        self._nonces[member] = start + count
        return [
            Transaction.create(identity, kind="note", payload={"n": n}, nonce=n, chain_id=self.genesis.chain_id)
            for n in range(start, start + count)
        ]

    @property
    def submitted(self) -> int:
        """How many notes :meth:`notes` has signed."""
        return sum(self._nonces.values())

    def submit(self, i: int, txs: Sequence[Transaction]) -> None:
        """Submit to node i; NodeError if it refuses any."""
        results = client.submit(self.urls[i], txs)
        refused = [r for r in results if not r["accepted"]]
        if refused:
            raise NodeError(f"node {i} refused {len(refused)} transactions: {refused[:3]}")

    def status(self, i: int) -> dict[str, Any]:
        return client.status(self.urls[i])

    def wait_for(
        self, log_size: int, nodes: Sequence[int] | None = None, timeout: float = 120.0
    ) -> list[dict[str, Any]]:
        """Wait until every node in ``nodes`` (default: all running) holds ``log_size`` transactions."""
        which = sorted(self.processes) if nodes is None else list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            statuses = [self.status(i) for i in which]
            if all(s["log_size"] >= log_size for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes did not reach {log_size} transactions: {statuses}")
            time.sleep(0.05)

    def replica(self, i: int) -> Ledger:
        """Node i's replica, opened read-only."""
        return Ledger.open(self.data(i) / "ledger.sqlite", read_only=True, contracts=self.contracts)
