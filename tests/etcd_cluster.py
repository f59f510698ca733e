"""The etcd cluster the tests run against: :class:`fedledger.node.local.LocalEtcd` (3 members on
loopback), and the ``etcd_cluster`` fixture, which skips when the ``etcd`` binary is missing,
except under CI, where a missing binary (or a missing aetcd) fails the test instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from fedledger.node.local import ETCD, LocalEtcd
except ImportError:  # no aetcd: the node extra is not installed
    if os.environ.get("CI"):
        raise
    ETCD, LocalEtcd = None, None  # type: ignore[assignment, misc]

EtcdCluster = LocalEtcd


def require_etcd() -> None:
    """Skip without the etcd binary or the node extra, except under CI, where that fails the test."""
    if ETCD is None:
        message = "the etcd binary or aetcd is not installed (sh scripts/system-deps.sh; pip install '.[node]')"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the etcd tests")
        pytest.skip(message)


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[LocalEtcd]:
    """A fresh 3-member cluster, stopped after the test."""
    require_etcd()
    with LocalEtcd(tmp_path / "etcd") as cluster:
        yield cluster
