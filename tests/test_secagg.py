"""fedledger.secagg: exact sums with dropouts, failure past the threshold, what the server sees,
and malicious clients that must not crash the server or corrupt the sum."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedledger import Identity, encoding, secagg
from fedledger.crypto import masking, seal, shamir
from fedledger.errors import (
    EncodingError,
    InvalidArgument,
    InvalidSignature,
    QuantizationError,
    RoundFailed,
    SealError,
    SecAggError,
)
from fedledger.secagg import SecAggConfig, run_round
from fedledger.secagg.messages import MaskedInput, ShareKeys, UnmaskResponse


def drbg(seed: bytes) -> Callable[[int], bytes]:
    counter = [0]

    def random_bytes(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(seed + counter[0].to_bytes(8, "big")).digest(n)

    return random_bytes


def make_updates(n: int, d: int, seed: int = 0, spread: float = 0.9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i:03d}": rng.uniform(-spread, spread, d) for i in range(n)}


def expected_sum(
    updates: Mapping[str, np.ndarray],
    survivors: list[str] | tuple[str, ...],
    clip: float = 1.0,
    weights: Mapping[str, int] | None = None,
) -> np.ndarray:
    w = weights or {}
    return sum(np.clip(updates[c], -clip, clip) * w.get(c, 1) for c in survivors)  # type: ignore[return-value]


def assert_within_bound(
    res: secagg.RoundResult,
    updates: Mapping[str, np.ndarray],
    clip: float = 1.0,
    weights: Mapping[str, int] | None = None,
) -> None:
    survivors = res.report.survivors
    want = expected_sum(updates, survivors, clip, weights)
    # stochastic rounding moves each client's value by less than one step (1 / scale)
    # (plus float64 rounding of the dequantized sum, which matters only in the 64-bit ring)
    bound = len(survivors) / res.scale + 2.0**-48 * len(survivors) * (1.0 + float(np.max(np.abs(want), initial=0.0)))
    err = np.max(np.abs(res.aggregate - want)) if len(want) else 0.0
    assert err <= bound, (err, bound)
    assert res.total_weight == sum((weights or {}).get(c, 1) for c in survivors)


def assert_refused(res: secagg.RoundResult, updates: Mapping[str, np.ndarray], client: str, why: str) -> None:
    """``client`` was refused for ``why``, left out of the sum, and the others' sum is exact."""
    assert why in res.report.rejected[client], res.report.rejected
    assert client not in res.report.survivors
    assert_within_bound(res, updates)


def feasible_drops(ids: list[str], config: SecAggConfig, want: int, stages: list[str]) -> dict[str, str]:
    """Greedily pick up to ``want`` clients to drop so that every neighborhood keeps at least
    ``threshold`` live holders (the condition the protocol survives), cycling the stages."""
    n = len(ids)
    graph = secagg.neighbor_graph(ids, config.degree(n), config.seed())
    t = config.threshold_for(n)
    chosen: list[str] = []
    for c in ids:
        if len(chosen) == want:
            break
        trial = set(chosen) | {c}
        if all(len((graph[u] | {u}) - trial) >= t for u in ids):
            chosen.append(c)
    return {c: stages[i % len(stages)] for i, c in enumerate(chosen)}


# -- exact sums ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 10, 100])
@pytest.mark.parametrize("neighbors", [None, "auto"])
def test_sum_without_dropouts(n: int, neighbors: object) -> None:
    updates = make_updates(n, 6 if n == 100 else 33, seed=n)
    res = run_round(updates, SecAggConfig(neighbors=neighbors))  # type: ignore[arg-type]
    assert res.report.survivors == tuple(sorted(updates))
    assert not res.report.dropped and not res.report.rejected
    assert_within_bound(res, updates)


@pytest.mark.parametrize("stage", ["advertise_keys", "share_keys", "masked_input", "unmask"])
@pytest.mark.parametrize("n", [4, 10])  # n - t clients drop: at least min_survivors = 3 remain
def test_dropouts_up_to_n_minus_threshold_at_each_stage(n: int, stage: str) -> None:
    config = SecAggConfig(neighbors=None)
    t = config.threshold_for(n)
    updates = make_updates(n, 17, seed=n)
    drops = {c: stage for c in sorted(updates)[: n - t]}
    res = run_round(updates, config, dropouts=drops)
    assert res.report.dropped == drops
    if stage == "unmask":  # their masked inputs arrived, so they are in the sum
        assert set(res.report.survivors) == set(updates)
    else:
        assert set(res.report.survivors) == set(updates) - set(drops)
    assert_within_bound(res, updates)


@pytest.mark.parametrize("stage", ["share_keys", "masked_input", "unmask"])
@pytest.mark.parametrize("neighbors", [None, "auto"])
def test_hundred_clients_with_the_most_dropouts_the_threshold_allows(neighbors: object, stage: str) -> None:
    # Full graph: n - t = 49 of 100 drop. Sparse (k = 14, t = 8 of 15): as many as keep every
    # neighborhood at t live holders, at least n - t of some neighborhood.
    n = 100
    config = SecAggConfig(neighbors=neighbors)  # type: ignore[arg-type]
    updates = make_updates(n, 5, seed=7)
    ids = sorted(updates)
    t = config.threshold_for(n)
    drops = feasible_drops(ids, config, n - t, [stage])
    if neighbors is None:
        assert len(drops) == n - t
    assert len(drops) >= config.neighborhood(n) - t
    res = run_round(updates, config, dropouts=drops)
    assert res.report.dropped == drops
    assert set(res.report.survivors) == (set(ids) if stage == "unmask" else set(ids) - set(drops))
    assert_within_bound(res, updates)


def test_dropouts_mixed_stages_full_graph() -> None:
    n = 10
    config = SecAggConfig(neighbors=None, threshold=6)
    updates = make_updates(n, 40)
    drops = {"c000": "share_keys", "c003": "masked_input", "c005": "unmask", "c009": "masked_input"}
    res = run_round(updates, config, dropouts=drops)
    assert set(res.report.survivors) == set(updates) - {"c000", "c003", "c009"}
    assert_within_bound(res, updates)


