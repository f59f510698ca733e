"""fedledger.heagg: weighted sums under packed Paillier with t-of-n trustees; dropouts of
sites and trustees; the weight-slot check; trustees that refuse what they should not
decrypt; faulty partial decryptions; sealing; forged messages."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from fedledger import heagg
from fedledger.crypto import masking
from fedledger.crypto.paillier import KeyShare
from fedledger.errors import InvalidArgument, InvalidArgumentType, RoundFailed, SecAggError
from fedledger.heagg import Dealing, DecryptRequest, EncryptedUpdate, HEAggClient, HEAggConfig, run_round
from fedledger.heagg.simulate import RoundStats
from fedledger.identity import Identity

CFG = HEAggConfig()


@pytest.fixture(scope="module")
def dealing() -> Dealing:
    return heagg.deal(["t1", "t2", "t3"], 2, key_bits=512, insecure_for_tests=True)


def make_updates(n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"site-{i}": rng.uniform(-0.9, 0.9, d) for i in range(n)}


def bound(weights: Mapping[str, int], survivors: tuple[str, ...], scale: float) -> float:
    """Round to nearest: each site's quantized value is within 0.5 / scale, times its weight."""
    return sum(weights.get(c, 1) for c in survivors) * 0.5 / scale + 1e-9


def test_round_gives_the_weighted_sum_of_the_survivors_within_the_quantization_bound(dealing: Dealing) -> None:
    updates = make_updates(5, 300)
    weights = {"site-0": 3, "site-2": 7}
    stats = RoundStats()
    res = run_round(updates, CFG, dealing, weights=weights, dropouts={"site-4": "update"}, stats=stats)
    assert res.survivors == ("site-0", "site-1", "site-2", "site-3")
    assert res.dropped == {"site-4": "update"}
    exact = sum(updates[c] * weights.get(c, 1) for c in res.survivors)
    assert np.max(np.abs(res.aggregate - exact)) <= bound(weights, res.survivors, CFG.scale())
    assert res.total_weight == 3 + 1 + 7 + 1
    assert dict(res.weights) == {"site-0": 3, "site-1": 1, "site-2": 7, "site-3": 1}
    assert set(res.commitments) == set(res.survivors) and all(len(r) == 32 for r in res.commitments.values())
    assert stats.bytes_up["site-0"] > 0 and stats.bytes_up["t1"] > 0 and "site-4" not in stats.bytes_up


def test_a_dropped_trustee_is_recorded_and_t_of_n_still_decrypt(dealing: Dealing) -> None:
    updates = make_updates(3, 40)
    res = run_round(updates, CFG, dealing, dropouts={"t2": "partial_decryption"})
    assert res.dropped == {"t2": "partial_decryption"}
    assert np.max(np.abs(res.aggregate - sum(updates.values()))) <= bound({}, res.survivors, CFG.scale())


def test_fewer_than_threshold_trustees_fail_the_round(dealing: Dealing) -> None:
    with pytest.raises(RoundFailed, match="threshold is 2"):
        run_round(make_updates(3, 10), CFG, dealing, dropouts={"t1": "partial_decryption", "t3": "partial_decryption"})


def test_fewer_than_min_survivors_updates_are_never_decrypted(dealing: Dealing) -> None:
    with pytest.raises(RoundFailed, match="fewer than min_survivors=3"):
        run_round(make_updates(3, 10), CFG, dealing, dropouts={"site-1": "update"})
    with pytest.raises(InvalidArgument, match="min_survivors"):
        HEAggConfig(min_survivors=2)


class LyingClient(HEAggClient):
    """Declares its weight in the signed message, but encrypts with one more."""

    def _encrypted_weight(self, weight: int) -> int:
        return weight + 1


def test_weight_slot_check_catches_a_site_that_declares_a_wrong_weight(dealing: Dealing) -> None:
    updates = make_updates(4, 30)
    with pytest.raises(RoundFailed, match="weight check"):
        run_round(updates, CFG, dealing, weights={"site-1": 2}, client_class={"site-1": LyingClient})
    # the honest round with the same inputs passes the check
    res = run_round(updates, CFG, dealing, weights={"site-1": 2})
    assert res.total_weight == 5


