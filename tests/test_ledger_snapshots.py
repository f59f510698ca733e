"""State snapshots: opening loads the latest snapshot, checked against the certified header at its
height, and replays only the blocks after it; verify() still replays everything."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from contract_fixtures import Counter
from ledger_helpers import CHAIN, identity, sites, validator_set, validators

from fedledger import encoding
from fedledger.errors import EncodingError, InvalidArgument, InvalidSnapshot, NotFound, ReadOnlyLedger, TamperedLedger
from fedledger.identity import Identity
from fedledger.ledger import GovernanceProposal, Ledger, Transaction, ValidatorSet
from fedledger.ledger.receipt import verify_consistency, verify_outcome, verify_receipt
from fedledger.ledger.state import LedgerState
from fedledger.ledger.statetree import state_root


def _governance(ledger: Ledger, action: str, params: dict, approvers: list[Identity], sender: Identity) -> None:
    proposal = GovernanceProposal(CHAIN, ledger.governance_epoch, action, params)
    payload = proposal.payload([proposal.approve(v) for v in approvers])
    tx = Transaction.create(sender, kind=action, payload=payload, nonce=ledger.next_nonce(sender), chain_id=CHAIN)
    ledger.submit(tx)
    ledger.commit()


NEWCOMER = identity("validator-new")


def _open(path: Path, **kwargs: object) -> Ledger:
    v = validators()
    return Ledger.open(
        path,
        chain_id=CHAIN,
        validators=validator_set(v),
        local_validators=v + [NEWCOMER],
        members=[s.card() for s in sites(3)],
        contracts=[Counter],
        durability="off",
        **kwargs,  # type: ignore[arg-type]
    )


def _rich(path: Path, *, snapshot_every: int | None = None) -> tuple[Ledger, list[bytes]]:
    """A ledger with contract state, notes, a revoked and an added member, and a validator hand-over."""
    v = validators()
    admin, bad, site = sites(3)
    ledger = _open(path, snapshot_every=snapshot_every, max_block_txs=3)
    ids = []
    for amount in (1, 2, 3):
        ids.append(ledger.call(site, "counter", "add", amount=amount).tx_id)
    ids.append(ledger.call(site, "counter", "add", amount=-1).tx_id)  # denied, recorded
    for i in range(5):
        ids.append(ledger.submit(Transaction.create(bad, kind="note", payload=i, nonce=i, chain_id=CHAIN)))
    ledger.commit()
    ledger.commit()
    _governance(ledger, "gov.member.revoke", {"key": bad.verify_key.to_bytes(), "reason": "breach"}, v, admin)
    fresh = identity("hospital-new")
    _governance(ledger, "gov.member.add", {"card": fresh.card().to_bytes()}, v, admin)
    ids.append(ledger.submit(Transaction.create(fresh, kind="note", payload="hello", nonce=0, chain_id=CHAIN)))
    ledger.commit()
    stakes = ValidatorSet({x.verify_key: s for x, s in zip(v + [NEWCOMER], [40, 30, 20, 10, 25])})
    _governance(ledger, "gov.validators", {"stakes": stakes.to_value()}, v, admin)
    ids.append(ledger.call(fresh, "counter", "add", amount=10).tx_id)
    return ledger, [i for i in ids if i is not None]


def _snapshotted(path: Path) -> int:
    """A rich ledger with a snapshot at its last block, closed; that block's height."""
    ledger, _ = _rich(path)
    height = ledger.snapshot()
    ledger.close()
    return height


def _views(ledger: Ledger) -> tuple[object, ...]:
    return (
        ledger.height,
        ledger.log_size,
        ledger.state_root,
        ledger.validators,
        ledger.governance_epoch,
        ledger.contracts,
        ledger.view("counter", "total"),
        ledger.is_revoked(sites(3)[1].verify_key),
        [ledger.next_nonce(s) for s in sites(3) + [identity("hospital-new")]],
        ledger.tree_head().to_json(),
    )


# -- the state's entries ----------------------------------------------------------------------


