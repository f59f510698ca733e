"""FederatedRound: checks before anything moves, a record that matches what happened, the
aggregate retrievable by its recorded id, failures and refusals on the record."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from ledger_helpers import CHAIN, identity, validator_set, validators
from numpy.typing import NDArray

from fedledger import BlobStore
from fedledger.aggregators import AggregateResult
from fedledger.contracts import BUILTIN, pseudonym
from fedledger.errors import InvalidArgument, InvalidArgumentType, PolicyViolation, RoundFailed
from fedledger.federated import FederatedRound, load_aggregate, model_hash
from fedledger.identity import Identity
from fedledger.ledger import Call, Ledger

SITES = ["site-a", "site-b", "site-c", "site-d"]
KEY = b"the consortium's pseudonym key, 32+ bytes"
DIM = 6


class Summing:
    """An aggregator for these tests: sums in the clear, drops the sites told to drop, fails
    below ``min_survivors`` (the protocol of fedledger.aggregators, without the cryptography)."""

    name = "plain"

    def __init__(self, min_survivors: int = 3) -> None:
        self.min_survivors = min_survivors
        self.calls = 0

    @property
    def parameters(self) -> Mapping[str, object]:
        return {"name": self.name, "min_survivors": self.min_survivors}

    def run(
        self,
        updates: Mapping[str, NDArray[np.floating]],
        weights: Mapping[str, int] | None = None,
        dropouts: Mapping[str, str] | None = None,
        *,
        round_id: int = 1,
    ) -> AggregateResult:
        self.calls += 1
        dropouts = dict(dropouts or {})
        survivors = tuple(sorted(set(updates) - set(dropouts)))
        if len(survivors) < self.min_survivors:
            raise RoundFailed(f"{len(survivors)} survivors, fewer than {self.min_survivors}")
        w = {s: (weights or {}).get(s, 1) for s in survivors}
        total = sum(w[s] * np.asarray(updates[s], dtype=np.float64) for s in survivors)
        return AggregateResult(
            self.name,
            np.asarray(total, dtype=np.float64),
            sum(w.values()),
            survivors,
            {s: bytes([i]) * 32 for i, s in enumerate(survivors)},
            w,
            dropouts,
            self.parameters,
        )


def patients(site: str, n: int = 5) -> list[bytes]:
    return [pseudonym(KEY, f"{site}/patient-{i}") for i in range(n)]


@contextlib.contextmanager
def consortium(root: Path, aggregator: str, per_site: int, extra: tuple[Identity, ...] = ()):  # type: ignore[no-untyped-def]
    """A ledger with the four sites as members (and ``extra``), policy "p1" of ``aggregator``
    owned by site-a, and ``per_site`` consenting patients per site."""
    v = validators()
    sites = {name: identity(name) for name in SITES}
    with Ledger.open(
        root / "ledger.db",
        chain_id=CHAIN,
        validators=validator_set(v),
        local_validators=v,
        members=[s.card() for s in [*sites.values(), *extra]],
        contracts=BUILTIN,
    ) as ledger:
        keys = [sites[n].verify_key.to_bytes() for n in SITES]
        defined = ledger.call(
            sites["site-a"],
            "training",
            "define",
            policy="p1",
            sites=keys,
            aggregator=aggregator,
            quant_bits=32,
            threshold=3,
            min_cohort=3,
        )
        assert defined.accepted, defined.reason
        cohorts = {s: patients(s, per_site) for s in SITES}
        calls = [
            Call(
                sites[s],
                "consent",
                "record",
                {"patient": p, "decision": "permit", "purposes": ["HRESCH"], "start_ms": 0},
            )
            for s in SITES
            for p in cohorts[s]
        ]
        assert all(x.accepted for x in ledger.call_many(calls))
        yield ledger, sites, sites["site-a"], cohorts


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    outsider = identity("not-in-policy")
    with consortium(tmp_path, "plain", 5, (outsider,)) as (ledger, sites, owner, _):
        yield ledger, sites, owner, BlobStore(tmp_path / "blobs"), outsider


def updates(seed: int = 0) -> dict[str, NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    return {s: rng.normal(0, 0.1, DIM) for s in SITES}


def test_a_round_is_recorded_and_matches_what_happened(world) -> None:  # type: ignore[no-untyped-def]
    ledger, sites, owner, store, _ = world
    agg = Summing()
    fr = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=agg, store=store, sites=sites)
    cohorts = {s: patients(s) for s in SITES}
    base = np.zeros(DIM)
    ups = updates()
    weights = {"site-a": 5, "site-b": 3, "site-c": 4, "site-d": 2}
    rec = fr.run(ups, weights, {"site-d": "masked_input"}, cohorts=cohorts, base_model=base)
    assert (rec.status, rec.round) == ("done", 1)
    assert rec.participants == tuple(SITES) and rec.dropouts == {"site-d": "masked_input"}
    expected = sum(weights[s] * ups[s] for s in SITES[:3]) / 12
    assert np.allclose(rec.model, base + expected)  # type: ignore[arg-type]
    assert rec.model_hash == model_hash(rec.model)  # type: ignore[arg-type]
    stored, total = load_aggregate(store.get(rec.aggregate_cid))  # type: ignore[arg-type]
    assert total == 12 and np.array_equal(stored, rec.result.aggregate)  # type: ignore[union-attr]
    on_chain = ledger.view("training", "get_round", policy="p1", round=1)
    key = {s: sites[s].verify_key.to_bytes() for s in SITES}
    assert on_chain["status"] == "done"
    assert on_chain["participants"] == sorted(key.values())
    assert on_chain["dropouts"] == [key["site-d"]]
    assert on_chain["dropout_stages"] == {key["site-d"].hex(): "masked_input"}
    assert on_chain["model_hash"] == rec.model_hash and on_chain["aggregate_cid"] == rec.aggregate_cid
    assert on_chain["consent_snapshot"] == rec.consent_snapshot
    survivors = sorted(SITES[:3], key=lambda s: key[s])
    assert on_chain["commitments"] == [rec.result.commitments[s] for s in survivors]  # type: ignore[union-attr]
    assert on_chain["weights"] == [weights[s] for s in survivors]
    assert ledger.outcome(rec.tx_id).ok
    # The next round follows on.
    rec2 = fr.run(updates(1), cohorts=cohorts, base_model=rec.model)  # type: ignore[arg-type]
    assert rec2.round == 2 and rec2.status == "done"
    ledger.verify()


def test_a_round_that_fails_past_the_threshold_is_recorded_as_failed(world) -> None:  # type: ignore[no-untyped-def]
    ledger, sites, owner, store, _ = world
    fr = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=Summing(), store=store, sites=sites)
    drops = {"site-c": "share_keys", "site-d": "masked_input"}
    rec = fr.run(updates(), None, drops, cohorts={s: patients(s) for s in SITES}, base_model=np.zeros(DIM))
    assert rec.status == "failed" and "fewer than 3" in rec.reason  # type: ignore[operator]
    assert rec.model is None and rec.aggregate_cid is None and rec.dropouts == drops
    on_chain = ledger.view("training", "get_round", policy="p1", round=1)
    assert on_chain["status"] == "failed" and "fewer than 3" in on_chain["reason"]
    assert ledger.view("training", "get_policy", policy="p1")["rounds"] == 1


def test_consent_withdrawn_excludes_the_patient_and_a_round_using_them_is_refused_on_the_record(world) -> None:  # type: ignore[no-untyped-def]
    ledger, sites, owner, store, _ = world
    agg = Summing()
    fr = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=agg, store=store, sites=sites)
    cohorts = {s: patients(s) for s in SITES}
    withdrawn = cohorts["site-b"][2]
    assert ledger.call(sites["site-b"], "consent", "withdraw", patient=withdrawn).accepted
    check = fr.consented_cohorts(cohorts)
    assert check.excluded["site-b"] == (withdrawn,) and withdrawn not in check.permitted["site-b"]
    with pytest.raises(PolicyViolation, match="not covered by consent") as caught:
        fr.run(updates(), cohorts=cohorts, base_model=np.zeros(DIM))
    assert agg.calls == 0  # nothing moved
    outcome = ledger.outcome(caught.value.tx_id)  # type: ignore[arg-type]
    assert outcome.ok  # recorded as a failed round, with why
    assert "consent" in ledger.view("training", "get_round", policy="p1", round=1)["reason"]
    rec = fr.run(updates(), cohorts=dict(check.permitted), base_model=np.zeros(DIM))
    assert rec.status == "done" and rec.round == 2
    # The recorded snapshot is reproducible: the same question at the height the round asked it.
    asked = sorted(p for members in check.permitted.values() for p in members)
    again = ledger.view("consent", "consented", patients=asked, purpose="HRESCH", height=rec.height - 1)
    assert rec.consent_snapshot == again["snapshot"] and withdrawn not in again["permitted"]


def test_rounds_the_policy_forbids_are_refused_before_anything_moves(world) -> None:  # type: ignore[no-untyped-def]
    ledger, sites, owner, store, outsider = world
    cohorts = {s: patients(s) for s in SITES}
    agg = Summing()
    everyone = {**sites, "outsider": outsider}
    fr = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=agg, store=store, sites=everyone)
    with pytest.raises(PolicyViolation, match="not sites of the policy") as caught:
        fr.run(
            {**updates(), "outsider": np.zeros(DIM)},
            cohorts={**cohorts, "outsider": []},
            base_model=np.zeros(DIM),
        )
    denied = ledger.outcome(caught.value.tx_id)  # type: ignore[arg-type]
    assert not denied.ok and "not sites of this policy" in denied.reason  # the refusal is on the record
    # Too few sites.
    with pytest.raises(PolicyViolation, match="at least 3"):
        fr.run({s: updates()[s] for s in SITES[:2]}, cohorts=cohorts, base_model=np.zeros(DIM))
    # An aggregator weaker than the policy's minimum cohort, or of another kind.
    weak = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=Summing(2), store=store, sites=sites)
    with pytest.raises(PolicyViolation, match="below the policy"):
        weak.run(updates(), cohorts=cohorts, base_model=np.zeros(DIM))
    other = Summing()
    other.name = "masked"
    wrong = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=other, store=store, sites=sites)
    with pytest.raises(PolicyViolation, match="aggregator is 'plain'"):
        wrong.run(updates(), cohorts=cohorts, base_model=np.zeros(DIM))
    # A site revoked from the policy.
    assert ledger.call(
        owner, "training", "revoke_site", policy="p1", site=sites["site-d"].verify_key.to_bytes(), reason="breach"
    ).accepted
    with pytest.raises(PolicyViolation, match="revoked"):
        fr.run(updates(), cohorts=cohorts, base_model=np.zeros(DIM))
    assert agg.calls == 0


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda u, w: u.__setitem__("site-a", np.zeros(DIM + 1)), InvalidArgument, "has 7 values"),
        (lambda u, w: u.__setitem__("site-a", np.zeros(DIM, dtype=np.int64)), InvalidArgument, "float"),
        (lambda u, w: u.__setitem__("site-a", np.zeros((2, 3))), InvalidArgument, "1-D"),
        (lambda u, w: u["site-a"].__setitem__(0, np.nan), InvalidArgument, "NaN"),
        (lambda u, w: u["site-a"].__setitem__(0, np.inf), InvalidArgument, "NaN or infinite"),
        (lambda u, w: u.__setitem__("stranger", np.zeros(DIM)), InvalidArgument, "not a site of this round"),
        (lambda u, w: u.__setitem__("site-a", [0.0] * DIM), InvalidArgumentType, "numpy array"),
        (lambda u, w: w.__setitem__("site-a", 0), InvalidArgument, "positive int"),
        (lambda u, w: w.__setitem__("site-a", -3), InvalidArgument, "positive int"),
        (lambda u, w: w.__setitem__("site-a", 2.5), InvalidArgument, "positive int"),
    ],
)
def test_bad_input_is_a_typed_error_before_anything_is_sent(world, change, error, match) -> None:  # type: ignore[no-untyped-def]
    ledger, sites, owner, store, _ = world
    agg = Summing()
    fr = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=agg, store=store, sites=sites)
    ups, weights = updates(), {s: 1 for s in SITES}
    change(ups, weights)
    height = ledger.height
    with pytest.raises(error, match=match):
        fr.run(ups, weights, cohorts={s: patients(s) for s in SITES}, base_model=np.zeros(DIM))
    assert agg.calls == 0 and ledger.height == height


@pytest.mark.parametrize("kind", ["masked", "paillier", "plain"])
def test_real_aggregators_give_rounds_whose_record_matches_what_happened(tmp_path: Path, kind: str) -> None:
    from fedledger import heagg
    from fedledger.aggregators import Masked, Paillier, Plain

    with consortium(tmp_path, kind, 2) as (ledger, sites, owner, cohorts):
        if kind == "masked":
            agg: object = Masked(3, clip=1.0, max_weight=100)
        elif kind == "paillier":
            dealing = heagg.deal(["trustee-1", "trustee-2", "trustee-3"], 2, key_bits=512, insecure_for_tests=True)
            agg = Paillier(3, clip=1.0, dealing=dealing, insecure_for_tests=True)
        else:
            agg = Plain(3)
        fr = FederatedRound(
            ledger, policy="p1", coordinator=owner, aggregator=agg, store=BlobStore(tmp_path / "b"), sites=sites
        )  # type: ignore[arg-type]
        ups = updates(7)
        weights = {"site-a": 3, "site-b": 1, "site-c": 2, "site-d": 4}
        drop_stage = {"masked": "masked_input", "paillier": "update", "plain": "update"}[kind]
        rec = fr.run(ups, weights, {"site-b": drop_stage}, cohorts=cohorts, base_model=np.ones(DIM))
        assert rec.status == "done", rec.reason
        assert rec.dropouts == {"site-b": drop_stage} and set(rec.result.survivors) == {"site-a", "site-c", "site-d"}  # type: ignore[union-attr]
        exact = sum(weights[s] * ups[s] for s in ("site-a", "site-c", "site-d"))
        assert np.allclose(rec.result.aggregate, exact, atol=1e-3)  # type: ignore[union-attr]
        assert rec.model_hash == model_hash(rec.model)  # type: ignore[arg-type]
        assert np.allclose(rec.model, np.ones(DIM) + exact / 9, atol=1e-3)  # type: ignore[arg-type]
        stored, total = load_aggregate(fr.store.get(rec.aggregate_cid))  # type: ignore[arg-type]
        assert total == 9 and np.array_equal(stored, rec.result.aggregate)  # type: ignore[union-attr]
        on_chain = ledger.view("training", "get_round", policy="p1", round=1)
        assert on_chain["aggregator"] == kind and on_chain["model_hash"] == rec.model_hash
        assert len(on_chain["commitments"]) == 3 and all(len(c) == 32 for c in on_chain["commitments"])
        ledger.verify()


def test_over_a_transport_begin_and_complete_record_what_the_message_level_round_did(tmp_path: Path) -> None:
    """The two-step interface: begin (checks, plan), the aggregator's server and clients
    exchanging envelopes, complete (store, record)."""
    from fedledger.aggregators import Masked

    with consortium(tmp_path, "masked", 1) as (ledger, sites, owner, cohorts):
        agg = Masked(3, neighbors=None)
        fr = FederatedRound(
            ledger, policy="p1", coordinator=owner, aggregator=agg, store=BlobStore(tmp_path / "b"), sites=sites
        )
        plan = fr.begin(SITES, cohorts)
        assert plan.round == 1 and plan.participants == tuple(SITES)
        aggregator = identity("aggregator")
        vk = {n: i.verify_key for n, i in {**sites, "aggregator": aggregator}.items()}
        server = agg.server(aggregator, sites=SITES, verify_keys=vk, dimension=DIM, round_id=plan.round)
        clients = {n: agg.client(sites[n], server="aggregator", verify_keys=vk, round_id=plan.round) for n in SITES}
        ups = updates(3)
        outbox = server.start()
        for n in SITES:
            outbox += clients[n].start(ups[n].astype(np.float32), 2)
        while not server.done:
            while outbox:
                env = outbox.pop(0)
                if env.receiver == "aggregator":
                    if env.sender != "site-d":  # site-d vanishes: its messages never arrive
                        server.collect(env)
                else:
                    outbox += clients[env.receiver].respond(env)
            outbox = server.advance()
        result = server.finish()
        rec = fr.complete(plan, result, np.zeros(DIM))
        assert rec.status == "done" and rec.round == 1 and "site-d" in rec.dropouts
        exact = sum(2 * ups[s] for s in ("site-a", "site-b", "site-c"))
        assert np.allclose(rec.result.aggregate, exact, atol=1e-3)  # type: ignore[union-attr]
        on_chain = ledger.view("training", "get_round", policy="p1", round=1)
        assert on_chain["model_hash"] == rec.model_hash and on_chain["parameters"]["name"] == "masked"
        assert on_chain["dropout_stages"] == {sites["site-d"].verify_key.to_bytes().hex(): rec.dropouts["site-d"]}
        with pytest.raises(InvalidArgumentType):
            fr.complete("not a plan", result, np.zeros(DIM))  # type: ignore[arg-type]
        ledger.verify()
