"""Four validator nodes (unequal stake), each its own process with its own replica and key,
ordering through a real 3-member etcd cluster; and the faults they must survive."""

from __future__ import annotations

import os
import signal
import time

import pytest
from node_cluster import Consortium, NetworkNamespace, require_etcd

from fedledger.errors import NodeError, TamperedLedger
from fedledger.node import client

STAKES = [40, 30, 20, 10]


@pytest.fixture
def consortium(tmp_path):
    require_etcd()
    with Consortium(tmp_path, STAKES) as c:
        yield c


def _same_chain(c: Consortium, nodes: list[int], log_size: int) -> None:
    statuses = c.wait_for(log_size, nodes)
    heads = {c.status(i)["height"] for i in nodes}
    assert len(heads) == 1, statuses
    assert len({s["state_root"] for s in statuses}) == 1, statuses
    assert all(s["log_size"] == log_size for s in statuses), statuses


def test_ten_thousand_transactions_spread_over_four_nodes_build_one_verified_chain(consortium) -> None:
    c = consortium
    for j, member in enumerate(c.member_names):
        txs = c.notes(member, 1250)
        for k in range(0, len(txs), 250):
            c.submit(j % 4, txs[k : k + 250])
    _same_chain(c, [0, 1, 2, 3], 10_000)
    heads = [c.status(i) for i in range(4)]
    c.stop()
    hashes = set()
    for i in range(4):
        with c.replica(i) as ledger:
            ledger.verify()
            assert ledger.log_size == 10_000 and ledger.state_root.hex() == heads[0]["state_root"]
            hashes.add(ledger.tree_head().header.hash)
            proposers = {ledger.block(h).header.proposer for h in range(1, ledger.height + 1)}
    assert len(hashes) == 1
    assert len(proposers) >= 2  # the schedule rotated among the processes


def test_an_etcd_member_killed_and_restarted_loses_nothing(consortium) -> None:
    c = consortium
    first = c.notes("m0", 200)
    c.submit(0, first[:100])
    c.etcd.kill(0)  # SIGKILL: Raft goes on with 2 of 3
    c.submit(1, c.notes("m1", 100))
    c.submit(0, first[100:])
    _same_chain(c, [0, 1, 2, 3], 300)
    c.etcd.restart(0)
    c.submit(2, c.notes("m2", 100))
    _same_chain(c, [0, 1, 2, 3], 400)
    c.stop()
    for i in range(4):
        with c.replica(i) as ledger:
            ledger.verify()


def test_a_validator_killed_mid_round_is_not_needed_and_catches_up_on_restart(consortium) -> None:
    c = consortium
    c.submit(0, c.notes("m0", 300))
    c.kill_node(2)  # 20 of 100: the other 80 are more than 2/3
    c.submit(1, c.notes("m1", 300))
    c.submit(3, c.notes("m2", 300))
    _same_chain(c, [0, 1, 3], 900)
    behind = c.replica(2)
    assert behind.log_size < 900
    behind.close()
    c.start_node(2)
    _same_chain(c, [0, 1, 2, 3], 900)
    c.submit(2, c.notes("m3", 100))  # and it takes part again
    _same_chain(c, [0, 1, 2, 3], 1000)


def test_a_dead_proposer_is_skipped_after_its_round_timeout(consortium) -> None:
    c = consortium
    c.kill_node(3)  # 10 of 100: the rest (90) finalize; its turns to propose are skipped
    v3 = c.identity("v3").verify_key.to_bytes()
    total = 0
    for k in range(40):
        c.submit(k % 3, c.notes(c.member_names[k % 3], 10))
        total += 10
        c.wait_for(total, [0, 1, 2])  # one block per batch: the schedule comes round to v3
        with c.replica(0) as ledger:
            if any(ledger.block(h).header.round > 0 for h in range(1, ledger.height + 1)):
                break
    _same_chain(c, [0, 1, 2], total)
    with c.replica(0) as ledger:
        headers = [ledger.block(h).header for h in range(1, ledger.height + 1)]
    assert all(h.proposer != v3 for h in headers)
    skipped = [h for h in headers if h.round > 0]
    assert skipped, "v3's turn never came"
    with c.replica(0) as ledger:
        for h in skipped:  # round r's proposer follows the dead one in the schedule
            assert h.proposer != v3 and h.round == 1