def test_from_entries_round_trips_a_rich_state(tmp_path: Path) -> None:
    ledger, _ = _rich(tmp_path / "l.db")
    state = ledger._state
    entries = state.entries()
    assert {k[:2] for k, _ in entries} >= {b"v", b"p", b"e", b"n/", b"m/", b"r/", b"k/", b"c/"}
    rebuilt = LedgerState.from_entries(CHAIN, entries, state.bindings)
    assert rebuilt.entries() == entries
    assert state_root(rebuilt.entries()) == state_root(entries) == ledger.state_root
    assert (rebuilt.validators, rebuilt.priorities, rebuilt.members, rebuilt.revoked) == (
        state.validators,
        state.priorities,
        state.members,
        state.revoked,
    )
    assert (rebuilt.nonces, rebuilt.gov_epoch, rebuilt.contracts, rebuilt.kv) == (
        state.nonces,
        state.gov_epoch,
        state.contracts,
        state.kv,
    )
    ledger.close()


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e[::-1],  # unsorted
        lambda e: e + [e[-1]],  # a duplicate
        lambda e: e + [(b"x/unknown", b"")],  # not a state key
        lambda e: [x for x in e if x[0] != b"v"],  # no validators
        lambda e: [(k, encoding.encode(-1) if k[:2] == b"n/" else v) for k, v in e],  # a negative nonce
        lambda e: [(k, v + b"\x00" if k[:2] == b"m/" else v) for k, v in e],  # a card with trailing bytes
    ],
)
def test_from_entries_refuses_what_entries_never_gives(tmp_path: Path, change: object) -> None:
    ledger, _ = _rich(tmp_path / "l.db")
    entries = ledger._state.entries()
    with pytest.raises(Exception) as info:
        LedgerState.from_entries(CHAIN, change(entries), {})  # type: ignore[operator]
    assert isinstance(info.value, (InvalidArgument, EncodingError))
    ledger.close()


# -- opening from a snapshot ---------------------------------------------------------------------