@pytest.mark.parametrize("n,neighbors", [(10, 4), (10, 3), (100, "auto"), (100, 3)])
def test_dropouts_sparse_graph(n: int, neighbors: object) -> None:
    config = SecAggConfig(neighbors=neighbors)  # type: ignore[arg-type]
    updates = make_updates(n, 9, seed=5)
    drops = feasible_drops(sorted(updates), config, max(1, n // 10), ["share_keys", "masked_input", "unmask"])
    assert drops
    res = run_round(updates, config, dropouts=drops)
    assert res.report.dropped == drops
    assert_within_bound(res, updates)


def test_sparse_graph_really_is_sparse() -> None:
    n = 100
    config = SecAggConfig(neighbors=3)
    updates = make_updates(n, 4)
    res = run_round(updates, config)
    # a client's sealed shares go to its k = 3 neighbors (and itself), not to n - 1 others
    per_client_share_bytes = res.report.bytes_up["share_keys"] / n
    full = run_round(make_updates(20, 4), SecAggConfig(neighbors=None)).report.bytes_up["share_keys"] / 20
    assert per_client_share_bytes < full / 3
    graph = secagg.neighbor_graph(sorted(updates), config.degree(n), config.seed())
    assert {len(v) for v in graph.values()} == {3}


def test_weighted_average() -> None:
    updates = make_updates(8, 25, seed=2)
    weights = {c: w for c, w in zip(sorted(updates), [1, 5, 100, 7, 3, 64, 2, 9])}
    config = SecAggConfig(neighbors=None, max_weight=100)
    res = run_round(updates, config, dropouts={"c002": "masked_input"}, weights=weights)
    assert_within_bound(res, updates, weights=weights)
    survivors = res.report.survivors
    want_mean = expected_sum(updates, survivors, weights=weights) / sum(weights[c] for c in survivors)
    assert np.allclose(res.mean, want_mean, atol=len(survivors) / res.scale)


def test_weight_over_the_maximum_drops_the_client() -> None:
    updates = make_updates(4, 5)
    res = run_round(updates, SecAggConfig(neighbors=None, max_weight=10), weights={"c001": 11})
    assert "c001" in res.report.rejected and "c001" not in res.report.survivors
    assert_within_bound(res, updates)


def test_64_bit_ring_and_clipping() -> None:
    updates = make_updates(6, 30, seed=9, spread=3.0)  # many values beyond the clip
    config = SecAggConfig(neighbors=None, bits=64, clip=2.0)
    res = run_round(updates, config, dropouts={"c004": "unmask"})
    assert res.aggregate.dtype == np.float64
    assert_within_bound(res, updates, clip=2.0)
    # 64-bit ring: quantization error is far below the 32-bit one
    assert 1 / res.scale < 1e-12


def test_wire_carries_bits_over_8_bytes_per_parameter() -> None:
    d = 10_000
    for bits in (32, 64):
        res = run_round(make_updates(3, d), SecAggConfig(neighbors=None, bits=bits))
        per_client = res.report.bytes_up["masked_input"] / 3
        assert (d + 1) * bits // 8 <= per_client <= (d + 1) * bits // 8 + 400


def test_impossible_quantization_is_refused_up_front() -> None:
    with pytest.raises(QuantizationError):
        run_round(make_updates(10, 3), SecAggConfig(neighbors=None, max_weight=300_000_000))
    with pytest.raises(QuantizationError):
        run_round(make_updates(10, 3), SecAggConfig(neighbors=None, scale=2.0**29))


def test_bad_threshold_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        run_round(make_updates(10, 3), SecAggConfig(neighbors=None, threshold=5))  # not a majority of 10
    with pytest.raises(InvalidArgument):
        run_round(make_updates(10, 3), SecAggConfig(neighbors=None, threshold=11))


# -- past the threshold --------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["share_keys", "masked_input", "unmask"])
def test_one_dropout_past_the_threshold_fails_and_reveals_nothing(stage: str) -> None:
    n = 10
    config = SecAggConfig(neighbors=None)
    t = config.threshold_for(n)
    updates = make_updates(n, 12)
    drops = {c: stage for c in sorted(updates)[: n - t + 1]}
    sent: list[str] = []

    def spy(st: str, sender: str, receiver: str, data: bytes) -> bytes:
        sent.append(st)
        return data

    with pytest.raises(RoundFailed, match="threshold"):
        run_round(updates, config, dropouts=drops, intercept=spy)
    if stage in ("share_keys", "masked_input"):
        # the server stopped before asking anyone for a share
        assert "unmask_request" not in sent and "unmask" not in sent


# -- what the server sees ------------------------------------------------------------------


def _capture(into: dict[str, bytes]) -> Callable[[str, str, str, bytes], bytes]:
    def spy(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "masked_input":
            into[sender] = MaskedInput.from_bytes(data).data
        return data

    return spy


@pytest.mark.parametrize("sealed", [True, False])
def test_commitments_are_the_vector_roots_of_the_masked_inputs_in_the_sum(sealed: bool) -> None:
    updates = make_updates(6, 40_000, seed=3)  # several 64 KiB chunks
    wire: dict[str, bytes] = {}
    res = run_round(
        updates,
        SecAggConfig(neighbors=None, seal_inputs=sealed),
        dropouts={"c004": "masked_input"},
        intercept=_capture(wire),
    )
    assert set(res.report.commitments) == set(res.report.survivors) == set(updates) - {"c004"}
    for c, root in res.report.commitments.items():
        if not sealed:  # the server saw exactly these bytes
            assert root == masking.vector_root(wire[c])
        assert len(root) == 32
    if sealed:  # the roots are of the plaintexts, not of what travelled
        assert all(root != masking.vector_root(wire[c]) for c, root in res.report.commitments.items())


def test_same_sum_gives_the_same_result_whatever_the_individual_inputs() -> None:
    # On the grid of an exact power-of-two scale, quantization is deterministic, so two input
    # sets with the same sum must give bit-identical aggregates, while the masked vectors
    # the server received differ.
    # The server opens the seal of each input, so its view is the unsealed masked vector:
    # capture that directly.
    scale = 2.0**20
    config = SecAggConfig(neighbors=None, scale=scale, seal_inputs=False)
    rng = np.random.default_rng(11)
    a = {f"c{i}": rng.integers(-(2**19), 2**19, 64) / scale for i in range(5)}
    b = dict(a)
    delta = rng.integers(-(2**17), 2**17, 64) / scale
    b["c0"], b["c1"] = a["c0"] + delta, a["c1"] - delta
    views_a: dict[str, bytes] = {}
    views_b: dict[str, bytes] = {}
    ra = run_round(a, config, intercept=_capture(views_a))
    rb = run_round(b, config, intercept=_capture(views_b))
    assert np.array_equal(ra.aggregate, rb.aggregate)
    assert np.array_equal(ra.aggregate, sum(a.values()))
    assert views_a["c0"] != views_b["c0"]


def chi2_critical(df: int, z: float) -> float:
    """Upper critical value of chi-square(df) at the normal quantile z (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2_uniform_bytes(values: np.ndarray) -> float:
    counts = np.bincount(values, minlength=256).astype(np.float64)
    expected = values.size / 256
    return float(((counts - expected) ** 2 / expected).sum())


Z_0001 = 3.090232  # the normal 0.999 quantile: significance level 0.001 per test


def test_masked_vectors_are_uniform_chi_square() -> None:
    d = 60_000
    updates = make_updates(5, d, seed=1)
    views: dict[str, bytes] = {}
    # seal_inputs=False: the masked vectors as the server sees them once it opens the seals.
    run_round(
        updates,
        SecAggConfig(neighbors=None, seal_inputs=False),
        intercept=_capture(views),
        random_bytes=lambda c: drbg(b"chi2/" + c.encode()),
    )
    crit = chi2_critical(255, Z_0001)
    for c, raw in views.items():
        words = np.frombuffer(raw, dtype="<u4")[:d]
        for byte in (0, 3):  # the lowest and the highest byte of each ring element
            stat = chi2_uniform_bytes(((words >> np.uint32(8 * byte)) & np.uint32(0xFF)).astype(np.int64))
            assert stat < crit, (c, byte, stat, crit)


def test_chi_square_has_power_on_unmasked_input() -> None:
    # The same test rejects what the server would see without masks: the quantized update.
    from fedledger.crypto import masking

    x = make_updates(1, 60_000, seed=1)["c000"]
    q = np.empty(x.size, dtype=np.uint32)
    masking.quantize(x, q, scale=masking.quantization_scale(5, bits=32, clip=1.0), clip=1.0, key=b"q" * 16)
    stat = chi2_uniform_bytes(((q >> np.uint32(24)) & np.uint32(0xFF)).astype(np.int64))
    assert stat > chi2_critical(255, Z_0001)


# -- malicious or broken clients -----------------------------------------------------------


def idents(updates: Mapping[str, np.ndarray]) -> dict[str, Identity]:
    out = {c: Identity.generate(c) for c in updates}
    out["aggregator"] = Identity.generate("aggregator")
    return out


def test_wrong_vector_length_is_rejected() -> None:
    updates = make_updates(6, 20)
    ids = idents(updates)

    def cheat(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "masked_input" and sender == "c002":
            msg = MaskedInput.from_bytes(data)
            return replace(msg, data=bytes(msg.data) + b"\x00" * 4).with_root().signed(ids["c002"]).to_bytes()
        return data

    res = run_round(updates, SecAggConfig(neighbors=None), identities=ids, intercept=cheat)
    assert "expected" in res.report.rejected["c002"]
    assert res.report.dropped["c002"] == "masked_input"
    assert "c002" not in res.report.survivors
    assert_within_bound(res, updates)


@pytest.mark.parametrize("stage", ["advertise_keys", "share_keys", "masked_input", "unmask"])
def test_bad_signature_is_rejected(stage: str) -> None:
    updates = make_updates(6, 20)

    def forge(st: str, sender: str, receiver: str, data: bytes) -> bytes:
        if st == stage and sender == "c004":
            if st == "masked_input":
                msg = MaskedInput.from_bytes(data)
                sig = bytearray(msg.signature)
                sig[5] ^= 1
                return replace(msg, signature=bytes(sig)).to_bytes()
            body = encoding.decode(data)
            assert isinstance(body, dict) and isinstance(body["sig"], bytes)
            body["sig"] = bytes([body["sig"][0] ^ 1]) + body["sig"][1:]
            return encoding.encode(body)
        return data

    res = run_round(updates, SecAggConfig(neighbors=None), intercept=forge)
    assert "bad signature" in res.report.rejected["c004"]
    assert res.report.dropped["c004"] == stage
    assert_within_bound(res, updates)
    assert ("c004" in res.report.survivors) == (stage == "unmask")


def test_replay_from_another_round_is_rejected() -> None:
    updates = make_updates(5, 20)
    ids = idents(updates)
    old: dict[str, bytes] = {}

    def record(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "masked_input":
            old[sender] = data
        return data

    run_round(updates, SecAggConfig(neighbors=None, round_id=1), identities=ids, intercept=record)

    def replay(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        return old["c001"] if stage == "masked_input" and sender == "c001" else data

    res = run_round(updates, SecAggConfig(neighbors=None, round_id=2), identities=ids, intercept=replay)
    assert_refused(res, updates, "c001", "replayed")


def test_a_share_for_the_wrong_client_is_rejected() -> None:
    updates = make_updates(7, 20)

    class Relabel(secagg.SecAggClient):
        def _reveal(self, seeds: dict[str, bytes], keys: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
            seeds = dict(seeds)
            seeds["c000"], seeds["c001"] = seeds["c001"], seeds["c000"]  # each labelled as the other's
            return seeds, keys

    res = run_round(updates, SecAggConfig(neighbors=None), client_class={"c003": Relabel})
    assert "not the one" in res.report.rejected["c003"]
    assert res.report.dropped["c003"] == "unmask"
    assert "c003" in res.report.survivors  # its masked input arrived; others recover its seed
    assert_within_bound(res, updates)


def test_a_key_share_of_a_survivor_is_rejected() -> None:
    # The server must never be handed both secrets of one client; a client that offers the
    # mask-key share of a survivor is refused.
    updates = make_updates(6, 10)

    class Leak(secagg.SecAggClient):
        def _reveal(self, seeds: dict[str, bytes], keys: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
            return seeds, {"c000": seeds["c000"]}

    res = run_round(updates, SecAggConfig(neighbors=None), client_class={"c002": Leak})
    assert "c002" in res.report.rejected
    assert_within_bound(res, updates)


def test_sealed_shares_that_do_not_open_are_rejected() -> None:
    # A byte of c004's sealed shares flips on the way; the signature covers the sealed bytes,
    # so the client re-signs (a client that seals garbage): the seal check refuses it.
    updates = make_updates(6, 10)
    ids = idents(updates)

    def garble(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "unmask" and sender == "c004":
            msg = UnmaskResponse.from_bytes(data)
            bad = bytearray(msg.sealed)
            bad[-1] ^= 1
            return replace(msg, sealed=bytes(bad)).signed(ids["c004"]).to_bytes()
        return data

    res = run_round(updates, SecAggConfig(neighbors=None), identities=ids, intercept=garble)
    assert "do not open" in res.report.rejected["c004"]
    assert_within_bound(res, updates)


def fork(secret: bytes, like: shamir.Share) -> bytes:
    """A share of another secret with the same index and threshold as ``like``."""
    n = max(like.index, like.threshold)
    return shamir.split(secret, like.threshold, n)[like.index - 1].to_bytes()


class CorruptOneShare(secagg.SecAggClient):
    """Deals one neighbor a share of its seed whose values are off (same commitment)."""

    victim = "c001"

    def _deal_share(self, holder: str, share: shamir.Share, kind: str) -> bytes:
        if holder == self.victim and kind == "b":
            vals = bytearray(share.values)
            vals[0] ^= 1
            return replace(share, values=bytes(vals)).to_bytes()
        return share.to_bytes()


class ForkOneShare(secagg.SecAggClient):
    """Deals one neighbor a share of a different seed (another polynomial, another commitment)."""

    def _deal_share(self, holder: str, share: shamir.Share, kind: str) -> bytes:
        if holder == "c002" and kind == "b":
            return fork(b"\x01" * 32, share)
        return share.to_bytes()


class ForkEveryShare(secagg.SecAggClient):
    """Deals every holder a share of a different seed: nothing can be reconstructed."""

    def _deal_share(self, holder: str, share: shamir.Share, kind: str) -> bytes:
        if kind == "b":
            return fork(holder.encode().ljust(32, b"x"), share)
        return share.to_bytes()


@pytest.mark.parametrize("cheater", [CorruptOneShare, ForkOneShare])
def test_different_shares_to_different_neighbours_are_caught(cheater: type[secagg.SecAggClient]) -> None:
    updates = make_updates(7, 20)
    # c001's or c002's share is the odd one; the first t shares the server tries include it
    res = run_round(updates, SecAggConfig(neighbors=None), client_class={"c000": cheater})
    assert "inconsistent" in res.report.misbehaving["c000"]
    assert "c000" in res.report.survivors
    assert_within_bound(res, updates)


def test_inconsistent_key_shares_of_a_dropped_client_are_caught() -> None:
    class BadKeyShare(secagg.SecAggClient):
        def _deal_share(self, holder: str, share: shamir.Share, kind: str) -> bytes:
            if holder == "c001" and kind == "s":
                vals = bytearray(share.values)
                vals[4] ^= 2
                return replace(share, values=bytes(vals)).to_bytes()
            return share.to_bytes()

    updates = make_updates(7, 20)
    res = run_round(
        updates, SecAggConfig(neighbors=None), dropouts={"c000": "masked_input"}, client_class={"c000": BadKeyShare}
    )
    assert "inconsistent" in res.report.misbehaving["c000"]
    assert_within_bound(res, updates)


def test_a_dealer_whose_shares_cannot_be_reconstructed_fails_the_round_typed() -> None:
    updates = make_updates(5, 20)
    with pytest.raises(RoundFailed) as info:
        run_round(updates, SecAggConfig(neighbors=None), client_class={"c003": ForkEveryShare})
    assert info.value.client == "c003"


def test_malformed_bytes_are_rejected_not_crashing() -> None:
    updates = make_updates(6, 10)
    for stage in ("advertise_keys", "share_keys", "masked_input", "unmask"):

        def garble(st: str, sender: str, receiver: str, data: bytes, stage: str = stage) -> bytes:
            return data[: len(data) // 2] if st == stage and sender == "c005" else data

        res = run_round(updates, SecAggConfig(neighbors=None), intercept=garble)
        assert "malformed" in res.report.rejected["c005"]
        assert_within_bound(res, updates)


def test_a_message_to_another_receiver_or_stage_is_rejected() -> None:
    updates = make_updates(5, 10)
    ids = idents(updates)

    def redirect(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "share_keys" and sender == "c002":
            msg = ShareKeys.from_bytes(data)
            return replace(msg, receiver="someone-else").signed(ids["c002"]).to_bytes()
        return data

    res = run_round(updates, SecAggConfig(neighbors=None), identities=ids, intercept=redirect)
    assert "addressed to" in res.report.rejected["c002"]
    assert_within_bound(res, updates)


# -- messages and state machines -----------------------------------------------------------


def test_messages_round_trip_and_bind_their_header() -> None:
    ident = Identity.generate("c1")
    key = bytes(32)
    ctx = seal.SealContext(sender="c1", receiver="aggregator", round=3, purpose="fedledger/secagg/unmask")
    sealed = secagg.UnmaskResponse.seal_shares(key, ctx, {"c2": b"x"}, {})
    msg = secagg.UnmaskResponse(round_id=3, sender="c1", receiver="aggregator", sealed=sealed).signed(ident)
    back = secagg.UnmaskResponse.from_bytes(msg.to_bytes())
    assert back == msg
    back.verify(ident.verify_key)
    assert back.open_shares(key, ctx) == ({"c2": b"x"}, {})
    with pytest.raises(SealError):
        back.open_shares(bytes(range(32)), ctx)
    with pytest.raises(SealError):  # bound to its sender, receiver, round and purpose
        back.open_shares(key, seal.SealContext(sender="c2", receiver="aggregator", round=3, purpose=ctx.purpose))

    for changed in (
        replace(msg, round_id=4),
        replace(msg, receiver="c9"),
        replace(msg, sealed=sealed[:-1] + bytes([sealed[-1] ^ 1])),
    ):
        with pytest.raises(InvalidSignature):
            changed.verify(ident.verify_key)
    with pytest.raises(EncodingError):
        secagg.ShareKeys.from_bytes(msg.to_bytes())  # another stage
    m = (
        secagg.MaskedInput(round_id=1, sender="c1", receiver="aggregator", data=b"\x01" * 16, weight=1)
        .with_root()
        .signed(ident)
    )
    assert secagg.MaskedInput.from_bytes(m.to_bytes()) == m
    assert m.root == masking.vector_root(b"\x01" * 16)
    raw = bytearray(m.to_bytes())
    raw[-1] ^= 1
    tampered = secagg.MaskedInput.from_bytes(bytes(raw))  # parsing checks the framing only
    tampered.verify_signature(ident.verify_key)  # the header is intact ...
    with pytest.raises(InvalidSignature) as err:
        tampered.verify(ident.verify_key)  # ... the data is not
    assert err.value.reason == "data-mismatch"


@pytest.mark.parametrize("sealed", [True, False])
def test_tampered_vector_in_transit_is_rejected_and_the_sum_stays_exact(sealed: bool) -> None:
    # Bits of c001's vector flip on the way (the signed header is untouched). Sealed: the
    # record's tag fails. Unsealed: the server's fused add-and-hash pass sees the root
    # mismatch and undoes the addition. Either way c001 counts as dropped and the others'
    # sum is exact.
    updates = make_updates(6, 70_000)  # more than one 64 KiB chunk
    ids = idents(updates)

    def flip(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "masked_input" and sender == "c001":
            raw = bytearray(data)
            raw[-100_000] ^= 0x80
            return bytes(raw)
        return data

    res = run_round(updates, SecAggConfig(neighbors=None, seal_inputs=sealed), identities=ids, intercept=flip)
    assert "c001" in res.report.rejected
    assert ("does not open" if sealed else "vector root") in res.report.rejected["c001"]
    assert res.report.dropped["c001"] == "masked_input"
    alive = [c for c in updates if c != "c001"]
    assert res.report.survivors == tuple(alive)
    assert_within_bound(res, updates)


def test_a_sealed_vector_that_does_not_match_its_signed_root_is_rejected() -> None:
    # A client that seals one vector and signs the root of another: the seal opens, the
    # root check inside the server's add pass fails and the addition is undone.
    updates = make_updates(5, 20_000)

    class Liar(secagg.SecAggClient):
        def _stamp(self, msg: Any) -> Any:
            if isinstance(msg, MaskedInput):
                msg = replace(msg, root=bytes(32))
            return super()._stamp(msg)

    res = run_round(updates, SecAggConfig(neighbors=None), client_class={"c002": Liar})
    assert_refused(res, updates, "c002", "vector root")


def test_an_input_sealed_otherwise_than_the_round_says_is_rejected() -> None:
    updates = make_updates(5, 30)

    class Plain(secagg.SecAggClient):
        def __init__(self, identity: Identity, config: SecAggConfig, **kw: Any) -> None:
            super().__init__(identity, replace(config, seal_inputs=False), **kw)

    res = run_round(updates, SecAggConfig(neighbors=None), client_class={"c001": Plain})
    assert_refused(res, updates, "c001", "unsealed")


def test_client_refuses_to_reveal_both_secrets_of_one_client() -> None:
    # A server that lists a client as both alive and dropped gets nothing.
    updates = make_updates(4, 5)
    ids = idents(updates)

    def lie(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "unmask_request":
            msg = secagg.UnmaskRequest.from_bytes(data)
            return replace(msg, dropped=("c000",)).signed(ids["aggregator"]).to_bytes()
        return data

    with pytest.raises(RoundFailed):
        run_round(updates, SecAggConfig(neighbors=None), identities=ids, intercept=lie)


def test_stages_out_of_order_are_refused() -> None:
    ident = Identity.generate("c1")
    server = Identity.generate("aggregator")
    client = secagg.SecAggClient(
        ident,
        SecAggConfig(),
        server="aggregator",
        verify_keys={"c1": ident.verify_key, "aggregator": server.verify_key},
    )
    req = secagg.UnmaskRequest(round_id=1, sender="aggregator", receiver="c1", survivors=("c1",), dropped=()).signed(
        server
    )
    with pytest.raises(SecAggError):
        client.unmask(req)
    client.advertise_keys()
    with pytest.raises(SecAggError):
        client.advertise_keys()


def _graph_by_definition(ids: list[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """The Harary graph on the seeded permutation, every row built eagerly."""
    from fedledger.secagg.config import _permutation

    order = sorted(ids)
    n = len(order)
    if k >= n - 1:
        return {c: frozenset(order) - {c} for c in order}
    perm = [order[i] for i in _permutation(n, seed)]
    out: dict[str, set[str]] = {c: set() for c in order}
    for i, c in enumerate(perm):
        for d in range(1, k // 2 + 1):
            out[c] |= {perm[(i + d) % n], perm[(i - d) % n]}
        if k % 2:
            out[c].add(perm[(i + n // 2) % n])
    return {c: frozenset(v) for c, v in out.items()}


@pytest.mark.parametrize("n,k", [(2, 1), (3, 2), (10, 3), (10, 4), (31, 6), (100, 3), (100, 14), (100, 99), (7, 50)])
def test_neighbor_view_builds_the_rows_of_the_definition(n: int, k: int) -> None:
    from fedledger.secagg.config import NeighborView

    ids = [f"n{i:03d}" for i in range(n)]
    want = _graph_by_definition(ids, k, b"seed")
    view = NeighborView(list(reversed(ids)), k, b"seed")
    assert [view[c] for c in reversed(ids)] == [want[c] for c in reversed(ids)]  # rows on demand, any order
    assert dict(view) == want == secagg.neighbor_graph(ids, k, b"seed")
    assert len(view) == n and list(view) == ids
    with pytest.raises(KeyError):
        view["stranger"]


def test_neighbor_graph_is_regular_symmetric_and_seeded() -> None:
    ids = [f"n{i}" for i in range(31)]
    g = secagg.neighbor_graph(ids, 6, b"seed")
    assert all(len(v) == 6 and c not in v for c, v in g.items())
    assert all(c in g[v] for c, vs in g.items() for v in vs)
    assert g == secagg.neighbor_graph(list(reversed(ids)), 6, b"seed")
    assert g != secagg.neighbor_graph(ids, 6, b"other seed")
    g5 = secagg.neighbor_graph(ids[:30], 5, b"seed")
    assert {len(v) for v in g5.values()} == {5}
    assert SecAggConfig(neighbors=5).degree(31) == 6  # odd k and odd n: one more
    assert all(len(v) == 30 for v in secagg.neighbor_graph(ids, 30, b"s").values())


@pytest.mark.parametrize("sealed", [True, False])
def test_server_state_machine_driven_by_hand_streams_inputs_and_ignores_forgeries(sealed: bool) -> None:
    # The server's API used directly, as an embedding framework would: masked inputs arrive
    # one at a time. Before c1's genuine input come a forgery in its name (bad signature) and
    # a tampered copy of the genuine message (signed header intact, one body byte flipped);
    # neither shuts the genuine one out or leaves c1 on record. After it, a replay and a
    # stale message from another round are refused without counting against anyone.
    names = ["c0", "c1", "c2"]
    ids = {c: Identity.generate(c) for c in [*names, "aggregator"]}
    keys = {c: i.verify_key for c, i in ids.items()}
    config = SecAggConfig(neighbors=None, seal_inputs=sealed)
    server = secagg.SecAggServer(ids["aggregator"], config, clients=names, verify_keys=keys, dimension=4)
    clients = {c: secagg.SecAggClient(ids[c], config, server="aggregator", verify_keys=keys) for c in names}
    directories = server.key_directories([clients[c].advertise_keys() for c in names])
    relayed = server.relay_shares([clients[c].share_keys(directories[c]) for c in names])
    updates = {c: np.full(4, 0.25 * (i + 1)) for i, c in enumerate(names)}
    masked = {c: clients[c].masked_input(relayed[c], updates[c]) for c in names}
    forged = replace(masked["c1"], signature=bytes(64))
    assert server.receive_masked_input(forged) is False
    assert "bad signature" in server.rejected["c1"]
    raw = bytearray(masked["c1"].to_bytes())
    raw[-1] ^= 1
    tampered = MaskedInput.from_bytes(bytes(raw))
    assert server.receive_masked_input(tampered) is False
    assert "c1" in server.rejected  # (the first reason stays on record)
    assert all(server.receive_masked_input(masked[c]) for c in names)
    assert server.receive_masked_input(masked["c2"]) is False  # a replay
    assert server.receive_masked_input(replace(masked["c0"], round_id=7).signed(ids["c0"])) is False  # stale
    assert server.rejected == {}  # none of it counts against anyone
    requests = server.unmask_requests()
    result = server.aggregate([clients[c].unmask(requests[c]) for c in names])
    assert result.survivors == tuple(names) and not server.dropped
    assert np.allclose(result.aggregate, sum(updates.values()), atol=3 / result.scale)


# -- what a malicious client can and cannot do to the sum ------------------------------------


class Shift(secagg.SecAggClient):
    """Adds ``delta`` ring units to coordinate ``at`` of its quantized vector and ``slot`` to
    its weight slot, under a valid signature: a client that ignores its clip (masks are
    additive, so changing the masked vector changes its input by the same amount)."""

    delta = 0
    at = 0
    slot = 0

    def _stamp(self, msg: Any) -> Any:
        if isinstance(msg, MaskedInput):
            bits = self.config.bits
            ctx = seal.SealContext(
                sender=self.name,
                receiver=self.server,
                round=self.config.round_id,
                purpose="fedledger/secagg/masked-input",
            )
            plain = seal.unseal_records(self._server_key, msg.data, ctx) if msg.sealed else bytes(msg.data)
            vec = np.frombuffer(plain, dtype=masking.ring_dtype(bits)).copy()
            mod = 1 << bits
            vec[self.at] = (int(vec[self.at]) + self.delta) % mod
            vec[-1] = (int(vec[-1]) + self.slot) % mod
            raw = vec.tobytes()
            data = seal.seal_records(self._server_key, raw, ctx) if msg.sealed else raw
            msg = replace(msg, data=data, root=masking.vector_root(raw))
        return super()._stamp(msg)


def shifter(delta: int = 0, at: int = 0, slot: int = 0) -> type[secagg.SecAggClient]:
    return type("Shifter", (Shift,), {"delta": delta, "at": at, "slot": slot})


def steps(res_or_scale: float, value: float) -> int:
    """``value`` in ring units at ``scale``."""
    return round(value * res_or_scale)


def sum_bound(config: SecAggConfig, weights: Mapping[str, int], scale: float) -> float:
    """The range check's bound, dequantized: sum of (floor(clip * w * scale) + 1) / scale."""
    return sum(math.floor(config.clip * w * scale) + 1 for w in weights.values()) / scale


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("sealed", [True, False])
def test_a_client_pushing_a_coordinate_outside_the_weighted_clip_range_fails_the_range_check(
    bits: int, sign: int, sealed: bool
) -> None:
    # 5 clients of weight 2 (max_weight 100: the ring has room past 10 * clip): one adds
    # 4 * sum(w) * clip to a coordinate; the unmasked coordinate is beyond ±sum(w) * clip.
    n, clip = 5, 0.5
    updates = make_updates(n, 12, seed=4, spread=0.4)
    weights = {c: 2 for c in updates}
    config = SecAggConfig(neighbors=None, bits=bits, clip=clip, max_weight=100, seal_inputs=sealed)
    scale = config.scale_for(n)
    cheat = shifter(delta=sign * steps(scale, 4 * 2 * n * clip), at=7)
    with pytest.raises(RoundFailed, match="range check: coordinate 7"):
        run_round(updates, config, weights=weights, client_class={"c002": cheat})


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sign", [1, -1])
def test_honest_clients_at_the_clip_pass_the_sum_checks(bits: int, dtype: type, sign: int) -> None:
    # The checks' bound is tight, and exactly reachable by honest clients: every value far
    # beyond the clip, every weight at max_weight, the default (largest) scale, no dropout.
    # A false alarm here would fail honest rounds.
    n, clip = 5, 0.75
    updates = {f"c{i}": np.full(300, sign * 5.0, dtype=dtype) for i in range(n)}
    config = SecAggConfig(neighbors=None, bits=bits, clip=clip, max_weight=7)
    res = run_round(updates, config, weights={c: 7 for c in updates})
    assert res.total_weight == 7 * n
    assert_within_bound(res, updates, clip=clip, weights={c: 7 for c in updates})
    weights = {c: 1 + i for i, c in enumerate(sorted(updates))}
    mixed = run_round(updates, config, weights=weights, dropouts={"c1": "masked_input"})
    assert mixed.total_weight == 1 + 3 + 4 + 5
    assert_within_bound(mixed, updates, clip=clip, weights=weights)


def test_a_client_whose_weight_slot_differs_from_its_declared_weight_fails_the_weight_check() -> None:
    # The review's case: +1000 in the weight slot (and +4 clip on a coordinate, which alone
    # would stay inside the range): the slot no longer sums to the declared weights.
    updates = make_updates(5, 10, seed=2)
    config = SecAggConfig(neighbors=None, max_weight=1000)
    scale = config.scale_for(5)
    for cheat in (shifter(slot=1000), shifter(slot=-1), shifter(delta=steps(scale, 4.0), slot=1000)):
        with pytest.raises(RoundFailed, match="weight check"):
            run_round(updates, config, weights={c: 7 for c in updates}, client_class={"c001": cheat})


@pytest.mark.parametrize("declared", [0, 11, 1000])
def test_a_declared_weight_outside_one_to_max_weight_is_refused_by_the_server(declared: int) -> None:
    # The client skips its own check and signs any weight; the server refuses the input.
    updates = make_updates(5, 10, seed=3)

    class Declare(secagg.SecAggClient):
        def _stamp(self, msg: Any) -> Any:
            if isinstance(msg, MaskedInput):
                msg = replace(msg, weight=declared)
            return super()._stamp(msg)

    res = run_round(updates, SecAggConfig(neighbors=None, max_weight=10), client_class={"c003": Declare})
    assert_refused(res, updates, "c003", f"declared weight {declared} is not in [1, max_weight=10]")
    assert "c003" not in res.report.weights


def test_declared_weights_are_public_recorded_and_sum_to_the_total() -> None:
    updates = make_updates(6, 10, seed=8)
    weights = {c: w for c, w in zip(sorted(updates), [3, 1, 40, 7, 2, 9])}
    res = run_round(
        updates, SecAggConfig(neighbors=None, max_weight=50), dropouts={"c002": "masked_input"}, weights=weights
    )
    want = {c: w for c, w in weights.items() if c != "c002"}
    assert res.report.weights == want
    assert res.total_weight == sum(want.values())
    assert set(res.report.weights) == set(res.report.commitments) == set(res.report.survivors)
    assert_within_bound(res, updates, weights=weights)


def test_a_shift_inside_the_weighted_clip_range_goes_undetected() -> None:
    # The limit of the checks, stated as a test: a client adds 4 * clip to one coordinate
    # (four times its own clip range) and the sum stays inside ±sum(w) * clip; no check can
    # tell, without per-client range proofs. The sum moves by exactly the shift.
    n = 6
    updates = {c: np.zeros(8) for c in make_updates(n, 8)}
    config = SecAggConfig(neighbors=None, scale=2.0**20)
    res = run_round(updates, config, client_class={"c000": shifter(delta=steps(2.0**20, 4.0), at=3)})
    assert res.report.survivors == tuple(sorted(updates)) and not res.report.rejected
    want = np.zeros(8)
    want[3] = 4.0
    assert np.array_equal(res.aggregate, want)
    assert 4.0 <= sum_bound(config, res.report.weights, 2.0**20)


def test_a_complaint_is_recorded_as_the_complainers_word_not_as_proof() -> None:
    # A client may accuse an honest dealer of shares that did not open: the server records
    # who said so and carries on; the accused dealer stays in the sum.
    updates = make_updates(5, 10)

    class Accuse(secagg.SecAggClient):
        def _stamp(self, msg: Any) -> Any:
            if isinstance(msg, MaskedInput):
                msg = replace(msg, complaints=("c000",))
            return super()._stamp(msg)

    res = run_round(updates, SecAggConfig(neighbors=None), client_class={"c003": Accuse})
    assert res.report.misbehaving == {"c000": "c003 could not open the shares it dealt"}
    assert "c000" in res.report.survivors and not res.report.rejected
    assert_within_bound(res, updates)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delta=st.integers(0, 2**32 - 1), at=st.integers(0, 4), spare=st.integers(0, 2))
def test_whatever_a_client_adds_the_returned_sum_stays_in_the_weighted_clip_range(
    delta: int, at: int, spare: int
) -> None:
    # Any shift, wrapping the ring or not: either the range check fails the round or the sum
    # it returns is one that clients of those declared weights could have produced.
    n = 3 + spare
    updates = make_updates(n, 5, seed=at)
    config = SecAggConfig(neighbors=None, max_weight=4)
    weights = {c: 1 + i % 4 for i, c in enumerate(sorted(updates))}
    try:
        res = run_round(updates, config, weights=weights, client_class={"c000": shifter(delta=delta, at=at)})
    except RoundFailed as exc:
        assert "range check" in str(exc)
        return
    assert float(np.max(np.abs(res.aggregate))) <= sum_bound(config, weights, res.scale)


# -- the smallest sum --------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["advertise_keys", "share_keys", "masked_input"])
def test_a_round_with_fewer_survivors_than_min_survivors_is_refused_by_the_server(stage: str) -> None:
    # Three clients, threshold 2 of 3: one drops and the threshold alone would let a sum of
    # two through; min_survivors = 3 stops it before anyone is asked for a share.
    updates = make_updates(3, 6)
    sent: list[str] = []

    def spy(st: str, sender: str, receiver: str, data: bytes) -> bytes:
        sent.append(st)
        return data

    with pytest.raises(RoundFailed, match=f"after {stage}: only 2 .*min_survivors=3"):
        run_round(updates, SecAggConfig(neighbors=None), dropouts={"c001": stage}, intercept=spy)
    assert "unmask_request" not in sent and "unmask" not in sent


def test_a_policy_may_raise_min_survivors() -> None:
    updates = make_updates(6, 6)
    config = SecAggConfig(neighbors=None, min_survivors=6)
    with pytest.raises(RoundFailed, match="only 5 masked input.*min_survivors=6"):
        run_round(updates, config, dropouts={"c004": "masked_input"})
    assert run_round(updates, config).report.survivors == tuple(sorted(updates))


@pytest.mark.parametrize("bad", [2, 1, 0, -3, True, 3.0, "3", None])
def test_min_survivors_below_three_or_not_an_int_is_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="min_survivors"):
        SecAggConfig(min_survivors=bad)  # type: ignore[arg-type]


def test_run_round_refuses_fewer_clients_than_min_survivors() -> None:
    with pytest.raises(InvalidArgument, match="min_survivors"):
        run_round(make_updates(2, 4), SecAggConfig(neighbors=None))


def _three_at_unmask() -> tuple[dict[str, secagg.SecAggClient], Identity]:
    """Three clients by hand, each with its masked input sent, waiting for the unmask request."""
    names = ["c0", "c1", "c2"]
    ids = {c: Identity.generate(c) for c in [*names, "aggregator"]}
    keys = {c: i.verify_key for c, i in ids.items()}
    config = SecAggConfig(neighbors=None)
    server = secagg.SecAggServer(ids["aggregator"], config, clients=names, verify_keys=keys, dimension=3)
    clients = {c: secagg.SecAggClient(ids[c], config, server="aggregator", verify_keys=keys) for c in names}
    directories = server.key_directories([clients[c].advertise_keys() for c in names])
    relayed = server.relay_shares([clients[c].share_keys(directories[c]) for c in names])
    for c in names:
        clients[c].masked_input(relayed[c], np.zeros(3))
    return clients, ids["aggregator"]


@pytest.mark.parametrize(
    "survivors,dropped,why",
    [
        (("c0", "c1"), ("c2",), "only 2 survivors, fewer than min_survivors=3"),
        (("c0", "c1"), (), "only 2 survivors, fewer than min_survivors=3"),
        (("c0", "c1", "ghost"), ("c2",), "non-participants"),
        (("c0", "c1", "c1"), ("c2",), "repeat names"),
    ],
)
def test_a_client_refuses_to_unmask_for_fewer_survivors_than_min_survivors(
    survivors: tuple[str, ...], dropped: tuple[str, ...], why: str
) -> None:
    # A server (signing correctly) asks for shares with a survivor set too small to hide an
    # input, padded with a stranger or with a repeated name: the client reveals nothing.
    clients, server = _three_at_unmask()
    req = secagg.UnmaskRequest(
        round_id=1, sender="aggregator", receiver="c0", survivors=survivors, dropped=dropped
    ).signed(server)
    with pytest.raises(SecAggError, match=why):
        clients["c0"].unmask(req)
    assert clients["c0"].stage == "failed"


@pytest.mark.parametrize("where", ["client", "server"])
def test_a_round_that_ends_for_want_of_inputs_says_which_limit_was_hit(where: str) -> None:
    # Every client's weight is over max_weight: the clients refuse (their own check) or,
    # skipping it, the server refuses their declared weights. Either way the RoundFailed
    # names the limit, not just "no masked input".
    updates = make_updates(4, 5)

    class Declare(secagg.SecAggClient):
        def _stamp(self, msg: Any) -> Any:
            if isinstance(msg, MaskedInput):
                msg = replace(msg, weight=11)
            return super()._stamp(msg)

    kw: dict[str, Any] = (
        {"weights": {c: 11 for c in updates}} if where == "client" else {"client_class": {c: Declare for c in updates}}
    )
    with pytest.raises(RoundFailed) as info:
        run_round(updates, SecAggConfig(neighbors=None, max_weight=10), **kw)
    msg = str(info.value)
    assert "min_survivors=3" in msg and "max_weight=10" in msg and "c000" in msg, msg


def test_bad_constructor_arguments_are_argument_errors_not_protocol_errors() -> None:
    from fedledger.errors import InvalidArgument, InvalidArgumentType

    ident, server = Identity.generate("c1"), Identity.generate("aggregator")
    keys = {"c1": ident.verify_key, "aggregator": server.verify_key}
    with pytest.raises(InvalidArgumentType, match="identity"):
        secagg.SecAggClient("c1", SecAggConfig(), server="aggregator", verify_keys=keys)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match="config"):
        secagg.SecAggClient(ident, {}, server="aggregator", verify_keys=keys)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match="dimension"):
        secagg.SecAggServer(server, SecAggConfig(), clients=["c1"], verify_keys=keys, dimension=2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="dimension") as neg:
        secagg.SecAggServer(server, SecAggConfig(), clients=["c1"], verify_keys=keys, dimension=-1)
    assert not isinstance(neg.value, (InvalidArgumentType, SecAggError))
    with pytest.raises(InvalidArgument, match="clients"):
        secagg.SecAggServer(server, SecAggConfig(), clients=["c1", "aggregator"], verify_keys=keys, dimension=2)
    msg = secagg.AdvertiseKeys(round_id=1, sender="c1", receiver="aggregator", seal_key=b"", mask_key=b"")
    with pytest.raises(InvalidArgument, match="identity"):
        msg.signed(server)
    for bad in (
        {"threshold": "3"},
        {"max_weight": 2.0},
        {"min_survivors": "3"},
        {"round_id": 1.0},
        {"clip": "1"},
        {"scale": 5},
    ):
        with pytest.raises(InvalidArgumentType):
            SecAggConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        SecAggConfig().degree(3.0)  # type: ignore[arg-type]


