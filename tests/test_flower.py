"""fedledger.integrations.flower in one process, through Flower's own Grid, Message and
ClientApp objects (LoopbackGrid: every message through Flower's serde): secure aggregation
gives plain FedAvg's model within the quantization bound, every round is on the ledger and
verifies, dropouts are recorded, and strategies that read each update are refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

if os.environ.get("CI"):
    import flwr  # noqa: F401 - CI installs flwr: a missing one fails here
else:
    pytest.importorskip("flwr", reason="flwr is not installed (pip install 'fedledger[flower]')")

from flower_helpers import AGGREGATOR, SITES, consortium, initial, make_app, masked, reference, train
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.common.serde import context_to_proto
from flwr.serverapp.strategy import Bulyan, FedAdam, FedAvg, FedMedian, FedTrimmedAvg, Krum
from ledger_helpers import identity

from fedledger.aggregators import Masked, Paillier
from fedledger.crypto import seal
from fedledger.errors import InvalidArgument, PolicyViolation, UnsupportedStrategy
from fedledger.federated import load_aggregate, model_hash
from fedledger.heagg import Dealing, deal
from fedledger.integrations import flower
from fedledger.integrations.flower import LedgerStrategy, LoopbackGrid, SecureAggregation, Trustee, fedledger_mod

#: Masked quantizes each weighted value to 2^-bits of [-clip, clip] per unit of weight: far below this.
BOUND = 1e-6


def _fedavg() -> FedAvg:
    return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)


def _grid() -> LoopbackGrid:
    return LoopbackGrid(make_app(), [{"partition-id": i} for i in range(len(SITES))])


def _sites() -> dict[str, object]:
    return {n: identity(n) for n in SITES}


def _close(got: object, want: dict[str, np.ndarray], bound: float) -> float:
    err = max(float(np.max(np.abs(got[k].numpy() - v))) for k, v in want.items())  # type: ignore[index]
    assert err <= bound, err
    return err


def _check_records(ledger: object, store: object, records: list, rounds: int) -> None:  # type: ignore[type-arg]
    assert [r.round for r in records] == list(range(1, rounds + 1))
    state = ledger.view("training", "get_policy", policy="p1")  # type: ignore[attr-defined]
    assert state["rounds"] == rounds
    for rec in records:
        assert rec.status == "done", rec.reason
        assert rec.model_hash == model_hash(rec.model)
        aggregate, total = load_aggregate(store.get(rec.aggregate_cid))  # type: ignore[attr-defined]
        assert total == rec.result.total_weight
        np.testing.assert_allclose(aggregate, rec.result.aggregate)
    ledger.verify()  # type: ignore[attr-defined]


def test_secure_aggregation_equals_fedavg_and_is_recorded(tmp_path: Path) -> None:
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        strategy = _secure(ledger, store, coordinator)
        with _grid() as grid:
            result = strategy.start(grid, initial(), num_rounds=3, timeout=10)
        _close(result.arrays, reference(initial(), 3), BOUND)
        assert len(strategy.records) == 3
        for rec in strategy.records:
            assert rec.participants == tuple(SITES) and not rec.dropouts
            assert set(rec.result.commitments) == set(SITES)
            assert rec.result.parameters["bits"] == AGGREGATOR["bits"]
        last = strategy.records[-1].model
        np.testing.assert_array_equal(np.concatenate([result.arrays[k].numpy().ravel() for k in ("w", "b")]), last)
        _check_records(ledger, store, strategy.records, 3)
        # the train metrics are the weighted mean of the sites' (loss = site index)
        metrics = result.train_metrics_clientapp[3]
        weights = [20 + 7 * i for i in range(4)]
        assert abs(metrics["loss"] - sum(i * w for i, w in enumerate(weights)) / sum(weights)) < 1e-9


def test_secure_aggregation_never_shows_an_update_to_the_server(tmp_path: Path) -> None:
    seen: list[Message] = []
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        strategy = _secure(ledger, store, coordinator)
        grid = _grid()
        app = grid.app

        def spy(msg, context):  # type: ignore[no-untyped-def]
            reply = app(msg, context)
            seen.append(reply)
            return reply

        grid.app = spy  # type: ignore[assignment]
        with grid:
            strategy.start(grid, initial(), num_rounds=1, timeout=10)
    train_replies = [m for m in seen if not m.has_error() and m.content.metric_records]
    assert len(train_replies) == 4
    assert all(not m.content.array_records for m in seen)


def test_replayed_client_state_gives_the_same_round(tmp_path: Path) -> None:
    """Flower runs each message in a fresh process: the site rebuilds its state from the
    node's Context alone (no live client in the process)."""
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        strategy = _secure(ledger, store, coordinator)
        grid = _grid()
        grid.before_deliver = lambda msg: flower._LIVE.clear()
        with grid:
            result = strategy.start(grid, initial(), num_rounds=2, timeout=10)
        _close(result.arrays, reference(initial(), 2), BOUND)
        _check_records(ledger, store, strategy.records, 2)


