"""Federated-training policy: who trains, with which aggregator and parameters, and the record
of every round (participants, dropouts, update commitments, the aggregate's content id, the
new model's hash, the consent snapshot hash). A round that breaks its policy is denied, and
the denial is recorded.

Rules of ``record_round``: the sender is a site of the policy or its owner; rounds are
numbered 1, 2, ... with no gap (failed rounds count); participants are distinct sites of the
policy, none revoked; dropouts are among the participants; the survivors (participants less
dropouts) number at least the policy's minimum cohort, and each survivor has one 32-byte
update commitment. ``record_failed_round`` records a round that could not finish, with why.
"""

from __future__ import annotations

from typing import Any, Final

from fedledger.errors import ContractError
from fedledger.ledger.contract import CallContext, Contract, ContractState, call, view

__all__ = ["AGGREGATORS", "TrainingPolicy"]

#: ``plain`` sums sealed but visible updates: a baseline the consortium must choose knowingly.
AGGREGATORS: Final = frozenset({"masked", "paillier", "plain"})
MAX_POLICY: Final = 64


def _policy_id(value: str) -> str:
    if not value or len(value) > MAX_POLICY or not value.isprintable() or "/" in value:
        raise ContractError(f"policy id must be 1-{MAX_POLICY} printable characters without '/'")
    return value


def _keys(values: list[bytes], what: str) -> list[bytes]:
    if any(len(v) != 32 for v in values):
        raise ContractError(f"{what} must be 32-byte keys")
    if len(set(values)) != len(values):
        raise ContractError(f"{what} must be distinct")
    return values


