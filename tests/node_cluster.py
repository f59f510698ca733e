"""A consortium on this machine for the tests: a real etcd cluster and one ``fedledger node run``
process per validator, each with its own replica and only its own key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from etcd_cluster import ETCD, EtcdCluster

import fedledger
from fedledger import Transaction
from fedledger.contracts import BUILTIN
from fedledger.identity import Identity
from fedledger.ledger import Genesis, Ledger
from fedledger.node import cli, client

PASSWORD = "test-consortium"
SRC = str(Path(fedledger.__file__).parents[1])


def require_etcd() -> None:
    """Skip without the etcd binary, except under CI, where that fails the test."""
    if ETCD is None:
        message = "the etcd binary is not installed (sh scripts/system-deps.sh installs etcd-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the node tests")
        pytest.skip(message)


class NetworkNamespace:
    """A network namespace joined to this one by a veth pair (host side ``host_ip``, namespace side
    ``ip``); :meth:`cut` takes the link down, :meth:`restore` brings it back. Needs root."""

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.host_if, self.ns_if = f"flh{index}", f"fln{index}"
        self.host_ip, self.ip = f"10.213.{index}.1", f"10.213.{index}.2"

    @staticmethod
    def available() -> bool:
        probe = f"flprobe{os.getpid()}"
        ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return ok

    def _ip(self, *args: str, ns: bool = False) -> None:
        command = ["ip", "netns", "exec", self.name, "ip", *args] if ns else ["ip", *args]
        subprocess.run(command, check=True, capture_output=True)

    def create(self) -> None:
        self.delete()
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._ip("link", "set", self.ns_if, "netns", self.name)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        self._ip("addr", "add", f"{self.ip}/30", "dev", self.ns_if, ns=True)
        self._ip("link", "set", self.ns_if, "up", ns=True)
        self._ip("link", "set", "lo", "up", ns=True)

    def cut(self) -> None:
        self._ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        self._ip("link", "set", self.host_if, "up")

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Consortium:
    """``stakes`` validators (node i holds validator i's key) and ``members`` submitting members."""

    def __init__(
        self,
        base: Path,
        stakes: list[int],
        members: int = 8,
        round_timeout: float = 1.0,
        netns: dict[int, NetworkNamespace] | None = None,
    ) -> None:
        self.base = Path(base)
        self.stakes = stakes
        self.names = [f"v{i}" for i in range(len(stakes))]
        self.member_names = [f"m{i}" for i in range(members)]
        self.round_timeout = round_timeout
        self.genesis: Genesis = cli.init(
            self.base / "consortium",
            "test-consortium",
            list(zip(self.names, stakes)),
            self.member_names,
            list(BUILTIN),
            PASSWORD,
        )
        self.netns = netns or {}  # node index -> the namespace it runs in
        self.etcd = EtcdCluster(self.base / "etcd", members=3, listen_all=bool(self.netns))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.urls: dict[int, str] = {}
        self._identities: dict[str, Identity] = {}
        self._nonces: dict[str, int] = {}

    def identity(self, name: str) -> Identity:
        if name not in self._identities:
            self._identities[name] = Identity.load(self.base / "consortium" / f"{name}.identity", PASSWORD)
        return self._identities[name]

    def data(self, i: int) -> Path:
        return self.base / f"node-{i}"

    # -- processes ----------------------------------------------------------------------

    def start(self) -> None:
        for ns in self.netns.values():
            ns.create()
        self.etcd.start()
        for i in range(len(self.stakes)):
            self.start_node(i, wait=False)
        for i in range(len(self.stakes)):
            self._wait_ready(i)

    def start_node(self, i: int, wait: bool = True) -> None:
        ns = self.netns.get(i)
        etcd = self.etcd.client_urls
        if ns is not None:  # the etcd members as the namespace reaches them
            etcd = [u.replace("127.0.0.1", ns.host_ip) for u in etcd]
        log = open(self.base / f"node-{i}.log", "ab")  # noqa: SIM115 - the process owns it
        command = [
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
            f"{ns.ip}:0" if ns else "127.0.0.1:0",
            "--round-timeout",
            str(self.round_timeout),
        ]
        if ns is not None:
            command = ["ip", "netns", "exec", ns.name, *command]
        env = {**os.environ, "PYTHONPATH": SRC, "FEDLEDGER_IDENTITY_PASSWORD": PASSWORD}
        self.processes[i] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env)
        if wait:
            self._wait_ready(i)

    def _wait_ready(self, i: int, timeout: float = 60.0) -> None:
        process = self.processes[i]
        assert process.stdout is not None
        line = process.stdout.readline()  # the ready line (or EOF if it died)
        if not line:
            log = (self.base / f"node-{i}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node {i} exited before it was ready:\n{log}")
        self.urls[i] = json.loads(line)["listen"]

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(i)
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            log = (self.base / f"node-{i}.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"node {i} did not stop within 30 s of signal {sig}; its log ends:\n{log}") from None

    def stop(self) -> None:
        stuck = []
        for i in list(self.processes):
            try:
                self.kill_node(i, signal.SIGTERM)
            except AssertionError as exc:
                stuck.append(str(exc))
        self.etcd.stop()
        for ns in self.netns.values():
            ns.delete()
        assert not stuck, stuck

    def __enter__(self) -> Consortium:
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
        """``count`` signed notes from ``member``, continuing its nonces."""
        identity = self.identity(member)
        start = self._nonces.get(member, 0)
        self._nonces[member] = start + count
        return [
            Transaction.create(identity, kind="note", payload={"n": n}, nonce=n, chain_id=self.genesis.chain_id)
            for n in range(start, start + count)
        ]

    def submit(self, i: int, txs: list[Transaction]) -> None:
        results = client.submit(self.urls[i], txs)
        refused = [r for r in results if not r["accepted"]]
        assert not refused, refused[:3]

    def status(self, i: int) -> dict[str, Any]:
        return client.status(self.urls[i])

    def wait_for(self, log_size: int, nodes: list[int] | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Wait until every node in ``nodes`` (default: all running) holds ``log_size`` transactions."""
        nodes = sorted(self.processes) if nodes is None else nodes
        deadline = time.monotonic() + timeout
        while True:
            statuses = [self.status(i) for i in nodes]
            if all(s["log_size"] >= log_size for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes did not reach {log_size} transactions: {statuses}")
            time.sleep(0.1)

    def replica(self, i: int) -> Ledger:
        """Node i's replica file, opened read-only (with the consortium's contracts)."""
        return Ledger.open(self.data(i) / "ledger.sqlite", read_only=True, contracts=list(BUILTIN))