def test_a_faulty_trustee_is_outvoted_when_more_than_t_answer(dealing: Dealing) -> None:
    bad = dealing.shares["t1"]
    wrong = KeyShare(bad.public_key, bad.index, (bad.share + 1) % bad.public_key.nsquare, bad.threshold, bad.trustees)
    faulty = Dealing(dealing.public_key, {**dealing.shares, "t1": wrong}, dealing.threshold)
    updates = make_updates(3, 20)
    res = run_round(updates, CFG, faulty)
    assert np.max(np.abs(res.aggregate - sum(updates.values()))) <= bound({}, res.survivors, CFG.scale())
    # with exactly t partials, one of them wrong, nothing is decrypted
    with pytest.raises(RoundFailed, match="do not decrypt"):
        run_round(updates, CFG, faulty, dropouts={"t3": "partial_decryption"})


def test_the_update_on_the_wire_is_sealed(dealing: Dealing) -> None:
    updates = {f"site-{i}": np.full(64, 0.25 * (i + 1)) for i in range(3)}
    seen: dict[str, bytes] = {}

    def tap(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        seen[f"{stage}/{sender}/{receiver}"] = data
        return data

    run_round(updates, CFG, dealing, intercept=tap)
    wire = seen["update/site-0/aggregator"]
    assert np.float64(0.25).tobytes() * 4 not in wire
    # the ciphertext bytes under the seal (as forwarded to the trustees) are not on the wire either
    request = DecryptRequest.from_bytes(seen["decrypt_request/aggregator/t1"])
    block = len(request.tail) // len(request.updates)
    ciphertexts = request.tail[:block]
    assert EncryptedUpdate.from_header(request.updates[0]).sender == "site-0"
    assert masking.vector_root(ciphertexts) == EncryptedUpdate.from_bytes(wire).root
    assert ciphertexts[:32] not in wire and ciphertexts[-32:] not in wire


def test_a_forged_update_becomes_a_dropout_not_a_crash(dealing: Dealing) -> None:
    def forge(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "update" and sender == "site-2":
            return data[:-1] + bytes([data[-1] ^ 1])  # a flipped bit in the sealed tail
        if stage == "update" and sender == "site-3":
            msg = EncryptedUpdate.from_bytes(data)
            return type(msg)(**{**msg.__dict__, "weight": msg.weight + 1}).to_bytes()  # the signature no longer fits
        return data

    updates = make_updates(5, 10)
    res = run_round(updates, CFG, dealing, intercept=forge)
    assert res.dropped == {"site-2": "update", "site-3": "update"}
    assert "does not open" in res.rejected["site-2"] and "bad signature" in res.rejected["site-3"]
    exact = sum(updates[c] for c in res.survivors)
    assert np.max(np.abs(res.aggregate - exact)) <= bound({}, res.survivors, CFG.scale())


def _request(dealing: Dealing, forward: int, tamper: bool = False) -> tuple[heagg.HEAggTrustee, DecryptRequest]:
    """A trustee, and a decrypt request made by hand that forwards ``forward`` of three real,
    signed updates (``tamper``: with a bit of the ciphertexts flipped)."""
    ids = ["site-0", "site-1", "site-2"]
    idents = {c: Identity.generate(c) for c in [*ids, "aggregator", "t1"]}
    keys = {c: i.verify_key for c, i in idents.items()}
    server = heagg.HEAggServer(
        idents["aggregator"],
        CFG,
        dealing.public_key,
        sites=ids,
        trustees=dealing.trustees,
        threshold=2,
        verify_keys=keys,
        dimension=8,
    )
    announces = {a.receiver: a for a in server.start()}
    for c in ids:
        client = HEAggClient(idents[c], CFG, dealing.public_key, server="aggregator", verify_keys=keys)
        assert server.collect(client.encrypt_update(announces[c], np.full(8, 0.5)))
    heads = tuple(server._updates[c][0] for c in ids[:forward])
    tail = b"".join(server._updates[c][1] for c in ids[:forward])
    if tamper:
        tail = tail[:100] + bytes([tail[100] ^ 1]) + tail[101:]
    req = DecryptRequest(
        round_id=1, sender="aggregator", receiver="t1", updates=heads, server_key=bytes(32), tail=tail
    ).signed(idents["aggregator"])
    trustee = heagg.HEAggTrustee(
        idents["t1"], CFG, dealing.shares["t1"], server="aggregator", sites=ids, verify_keys=keys, dimension=8
    )
    return trustee, req


def test_a_trustee_refuses_to_decrypt_fewer_than_min_survivors_updates(dealing: Dealing) -> None:
    trustee, req = _request(dealing, 2)
    with pytest.raises(SecAggError, match="fewer than min_survivors"):
        trustee.partial_decrypt(req)


def test_a_trustee_refuses_ciphertexts_that_do_not_match_the_signed_roots(dealing: Dealing) -> None:
    trustee, req = _request(dealing, 3, tamper=True)
    with pytest.raises(SecAggError, match="do not match its signed root"):
        trustee.partial_decrypt(req)


def test_a_trustee_answers_one_request_per_round(dealing: Dealing) -> None:
    trustee, req = _request(dealing, 3)
    with pytest.raises(SecAggError, match="round key"):
        trustee.partial_decrypt(req)  # the all-zero server key is refused after the checks...
    with pytest.raises(SecAggError, match="already answered"):
        trustee.partial_decrypt(req)  # ...and the trustee answers nothing more this round


def test_a_site_refuses_a_round_announced_with_other_parameters(dealing: Dealing) -> None:
    idents = {c: Identity.generate(c) for c in ["a", "b", "c", "aggregator"]}
    keys = {c: i.verify_key for c, i in idents.items()}
    server = heagg.HEAggServer(
        idents["aggregator"],
        HEAggConfig(bits=12),
        dealing.public_key,
        sites=["a", "b", "c"],
        trustees=dealing.trustees,
        threshold=2,
        verify_keys=keys,
        dimension=4,
    )
    ann = server.start()[0]
    client = HEAggClient(idents[ann.receiver], CFG, dealing.public_key, server="aggregator", verify_keys=keys)
    with pytest.raises(SecAggError, match="bits is not this site's"):
        client.encrypt_update(ann, np.zeros(4))


def test_bad_input_is_refused_with_typed_errors(dealing: Dealing) -> None:
    with pytest.raises(InvalidArgument, match="NaN"):
        run_round({**make_updates(3, 4), "site-0": np.array([0.0, np.nan, 0, 0])}, CFG, dealing)
    with pytest.raises(InvalidArgumentType):
        run_round({**make_updates(3, 4), "site-0": [0.0, 0.0, 0.0, 0.0]}, CFG, dealing)  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="dropouts"):
        run_round(make_updates(3, 4), CFG, dealing, dropouts={"t1": "update"})


def test_an_oversized_or_tampered_partial_decryption_is_a_trustee_dropout(dealing: Dealing) -> None:
    def pad(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "partial_decryption" and sender == "t1":
            return data + bytes(len(data) * 2)  # far more than a partial decryption of the sum
        if stage == "partial_decryption" and sender == "t3":
            return data[:-1] + bytes([data[-1] ^ 1])  # the seal no longer opens
        return data

    updates = make_updates(3, 30)
    with pytest.raises(RoundFailed, match="1 partial decryption"):
        run_round(updates, CFG, dealing, intercept=pad)
    res = run_round(updates, CFG, dealing, intercept=lambda st, s, r, d: pad(st, s, r, d) if s == "t1" else d)
    assert res.dropped == {"t1": "partial_decryption"}
    assert "more than a partial decryption" in res.rejected["t1"]
    assert np.max(np.abs(res.aggregate - sum(updates.values()))) <= bound({}, res.survivors, CFG.scale())
