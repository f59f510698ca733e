"""fedledger.integrations.flower in a real Flower deployment: a SuperLink and four SuperNodes
(separate processes, started here) run tests/flower_app, FedAvg under SecureAggregation with
the ledger, submitted with ``flwr run``. Each SuperNode runs in its own network namespace and
reaches the SuperLink over a veth link (root only; elsewhere, outside CI, all on loopback). The
SuperLink serves TLS with a certificate from a CA made for the test; the SuperNodes and
``flwr run`` trust that CA alone. Each SuperNode's
own Runtime API (between it and the app processes it starts, on the same machine) is plain
HTTP on 127.0.0.1, as Flower runs it by default. Runtime dependency installation is off (the
processes share this environment, nothing is downloaded).

Checks: three rounds give plain FedAvg's model within the quantization bound, and the ledger
holds three verified round records; a SuperNode killed (SIGKILL) mid-round becomes a dropout
at the stage it missed, the round completes with the three survivors and is recorded so."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if os.environ.get("CI"):
    import flwr  # noqa: F401 - CI installs flwr: a missing one fails here
else:
    pytest.importorskip("flwr", reason="flwr is not installed (pip install 'fedledger[flower]')")

from flower_helpers import SITES, consortium, initial, open_ledger, reference
from node_cluster import NetworkNamespace

import fedledger
from fedledger import BlobStore
from fedledger.federated import load_aggregate, model_hash

TESTS = Path(__file__).resolve().parent
BOUND = 1e-6
BIN = Path(sys.executable).parent
# The directory that holds the fedledger under test (installed, or src/ of a checkout).
PACKAGE_ROOT = str(Path(fedledger.__file__).resolve().parents[1])


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_HOME=str(home),
        PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, str(TESTS)]),
        # The SuperLink starts flower-superexec by name: this interpreter's scripts come first,
        # whether or not its environment is activated.
        PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    )
    return env


def _wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _certificates(directory: Path, ips: list[str]) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for ``ips`` and localhost signed by it (P-256, valid
    for a day): the paths of the CA's certificate, the server's and the server's key."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedledger test CA")])

    def certificate(subject: x509.Name, public: ec.EllipticCurvePublicKey, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    server = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    paths[0].write_bytes(certificate(ca_name, ca_key.public_key(), True).public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate(server, key.public_key(), False).public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class Deployment:
    """A SuperLink (TLS) and four SuperNodes, each SuperNode in its own network namespace behind
    a veth link where this process may make them (root), else on loopback; :meth:`run` submits
    the app."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.netns: list[NetworkNamespace] = []
        if NetworkNamespace.available():
            self.netns = [NetworkNamespace(f"flw{os.getpid()}n{i}", 220 + i) for i in range(len(SITES))]
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise

    def _start_all(self) -> None:
        root = self.root
        for ns in self.netns:
            ns.create()
        self.ca, server_cert, server_key = _certificates(
            root / "tls", ["127.0.0.1", *(ns.host_ip for ns in self.netns)]
        )
        # One HTTPS port serves the SuperLink's Runtime, Fleet and Control APIs; with namespaces
        # it listens on every address, since the SuperNodes reach it on their links' host ends.
        self.control = fleet = _port()
        self._start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--ssl-ca-certfile", str(self.ca),
                "--ssl-certfile", str(server_cert),
                "--ssl-keyfile", str(server_key),
                "--host", "0.0.0.0" if self.netns else "127.0.0.1",
                "--port", str(self.control),
                "--disable-runtime-dependency-installation",
            ],
        )  # fmt: skip
        _wait_port(self.control, self.procs[0])
        for i in range(len(SITES)):
            ns = self.netns[i] if self.netns else None
            self.nodes.append(
                self._start(
                    f"supernode-{i}",
                    [
                        *(["ip", "netns", "exec", ns.name] if ns else []),
                        str(BIN / "flower-supernode"),
                        "--root-certificates",
                        str(self.ca),
                        "--superlink",
                        f"{ns.host_ip if ns else '127.0.0.1'}:{fleet}",
                        "--port",
                        str(_port()),
                        "--node-config",
                        # where the site keeps its round's update between messages (sealed)
                        f'partition-id={i} num-partitions={len(SITES)} fedledger-state-dir="{root / f"state-{i}"}"',
                    ],
                )  # fmt: skip
            )

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        return self._spawn(argv, self.root / name, self.root / f"{name}.log")

    def _spawn(self, argv: list[str], home: Path, log_path: Path) -> subprocess.Popen[bytes]:
        """``argv`` in its own session, with ``home`` as its Flower home, output to ``log_path``."""
        with open(log_path, "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(argv, env=_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, work: Path, config: str, timeout: float = 240) -> subprocess.Popen[bytes]:
        """Submit tests/flower_app (a copy) with ``config`` (the run config); returns ``flwr run``."""
        app = self.root / "app"
        if not app.exists():
            shutil.copytree(TESTS / "flower_app", app, ignore=shutil.ignore_patterns("__pycache__"))
        home = self.root / "cli"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:{self.control}"\n'
            f'root-certificates = "{self.ca}"\n'
        )
        argv = [str(BIN / "flwr"), "run", str(app), "loopback", "--stream", "--run-config", config]
        return self._spawn(argv, home, work / "flwr-run.log")

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for ns in self.netns:
            ns.delete()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path)
    try:
        if os.environ.get("CI") and not d.netns:
            pytest.fail("network namespaces need root and iproute2; CI must run the SuperNodes in them")
        yield d
    finally:
        d.close()


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(root.rglob("*.log")))


