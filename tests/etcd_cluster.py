"""A real etcd cluster on loopback for the tests: one ``etcd`` process per member.

``EtcdCluster(base_dir, members=3)`` picks free ports, keeps each member's data directory and log
(stdout and stderr) under ``base_dir``, and kills every process it started in ``stop()``, also
when starting fails. The ``etcd_cluster`` fixture skips when the ``etcd`` binary is missing, except
under CI, where a missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import ctypes
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
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

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


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGKILL it when the thread that started it ends (the
    main thread: when the test process dies, even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EtcdCluster:
    """``members`` etcd processes on loopback; a context manager that starts and stops them all.

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

    def __enter__(self) -> EtcdCluster:
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
            "--initial-cluster-token=fedledger-tests",
        ]
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # Tied to the main thread only: a worker thread (asyncio.to_thread) ends before the test does.
        tie = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        with open(self.base_dir / f"{name}.log", "ab") as log:
            self._processes[i] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=tie
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


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster, stopped after the test."""
    if ETCD is None:
        message = "the etcd binary is not installed (sh scripts/system-deps.sh installs etcd-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the etcd tests")
        pytest.skip(message)
    with EtcdCluster(tmp_path / "etcd") as cluster:
        yield cluster
