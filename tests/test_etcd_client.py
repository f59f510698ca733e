"""fedledger.node.etcd against a real 3-member etcd cluster on loopback (tests/etcd_cluster.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

if not os.environ.get("CI"):  # CI installs the test extra, aetcd included: never skip there
    pytest.importorskip("aetcd", reason="the node extra (aetcd) is not installed")

from aetcd import rpc  # noqa: E402
from etcd_cluster import EtcdCluster  # noqa: E402

from fedledger.errors import InvalidArgument, OrdererUnavailable, RevisionCompacted  # noqa: E402
from fedledger.node.etcd import MAX_VALUE, Etcd, Event  # noqa: E402

T = TypeVar("T")


def run(cluster: EtcdCluster, body: Callable[[Etcd], Awaitable[T]], *, timeout: float = 5.0) -> T:
    """Run ``body`` with a client on every member of ``cluster``, closed afterwards."""

    async def main() -> T:
        etcd = await Etcd.connect(cluster.client_urls, timeout=timeout)
        try:
            return await body(etcd)
        finally:
            await etcd.close()

    return asyncio.run(main())


async def collect(etcd: Etcd, prefix: bytes, start: int, count: int) -> list[Event]:
    """The first ``count`` events of a watch from ``start``."""
    events: list[Event] = []
    async for event in etcd.watch_prefix(prefix, start):
        events.append(event)
        if len(events) == count:
            break
    return events


def test_create_writes_only_a_missing_key(etcd_cluster: EtcdCluster) -> None:
    async def body(etcd: Etcd) -> None:
        assert await etcd.create(b"claim/1", b"first") is True
        assert await etcd.create(b"claim/1", b"second") is False
        value = await etcd.get(b"claim/1")
        assert value is not None and value[0] == b"first"
        results = await asyncio.gather(*(etcd.create(b"claim/2", b"task %d" % i) for i in range(8)))
        assert sorted(results) == [False] * 7 + [True]
        winner = results.index(True)
        assert (await etcd.get(b"claim/2") or (b"", 0))[0] == b"task %d" % winner
        await etcd.delete(b"claim/1")
        assert await etcd.get(b"claim/1") is None
        assert await etcd.create(b"claim/1", b"again") is True  # deleted: version 0 again

    run(etcd_cluster, body)


def test_get_prefix_is_one_sorted_read(etcd_cluster: EtcdCluster) -> None:
    async def body(etcd: Etcd) -> None:
        for key in [b"p/b", b"p/a", b"p/c\xff", b"p0", b"o/z", b"p/\x00"]:
            last = await etcd.put(key, key + b"!")
        revision, items = await etcd.get_prefix(b"p/")
        assert revision == last
        assert [k for k, _, _ in items] == [b"p/\x00", b"p/a", b"p/b", b"p/c\xff"]
        assert all(v == k + b"!" and 0 < r <= revision for k, v, r in items)
        assert await etcd.get_prefix(b"none/") == (revision, [])

        # A writer adds q/000, q/001, ... in order: every read sees exactly the keys written up
        # to its revision, never a later key without an earlier one.
        async def writer() -> list[int]:
            return [await etcd.put(b"q/%03d" % i, b"v") for i in range(150)]

        task = asyncio.create_task(writer())
        reads = []
        while not task.done():
            reads.append(await etcd.get_prefix(b"q/"))
        revisions = await task
        assert len(reads) > 5
        for read_revision, items in reads:
            expected = [b"q/%03d" % i for i, r in enumerate(revisions) if r <= read_revision]
            assert [k for k, _, _ in items] == expected

    run(etcd_cluster, body)


def test_values_over_one_mib_are_refused(etcd_cluster: EtcdCluster) -> None:
    async def body(etcd: Etcd) -> None:
        big = bytes(range(256)) * (MAX_VALUE // 256)
        assert len(big) == MAX_VALUE == 1 << 20
        revision = await etcd.put(b"big/ok", big)
        assert await etcd.get(b"big/ok") == (big, revision)
        assert await etcd.create(b"big/created", big) is True
        for call in (etcd.put(b"big/no", big + b"x"), etcd.create(b"big/no", big + b"x")):
            with pytest.raises(InvalidArgument, match=r"big/no"):
                await call
        assert await etcd.get(b"big/no") is None

    run(etcd_cluster, body)


def test_a_key_with_a_ttl_disappears(etcd_cluster: EtcdCluster) -> None:
    async def body(etcd: Etcd) -> float:
        start = time.monotonic()
        await etcd.put(b"alive/a", b"1", ttl=2)
        await etcd.put(b"alive/b", b"1", ttl=2)  # shares the lease granted just before
        await etcd.put(b"kept", b"1")
        assert len((await etcd.get_prefix(b"alive/"))[1]) == 2
        while await etcd.get(b"alive/a") is not None:
            assert time.monotonic() - start < 6, "a 2 s key still there after 6 s"
            await asyncio.sleep(0.1)
        gone = time.monotonic() - start
        assert await etcd.get(b"alive/b") is None and await etcd.get(b"kept") is not None
        return gone

    assert run(etcd_cluster, body) >= 1.8


def test_a_watch_delivers_every_change_from_a_past_revision(etcd_cluster: EtcdCluster) -> None:
    async def body(etcd: Etcd) -> None:
        first = await etcd.put(b"w/a", b"1")
        await etcd.put(b"other", b"x")
        await etcd.put(b"w/b", b"2")
        watch = asyncio.create_task(collect(etcd, b"w/", first, 7))
        await asyncio.sleep(0.2)  # the watch is running: the next changes are live ones
        await etcd.put(b"w/a", b"3")
        await etcd.create(b"w/c", b"4")
        await etcd.delete_prefix(b"w/")  # one revision deleting three keys
        assert await asyncio.wait_for(watch, 5) == [
            Event(b"w/a", b"1", first),
            Event(b"w/b", b"2", first + 2),
            Event(b"w/a", b"3", first + 3),
            Event(b"w/c", b"4", first + 4),
            Event(b"w/a", None, first + 5),
            Event(b"w/b", None, first + 5),
            Event(b"w/c", None, first + 5),
        ]

    run(etcd_cluster, body)


def test_a_compacted_start_revision_is_a_typed_error(etcd_cluster: EtcdCluster) -> None:
    async def body(etcd: Etcd) -> None:
        first = await etcd.put(b"c/a", b"1")
        last = await etcd.put(b"c/a", b"2")
        await etcd._members[0].kv.Compact(rpc.CompactionRequest(revision=last, physical=True))
        with pytest.raises(RevisionCompacted) as raised:
            await collect(etcd, b"c/", first, 1)
        assert raised.value.compacted == last and raised.value.revision == first
        assert await collect(etcd, b"c/", last, 1) == [Event(b"c/a", b"2", last)]

        # A watch waiting for changes ends when its client is closed.
        waiting = asyncio.create_task(collect(etcd, b"c/", last + 1, 1))
        await asyncio.sleep(0.2)
        await etcd.close()
        assert await asyncio.wait_for(waiting, 2) == []

    run(etcd_cluster, body)


def test_a_watch_survives_the_death_of_its_member(etcd_cluster: EtcdCluster) -> None:
    urls = etcd_cluster.client_urls

    async def main() -> None:
        watcher = await Etcd.connect(urls, timeout=5)  # talks to member 0 first
        writer = await Etcd.connect(urls[1:] + urls[:1], timeout=5)  # member 1 first
        try:
            start = await writer.put(b"s/start", b"")
            written: list[int] = []
            seen: list[Event] = []

            async def watch() -> None:
                async for event in watcher.watch_prefix(b"s/", start):
                    seen.append(event)

            watching = asyncio.create_task(watch())
            for i in range(300):
                written.append(await writer.put(b"s/%03d" % i, b"%d" % i))
                if i == 100:
                    etcd_cluster.kill(0)  # the watcher's member, mid-stream
                if i % 50 == 0 and i > 100:
                    # the client whose member died keeps writing through the others
                    written.append(await watcher.put(b"s/via-watcher-%d" % i, b""))
            deadline = time.monotonic() + 10
            while not seen or seen[-1].revision < max(written):
                assert time.monotonic() < deadline and not watching.done(), "the watch stopped delivering"
                await asyncio.sleep(0.05)
            watching.cancel()
            revisions = [e.revision for e in seen]
            assert revisions == sorted(set(revisions)), "an event lost its order or came twice"
            assert set(written) <= set(revisions)
            # The history as a surviving member tells it, from the same start: the same events.
            assert await collect(writer, b"s/", start, len(seen)) == seen
        finally:
            await watcher.close()
            await writer.close()

    asyncio.run(main())


def test_a_hung_member_is_left_behind(etcd_cluster: EtcdCluster) -> None:
    # A hung follower: a hung leader would also stall every write until a new one is elected.
    leader = etcd_cluster.leader()
    hung = (leader + 1) % 3
    urls = etcd_cluster.client_urls
    urls = urls[hung:] + urls[:hung]

    async def main() -> None:
        client = await Etcd.connect(urls, timeout=1.5)  # talks to the follower first
        writer = await Etcd.connect(urls[1:] + urls[:1], timeout=1.5)
        try:
            start = await writer.put(b"h/a", b"")
            seen: list[Event] = []

            async def watch() -> None:
                async for event in client.watch_prefix(b"h/", start):
                    seen.append(event)

            watching = asyncio.create_task(watch())
            await asyncio.sleep(0.2)
            etcd_cluster.pause(hung)  # no RST, no FIN: its calls and its watch just hang
            began = time.monotonic()
            revision = await client.put(b"h/b", b"")
            assert time.monotonic() - began < 1.5  # the hung one gets its 1 s share, then the next answers
            # The quiet watch asks the hung member for progress, hears nothing and resumes elsewhere.
            while not seen or seen[-1].revision < revision:
                assert time.monotonic() - began < 5 and not watching.done(), seen
                await asyncio.sleep(0.05)
            assert seen == [Event(b"h/a", b"", start), Event(b"h/b", b"", revision)]
            watching.cancel()
        finally:
            etcd_cluster.resume(hung)
            await client.close()
            await writer.close()

    asyncio.run(main())


def test_without_a_majority_every_call_is_orderer_unavailable(etcd_cluster: EtcdCluster) -> None:
    urls = etcd_cluster.client_urls

    async def main() -> None:
        etcd = await Etcd.connect(urls, timeout=1.5)
        try:
            await etcd.put(b"k", b"before")
            etcd_cluster.kill(1)
            etcd_cluster.kill(2)  # member 0 is up, alone: no quorum
            start = time.monotonic()
            with pytest.raises(OrdererUnavailable):
                await etcd.put(b"k", b"during")
            assert time.monotonic() - start < 2.5
            etcd_cluster.kill(0)
            for call in (lambda: etcd.put(b"k", b"after"), lambda: etcd.get(b"k"), lambda: etcd.create(b"n", b"")):
                start = time.monotonic()
                with pytest.raises(OrdererUnavailable) as raised:
                    await call()
                assert 1.5 <= time.monotonic() - start < 2.5
                assert sorted(raised.value.endpoints) == sorted(urls)  # every one, from the current one on
                assert all(url in str(raised.value) for url in urls)
            with pytest.raises(OrdererUnavailable):
                await Etcd.connect(urls, timeout=0.5)
            etcd_cluster.restart(0, 1, 2)  # together: one alone has no quorum, so is never healthy
            # The same client carries on. The refused put was never acknowledged, yet it may
            # still have been applied: a leader that had logged it commits it once the quorum is back.
            assert (await etcd.get(b"k") or (b"", 0))[0] in (b"before", b"during")
            assert await etcd.get(b"n") is None
            await etcd.put(b"k", b"after")
            assert (await etcd.get(b"k") or (b"", 0))[0] == b"after"
        finally:
            await etcd.close()

    asyncio.run(main())


def test_bad_arguments_are_refused_before_any_request() -> None:
    async def main() -> None:
        for endpoints in ([], "http://127.0.0.1:2379", ["127.0.0.1:2379"], ["https://h:1"], ["http://h"]):
            with pytest.raises(InvalidArgument):
                await Etcd.connect(endpoints)  # type: ignore[arg-type]

    asyncio.run(main())