def test_the_old_neighbour_spelling_still_works_and_is_deprecated() -> None:
    ids = [f"c{i}" for i in range(8)]
    with pytest.warns(DeprecationWarning, match="neighbor_graph"):
        old = secagg.neighbour_graph(ids, 4, b"seed")
    assert old == secagg.neighbor_graph(ids, 4, b"seed")
    with pytest.warns(DeprecationWarning, match="neighborhood"):
        assert SecAggConfig(neighbors=4).neighbourhood(8) == SecAggConfig(neighbors=4).neighborhood(8) == 5


def test_stages_are_an_enum_that_reads_and_encodes_as_the_old_strings() -> None:
    from fedledger.secagg import Stage

    assert secagg.DROPOUT_STAGES == ("advertise_keys", "share_keys", "masked_input", "unmask")
    assert [
        m.STAGE
        for m in (
            secagg.AdvertiseKeys,
            secagg.KeyDirectory,
            secagg.ShareKeys,
            secagg.RelayedShares,
            secagg.MaskedInput,
            secagg.UnmaskRequest,
            secagg.UnmaskResponse,
        )
    ] == ["advertise_keys", "key_directory", "share_keys", "relayed_shares", "masked_input", "unmask_request", "unmask"]
    for stage in Stage:
        assert stage == stage.value and Stage(stage.value) is stage
        assert (str(stage), f"{stage}", repr(stage)) == (stage.value, stage.value, repr(stage.value))
        assert type(str(stage)) is str
    ident = Identity.generate("c1")
    msg = secagg.AdvertiseKeys(
        round_id=7, sender="c1", receiver="aggregator", seal_key=b"s" * 32, mask_key=b"m" * 32
    ).signed(ident)
    head = encoding.decode(msg.signed_bytes())
    assert isinstance(head, dict) and type(head["stage"]) is str and head["stage"] == "advertise_keys"
    assert secagg.AdvertiseKeys.from_bytes(msg.to_bytes()) == msg