def _secure(ledger: object, store: object, coordinator: object) -> SecureAggregation:
    return SecureAggregation(
        _fedavg(), ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites(), aggregator=masked()
    )  # type: ignore[arg-type]


def _stop_at(grid: LoopbackGrid, stage: str, nodes: list[int]) -> None:
    """``nodes`` vanish when the server first sends ``stage`` (they never answer again)."""

    def hook(msg: Message) -> None:
        cfg = msg.content.config_records.get("fedledger")
        if cfg is not None and cfg.get("stage") == stage:
            for node in nodes:
                grid.stop(node)

    grid.before_deliver = hook


def test_a_site_keeps_its_update_in_a_sealed_file_and_its_context_small(tmp_path: Path) -> None:
    """Flower pushes a ClientApp's whole Context back after every message, and a model-sized one
    can be lost on the way: the site keeps its update in a sealed file of the node's, and its
    Context holds a key and a name. Every stage here replays from that file (no live client)."""
    model = ArrayRecord({"w": Array(np.random.default_rng(1).normal(0, 0.3, (300, 300))), "b": Array(np.zeros(3))})
    seen: list[tuple[int, Path, int]] = []
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        strategy = _secure(ledger, store, coordinator)
        grid = _grid()

        def look(msg: Message) -> None:
            for ctx in grid.contexts.values():
                state = ctx.state.config_records.get(flower._STATE)
                if state is not None:
                    path = Path(str(state["update_file"]))
                    seen.append((context_to_proto(ctx).ByteSize(), path, path.stat().st_size))
            flower._LIVE.clear()

        grid.before_deliver = look
        with grid:
            result = strategy.start(grid, model, num_rounds=1, timeout=10)
        _check_records(ledger, store, strategy.records, 1)
    _close(result.arrays, reference(model, 1), BOUND)
    assert len(seen) >= 12  # four sites' state, seen at each of the stages after training
    assert max(size for size, _, _ in seen) < 8192  # keys, seed, inbox; the update is 90,003 float64 values
    assert {n for _, _, n in seen} == {seal.sealed_records_size(8 * 90_003)}
    paths = {p for _, p, _ in seen}
    assert len(paths) == 4 and all(p.parent.name.startswith("fedledger-loopback-") for p in paths)
    assert not any(p.exists() for p in paths)  # each removed when its site's round ended