def test_reopen_from_a_snapshot_equals_a_full_replay(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger, ids = _rich(path)
    middle = ledger.snapshot()
    assert middle == ledger.height
    site = sites(3)[2]
    ids.append(ledger.call(site, "counter", "add", amount=7).tx_id)
    ids.append(
        ledger.submit(
            Transaction.create(site, kind="note", payload=[1, 2], nonce=ledger.next_nonce(site), chain_id=CHAIN)
        )
    )
    ledger.commit()
    expected = _views(ledger)
    ledger.close()

    replayed = Ledger.open(path, contracts=[Counter], read_only=True, from_snapshot=False)
    assert (replayed.opened_from, replayed.blocks_replayed) == (0, replayed.height)
    snapped = Ledger.open(path, contracts=[Counter], read_only=True)
    assert snapped.opened_from == middle and snapped.blocks_replayed == snapped.height - middle == 2
    assert _views(snapped) == _views(replayed) == expected
    anchor = {"chain_id": CHAIN, "trusted_validators": validator_set()}
    for tx_id in ids:
        assert snapped.get(tx_id) == replayed.get(tx_id)
        assert snapped.outcome(tx_id) == replayed.outcome(tx_id)
        verify_receipt(snapped.prove(tx_id), **anchor)  # type: ignore[arg-type]
        verify_outcome(snapped.prove(tx_id, outcome=True), **anchor)  # type: ignore[arg-type]
    for h in range(1, snapped.height + 1):
        assert snapped.block(h) == replayed.block(h)
    for old in (0, 1, snapped.log_size // 2, snapped.log_size):
        verify_consistency(snapped.prove_consistency(old), **anchor)  # type: ignore[arg-type]
    snapped.verify()
    replayed.close()
    snapped.close()


def test_contract_calls_continue_from_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    _snapshotted(path)
    site = sites(3)[2]
    with _open(path) as reopened:
        assert reopened.opened_from == reopened.height and reopened.blocks_replayed == 0
        assert reopened.view("counter", "total") == 16
        result = reopened.call(site, "counter", "add", amount=4)
        assert result.accepted and result.value == 20
        root = reopened.state_root
        reopened.verify()
    with Ledger.open(path, contracts=[Counter], read_only=True, from_snapshot=False) as replayed:
        assert replayed.state_root == root and replayed.view("counter", "total") == 20


def test_snapshots_are_written_every_k_transactions_with_the_block(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger, _ = _rich(path, snapshot_every=4)
    heights = []
    for i in range(6):
        ledger.submit(
            Transaction.create(
                sites(3)[0], kind="note", payload=i, nonce=ledger.next_nonce(sites(3)[0]), chain_id=CHAIN
            )
        )
        ledger.commit()
        heights.append((ledger.log_size, _snapshot_rows(path)))
    for log_size, rows in heights:
        assert len(rows) == 1  # only the latest is kept
        height = rows[0][0]
        assert ledger.block(height).header.log_size // 4 == log_size // 4  # the last block that crossed a multiple
    ledger.verify()
    ledger.close()
    with Ledger.open(path, contracts=[Counter], read_only=True) as reopened:
        assert reopened.opened_from == heights[-1][1][0][0]
        reopened.verify()


def test_no_snapshot_without_a_block_and_none_read_only(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = _open(path)
    with pytest.raises(NotFound):
        ledger.snapshot()
    ledger.close()
    with Ledger.open(path, contracts=[Counter], read_only=True) as ro:
        with pytest.raises(ReadOnlyLedger):
            ro.snapshot()


def _snapshot_rows(path: Path) -> list[tuple[int, bytes]]:
    db = sqlite3.connect(path)
    try:
        return [(int(h), bytes(b)) for h, b in db.execute("SELECT height, block_hash FROM snapshots")]
    finally:
        db.close()


# -- an altered snapshot is refused ----------------------------------------------------------------


def _alter(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


def _stored_entries(path: Path) -> list[list[bytes]]:
    db = sqlite3.connect(path)
    try:
        return encoding.decode(bytes(db.execute("SELECT state FROM snapshots").fetchone()[0]))  # type: ignore[return-value]
    finally:
        db.close()


def _change_value(entries: list[list[bytes]]) -> list[list[bytes]]:
    return [[k, encoding.encode(99) if k[:2] == b"n/" else v] for k, v in entries]


def _add_entry(entries: list[list[bytes]]) -> list[list[bytes]]:
    return sorted(entries + [[b"n/" + b"\x07" * 32, encoding.encode(1)]])


@pytest.mark.parametrize(
    ("what", "sql", "make"),
    [
        ("an entry value changed", "UPDATE snapshots SET state = ?", _change_value),
        ("an entry added", "UPDATE snapshots SET state = ?", _add_entry),
        ("an entry removed", "UPDATE snapshots SET state = ?", lambda e: [x for x in e if x[0][:2] != b"r/"]),
        ("the state is not entries", "UPDATE snapshots SET state = ?", lambda e: b"\xff"),
        ("the height changed", "UPDATE snapshots SET height = height - 1", None),
        ("the height beyond the chain", "UPDATE snapshots SET height = height + 100", None),
        ("the header hash changed", "UPDATE snapshots SET block_hash = ?", lambda e: b"\x00" * 32),
        ("a log leaf hash changed", "UPDATE snapshots SET leaf_hashes = ?", "leaf"),
        ("an outcome hash changed", "UPDATE snapshots SET outcome_hashes = ?", "outcome"),
        ("the log cut short", "UPDATE snapshots SET leaf_hashes = substr(leaf_hashes, 33)", None),
    ],
)
def test_an_altered_snapshot_is_refused_at_open_and_by_verify(
    tmp_path: Path, what: str, sql: str, make: object
) -> None:
    path = tmp_path / "l.db"
    height = _snapshotted(path)
    args: tuple[object, ...] = ()
    if make in ("leaf", "outcome"):
        db = sqlite3.connect(path)
        column = "leaf_hashes" if make == "leaf" else "outcome_hashes"
        blob = bytearray(db.execute(f"SELECT {column} FROM snapshots").fetchone()[0])
        db.close()
        blob[40] ^= 1
        args = (bytes(blob),)
    elif callable(make):
        changed = make(_stored_entries(path))
        args = (changed if isinstance(changed, bytes) else encoding.encode(changed),)
    _alter(path, sql, *args)
    with pytest.raises(InvalidSnapshot) as info:
        Ledger.open(path, contracts=[Counter], read_only=True)
    assert isinstance(info.value, TamperedLedger) and info.value.height >= height - 1
    # Replaying everything opens the file, and the audit names the forged snapshot.
    with Ledger.open(path, contracts=[Counter], read_only=True, from_snapshot=False) as replayed:
        with pytest.raises(InvalidSnapshot):
            replayed.verify()


def test_a_refused_snapshot_is_replaced_after_a_full_replay(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    height = _snapshotted(path)
    _alter(path, "UPDATE snapshots SET state = ?", encoding.encode(_change_value(_stored_entries(path))))
    with pytest.raises(InvalidSnapshot):
        _open(path)
    with _open(path, from_snapshot=False) as replayed:
        assert replayed.opened_from == 0 and replayed.blocks_replayed == height
        assert replayed.snapshot() == height
    with Ledger.open(path, contracts=[Counter], read_only=True) as reopened:
        assert reopened.opened_from == height
        reopened.verify()


def test_a_second_snapshot_row_is_accounted_for(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    _snapshotted(path)
    _alter(
        path,
        "INSERT INTO snapshots SELECT height - 1, block_hash, state, leaf_hashes, outcome_hashes FROM snapshots",
    )
    with pytest.raises(TamperedLedger, match="more than one snapshot"):
        Ledger.open(path, contracts=[Counter], read_only=True)


def test_a_schema_2_file_opens_without_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger, _ = _rich(path)
    height = ledger.height
    ledger.close()
    _alter(path, "DROP TABLE snapshots")
    with Ledger.open(path, contracts=[Counter], read_only=True) as ro:
        assert ro.height == height and ro.opened_from == 0
        ro.verify()
    with _open(path) as rw:  # a writable open adds the (empty) table
        assert rw.snapshot() == height
    with Ledger.open(path, contracts=[Counter], read_only=True) as ro:
        assert ro.opened_from == height
        ro.verify()


# -- open time stays flat ------------------------------------------------------------------------


@pytest.mark.slow
def test_open_time_stays_flat_from_10k_to_100k_transactions(tmp_path: Path) -> None:
    senders = sites(3)
    n = 100_000
    txs = [Transaction.create(senders[i % 3], kind="note", payload=i, nonce=i // 3, chain_id=CHAIN) for i in range(n)]

    def build(path: Path, count: int) -> None:
        with _open(path, snapshot_every=None) as ledger:
            for i in range(0, count, 10_000):
                assert all(r.accepted for r in ledger.submit_many(txs[i : i + 10_000]))
                ledger.commit()
            # Two blocks after the snapshot: opening replays those only.
            ledger.snapshot()
            for i in range(count, count + 2):
                ledger.submit(
                    Transaction.create(
                        senders[0], kind="note", payload=-i, nonce=ledger.next_nonce(senders[0]), chain_id=CHAIN
                    )
                )
                ledger.commit()

    def open_time(path: Path, from_snapshot: bool) -> tuple[float, int]:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            ledger = Ledger.open(path, contracts=[Counter], read_only=True, from_snapshot=from_snapshot)
            best = min(best, time.perf_counter() - start)
            replayed = ledger.blocks_replayed
            ledger.close()
        return best, replayed

    small, large = tmp_path / "small.db", tmp_path / "large.db"
    build(small, 10_000)
    build(large, n)
    t_small, r_small = open_time(small, True)
    t_large, r_large = open_time(large, True)
    t_replay_small, _ = open_time(small, False)
    t_replay, r_replay = open_time(large, False)
    # The blocks replayed (counted by the ledger, not timed): only the two after the snapshot.
    assert (r_small, r_large, r_replay) == (2, 2, 12)
    # Replaying 10x the transactions costs about 10x. From a snapshot what remains is per-leaf
    # native work (rebuilding the log's tree from its leaf hashes, the outcome roots): its growth
    # from 10^4 to 10^5 must be a small fraction of the replay's (both measured here, on this machine).
    assert t_large < 0.2 * t_replay, (t_large, t_replay)
    assert t_large - t_small < 0.2 * (t_replay - t_replay_small), (t_small, t_large, t_replay_small, t_replay)