def _outcome_round(ids: dict[str, Identity]) -> secagg.RoundResult:
    """8 clients, weighted; c001 never shows up, c002 vanishes before its masked input, c003's
    masked input is tampered with in transit (rejected), c004 does not help unmask."""
    updates = make_updates(8, 33, seed=5)

    def tamper(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "masked_input" and sender == "c003":
            return data[:-1] + bytes([data[-1] ^ 1])
        return data

    return run_round(
        updates,
        SecAggConfig(neighbors=None, max_weight=50, round_id=9),
        {"c001": "advertise_keys", "c002": "masked_input", "c004": "unmask"},
        weights={c: 10 + i for i, c in enumerate(sorted(updates))},
        identities=ids,
        intercept=tamper,
        random_bytes=lambda c: drbg(b"outcome/" + c.encode()),
    )


def test_the_round_outcome_is_a_frozen_canonical_record() -> None:
    import dataclasses

    ids = idents(make_updates(8, 1))
    res = _outcome_round(ids)
    out = res.outcome
    assert isinstance(out, secagg.RoundOutcome) and out is res.report.outcome
    assert out.protocol == "fedledger/secagg/v1" and out.round_id == 9
    assert out.participants == tuple(f"c{i:03d}" for i in range(8))
    assert out.survivors == ("c000", "c004", "c005", "c006", "c007") == res.report.survivors
    assert dict(out.dropouts) == {
        "c001": "advertise_keys",
        "c002": "masked_input",
        "c003": "masked_input",
        "c004": "unmask",
    }
    assert all(type(v) is str for v in out.dropouts.values())
    assert list(out.rejections) == ["c003"] and out.rejections["c003"].startswith("masked_input:")
    assert dict(out.weights) == {"c000": 10, "c004": 14, "c005": 15, "c006": 16, "c007": 17}
    assert out.total_weight == res.total_weight == 72
    assert set(out.commitments) == set(out.survivors) and all(len(r) == 32 for r in out.commitments.values())
    assert out.length == 33 and out.ring_bits == 32
    assert out.params["threshold"] == 4 and out.params["degree"] == 6 and out.params["seal_inputs"] is True
    assert float.fromhex(str(out.params["scale"])) == res.scale
    assert float.fromhex(str(out.params["clip"])) == 1.0
    # Round-trips, through the record and through its bytes; encode accepts the record as is.
    record = out.to_record()
    assert encoding.encode(record) == out.record_bytes()
    assert secagg.RoundOutcome.from_record(record) == out
    assert secagg.RoundOutcome.from_bytes(out.record_bytes()) == out
    assert secagg.RoundOutcome.from_record(encoding.decode(out.record_bytes())).to_record() == record
    assert record["params_digest"] == out.params_digest and record["total_weight"] == 72

    def plain(v: object) -> bool:  # str, int, bytes, bool, lists and str-keyed maps only
        if isinstance(v, dict):
            return all(type(k) is str and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return type(v) in (str, int, bytes, bool)

    assert plain(record)
    # Frozen, read-only inside too.
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.survivors = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        out.weights["c000"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        out.dropouts["c000"] = "unmask"  # type: ignore[index]


def test_the_same_round_gives_the_same_outcome_bytes() -> None:
    ids = idents(make_updates(8, 1))
    first, again = _outcome_round(ids).outcome, _outcome_round(ids).outcome
    assert first.record_bytes() == again.record_bytes()
    assert first.aggregate_root == again.aggregate_root != b""
    other = _outcome_round(idents(make_updates(8, 1))).outcome  # other signing keys: other ciphertexts
    assert other.survivors == first.survivors and other.params_digest == first.params_digest


def test_a_tampered_outcome_record_is_refused() -> None:
    ids = idents(make_updates(8, 1))
    out = _outcome_round(ids).outcome
    good = out.to_record()
    assert secagg.RoundOutcome.from_record(dict(good)) == out
    bad: list[dict[str, Any]] = [
        {**good, "total_weight": 71},
        {**good, "params": {**good["params"], "threshold": 5}},  # type: ignore[dict-item]
        {**good, "extra": 1},
        {**good, "type": "something/else"},
        {**good, "survivors": [*good["survivors"], "stranger"]},  # type: ignore[misc]
        {**good, "weights": {**good["weights"], "c000": 0}},  # type: ignore[dict-item]
        {**good, "participants": list(reversed(good["participants"]))},  # type: ignore[call-overload]
        {**good, "round": "9"},
    ]
    for record in bad:
        with pytest.raises(EncodingError):
            secagg.RoundOutcome.from_record(record)
    with pytest.raises(EncodingError):
        secagg.RoundOutcome.from_bytes(b"\xa0")


def test_the_server_hands_out_the_outcome_only_when_the_round_is_done() -> None:
    updates = make_updates(4, 5)
    ids = idents(updates)
    seen: list[secagg.SecAggServer] = []

    class Spy(secagg.SecAggServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen.append(self)
            assert self.outcome is None

    import fedledger.secagg.simulate as sim

    original = sim.SecAggServer
    sim.SecAggServer = Spy  # type: ignore[misc]
    try:
        res = run_round(updates, SecAggConfig(neighbors=None), identities=ids)
    finally:
        sim.SecAggServer = original  # type: ignore[misc]
    assert seen[0].outcome is res.outcome
    assert seen[0].outcome is not None and seen[0].outcome.survivors == tuple(sorted(updates))


def test_clipped_values_are_counted_and_warned_about_locally_never_sent() -> None:
    import warnings

    from fedledger.secagg import ClippedValuesWarning

    rng = np.random.default_rng(3)
    updates = {f"c{i}": rng.normal(0, 0.1, 50).astype(np.float64) for i in range(4)}
    updates["c1"][:7] = 3.0  # raw weights, not a change: beyond the default clip of 1.0
    updates["c2"][0] = -1.5
    config = secagg.SecAggConfig(threshold=3, neighbors=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = secagg.run_round(updates, config)
    clipping = [w for w in caught if issubclass(w.category, ClippedValuesWarning)]
    assert len(clipping) == 1 and "2 of 4 clients" in str(clipping[0].message)
    assert "not weights" in str(clipping[0].message)
    assert result.report.clipped == {"c1": 7, "c2": 1}
    assert np.isclose(result.aggregate[0], 1.0 - 1.0 + updates["c0"][0] + updates["c3"][0], atol=1e-3)
    record = result.outcome.to_record()
    assert "clipped" not in repr(record).lower()  # the count stays with the client and the simulator
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        secagg.run_round({k: np.clip(v, -1, 1) for k, v in updates.items()}, config)
    assert not [w for w in caught if issubclass(w.category, ClippedValuesWarning)]


def test_share_recovery_tries_distinct_subsets_and_survives_two_bad_shares() -> None:
    from fedledger.crypto import shamir
    from fedledger.secagg import unmasking

    secret = bytes(range(32))
    shares = shamir.split(secret, 5, 12)
    tried = list(itertools.islice(unmasking._subsets(shares, 5), 6 + 5))
    keys = [tuple(s.index for s in subset) for subset in tried]
    assert len(set(keys)) == len(keys), "a subset was tried twice"
    # Two bad shares among the first t + 1: no leave-one-out choice avoids both; later tries must.
    bad = list(shares)
    # Wrong values under the right commitment (only combining shows them), chosen so that they
    # cannot cancel in the first subset's Lagrange sum (5 * 1 + 10 * 2 for x = 1 and 3).
    for j, delta in ((0, 1), (2, 2)):
        s0 = bad[j]
        first = (int.from_bytes(s0.values[:4], "little") + delta) % (2**31 - 1)
        values = first.to_bytes(4, "little") + s0.values[4:]
        bad[j] = shamir.Share(s0.index, s0.threshold, s0.length, values, s0.commitment)
    found, consistent = unmasking.recover(bad, 5, lambda s: s == secret)
    assert found == secret and not consistent
