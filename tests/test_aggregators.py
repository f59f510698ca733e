"""fedledger.aggregators: Plain, Masked and Paillier agree within their quantization bounds;
dropouts, commitments, sealing, forged and replayed messages, bad input, the minimum-cohort
rule, and the message-level server/client against run()."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger import heagg
from fedledger.aggregators import (
    AggregateResult,
    Aggregator,
    AggregatorClient,
    AggregatorServer,
    Envelope,
    Masked,
    Paillier,
    Plain,
)
from fedledger.crypto import masking
from fedledger.errors import InvalidArgument, InvalidArgumentType, RoundFailed
from fedledger.identity import Identity

DEALING = heagg.deal(["trustee-1", "trustee-2", "trustee-3"], 2, key_bits=512, insecure_for_tests=True)


def paillier(**kw: object) -> Paillier:
    return Paillier(dealing=DEALING, **kw)  # type: ignore[arg-type]


def make_updates(n: int, d: int, seed: int = 0, dtype: type = np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"site-{i}": rng.uniform(-0.9, 0.9, d).astype(dtype) for i in range(n)}


def exact(updates: Mapping[str, np.ndarray], weights: Mapping[str, int], survivors: tuple[str, ...]) -> np.ndarray:
    return sum(updates[c].astype(np.float64) * weights.get(c, 1) for c in survivors)  # type: ignore[return-value]


def quantization_bound(res: AggregateResult) -> float:
    """The most the aggregate may differ from the exact weighted sum, from the scale:
    Masked rounds w*x*scale stochastically (< 1 unit per site), Paillier rounds x*scale to
    the nearest unit and multiplies by w (w/2 units per site), Plain rounds w*x to float32."""
    w = [res.weights[c] for c in res.survivors]
    name = res.parameters["name"]
    if name == "masked":
        return len(w) / float(res.parameters["scale"]) + 1e-9  # type: ignore[arg-type]
    if name == "paillier":
        return sum(w) * 0.5 / float(res.parameters["scale"]) + 1e-9  # type: ignore[arg-type]
    return sum(w) * 2.0**-23 + 1e-12


def test_each_aggregator_implements_the_protocol() -> None:
    ident = {c: Identity.generate(c) for c in ["a", "b", "c", "aggregator"]}
    keys = {c: i.verify_key for c, i in ident.items()}
    for agg in (Plain(), Masked(), paillier()):
        assert isinstance(agg, Aggregator)
        server = agg.server(ident["aggregator"], sites=["a", "b", "c"], verify_keys=keys, dimension=4)
        client = agg.client(ident["a"], server="aggregator", verify_keys=keys)
        assert isinstance(server, AggregatorServer) and isinstance(client, AggregatorClient)
        assert agg.parameters["name"] == agg.name and agg.parameters["sealed"] is True


MASKED_DROPS = ("advertise_keys", "share_keys", "masked_input")


@settings(max_examples=15)
@given(
    n=st.integers(3, 6),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    weights=st.lists(st.integers(1, 9), min_size=6, max_size=6),
    drops=st.lists(st.integers(0, 2), min_size=0, max_size=3),
    trustee_drop=st.sampled_from([None, "trustee-1", "trustee-2", "trustee-3"]),
)
def test_masked_and_paillier_agree_with_plain_within_the_quantization_bound(
    n: int, d: int, seed: int, weights: list[int], drops: list[int], trustee_drop: str | None
) -> None:
    updates = make_updates(n, d, seed)
    ws = {f"site-{i}": weights[i] for i in range(n)}
    # the first sites drop (before their update reaches the sum), as long as 3 remain;
    # each at one of the stages that keep it out of the sum
    stages = drops[: n - 3]
    gone = {f"site-{i}": s for i, s in enumerate(stages)}
    plain = Plain().run(updates, ws, {c: "update" for c in gone})
    masked = Masked(neighbors=None).run(updates, ws, {c: MASKED_DROPS[s] for c, s in gone.items()})
    paill_drops = {c: "update" for c in gone}
    if trustee_drop:
        paill_drops[trustee_drop] = "partial_decryption"
    paill = paillier().run(updates, ws, paill_drops)
    assert plain.survivors == tuple(sorted(set(updates) - set(gone)))
    assert dict(paill.dropouts) == paill_drops
    want = exact(updates, ws, plain.survivors)
    for res in (plain, masked, paill):
        assert res.survivors == plain.survivors
        assert res.total_weight == sum(ws[c] for c in plain.survivors)
        assert dict(res.weights) == {c: ws[c] for c in plain.survivors}
        assert np.max(np.abs(res.aggregate - want)) <= quantization_bound(res), res.aggregator
        assert np.allclose(res.mean, want / res.total_weight, atol=quantization_bound(res))
    for res in (masked, paill):
        assert np.max(np.abs(res.aggregate - plain.aggregate)) <= quantization_bound(res) + quantization_bound(plain)


def test_dropouts_are_recorded_with_their_stages() -> None:
    updates = make_updates(8, 5)
    drops = {"site-0": "advertise_keys", "site-1": "share_keys", "site-2": "masked_input", "site-3": "unmask"}
    res = Masked().run(updates, None, drops)
    assert dict(res.dropouts) == drops
    assert res.survivors == ("site-3", "site-4", "site-5", "site-6", "site-7")  # site-3's input is in the sum
    assert np.max(np.abs(res.aggregate - exact(updates, {}, res.survivors))) <= quantization_bound(res)
    res = paillier().run(make_updates(4, 5), None, {"site-1": "update", "trustee-3": "partial_decryption"})
    assert dict(res.dropouts) == {"site-1": "update", "trustee-3": "partial_decryption"}
    res = Plain().run(make_updates(4, 5), None, {"site-2": "update"})
    assert dict(res.dropouts) == {"site-2": "update"}
    assert "site-2" not in res.bytes_up


def test_commitments_are_present_for_each_survivor() -> None:
    updates = make_updates(4, 7)
    ws = {"site-1": 3}
    for agg in (Plain(), Masked(), paillier()):
        res = agg.run(updates, ws, {"site-0": agg.STAGES[-1] if agg.name != "masked" else "masked_input"})
        assert set(res.commitments) == set(res.survivors) == {"site-1", "site-2", "site-3"}
        assert all(type(r) is bytes and len(r) == 32 for r in res.commitments.values())
        assert len(set(res.commitments.values())) == 3
    # Plain's commitment is the root of the weighted float32 bytes the site signed
    res = Plain().run(updates, ws)
    data = (updates["site-1"].astype(np.float64) * 3).astype(np.float32).tobytes()
    assert res.commitments["site-1"] == masking.vector_root(data)


def test_parameters_and_the_minimum_cohort_rule() -> None:
    assert Plain(min_cohort=1).min_survivors == 3
    assert Masked(min_cohort=2).parameters["min_survivors"] == 3
    assert paillier(min_cohort=5).parameters["min_survivors"] == 5
    with pytest.raises(InvalidArgument, match="minimum cohort 5"):
        Plain(min_cohort=5).run(make_updates(4, 3))
    with pytest.raises(RoundFailed, match="min_survivors=5"):
        paillier(min_cohort=5).run(make_updates(5, 3), None, {"site-4": "update"})
    with pytest.raises(RoundFailed, match="min_survivors=4"):
        Plain(min_cohort=4).run(make_updates(4, 3), None, {"site-0": "update"})
    res = paillier(bits=12, clip=2.0).run(make_updates(3, 3))
    for key in ("bits", "clip", "threshold", "trustees", "key_bits", "min_survivors", "scale", "max_total_weight"):
        assert key in res.parameters
    assert res.parameters["bits"] == 12 and res.parameters["clip"] == 2.0 and res.parameters["sealed"] is True
    masked = Masked(neighbors=2).run(make_updates(6, 3))
    assert masked.parameters["neighbors"] == 2 and masked.parameters["threshold"] == 2
    assert set(masked.seconds) >= {"server", "site-0"} and masked.bytes_down["site-0"] > 0


def test_the_update_bytes_on_the_wire_are_sealed() -> None:
    updates = {f"site-{i}": np.full(256, 0.125 * (i + 1), dtype=np.float32) for i in range(3)}
    for agg in (Plain(), paillier()):
        seen: list[Envelope] = []
        _drive(agg, updates, tap=_recorder(seen))
        ups = [e for e in seen if e.stage == "update" and e.sender == "site-0"]
        assert len(ups) == 1
        plaintext = np.full(8, 0.125, dtype=np.float32).tobytes()
        assert plaintext not in ups[0].data, agg.name
        assert np.float64(0.125).tobytes() * 2 not in ups[0].data
    # and without the seal the same search finds it: the search can fail
    assert np.full(8, 0.125, dtype=np.float32).tobytes() in updates["site-0"].tobytes()


def _recorder(seen: list[Envelope]) -> Callable[[Envelope], Envelope]:
    def tap(env: Envelope) -> Envelope:
        seen.append(env)
        return env

    return tap


def _drive(
    agg: Plain | Masked | Paillier,
    updates: Mapping[str, np.ndarray],
    weights: Mapping[str, int] | None = None,
    *,
    round_id: int = 1,
    idents: Mapping[str, Identity] | None = None,
    tap: Callable[[Envelope], Envelope | None] | None = None,
) -> AggregateResult:
    """A small transport: the message-level server and clients, envelopes delivered one at a time."""
    names = [*updates, "aggregator", *(DEALING.shares if isinstance(agg, Paillier) else [])]
    ids = dict(idents or {c: Identity.generate(c) for c in names})
    keys = {c: i.verify_key for c, i in ids.items()}
    dim = len(next(iter(updates.values())))
    server = agg.server(ids["aggregator"], sites=list(updates), verify_keys=keys, dimension=dim, round_id=round_id)
    parties: dict[str, object] = {
        c: agg.client(ids[c], server="aggregator", verify_keys=keys, round_id=round_id) for c in updates
    }
    if isinstance(agg, Paillier):
        for t in DEALING.shares:
            parties[t] = agg.trustee(
                ids[t], server="aggregator", sites=list(updates), verify_keys=keys, dimension=dim, round_id=round_id
            )
    outbox = server.start()
    for c, u in updates.items():
        outbox += parties[c].start(u, (weights or {}).get(c, 1))  # type: ignore[attr-defined]
    while not server.done:
        while outbox:
            env: Envelope | None = outbox.pop(0)
            if tap is not None:
                env = tap(env)  # type: ignore[arg-type]
            if env is None:
                continue
            if env.receiver == "aggregator":
                server.collect(env)
            else:
                outbox += parties[env.receiver].respond(env)  # type: ignore[attr-defined]
        outbox = server.advance()
    return server.finish()


@pytest.mark.parametrize("make", [Plain, Masked, paillier], ids=["plain", "masked", "paillier"])
def test_the_message_level_server_and_clients_give_what_run_gives(
    make: Callable[[], Plain | Masked | Paillier],
) -> None:
    updates = make_updates(4, 9, seed=3)
    ws = {"site-0": 2, "site-3": 5}
    agg = make()
    by_hand = _drive(agg, updates, ws)
    ran = agg.run(updates, ws)
    assert by_hand.survivors == ran.survivors and dict(by_hand.weights) == dict(ran.weights)
    assert by_hand.total_weight == ran.total_weight and by_hand.aggregator == ran.aggregator
    if agg.name == "masked":  # stochastic rounding: each within its bound of the exact sum
        want = exact(updates, ws, ran.survivors)
        assert np.max(np.abs(by_hand.aggregate - want)) <= quantization_bound(by_hand)
    else:  # deterministic quantization: the same sum
        assert np.array_equal(by_hand.aggregate, ran.aggregate)
    assert by_hand.parameters == ran.parameters


@pytest.mark.parametrize("make", [Plain, Masked, paillier], ids=["plain", "masked", "paillier"])
def test_forged_and_replayed_update_messages_become_dropouts(make: Callable[[], Plain | Masked | Paillier]) -> None:
    updates = make_updates(5, 6, seed=1)
    agg = make()
    stage = "masked_input" if agg.name == "masked" else "update"
    names = [*updates, "aggregator", *DEALING.shares]
    ids = {c: Identity.generate(c) for c in names}
    old: dict[str, Envelope] = {}

    def record(env: Envelope) -> Envelope:
        if env.stage == stage:
            old[env.sender] = env
        return env

    _drive(agg, updates, idents=ids, tap=record, round_id=1)

    def attack(env: Envelope) -> Envelope:
        if env.stage == stage and env.sender == "site-1":
            return old["site-1"]  # the same site's signed update of round 1, replayed into round 2
        if env.stage == stage and env.sender == "site-2":
            data = bytearray(env.data)
            data[40] ^= 1  # a flipped bit in the signed header
            return Envelope(env.stage, env.sender, env.receiver, bytes(data))
        return env

    res = _drive(agg, updates, idents=ids, tap=attack, round_id=2)
    assert dict(res.dropouts) == {"site-1": stage, "site-2": stage}
    assert res.survivors == ("site-0", "site-3", "site-4")
    assert np.max(np.abs(res.aggregate - exact(updates, {}, res.survivors))) <= quantization_bound(res)


def test_a_forged_masked_input_becomes_a_dropout() -> None:
    updates = make_updates(5, 6)

    def forge(env: Envelope) -> Envelope:
        if env.stage == "masked_input" and env.sender == "site-4":
            data = bytearray(env.data)
            data[-1] ^= 1  # the sealed vector no longer opens
            return Envelope(env.stage, env.sender, env.receiver, bytes(data))
        return env

    res = _drive(Masked(neighbors=None), updates, tap=forge)
    assert dict(res.dropouts) == {"site-4": "masked_input"}
    assert np.max(np.abs(res.aggregate - exact(updates, {}, res.survivors))) <= quantization_bound(res)


BAD: list[tuple[str, Callable[[dict[str, np.ndarray]], tuple[object, object, object]], type[Exception]]] = [
    ("shape", lambda u: ({**u, "site-0": np.zeros(5, np.float32)}, None, None), InvalidArgument),
    ("dtype", lambda u: ({**u, "site-0": u["site-0"].astype(np.float64)}, None, None), InvalidArgument),
    ("2-D", lambda u: ({c: v.reshape(1, -1) for c, v in u.items()}, None, None), InvalidArgument),
    ("ints", lambda u: ({**u, "site-0": np.zeros(4, np.int32)}, None, None), InvalidArgumentType),
    ("list", lambda u: ({**u, "site-0": [0.0] * 4}, None, None), InvalidArgumentType),
    ("nan", lambda u: ({**u, "site-1": np.array([0, np.nan, 0, 0], np.float32)}, None, None), InvalidArgument),
    ("inf", lambda u: ({**u, "site-1": np.array([0, 0, -np.inf, 0], np.float32)}, None, None), InvalidArgument),
    ("zero weight", lambda u: (u, {"site-0": 0}, None), InvalidArgument),
    ("negative weight", lambda u: (u, {"site-0": -2}, None), InvalidArgument),
    ("float weight", lambda u: (u, {"site-0": 1.5}, None), InvalidArgumentType),
    ("bool weight", lambda u: (u, {"site-0": True}, None), InvalidArgumentType),
    ("weight of nobody", lambda u: (u, {"site-9": 1}, None), InvalidArgument),
    ("unknown dropout", lambda u: (u, None, {"site-9": "update"}), InvalidArgument),
    ("unknown stage", lambda u: (u, None, {"site-0": "later"}), InvalidArgument),
    ("empty", lambda u: ({}, None, None), InvalidArgument),
    ("not a mapping", lambda u: (list(u.values()), None, None), InvalidArgumentType),
]


@pytest.mark.parametrize("make", [Plain, Masked, paillier], ids=["plain", "masked", "paillier"])
@pytest.mark.parametrize(("what", "change", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_a_typed_error_before_anything_is_sent(
    make: Callable[[], Plain | Masked | Paillier],
    what: str,
    change: Callable[[dict[str, np.ndarray]], tuple[object, object, object]],
    error: type[Exception],
) -> None:
    updates, weights, dropouts = change(make_updates(4, 4))
    with pytest.raises(error):
        make().run(updates, weights, dropouts)  # type: ignore[arg-type]


def test_a_client_refuses_bad_input_before_it_sends() -> None:
    ident = {c: Identity.generate(c) for c in ["a", "aggregator"]}
    keys = {c: i.verify_key for c, i in ident.items()}
    for agg in (Plain(), Masked(), paillier()):
        client = agg.client(ident["a"], server="aggregator", verify_keys=keys)
        with pytest.raises(InvalidArgument):
            client.start(np.array([np.nan, 0.0]), 1)
        with pytest.raises(InvalidArgument):
            client.start(np.zeros(2), 0)
    with pytest.raises(InvalidArgument, match="max_total_weight"):
        paillier().run(make_updates(3, 2), {"site-0": 127})
    with pytest.raises(InvalidArgument, match="max_weight"):
        Masked(max_weight=10).run(make_updates(3, 2), {"site-0": 11})
