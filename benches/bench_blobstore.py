"""Blob store speed, with the peers in the same run: plain Python file writes of the same bytes
made durable the plain way (put), plain reads (get), and ``hashlib.sha256`` (the CID).

    python -m pytest benches/bench_blobstore.py --benchmark-only --benchmark-json=.benchmarks/blobstore.json
    FEDLEDGER_BENCH_LARGE_MB=1024 python -m pytest benches/bench_blobstore.py --benchmark-only ...
    python benches/report.py .benchmarks/blobstore.json

The large object is 256 MiB by default (FEDLEDGER_BENCH_LARGE_MB sets it). Run with ``-s`` to
see the paired put comparison and the breakdown of a large put (printed, not in the JSON).

Put, both sides alike: every round writes new files (the store gets new content each round,
the peer a new file name); before each timed round, untimed, the previous round's large
outputs are deleted, ``os.sync()`` drains every dirty page, then one round of the *other* side
runs, its outputs are deleted and synced too, and (large puts) the bench waits SETTLE_S
seconds (5 by default, FEDLEDGER_BENCH_SETTLE_S sets it), so that each side's timed round
starts from the same state. The wait matters on a VM: a 1 GiB write through the page cache
takes several times longer in kernel CPU when the pages it gets were freed a few seconds ago
(handed back to the host, mapped again on first touch) than when a write just before freed
them, so without it a side's time depends on what ran before it. The peer does what a durable
write of a new file takes: create, write, ``os.fsync`` the file, ``os.fsync`` its directory (the
store's put syncs the directories of its renames too). For the large object both read the same
source file and write to the same file system.

The disk's own noise is large too, so ``test_put_paired_*`` also time the two sides round by
round: in each round one put of each, ours first in even rounds and the peer first in odd ones
(8 rounds for the large object by default, FEDLEDGER_BENCH_PAIRED_ROUNDS sets it; 40 for 1 MiB).
Before each timed large put the state is ``settled`` (as above) or ``warm`` (a scratch file of
the same size written through the page cache, deleted and synced just before, so the pages the
put gets were just freed: the page-cache writer's best case). They print each side's median
and the median of the per-round ratios. ``test_put_large_breakdown`` prints where a large put's
time goes (settled): until the object's final fsync starts (read, seal, hash, write), that
fsync, and the rest (key file, renames, directory syncs), beside the same stream sealed and
hashed into a null sink (its CPU time alone).
``test_peak_rss_1gib`` streams a 1 GiB object in and out in a fresh child process and checks
its peak RSS (``VmHWM``) stays under 256 MiB above its baseline.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from fedledger import build_info
from fedledger.blobstore import BlobStore, LocalBackend, PendingObject, cid_of
from fedledger.crypto import seal

MB = 1 << 20
LARGE = int(os.environ.get("FEDLEDGER_BENCH_LARGE_MB", "256")) * MB
CHUNK = 4 * MB
# even, so that each side goes first in as many rounds as the other
PAIRED_ROUNDS_LARGE = int(os.environ.get("FEDLEDGER_BENCH_PAIRED_ROUNDS", "8"))
PAIRED_ROUNDS_SMALL = 40
# seconds to wait, after the last large outputs are deleted and synced, before a timed large put
SETTLE_S = float(os.environ.get("FEDLEDGER_BENCH_SETTLE_S", "5"))
_counter = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("blobbench")


@pytest.fixture(scope="module")
def store(workdir: Path) -> BlobStore:
    return BlobStore(workdir / "store")


@pytest.fixture(scope="module")
def large_file(workdir: Path) -> Path:
    path = workdir / "large.bin"
    with open(path, "wb") as f:
        block = os.urandom(CHUNK)
        for _ in range(LARGE // CHUNK):
            f.write(block)
    os.sync()
    return path


def _fresh_bytes() -> bytes:
    return next(_counter).to_bytes(8, "big") + os.urandom(MB - 8)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_file(directory: Path) -> Path:
    return directory / f"plain-{next(_counter)}"


def _plain_write(path: Path, data: bytes) -> None:
    """The peer's durable write of a new file: create, write, fsync it, fsync its directory."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_directory(path.parent)


