"""Blob store speed, with the peers in the same run: plain Python file writes plus ``os.fsync``
of the same bytes (put), plain reads (get), and ``hashlib.sha256`` (the CID).

    python -m pytest benches/bench_blobstore.py --benchmark-only --benchmark-json=.benchmarks/blobstore.json
    FEDLEDGER_BENCH_LARGE_MB=1024 python -m pytest benches/bench_blobstore.py --benchmark-only ...
    python benches/report.py .benchmarks/blobstore.json

The large object is 256 MiB by default (FEDLEDGER_BENCH_LARGE_MB sets it). Every put stores new
content (the store deduplicates), made in an untimed setup. ``test_peak_rss_1gib`` streams a
1 GiB object in and out in a child process and checks its peak RSS stays under 256 MiB above
the baseline.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedledger.blobstore import BlobStore, cid_of

MB = 1 << 20
LARGE = int(os.environ.get("FEDLEDGER_BENCH_LARGE_MB", "256")) * MB
CHUNK = 4 * MB
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
    return path


def _fresh_bytes() -> tuple[tuple[bytes], dict[str, object]]:
    return (next(_counter).to_bytes(8, "big") + os.urandom(MB - 8),), {}


def _plain_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _plain_copy(source: Path, path: Path) -> None:
    with open(source, "rb") as src, open(path, "wb") as f:
        while block := src.read(CHUNK):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def _mutate(path: Path) -> tuple[tuple[Path], dict[str, object]]:
    with open(path, "r+b") as f:  # new content for each put, untimed
        f.write(next(_counter).to_bytes(8, "big"))
    return (path,), {}


# -- put ------------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="put 1 MiB")
def test_put_1mib_fedledger(benchmark, store: BlobStore) -> None:
    benchmark.pedantic(store.put, setup=_fresh_bytes, rounds=60, warmup_rounds=2)


@pytest.mark.benchmark(group="put 1 MiB")
def test_put_1mib_peer_write_fsync(benchmark, workdir: Path) -> None:
    benchmark.pedantic(lambda d: _plain_write(workdir / "plain-1m", d), setup=_fresh_bytes, rounds=60, warmup_rounds=2)


@pytest.mark.benchmark(group="put large (streamed from a file)")
def test_put_large_fedledger(benchmark, store: BlobStore, large_file: Path) -> None:
    benchmark.pedantic(store.put_file, setup=lambda: _mutate(large_file), rounds=5)


@pytest.mark.benchmark(group="put large (streamed from a file)")
def test_put_large_peer_copy_fsync(benchmark, workdir: Path, large_file: Path) -> None:
    benchmark.pedantic(lambda s: _plain_copy(s, workdir / "plain-large"), setup=lambda: _mutate(large_file), rounds=5)


# -- get ------------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="get 1 MiB")
def test_get_1mib_fedledger(benchmark, store: BlobStore) -> None:
    data = _fresh_bytes()[0][0]
    cid = store.put(data)
    assert benchmark(store.get, cid) == data


@pytest.mark.benchmark(group="get 1 MiB")
def test_get_1mib_peer_read(benchmark, workdir: Path) -> None:
    data = _fresh_bytes()[0][0]
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
    size, root = int(sys.argv[1]), sys.argv[2]
    store = BlobStore(os.path.join(root, "rss-store"))
    src = os.path.join(root, "rss-source")
    with open(src, "wb") as f:
        block = os.urandom(1 << 22)
        for _ in range(size >> 22):
            f.write(block)
    with store.open(store.put(b"warm up")) as f:
        f.read()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cid = store.put_file(src)
    n = 0
    with store.open(cid) as f:
        while block := f.read(1 << 22):
            n += len(block)
    assert n == size
    print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
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