def _finish(proc: subprocess.Popen[bytes], work: Path, root: Path, timeout: float = 240) -> list[dict[str, object]]:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run did not finish in {timeout} s\n{_logs(root)}")
    if not (work / "records.json").exists():
        pytest.fail(f"the ServerApp left no records\n{_logs(root)}")
    return json.loads((work / "records.json").read_text())  # type: ignore[no-any-return]


def _model(work: Path) -> dict[str, np.ndarray]:
    with np.load(work / "model.npz") as data:
        return {k: data[k] for k in data.files}


def _check_ledger(work: Path, rounds: int, final: dict[str, np.ndarray]) -> list[dict[str, object]]:
    store = BlobStore(work / "blobs")
    with open_ledger(work / "ledger.db") as ledger:
        ledger.verify()
        assert ledger.view("training", "get_policy", policy="p1")["rounds"] == rounds
        records = [ledger.view("training", "get_round", policy="p1", round=r) for r in range(1, rounds + 1)]
    for rec in records:
        assert rec is not None and rec["status"] == "done"
        aggregate, _ = load_aggregate(store.get(rec["aggregate_cid"]))
        assert aggregate.shape == (sum(v.size for v in final.values()),)
    flat = np.concatenate([final[k].ravel() for k in ("w", "b")])
    assert records[-1]["model_hash"] == model_hash(flat)  # type: ignore[index]
    return records  # type: ignore[return-value]


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    with consortium(work, "masked"):
        pass
    return work


def test_three_secure_rounds_on_a_real_deployment(deployment: Deployment, tmp_path: Path) -> None:
    work = _work(tmp_path)
    proc = deployment.run(work, f'work="{work}" rounds=3 stage-timeout=30.0')
    records = _finish(proc, work, tmp_path)
    link_log = (tmp_path / "superlink.log").read_text()
    assert "Uvicorn running on https://" in link_log  # TLS, not plain HTTP
    for ns in deployment.netns:  # each SuperNode's requests came over its own veth link
        assert f"{ns.ip}:" in link_log, ns.ip
    # Each site kept its update in its node's directory between messages, and removed it at the end.
    assert all((tmp_path / f"state-{i}").is_dir() for i in range(len(SITES)))
    assert not list(tmp_path.glob("state-*/*.update"))
    assert [r["status"] for r in records] == ["done"] * 3, records
    assert all(r["participants"] == SITES and not r["dropouts"] for r in records)
    final = _model(work)
    want = reference(initial(), 3)
    assert max(float(np.max(np.abs(final[k] - v))) for k, v in want.items()) <= BOUND
    _check_ledger(work, 3, final)


def test_a_supernode_killed_mid_round_is_a_recorded_dropout(deployment: Deployment, tmp_path: Path) -> None:
    work = _work(tmp_path)
    proc = deployment.run(work, f'work="{work}" rounds=1 stage-timeout=15.0 stall-site=3')
    end = time.monotonic() + 120
    while not (work / "stalled").exists():
        if time.monotonic() > end or proc.poll() is not None:
            pytest.fail(f"site-3 never reached the relayed-shares stage\n{_logs(tmp_path)}")
        time.sleep(0.2)
    os.kill(deployment.nodes[3].pid, signal.SIGKILL)
    records = _finish(proc, work, tmp_path)
    assert records == [{"round": 1, "status": "done", "participants": SITES, "dropouts": {"site-3": "masked_input"}}], (
        records
    )
    final = _model(work)
    want = reference(initial(), 1, [[0, 1, 2]])
    assert max(float(np.max(np.abs(final[k] - v))) for k, v in want.items()) <= BOUND
    (rec,) = _check_ledger(work, 1, final)
    assert list(rec["dropout_stages"].values()) == ["masked_input"]  # type: ignore[union-attr]