@pytest.mark.parametrize("damage", ["flip", "remove"])
def test_a_site_whose_update_file_is_damaged_drops_out(tmp_path: Path, damage: str) -> None:
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        strategy = _secure(ledger, store, coordinator)
        grid = _grid()

        def hook(msg: Message) -> None:
            cfg = msg.content.config_records.get("fedledger")
            flower._LIVE.clear()  # the site answers from its file, as in a fresh process
            if cfg is not None and cfg.get("stage") == "relayed_shares" and msg.metadata.dst_node_id == 4:
                path = Path(str(grid.contexts[4].state.config_records[flower._STATE]["update_file"]))
                if damage == "flip":
                    data = bytearray(path.read_bytes())
                    data[len(data) // 2] ^= 1
                    path.write_bytes(data)
                else:
                    path.unlink()

        grid.before_deliver = hook
        with grid:
            result = strategy.start(grid, initial(), num_rounds=1, timeout=10)
        (rec,) = strategy.records
        assert rec.status == "done" and rec.dropouts == {"site-3": "masked_input"}
        _close(result.arrays, reference(initial(), 1, [[0, 1, 2]]), BOUND)
        _check_records(ledger, store, strategy.records, 1)


def test_dropout_after_training_is_recorded(tmp_path: Path) -> None:
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        strategy = _secure(ledger, store, coordinator)
        grid = _grid()
        _stop_at(grid, "relayed_shares", [4])  # site-3 vanishes at the masked-input stage of round 1
        with grid:
            result = strategy.start(grid, initial(), num_rounds=2, timeout=10)
        rec1, rec2 = strategy.records
        assert rec1.status == "done" and rec1.dropouts == {"site-3": "masked_input"}
        assert rec1.result.survivors == ("site-0", "site-1", "site-2")
        # gone from the grid, the node is not sampled again: round 2 is among the three
        assert not rec2.dropouts and rec2.participants == ("site-0", "site-1", "site-2")
        _close(result.arrays, reference(initial(), 2, [[0, 1, 2], [0, 1, 2]]), BOUND)
        _check_records(ledger, store, strategy.records, 2)


def test_too_few_survivors_fails_the_round_on_the_record(tmp_path: Path) -> None:
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        strategy = _secure(ledger, store, coordinator)
        grid = _grid()
        _stop_at(grid, "key_directory", [3, 4])
        with grid:
            result = strategy.start(grid, initial(), num_rounds=1, timeout=10)
        (rec,) = strategy.records
        assert rec.status == "failed" and rec.model is None
        assert set(rec.dropouts) == {"site-2", "site-3"}
        assert "min_survivors" in (rec.reason or "")
        assert not list(result.arrays)  # Flower keeps the model it had
        ledger.verify()


def test_ledger_strategy_records_plain_fedavg(tmp_path: Path) -> None:
    with consortium(tmp_path, "plain") as (ledger, store, coordinator):
        strategy = LedgerStrategy(_fedavg(), ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites())
        with _grid() as grid:
            result = strategy.start(grid, initial(), num_rounds=3, timeout=10)
        _close(result.arrays, reference(initial(), 3), 1e-12)
        _check_records(ledger, store, strategy.records, 3)
        rec = strategy.records[0]
        assert rec.result.parameters["strategy"] == "FedAvg"
        assert set(rec.result.commitments) == set(SITES)


def test_ledger_strategy_records_fedmedian(tmp_path: Path) -> None:
    with consortium(tmp_path, "plain") as (ledger, store, coordinator):
        median = FedMedian(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)
        strategy = LedgerStrategy(median, ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites())
        with _grid() as grid:
            result = strategy.start(grid, initial(), num_rounds=1, timeout=10)
        np.testing.assert_array_equal(
            np.concatenate([result.arrays[k].numpy().ravel() for k in ("w", "b")]), strategy.records[0].model
        )
        _check_records(ledger, store, strategy.records, 1)


@pytest.mark.parametrize("kind", [FedMedian, FedTrimmedAvg, Krum, Bulyan])
def test_strategies_that_read_each_update_are_refused(tmp_path: Path, kind: type) -> None:
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        with pytest.raises(UnsupportedStrategy, match=kind.__name__) as info:
            SecureAggregation(kind(), ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites())
        assert "each client's update" in str(info.value)


def test_sites_refuse_other_aggregation_settings(tmp_path: Path) -> None:
    """A server asking for other settings than the sites hold gets no site: the policy refuses
    the round (fewer than min_cohort), and the refusal is on the ledger."""
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        weaker = Masked(3, bits=32, clip=1.0, max_weight=1000, neighbors=2)
        strategy = SecureAggregation(
            _fedavg(), ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites(), aggregator=weaker
        )
        with _grid() as grid, pytest.raises(PolicyViolation, match="0 sites"):
            strategy.start(grid, initial(), num_rounds=1, timeout=10)
        refused = ledger.view("training", "get_round", policy="p1", round=1)
        assert refused["status"] == "failed" and "0 sites" in refused["reason"]
        ledger.verify()


def test_ledger_strategy_leaves_out_a_reply_whose_commitment_is_not_signed(tmp_path: Path) -> None:
    def forge(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
        reply = call_next(msg, context)
        record = reply.content.config_records.get("fedledger")
        if context.node_config["partition-id"] == 3 and record is not None:
            record["signature"] = bytes(64)
        return reply

    with consortium(tmp_path, "plain") as (ledger, store, coordinator):
        strategy = LedgerStrategy(_fedavg(), ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites())
        grid = LoopbackGrid(make_app(forge), [{"partition-id": i} for i in range(len(SITES))])
        with grid:
            result = strategy.start(grid, initial(), num_rounds=1, timeout=10)
        (rec,) = strategy.records
        # never shown to be site-3, node 4 is no participant (nor a dropout) of the record
        assert rec.participants == ("site-0", "site-1", "site-2") and not rec.dropouts
        _close(result.arrays, reference(initial(), 1, [[0, 1, 2]]), 1e-12)


def test_a_server_optimizer_runs_on_the_secure_mean(tmp_path: Path) -> None:
    """FedAdam takes the one reply (the recorded FedAvg model) and steps from it."""
    with consortium(tmp_path, "masked") as (ledger, store, coordinator):
        adam = FedAdam(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)
        strategy = SecureAggregation(
            adam, ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites(), aggregator=masked()
        )
        with _grid() as grid:
            result = strategy.start(grid, initial(), num_rounds=2, timeout=10)
        _check_records(ledger, store, strategy.records, 2)
        moved = max(float(np.max(np.abs(result.arrays[k].numpy() - initial()[k].numpy()))) for k in ("w", "b"))
        assert moved > 0


@pytest.mark.parametrize("lost", [False, True])
def test_paillier_secure_aggregation_with_trustees_on_the_nodes(tmp_path: Path, lost: bool) -> None:
    """Paillier over Flower: the sites encrypt, three trustees hosted on three of the nodes
    decrypt the sum (2 of 3); the model is plain FedAvg's within the quantization bound. With
    ``lost``, the node of site-2 and trustee-3 vanishes at the decryption: its update is in,
    two trustees suffice."""
    trustees = [f"trustee-{i}" for i in range(1, 4)]
    dealing = deal(trustees, 2, key_bits=1024, insecure_for_tests=True)
    settings = {"bits": 24, "clip": 1.0, "max_total_weight": 128, "insecure_for_tests": True}
    public = Dealing(dealing.public_key, {}, dealing.threshold)
    keys = {n: identity(n).verify_key for n in [*SITES, *trustees, "coordinator"]}

    def me(context: Context) -> object:
        return identity(SITES[int(context.node_config["partition-id"])])

    def host(context: Context) -> Trustee | None:
        i = int(context.node_config["partition-id"])
        if i >= len(trustees):
            return None
        return Trustee(identity(trustees[i]), dealing.shares[trustees[i]], tuple(SITES))

    mod = fedledger_mod(me, keys, aggregator=Paillier(3, dealing=public, **settings), trustee=host)  # type: ignore[arg-type]
    app = ClientApp(mods=[mod])
    app.train()(train)
    with consortium(tmp_path, "paillier") as (ledger, store, coordinator):
        strategy = SecureAggregation(
            _fedavg(),
            ledger,
            policy="p1",
            coordinator=coordinator,
            store=store,
            sites=_sites(),
            aggregator=Paillier(3, dealing=public, **settings),  # type: ignore[arg-type]
            trustees={t: (identity(t), dealing.shares[t].index) for t in trustees},
        )
        grid = LoopbackGrid(app, [{"partition-id": i} for i in range(len(SITES))])
        if lost:
            _stop_at(grid, "decrypt_request", [3])
        with grid:
            result = strategy.start(grid, initial(), num_rounds=1 if lost else 2, timeout=10)
        _close(result.arrays, reference(initial(), 1 if lost else 2), 1e-5)
        _check_records(ledger, store, strategy.records, 1 if lost else 2)
        rec = strategy.records[0]
        assert rec.result.aggregator == "paillier" and rec.result.survivors == tuple(SITES)
        assert not rec.dropouts  # every site's update is in the sum
        assert rec.result.parameters.get("trustee_dropouts") == ({"trustee-3": "partial_decryption"} if lost else None)


def test_the_coordinator_never_holds_a_key_share(tmp_path: Path) -> None:
    dealing = deal(["trustee-1", "trustee-2", "trustee-3"], 2, key_bits=1024, insecure_for_tests=True)
    with consortium(tmp_path, "paillier") as (ledger, store, coordinator):
        with pytest.raises(InvalidArgument, match="public key only"):
            SecureAggregation(
                _fedavg(), ledger, policy="p1", coordinator=coordinator, store=store, sites=_sites(),
                aggregator=Paillier(3, dealing=dealing, insecure_for_tests=True),
                trustees={t: (identity(t), s.index) for t, s in dealing.shares.items()},
            )  # fmt: skip


# -- reading Flower's arrays without a copy ------------------------------------------------------

_DTYPES = [np.float16, np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64]


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(_DTYPES),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
    fortran=st.booleans(),
    big_endian=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_array_values_are_what_flowers_numpy_gives(
    dtype: type, shape: tuple[int, ...], fortran: bool, big_endian: bool, seed: int
) -> None:
    """flower._values reads numpy's header and views the bytes; it must equal Array.numpy()
    (np.load) in values, shape, dtype and element order, for every layout numpy writes."""
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    a = np.asfortranarray(a) if fortran else a
    a = a.astype(a.dtype.newbyteorder(">")) if big_endian and a.dtype.itemsize > 1 else a
    array = Array(a)
    want, got = array.numpy(), flower._values(array)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(got.ravel(), want.ravel(), equal_nan=True)  # the same C order


def test_array_values_fall_back_to_numpy_for_what_the_view_cannot_be_sure_of() -> None:
    a = Array(np.arange(6, dtype=np.float32))
    truncated = Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=a.data[:-4])
    with pytest.raises(ValueError):  # numpy's own error, as Array.numpy() raises it
        flower._values(truncated)
    trailing = Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=a.data + b"\0" * 4)
    assert np.array_equal(flower._values(trailing), trailing.numpy())
    with pytest.raises(ValueError):
        flower._values(Array(dtype="float32", shape=(1,), stype=a.stype, data=b"not an npy file"))