def _plain_copy(source: Path, path: Path) -> None:
    """The same for a large file, copied from ``source`` in 4 MiB blocks."""
    with open(source, "rb") as src, open(path, "xb") as f:
        while block := src.read(CHUNK):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    _fsync_directory(path.parent)


def _mutate(path: Path) -> None:
    with open(path, "r+b") as f:  # new content for each put
        f.write(next(_counter).to_bytes(8, "big"))


class _Sides:
    """One round of each side of a put comparison, with the untimed set-up both share."""

    def __init__(self, store: BlobStore, peer_dir: Path, large_file: Path | None) -> None:
        self.store, self.peer_dir, self.large_file = store, peer_dir, large_file
        peer_dir.mkdir(exist_ok=True)
        self.outputs: list[Path] = []  # large outputs, deleted before the next round

    def ours(self, data: bytes | None) -> None:
        if self.large_file is None:
            assert data is not None
            self.store.put(data)
        else:
            cid = self.store.put_file(self.large_file)
            self.outputs += [self.store.path / "objects" / cid, self.store.path / "keys" / cid]

    def peer(self, data: bytes | None) -> None:
        path = _new_file(self.peer_dir)
        if self.large_file is None:
            assert data is not None
            _plain_write(path, data)
        else:
            _plain_copy(self.large_file, path)
            self.outputs.append(path)

    def clear(self) -> None:
        """Delete the last round's large outputs and drain every dirty page."""
        while self.outputs:
            self.outputs.pop().unlink(missing_ok=True)
        os.sync()

    def prepare(self, state: str = "settled") -> None:
        """Put the machine in the same state before each timed put, whichever side ran last:
        the last outputs deleted and synced, then for a large put either ``settled`` (wait
        SETTLE_S seconds) or ``warm`` (a scratch file of the same size written through the
        page cache, deleted and synced just before)."""
        self.clear()
        if self.large_file is None:
            return
        if state == "warm":
            scratch = self.peer_dir / "scratch"
            block = os.urandom(CHUNK)
            with open(scratch, "wb") as f:
                for _ in range(LARGE // CHUNK):
                    f.write(block)
            scratch.unlink()
            os.sync()
        else:
            time.sleep(SETTLE_S)

    def setup(
        self, other: Callable[[bytes | None], None]
    ) -> Callable[[], tuple[tuple[bytes | None], dict[str, object]]]:
        """Delete the last outputs, run ``other`` once on new content, prepare (settled), then
        new content again."""

        def setup() -> tuple[tuple[bytes | None], dict[str, object]]:
            self.clear()
            other(self._content())
            self.prepare()
            return (self._content(),), {}

        return setup

    def paired(self, rounds: int, warmup: int = 0, state: str = "settled") -> dict[str, list[float]]:
        """``rounds`` rounds of one timed put per side, the order alternating round by round."""
        sides = [("fedledger", self.ours), ("peer", self.peer)]
        times: dict[str, list[float]] = {name: [] for name, _ in sides}
        for r in range(warmup + rounds):
            for name, run in sides if r % 2 == 0 else sides[::-1]:
                self.prepare(state)
                content = self._content()
                start = time.perf_counter()
                run(content)
                if r >= warmup:
                    times[name].append(time.perf_counter() - start)
        self.clear()
        return times

    def _content(self) -> bytes | None:
        if self.large_file is None:
            return _fresh_bytes()
        _mutate(self.large_file)
        return None


@pytest.fixture(scope="module")
def small_sides(store: BlobStore, workdir: Path) -> _Sides:
    return _Sides(store, workdir / "peer-1m", None)


@pytest.fixture(scope="module")
def large_sides(store: BlobStore, workdir: Path, large_file: Path) -> _Sides:
    return _Sides(store, workdir / "peer-large", large_file)


# -- put ------------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="put 1 MiB")
def test_put_1mib_fedledger(benchmark, small_sides: _Sides) -> None:
    benchmark.pedantic(small_sides.ours, setup=small_sides.setup(small_sides.peer), rounds=40, warmup_rounds=2)


@pytest.mark.benchmark(group="put 1 MiB")
def test_put_1mib_peer_write_fsync(benchmark, small_sides: _Sides) -> None:
    benchmark.pedantic(small_sides.peer, setup=small_sides.setup(small_sides.ours), rounds=40, warmup_rounds=2)


@pytest.mark.benchmark(group="put large (streamed from a file)")
def test_put_large_fedledger(benchmark, large_sides: _Sides) -> None:
    benchmark.pedantic(large_sides.ours, setup=large_sides.setup(large_sides.peer), rounds=7)


@pytest.mark.benchmark(group="put large (streamed from a file)")
def test_put_large_peer_copy_fsync(benchmark, large_sides: _Sides) -> None:
    benchmark.pedantic(large_sides.peer, setup=large_sides.setup(large_sides.ours), rounds=7)


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def _report_paired(title: str, times: dict[str, list[float]]) -> None:
    ours, peer = times["fedledger"], times["peer"]
    ratios = [p / o for o, p in zip(ours, peer)]
    print(f"\n{title}, {len(ours)} rounds alternating (peer time / fedledger time per round):")
    if len(ours) <= 10:
        for i, (o, p, q) in enumerate(zip(ours, peer, ratios)):
            print(f"  round {i}: fedledger {_fmt(o)}, peer {_fmt(p)}, ratio {q:.2f}x")
    print(
        f"  medians: fedledger {_fmt(statistics.median(ours))}, peer {_fmt(statistics.median(peer))}, "
        f"ratio of medians {statistics.median(peer) / statistics.median(ours):.2f}x; "
        f"median per-round ratio {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)"
    )


def test_put_paired_1mib(small_sides: _Sides) -> None:
    _report_paired("put 1 MiB", small_sides.paired(PAIRED_ROUNDS_SMALL, warmup=2))


@pytest.mark.parametrize("state", ["settled", "warm"])
def test_put_paired_large(large_sides: _Sides, state: str) -> None:
    _report_paired(f"put {LARGE // MB} MiB streamed, {state}", large_sides.paired(PAIRED_ROUNDS_LARGE, state=state))


class _TimedPending:
    """A LocalBackend pending object that records when each of its syncs starts and ends."""

    def __init__(self, inner: PendingObject, log: list[tuple[str, float, float]]) -> None:
        self._inner, self._log = inner, log
        self.file: BinaryIO = inner.file

    def sync(self) -> None:
        start = time.perf_counter()
        self._inner.sync()
        self._log.append(("sync", start, time.perf_counter()))

    def commit(self, name: str) -> None:
        self._inner.commit(name)

    def abort(self) -> None:
        self._inner.abort()


class _TimedBackend(LocalBackend):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.log: list[tuple[str, float, float]] = []

    def create(self) -> PendingObject:
        return _TimedPending(super().create(), self.log)


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def test_put_large_breakdown(workdir: Path, large_file: Path) -> None:
    """Where a large put's time goes (printed): the stream, the final fsync, the rest."""
    backend = _TimedBackend(workdir / "timed-store" / "objects")
    store = BlobStore(workdir / "timed-store", backend=backend)
    rows: list[tuple[float, float, float, float]] = []
    for _ in range(3):
        _mutate(large_file)
        os.sync()
        time.sleep(SETTLE_S)
        backend.log.clear()
        start = time.perf_counter()
        cid = store.put_file(large_file)
        end = time.perf_counter()
        _, sync_start, sync_end = backend.log[0]  # the first sync is the object's final fsync
        rows.append((sync_start - start, sync_end - sync_start, end - sync_end, end - start))
        (store.path / "objects" / cid).unlink()
        (store.path / "keys" / cid).unlink()
    compute = []
    for _ in range(3):
        hasher = hashlib.sha256()
        with open(large_file, "rb") as f:
            start = time.perf_counter()
            seal.seal_records_stream(
                seal.generate_key(),
                f,
                _NullSink(),  # type: ignore[arg-type]
                seal.SealContext("bench", "at-rest", 0, "object"),
                observe=hasher.update,
                threads=max(1, build_info()["num_threads"] - 1),  # as put_file seals
            )
            compute.append(time.perf_counter() - start)
    med = [statistics.median(column) for column in zip(*rows)]
    print(
        f"\nput {LARGE // MB} MiB streamed, where the time goes (medians of 3): "
        f"read + seal + hash + write until the final fsync {_fmt(med[0])}, "
        f"the object's final fsync {_fmt(med[1])}, key file + renames + directory syncs {_fmt(med[2])}, "
        f"total {_fmt(med[3])}; the same stream sealed and hashed into a null sink {_fmt(statistics.median(compute))}"
    )


# -- get ------------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="get 1 MiB")
def test_get_1mib_fedledger(benchmark, store: BlobStore) -> None:
    data = _fresh_bytes()
    cid = store.put(data)
    assert benchmark(store.get, cid) == data


@pytest.mark.benchmark(group="get 1 MiB")
def test_get_1mib_peer_read(benchmark, workdir: Path) -> None:
    data = _fresh_bytes()
    _plain_write(workdir / "read-1m", data)
    assert benchmark((workdir / "read-1m").read_bytes) == data


def _drain(f) -> int:  # type: ignore[no-untyped-def]
    n = 0
    while block := f.read(CHUNK):
        n += len(block)
    return n


@pytest.mark.benchmark(group="get large (streamed)")
def test_get_large_fedledger(benchmark, store: BlobStore, large_file: Path) -> None:
    cid = store.put_file(large_file)

    def read() -> int:
        with store.open(cid) as f:
            return _drain(f)

    assert benchmark.pedantic(read, rounds=5) == LARGE


@pytest.mark.benchmark(group="get large (streamed)")
def test_get_large_peer_read(benchmark, large_file: Path) -> None:
    def read() -> int:
        with open(large_file, "rb") as f:
            return _drain(f)

    assert benchmark.pedantic(read, rounds=5) == LARGE


# -- the content id -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_bytes(large_file: Path) -> bytes:
    return large_file.read_bytes()


@pytest.mark.benchmark(group="CID vs sha256, large")
def test_cid_large_fedledger(benchmark, large_bytes: bytes) -> None:
    benchmark.pedantic(cid_of, args=(large_bytes,), rounds=5)


@pytest.mark.benchmark(group="CID vs sha256, large")
def test_cid_large_peer_hashlib(benchmark, large_bytes: bytes) -> None:
    benchmark.pedantic(lambda d: hashlib.sha256(d).digest(), args=(large_bytes,), rounds=5)


@pytest.mark.benchmark(group="CID vs sha256, 1 MiB")
def test_cid_1mib_fedledger(benchmark) -> None:
    data = os.urandom(MB)
    benchmark(cid_of, data)


@pytest.mark.benchmark(group="CID vs sha256, 1 MiB")
def test_cid_1mib_peer_hashlib(benchmark) -> None:
    data = os.urandom(MB)
    benchmark(lambda: hashlib.sha256(data).digest())


# -- memory ---------------------------------------------------------------------------------------

_RSS_CHILD = textwrap.dedent(
    """
    import os, resource, sys
    from fedledger import BlobStore

    def peak():
        # VmHWM: this process's own peak (ru_maxrss also holds the parent's, from before exec)
        try:
            with open(os.path.join(os.sep, "proc", "self", "status")) as f:  # Linux procfs
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    size, root = int(sys.argv[1]), sys.argv[2]
    store = BlobStore(os.path.join(root, "rss-store"))
    src = os.path.join(root, "rss-source")
    with open(src, "wb") as f:
        block = os.urandom(1 << 22)
        for _ in range(size >> 22):
            f.write(block)
    with store.open(store.put(b"warm up")) as f:
        f.read()
    base = peak()
    cid = store.put_file(src)
    n = 0
    with store.open(cid) as f:
        while block := f.read(1 << 22):
            n += len(block)
    assert n == size
    print(base, peak())
    """
)


def test_peak_rss_1gib(workdir: Path) -> None:
    """put_file then a streamed read of 1 GiB: peak RSS under 256 MiB above the baseline."""
    size = 1 << 30
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(size), str(workdir)], capture_output=True, text=True, check=True
    )
    base, peak = map(int, out.stdout.split())
    grew = peak - base
    print(
        f"\npeak RSS for a 1 GiB put_file + streamed read: {peak / MB:.1f} MiB, {grew / MB:.1f} MiB above the baseline"
    )
    assert grew < 256 * MB
