"""Random sequences of grants, revokes, expiries, cut-offs, consents and withdrawals: every
decision the contracts record equals that of a small reference model written here."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ledger_helpers import CHAIN, identity, validator_set, validators

from fedledger.contracts import BUILTIN, pseudonym
from fedledger.ledger import Ledger

SUBJECTS = ["site-a", "site-b", "site-c"]  # site-a is the custodian of every resource
PROVIDERS = {"site-a", "site-b"}
RESOURCES = ["bafk-r0", "bafk-r1"]
PURPOSES = ["TREAT", "HRESCH", "ETREAT"]
PATIENTS = [pseudonym(b"k" * 32, f"patient-{i}") for i in range(3)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class Model:
    """The access and consent rules, as plainly as they can be written."""

    grants: dict[tuple[str, str, str], int] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)
    consents: dict[bytes, list[dict[str, object]]] = field(default_factory=dict)

    def access(self, subject: str, resource: str, purpose: str, now: int) -> tuple[bool, bool]:
        if subject in self.cut:
            return False, False
        expires = self.grants.get((subject, resource, purpose))
        if expires is not None and expires > now:
            return True, False
        if purpose == "ETREAT" and subject in PROVIDERS:
            return True, True
        return False, False

    def grant(self, subject: str, resource: str, purpose: str, expires: int, now: int) -> bool:
        if "site-a" in self.cut or expires <= now:
            return False
        self.grants[(subject, resource, purpose)] = expires
        return True

    def revoke(self, subject: str, resource: str, purpose: str) -> bool:
        if "site-a" in self.cut or (subject, resource, purpose) not in self.grants:
            return False
        del self.grants[(subject, resource, purpose)]
        return True

    def record(self, patient: bytes, decision: str, purposes: list[str], start: int, end: int | None) -> bool:
        if end is not None and end <= start:
            return False
        entry = {"decision": decision, "purposes": set(purposes), "start": start, "end": end, "withdrawn": None}
        self.consents.setdefault(patient, []).append(entry)
        return True

    def withdraw(self, patient: bytes, now: int) -> bool:
        active = [e for e in self.consents.get(patient, []) if e["withdrawn"] is None]
        for e in active:
            e["withdrawn"] = now
        return bool(active)

    def consented(self, patient: bytes, purpose: str, at: int) -> bool:
        def applies(e: dict[str, object]) -> bool:
            withdrawn, end = e["withdrawn"], e["end"]
            return (
                (withdrawn is None or withdrawn > at)  # type: ignore[operator]
                and e["start"] <= at  # type: ignore[operator]
                and (end is None or at < end)  # type: ignore[operator]
                and purpose in e["purposes"]  # type: ignore[operator]
            )

        live = [e for e in self.consents.get(patient, []) if applies(e)]
        return any(e["decision"] == "permit" for e in live) and not any(e["decision"] == "deny" for e in live)


subject = st.sampled_from(SUBJECTS)
resource = st.sampled_from(RESOURCES)
purpose = st.sampled_from(PURPOSES)
patient = st.sampled_from(PATIENTS)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("grant"), subject, resource, purpose, st.one_of(st.integers(-2, 3), st.integers(-2_000, 20_000))
        ),
        st.tuples(st.just("revoke"), subject, resource, purpose),
        st.tuples(st.just("access"), subject, resource, purpose),
        st.tuples(st.just("advance"), st.one_of(st.integers(0, 2), st.integers(1, 15_000))),
        st.tuples(st.just("cut"), st.sampled_from(SUBJECTS)),
        st.tuples(st.just("restore"), st.sampled_from(SUBJECTS)),
        st.tuples(
            st.just("consent"),
            patient,
            st.sampled_from(["permit", "deny"]),
            st.lists(st.sampled_from(["HRESCH", "TREAT"]), min_size=1, max_size=2),
            st.integers(-5_000, 20_000),
            st.one_of(st.none(), st.integers(1, 30_000)),
        ),
        st.tuples(st.just("withdraw"), patient),
        st.tuples(st.just("cohort"), st.sampled_from(["HRESCH", "TREAT"]), st.integers(-10_000, 30_000)),
    ),
    min_size=1,
    max_size=14,
)


def _ledger(clock: Clock) -> Ledger:
    v = validators()
    members = [identity(n) for n in (*SUBJECTS, "admin")]
    ledger = Ledger.memory(
        chain_id=CHAIN,
        validators=validator_set(v),
        local_validators=v,
        members=[m.card() for m in members],
        contracts=BUILTIN,
        clock=clock,
    )
    admin = identity("admin")
    assert ledger.call(v[0], "access", "assign_role", subject=admin.verify_key.to_bytes(), role="admin").accepted
    for name in PROVIDERS:
        key = identity(name).verify_key.to_bytes()
        assert ledger.call(admin, "access", "assign_role", subject=key, role="provider").accepted
    for r in RESOURCES:
        assert ledger.call(identity("site-a"), "access", "register", resource=r).accepted
    return ledger


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
# The edges: a grant that expires exactly at the next block, one already expired, and a
# withdrawal followed by a cohort check at the withdrawal's own time.
@example([("grant", "site-c", "bafk-r0", "TREAT", 1), ("access", "site-c", "bafk-r0", "TREAT")])
@example([("grant", "site-c", "bafk-r0", "TREAT", 2), ("access", "site-c", "bafk-r0", "TREAT")])
@example([("grant", "site-c", "bafk-r1", "HRESCH", 0), ("access", "site-c", "bafk-r1", "HRESCH")])
@example([("consent", PATIENTS[0], "permit", ["HRESCH"], 0, None), ("withdraw", PATIENTS[0]), ("cohort", "HRESCH", -1)])
@example([("consent", PATIENTS[0], "permit", ["HRESCH"], 0, None), ("withdraw", PATIENTS[0]), ("cohort", "HRESCH", 0)])
@example([("consent", PATIENTS[1], "permit", ["HRESCH"], 0, 5), ("cohort", "HRESCH", 4), ("cohort", "HRESCH", 2)])
def test_every_decision_equals_the_reference_models(ops: list[tuple[object, ...]]) -> None:
    clock = Clock()
    ledger = _ledger(clock)
    model = Model()
    admin, custodian = identity("admin"), identity("site-a")

    def key(name: str) -> bytes:
        return identity(name).verify_key.to_bytes()

    for op in ops:
        clock.now += 1  # every call is one block, at the clock's time
        now = clock.now
        name = op[0]
        if name == "advance":
            clock.now += op[1]  # type: ignore[operator]
            continue
        if name == "grant":
            _, s, r, p, ttl = op
            got = ledger.call(custodian, "access", "grant", subject=key(s), resource=r, purpose=p, expires_ms=now + ttl)  # type: ignore[arg-type, operator]
            assert got.accepted == model.grant(s, r, p, now + ttl, now), op  # type: ignore[arg-type, operator]
        elif name == "revoke":
            _, s, r, p = op
            got = ledger.call(custodian, "access", "revoke", subject=key(s), resource=r, purpose=p)  # type: ignore[arg-type]
            assert got.accepted == model.revoke(s, r, p), op  # type: ignore[arg-type]
        elif name == "access":
            _, s, r, p = op
            got = ledger.call(identity(s), "access", "access", subject=key(s), resource=r, purpose=p)  # type: ignore[arg-type]
            permit, glass = model.access(s, r, p, now)  # type: ignore[arg-type]
            assert got.recorded and got.accepted == permit, (op, got.reason)
            if permit:
                assert got.value == {"permit": True, "break_glass": glass}
        elif name == "cut":
            assert ledger.call(admin, "access", "revoke_all", subject=key(op[1]), reason="breach").accepted  # type: ignore[arg-type]
            model.cut.add(op[1])  # type: ignore[arg-type]
        elif name == "restore":
            got = ledger.call(admin, "access", "restore", subject=key(op[1]))  # type: ignore[arg-type]
            assert got.accepted == (op[1] in model.cut)
            model.cut.discard(op[1])  # type: ignore[arg-type]
        elif name == "consent":
            _, pt, decision, purposes, start, span = op
            end = None if span is None else start + span  # type: ignore[operator]
            got = ledger.call(
                custodian,
                "consent",
                "record",
                patient=pt,
                decision=decision,
                purposes=purposes,
                start_ms=now + start,  # type: ignore[operator]
                end_ms=None if end is None else now + end,
            )
            assert got.accepted == model.record(
                pt, decision, purposes, now + start, None if end is None else now + end
            ), op  # type: ignore[arg-type, operator]
        elif name == "withdraw":
            got = ledger.call(custodian, "consent", "withdraw", patient=op[1])
            assert got.accepted == model.withdraw(op[1], now), op  # type: ignore[arg-type]
        else:  # cohort
            _, p, offset = op
            at = now + offset  # type: ignore[operator]
            answer = ledger.view("consent", "consented", patients=PATIENTS, purpose=p, at=at)
            assert set(answer["permitted"]) == {pt for pt in PATIENTS if model.consented(pt, p, at)}, op  # type: ignore[arg-type, index]
    ledger.verify()