def test_the_proposer_killed_just_after_ordering_its_header(consortium) -> None:
    import asyncio

    from fedledger.ledger import BlockHeader
    from fedledger.node import protocol
    from fedledger.node.etcd import Etcd

    c = consortium
    victim = c.identity("v2").verify_key.to_bytes()  # 20 of 100

    async def kill_when_it_proposes() -> int:
        etcd = await Etcd.connect(c.etcd.client_urls)
        try:
            revision, _ = await etcd.get_prefix(protocol.prefix(c.genesis.chain_id))
            k = 0
            async for event in etcd.watch_prefix(protocol.prefix(c.genesis.chain_id) + b"slot/", revision + 1):
                slot = protocol.parse_slot(event.value) if event.value else None
                if slot is not None and BlockHeader.from_bytes(slot[0]).proposer == victim:
                    c.kill_node(2)
                    return BlockHeader.from_bytes(slot[0]).height
                k += 1
                c.submit(k % 2, c.notes(c.member_names[k % 2], 10))
        finally:
            await etcd.close()
        raise AssertionError("unreachable")

    c.submit(0, c.notes("m0", 10))
    height = asyncio.run(asyncio.wait_for(kill_when_it_proposes(), 60))
    c.submit(1, c.notes("m1", 10))
    total = c.submitted
    _same_chain(c, [0, 1, 3], total)
    with c.replica(0) as ledger:
        assert ledger.height >= height
        assert ledger.block(height).header.proposer == victim  # its ordered header was finalized
    c.start_node(2)
    _same_chain(c, [0, 1, 2, 3], total)


def test_a_validator_that_signs_two_headers_at_one_height_is_slashed(consortium) -> None:
    import asyncio
    import dataclasses

    from fedledger.ledger import BlockHeader, Vote
    from fedledger.node import protocol
    from fedledger.node.etcd import Etcd

    c = consortium
    c.submit(0, c.notes("m0", 20))
    c.wait_for(20)
    rogue = c.identity("v3")

    async def equivocate() -> None:
        etcd = await Etcd.connect(c.etcd.client_urls)
        try:
            _, slots = await etcd.get_prefix(protocol.prefix(c.genesis.chain_id) + b"slot/")
            key, value, _ = slots[-1]
            header = BlockHeader.from_bytes(protocol.parse_slot(value)[0])
            other = dataclasses.replace(header, time_ms=header.time_ms + 1)
            vote = Vote.create(rogue, other)  # v3 also voted for the real header at this (height, round)
            k = protocol.vote_key(c.genesis.chain_id, header.height, header.round, rogue.verify_key.to_bytes())
            await etcd.put(k, vote.to_bytes())
        finally:
            await etcd.close()

    asyncio.run(equivocate())
    c.submit(1, c.notes("m1", 20))  # a block to carry the evidence
    statuses = c.wait_for(41)  # 40 notes and the evidence
    assert all(any("signed two headers" in p for p in s["problems"]) for s in statuses)
    c.stop()
    for i in range(4):
        with c.replica(i) as ledger:
            ledger.verify()
            assert rogue.verify_key not in ledger.validators
            assert [t.kind for t in ledger.transactions(kind="evidence")] == ["evidence"]


def test_a_node_cut_off_by_its_network_namespace_stalls_never_forks_then_catches_up(tmp_path) -> None:
    require_etcd()
    if not NetworkNamespace.available():
        message = "network namespaces need root and iproute2"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the partition test")
        pytest.skip(message)
    ns = NetworkNamespace(f"fl{os.getpid()}", index=20 + os.getpid() % 200)
    with Consortium(tmp_path, STAKES, netns={3: ns}) as c:  # v3 (10 of 100) behind a veth link
        c.submit(0, c.notes("m0", 100))
        _same_chain(c, [0, 1, 2, 3], 100)
        ns.cut()
        with pytest.raises(NodeError):  # the link is really down
            client.status(c.urls[3], timeout=2)
        c.submit(1, c.notes("m1", 200))
        c.wait_for(300, [0, 1, 2])  # the other 90 go on
        time.sleep(2 * c.round_timeout)
        with c.replica(3) as cut_off, c.replica(0) as live:
            assert cut_off.log_size == 100  # it stalled ...
            assert cut_off.tree_head().header == live.block(cut_off.height).header  # ... on the same chain
        ns.restore()
        _same_chain(c, [0, 1, 2, 3], 300)  # it catches up
        c.submit(3, c.notes("m2", 50))  # and takes part again
        _same_chain(c, [0, 1, 2, 3], 350)