class TrainingPolicy(Contract):
    """Policies for federated training among member sites, and the record of their rounds."""

    name = "training"
    version = 1

    @call
    def define(
        self,
        state: ContractState,
        ctx: CallContext,
        policy: str,
        sites: list[bytes],
        aggregator: str,
        quant_bits: int,
        threshold: int,
        min_cohort: int,
        purpose: str = "HRESCH",
    ) -> None:
        """Define a policy; the sender owns it. ``threshold``: shares (masked) or trustees
        (Paillier) needed to finish a round; ``min_cohort``: fewest surviving sites per round."""
        key = f"policy/{_policy_id(policy)}"
        if key in state:
            raise ContractError("policy already defined")
        _keys(sites, "sites")
        if len(sites) < 2:
            raise ContractError("a policy needs at least 2 sites")
        if aggregator not in AGGREGATORS:
            raise ContractError(f"aggregator must be one of {sorted(AGGREGATORS)}")
        if not 2 <= quant_bits <= 62:
            raise ContractError("quant_bits must be in [2, 62]")
        if not 1 <= threshold <= len(sites):
            raise ContractError("threshold must be in [1, number of sites]")
        if not 1 <= min_cohort <= len(sites):
            raise ContractError("min_cohort must be in [1, number of sites]")
        state[key] = {
            "id": policy,
            "owner": ctx.sender,
            "sites": sorted(sites),
            "revoked": [],
            "aggregator": aggregator,
            "quant_bits": quant_bits,
            "threshold": threshold,
            "min_cohort": min_cohort,
            "purpose": purpose,
            "rounds": 0,
            "defined_height": ctx.height,
        }

    @call
    def revoke_site(self, state: ContractState, ctx: CallContext, policy: str, site: bytes, reason: str) -> None:
        """Remove a site from future rounds (only the owner)."""
        key = f"policy/{_policy_id(policy)}"
        p = self._policy(state, policy)
        if p["owner"] != ctx.sender:
            raise ContractError("only the policy's owner may revoke a site")
        if site not in p["sites"] or site in p["revoked"]:
            raise ContractError("not an active site of this policy")
        if not 0 < len(reason) <= 256:
            raise ContractError("reason must be 1-256 characters")
        p["revoked"] = sorted([*p["revoked"], site])
        state[key] = p

    @call
    def record_round(
        self,
        state: ContractState,
        ctx: CallContext,
        policy: str,
        round: int,
        participants: list[bytes],
        dropouts: list[bytes],
        commitments: list[bytes],
        aggregate_cid: str,
        model_hash: bytes,
        consent_snapshot: bytes,
        aggregator: str,
        dropout_stages: dict[str, str] | None = None,
        parameters: dict[str, object] | None = None,
        weights: list[int] | None = None,
    ) -> int:
        """Record a finished round; returns its number. ``commitments`` are the survivors'
        update commitments and ``weights`` their declared (signed) weights, both in the order
        of the sorted survivors' keys; ``parameters`` the aggregator's public settings."""
        p = self._round_checks(state, ctx, policy, round, participants, dropouts)
        if aggregator != p["aggregator"]:
            raise ContractError(f"the policy's aggregator is {p['aggregator']!r}, not {aggregator[:16]!r}")
        survivors = sorted(set(participants) - set(dropouts))
        if len(survivors) < p["min_cohort"]:
            raise ContractError(f"{len(survivors)} sites survived; the policy needs at least {p['min_cohort']}")
        if len(commitments) != len(survivors) or any(len(c) != 32 for c in commitments):
            raise ContractError("one 32-byte update commitment per surviving site")
        if weights is not None and (len(weights) != len(survivors) or any(w < 1 for w in weights)):
            raise ContractError("one positive weight per surviving site")
        if len(model_hash) != 32 or len(consent_snapshot) != 32:
            raise ContractError("model_hash and consent_snapshot must be 32 bytes")
        if not aggregate_cid or len(aggregate_cid) > 128:
            raise ContractError("aggregate_cid must be a content id")
        return self._store_round(
            state,
            ctx,
            p,
            round,
            participants,
            dropouts,
            dropout_stages,
            status="done",
            commitments=commitments,
            aggregate_cid=aggregate_cid,
            model_hash=model_hash,
            consent_snapshot=consent_snapshot,
            aggregator=aggregator,
            parameters=parameters or {},
            weights=weights,
        )

    @call
    def record_failed_round(
        self,
        state: ContractState,
        ctx: CallContext,
        policy: str,
        round: int,
        participants: list[bytes],
        dropouts: list[bytes],
        reason: str,
        dropout_stages: dict[str, str] | None = None,
    ) -> int:
        """Record a round that could not finish (too many dropouts, a failed check), with why."""
        p = self._round_checks(state, ctx, policy, round, participants, dropouts)
        if not 0 < len(reason) <= 512:
            raise ContractError("reason must be 1-512 characters")
        return self._store_round(
            state, ctx, p, round, participants, dropouts, dropout_stages, status="failed", reason=reason
        )

    @view
    def get_policy(self, state: ContractState, ctx: CallContext, policy: str) -> dict[str, Any]:
        return self._policy(state, policy)

    @view
    def get_round(self, state: ContractState, ctx: CallContext, policy: str, round: int) -> dict[str, Any] | None:
        return state.get(f"round/{_policy_id(policy)}/{round}")  # type: ignore[no-any-return]

    # -- rules ------------------------------------------------------------------------------

    @staticmethod
    def _store_round(
        state: ContractState,
        ctx: CallContext,
        p: dict[str, Any],
        round: int,
        participants: list[bytes],
        dropouts: list[bytes],
        dropout_stages: dict[str, str] | None,
        **record: object,
    ) -> int:
        """Keep a round's record (what both kinds of round have, and ``record``) and move the
        policy's round counter on."""
        state[f"round/{p['id']}/{round}"] = {
            "participants": sorted(participants),
            "dropouts": sorted(dropouts),
            "dropout_stages": dropout_stages or {},
            **record,
            "height": ctx.height,
        }
        p["rounds"] = round
        state[f"policy/{p['id']}"] = p
        return round

    @staticmethod
    def _policy(state: ContractState, policy: str) -> dict[str, Any]:
        p = state.get(f"policy/{_policy_id(policy)}")
        if p is None:
            raise ContractError("no such policy")
        return p  # type: ignore[no-any-return]

    def _round_checks(
        self,
        state: ContractState,
        ctx: CallContext,
        policy: str,
        round: int,
        participants: list[bytes],
        dropouts: list[bytes],
    ) -> dict[str, Any]:
        p = self._policy(state, policy)
        if ctx.sender != p["owner"] and ctx.sender not in p["sites"]:
            raise ContractError("only a site of the policy or its owner may record its rounds")
        if round != p["rounds"] + 1:
            raise ContractError(f"the next round of this policy is {p['rounds'] + 1}, not {round}")
        _keys(participants, "participants")
        _keys(dropouts, "dropouts")
        outside = [s for s in participants if s not in p["sites"]]
        if outside:
            raise ContractError(f"{len(outside)} participant(s) are not sites of this policy")
        revoked = [s for s in participants if s in p["revoked"]]
        if revoked:
            raise ContractError(f"{len(revoked)} participant(s) were revoked from this policy")
        if not set(dropouts) <= set(participants):
            raise ContractError("dropouts must be participants")
        return p