def test_a_truncated_replica_is_noticed_against_its_published_head_and_catches_up(consortium) -> None:
    import sqlite3

    c = consortium
    for k in range(4):
        c.submit(k % 4, c.notes(c.member_names[k], 50))
        c.wait_for(c.submitted)
    height = c.status(3)["height"]
    # Each node keeps the others' latest heads: node 0's copy of node 3's head checks node 3's file.
    kept = client.head(c.urls[3])
    heads = client.heads(c.urls[0])
    assert heads["v3"].header == kept.header
    c.kill_node(3, signal.SIGTERM)
    with c.replica(3) as replica:
        replica.verify(head=heads["v3"])
    # Cut the newest blocks off node 3's file (a restored backup, a lost disk write): the file is
    # consistent in itself, but behind the head its node published.
    cut = height - 2
    db = sqlite3.connect(c.data(3) / "ledger.sqlite")
    for table in ("txs", "blocks", "snapshots"):
        db.execute(f"DELETE FROM {table} WHERE height > ?", (cut,))  # noqa: S608 - fixed names
    db.commit()
    db.close()
    with c.replica(3) as replica:
        assert replica.height == cut
        with pytest.raises(TamperedLedger):
            replica.verify(head=heads["v3"])
    c.start_node(3)
    _same_chain(c, [0, 1, 2, 3], c.submitted)
    assert any("below the head" in p for p in c.status(3)["problems"])
    with c.replica(3) as replica:
        replica.verify(head=heads["v3"])  # the same chain as before, and more


def test_a_new_node_starts_from_a_copy_of_a_replica_and_its_snapshot(consortium, tmp_path) -> None:
    import shutil

    c = consortium
    c.submit(0, c.notes("m0", 300))
    c.wait_for(c.submitted)
    c.kill_node(1, signal.SIGTERM)  # a consistent copy: its node stopped (or a SQLite backup)
    # The new node's files: a copy of v1's replica, with a snapshot at its head.
    shutil.copytree(c.data(1), tmp_path / "copy")
    c.start_node(1)
    from fedledger.ledger import Ledger

    with Ledger.open(tmp_path / "copy" / "ledger.sqlite", contracts=c.contracts, snapshot_every=None) as ledger:
        ledger.snapshot()
    c.submit(2, c.notes("m1", 200))
    c.wait_for(c.submitted)
    # A member node (m7, no stake) on that copy: it opens from the snapshot and catches up from etcd.
    (tmp_path / "copy" / "votes.sqlite").unlink()
    command = c.node_command(0, c.etcd.client_urls, "127.0.0.1:0")
    command[command.index("--identity") + 1] = str(c.base / "consortium" / "m7.identity")
    command[command.index("--data") + 1] = str(tmp_path / "copy")
    c.start_node(9, command=command)
    statuses = c.wait_for(c.submitted, [0, 2, 9])
    assert len({s["state_root"] for s in statuses}) == 1
    c.kill_node(9, signal.SIGTERM)
    with Ledger.open(tmp_path / "copy" / "ledger.sqlite", read_only=True, contracts=c.contracts) as ledger:
        assert ledger.opened_from > 0 and ledger.log_size == c.submitted
        ledger.verify()


def test_nodes_stall_while_etcd_has_no_majority_and_carry_on_when_it_is_back(consortium) -> None:
    c = consortium
    c.submit(0, c.notes("m0", 50))
    c.wait_for(c.submitted)
    for i in range(3):
        c.etcd.kill(i)  # nothing can be ordered: the watches break, writes fail
    time.sleep(3)
    assert all(c.status(i)["log_size"] == 50 for i in range(4))  # stalled, still answering
    c.etcd.restart(0, 1, 2)
    c.submit(1, c.notes("m1", 50))
    _same_chain(c, [0, 1, 2, 3], 100)
