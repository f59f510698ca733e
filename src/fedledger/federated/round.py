"""One federated round among the sites of a training policy, recorded on the ledger.

The round is split in two:

- :func:`aggregate_output` is pure: from an aggregator's result it gives a
  :class:`RoundOutput`: the aggregate's blob, the new model, and the ledger call that records
  the round;
- :class:`FederatedRound` is the driver: it checks before any update moves, writes the blob to
  the :class:`~fedledger.blobstore.BlobStore`, submits the call, and returns a
  :class:`RoundRecord` that always matches what happened (a round that failed is recorded as
  failed, with its reason; a round the policy forbids is refused with :class:`PolicyViolation`
  and the refusal is recorded).

In process, :meth:`FederatedRound.run` does everything. Over a real transport,
:meth:`FederatedRound.begin` checks and plans, the aggregator's message-level server and
clients run the round with ``round_id=plan.round``, and :meth:`FederatedRound.complete`
stores and records the result.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from fedledger import encoding
from fedledger.aggregators.base import AggregateResult, Aggregator
from fedledger.blobstore import BlobStore
from fedledger.errors import (
    EncodingError,
    InvalidArgument,
    InvalidArgumentType,
    PolicyViolation,
    RoundFailed,
)
from fedledger.identity import Identity
from fedledger.ledger import Ledger

__all__ = [
    "AGGREGATE_TYPE",
    "CohortCheck",
    "FederatedRound",
    "RoundOutput",
    "RoundPlan",
    "RoundRecord",
    "aggregate_output",
    "load_aggregate",
    "model_hash",
]

AGGREGATE_TYPE: Final = "fedledger.aggregate/1"
_CONTRACT: Final = "training"


def model_hash(model: NDArray[np.floating]) -> bytes:
    """SHA-256 of a model vector as little-endian float64 (what a round records)."""
    return hashlib.sha256(np.ascontiguousarray(model, dtype="<f8").tobytes()).digest()


def aggregate_blob(result: AggregateResult) -> bytes:
    """The aggregate as stored off the chain: canonical CBOR with its float64 bytes."""
    data = np.ascontiguousarray(result.aggregate, dtype="<f8")
    return encoding.encode(
        {
            "type": AGGREGATE_TYPE,
            "aggregator": result.aggregator,
            "total_weight": result.total_weight,
            "dtype": "<f8",
            "shape": list(data.shape),
            "data": data.tobytes(),
        }
    )


def load_aggregate(blob: bytes) -> tuple[NDArray[np.float64], int]:
    """The aggregate vector and total weight from :func:`aggregate_blob`'s bytes."""
    try:
        value = encoding.decode(blob)
    except EncodingError as exc:
        raise InvalidArgument("blob", f"not an aggregate: {exc}") from None
    if (
        type(value) is not dict
        or value.get("type") != AGGREGATE_TYPE
        or value.get("dtype") != "<f8"
        or type(value.get("data")) is not bytes
        or type(value.get("total_weight")) is not int
        or type(value.get("shape")) is not list
        or len(value["data"]) != 8 * math.prod(value["shape"])  # type: ignore[arg-type]
    ):
        raise InvalidArgument("blob", f"not a {AGGREGATE_TYPE} record")
    array = np.frombuffer(value["data"], dtype="<f8").reshape(value["shape"]).astype(np.float64)  # type: ignore[arg-type]
    return array, value["total_weight"]  # type: ignore[return-value]


@dataclass(frozen=True)
class CohortCheck:
    """Which patients of each site's cohort consent to the purpose now, and the consent
    snapshot hash over all of them (what the round records)."""

    permitted: Mapping[str, tuple[bytes, ...]]
    excluded: Mapping[str, tuple[bytes, ...]]
    snapshot: bytes
    height: int


@dataclass(frozen=True)
class RoundPlan:
    """A round the policy and consent allow: its number, participants and consent snapshot."""

    policy: str
    round: int
    participants: tuple[str, ...]
    consent_snapshot: bytes
    height: int


@dataclass(frozen=True)
class RoundOutput:
    """What a round produced, before anything is written: the aggregate blob, the new model,
    and the ``record_round`` (or ``record_failed_round``) arguments for the ledger."""

    round: int
    status: str
    reason: str | None
    result: AggregateResult | None
    model: NDArray[np.float64] | None
    blob: bytes | None
    call: dict[str, Any]


@dataclass(frozen=True)
class RoundRecord:
    """A finished round as recorded: ``status`` is ``"done"`` or ``"failed"`` (with
    ``reason``); ``tx_id`` is the transaction that recorded it, ``aggregate_cid`` the blob's
    id, ``model_hash`` the hash of ``model`` (the new global model)."""

    policy: str
    round: int
    status: str
    reason: str | None
    participants: tuple[str, ...]
    dropouts: Mapping[str, str]
    result: AggregateResult | None
    model: NDArray[np.float64] | None
    model_hash: bytes | None
    aggregate_cid: str | None
    consent_snapshot: bytes
    tx_id: bytes
    height: int
    extra: Mapping[str, object] = field(default_factory=dict)


def _finite_vector(value: object, what: str, dimension: int | None) -> NDArray[np.float64]:
    if not isinstance(value, np.ndarray):
        raise InvalidArgumentType(what, f"expected a numpy array, got {type(value).__name__}")
    if value.ndim != 1 or value.dtype.kind != "f":
        raise InvalidArgument(what, f"must be a 1-D float array, got shape {value.shape} dtype {value.dtype}")
    if dimension is not None and value.shape[0] != dimension:
        raise InvalidArgument(what, f"has {value.shape[0]} values, the round's vectors have {dimension}")
    if not np.isfinite(value).all():
        raise InvalidArgument(what, "holds NaN or infinite values")
    return value.astype(np.float64, copy=False)


class FederatedRound:
    """Rounds of one training policy on one ledger.

    ``sites`` names the policy's sites (name -> Identity, or anything with ``verify_key``);
    ``coordinator`` signs the round records (a site of the policy or its owner); ``aggregator``
    must be the policy's kind, and its minimum survivors at least the policy's ``min_cohort``.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        policy: str,
        coordinator: Identity,
        aggregator: Aggregator,
        store: BlobStore,
        sites: Mapping[str, Identity],
        purpose: str = "HRESCH",
    ) -> None:
        if not isinstance(ledger, Ledger):
            raise InvalidArgumentType("ledger", f"expected a Ledger, got {type(ledger).__name__}")
        if not isinstance(coordinator, Identity):
            raise InvalidArgumentType("coordinator", f"expected an Identity, got {type(coordinator).__name__}")
        if not isinstance(store, BlobStore):
            raise InvalidArgumentType("store", f"expected a BlobStore, got {type(store).__name__}")
        if not isinstance(aggregator, Aggregator):
            raise InvalidArgumentType("aggregator", f"expected an Aggregator, got {type(aggregator).__name__}")
        if not isinstance(sites, Mapping) or not sites:
            raise InvalidArgumentType("sites", "expected a non-empty mapping of name to Identity")
        self.ledger, self.policy, self.coordinator = ledger, policy, coordinator
        self.aggregator, self.store, self.purpose = aggregator, store, purpose
        self.sites = dict(sites)
        self._keys = {name: ident.verify_key.to_bytes() for name, ident in self.sites.items()}

    # -- reading the policy and consent -----------------------------------------------------

    def policy_state(self) -> dict[str, Any]:
        return self.ledger.view(_CONTRACT, "get_policy", policy=self.policy)  # type: ignore[no-any-return]

    def consented_cohorts(self, cohorts: Mapping[str, Sequence[bytes]]) -> CohortCheck:
        """Split each site's cohort (patient pseudonyms) into who consents to the purpose now
        and who does not; the snapshot hash covers every patient asked about."""
        unknown = sorted(set(cohorts) - set(self.sites))
        if unknown:
            raise InvalidArgument("cohorts", f"sites {unknown} are not sites of this round")
        everyone = sorted({p for members in cohorts.values() for p in members})
        answer = self.ledger.view("consent", "consented", patients=everyone, purpose=self.purpose)
        yes = set(answer["permitted"])
        return CohortCheck(
            {s: tuple(p for p in members if p in yes) for s, members in cohorts.items()},
            {s: tuple(p for p in members if p not in yes) for s, members in cohorts.items()},
            answer["snapshot"],
            self.ledger.height,
        )

    # -- the round ---------------------------------------------------------------------------

    def run(
        self,
        updates: Mapping[str, NDArray[np.floating]],
        weights: Mapping[str, int] | None = None,
        dropouts: Mapping[str, str] | None = None,
        *,
        cohorts: Mapping[str, Sequence[bytes]],
        base_model: NDArray[np.floating],
    ) -> RoundRecord:
        """Check, aggregate, store and record one round; see the module docstring.

        ``updates`` are the sites' model deltas (one 1-D float vector each, all of
        ``base_model``'s length); ``weights`` their sample counts (default: each cohort's
        size); ``dropouts`` simulates sites vanishing at an aggregator stage; ``cohorts`` the
        patients whose data each site trained on. The new model is
        ``base_model + aggregate / total_weight``.
        """
        base = _finite_vector(base_model, "base_model", None)
        checked = self._check_input(updates, weights, dropouts, cohorts, base.shape[0])
        plan = self.begin(list(updates), cohorts)
        try:
            result: AggregateResult | str = self.aggregator.run(checked, weights, dropouts, round_id=plan.round)
        except RoundFailed as exc:
            result = str(exc)
        return self.complete(plan, result, base, dropouts=dropouts)

    # -- the same in two steps, for a real transport ---------------------------------------

    def begin(self, participants: Sequence[str], cohorts: Mapping[str, Sequence[bytes]]) -> RoundPlan:
        """Check the policy and consent for a round among ``participants`` before any update
        moves; the plan names the round number (the aggregator's ``round_id``) and the consent
        snapshot. A forbidden round raises :class:`PolicyViolation`, and the refusal is
        recorded. Then drive ``aggregator.server(...)``/``client(...)`` over the transport with
        ``round_id=plan.round`` and hand the result to :meth:`complete`.
        """
        names = list(participants)
        unknown = sorted(set(names) - set(self.sites))
        if unknown:
            raise InvalidArgument("participants", f"sites {unknown} are not sites of this round")
        missing = sorted(set(names) - set(cohorts))
        if missing:
            raise InvalidArgument("cohorts", f"no cohort for sites {missing}")
        policy = self.policy_state()
        number = int(policy["rounds"]) + 1
        violation = self._violation(policy, names, cohorts)
        if violation is not None:
            reason, snapshot = violation
            output = _failed(self.policy, number, names, {}, reason, self._keys)
            tx = self._record(output, snapshot)
            raise PolicyViolation(f"round {number} of {self.policy!r} refused: {reason}", tx.tx_id)
        consent = self.consented_cohorts({n: cohorts[n] for n in names})
        return RoundPlan(self.policy, number, tuple(sorted(names)), consent.snapshot, consent.height)

    def complete(
        self,
        plan: RoundPlan,
        result: AggregateResult | str,
        base_model: NDArray[np.floating],
        *,
        dropouts: Mapping[str, str] | None = None,
    ) -> RoundRecord:
        """Store and record the round of ``plan``: ``result`` is the aggregator's result, or,
        for a round that failed, why (with ``dropouts``: site -> the stage it went missing at)."""
        if not isinstance(plan, RoundPlan):
            raise InvalidArgumentType("plan", f"expected a RoundPlan from begin(), got {type(plan).__name__}")
        base = _finite_vector(base_model, "base_model", None)
        if isinstance(result, str):
            output = _failed(self.policy, plan.round, list(plan.participants), dict(dropouts or {}), result, self._keys)
        else:
            if not isinstance(result, AggregateResult):
                raise InvalidArgumentType("result", f"expected an AggregateResult, got {type(result).__name__}")
            if not set(result.survivors) | set(result.dropouts) <= set(plan.participants):
                raise InvalidArgument("result", "names sites that are not the plan's participants")
            if result.aggregate.shape != base.shape:
                raise InvalidArgument(
                    "result", f"aggregate of shape {result.aggregate.shape}, the model is {base.shape}"
                )
            output = aggregate_output(self.policy, plan, self.aggregator, result, base, self._keys)
        return self._record(output, plan.consent_snapshot)

    def _check_input(
        self,
        updates: Mapping[str, NDArray[np.floating]],
        weights: Mapping[str, int] | None,
        dropouts: Mapping[str, str] | None,
        cohorts: Mapping[str, Sequence[bytes]],
        dimension: int,
    ) -> dict[str, NDArray[np.float64]]:
        if not isinstance(updates, Mapping) or not updates:
            raise InvalidArgumentType("updates", "expected a non-empty mapping of site name to vector")
        out = {}
        for name, vector in updates.items():
            if name not in self.sites:
                raise InvalidArgument("updates", f"site {name!r} is not a site of this round")
            out[name] = _finite_vector(vector, f"updates[{name!r}]", dimension)
        for name, w in (weights or {}).items():
            if name not in updates:
                raise InvalidArgument("weights", f"site {name!r} sent no update")
            if type(w) is not int or w <= 0:
                raise InvalidArgument(f"weights[{name!r}]", f"must be a positive int, got {w!r}")
        for name in dropouts or {}:
            if name not in updates:
                raise InvalidArgument("dropouts", f"site {name!r} sent no update")
        missing = sorted(set(updates) - set(cohorts))
        if missing:
            raise InvalidArgument("cohorts", f"no cohort for sites {missing}")
        return out

    def _violation(
        self, policy: Mapping[str, Any], names: list[str], cohorts: Mapping[str, Sequence[bytes]]
    ) -> tuple[str, bytes] | None:
        """Why the policy or consent forbids this round (None: allowed), and the snapshot."""
        sites, revoked = set(policy["sites"]), set(policy["revoked"])
        outside = sorted(n for n in names if self._keys[n] not in sites)
        if outside:
            return f"sites {outside} are not sites of the policy", bytes(32)
        gone = sorted(n for n in names if self._keys[n] in revoked)
        if gone:
            return f"sites {gone} were revoked from the policy", bytes(32)
        if len(names) < int(policy["min_cohort"]):
            return f"{len(names)} sites; the policy needs at least {policy['min_cohort']}", bytes(32)
        if self.aggregator.name != policy["aggregator"]:
            return f"the policy's aggregator is {policy['aggregator']!r}, not {self.aggregator.name!r}", bytes(32)
        floor = int(self.aggregator.parameters.get("min_survivors", 0))  # type: ignore[call-overload]
        if floor < int(policy["min_cohort"]):
            return f"the aggregator's minimum survivors {floor} is below the policy's {policy['min_cohort']}", bytes(32)
        check = self.consented_cohorts({n: cohorts[n] for n in names})
        refused = {s: len(p) for s, p in check.excluded.items() if p}
        if refused:
            return f"cohorts not covered by consent: {refused} patients without consent", check.snapshot
        return None

    def _record(self, output: RoundOutput, snapshot: bytes) -> RoundRecord:
        cid = None
        call = dict(output.call)
        if output.blob is not None:
            cid = self.store.put(output.blob)
            call["aggregate_cid"] = cid
        if output.status == "done":
            call["consent_snapshot"] = snapshot
        method = "record_round" if output.status == "done" else "record_failed_round"
        result = self.ledger.call(self.coordinator, _CONTRACT, method, **call)
        status, reason = output.status, output.reason
        if not result.accepted:  # the contract refused the record: the round did not count
            status, reason = "failed", f"the ledger refused the record: {result.reason}"
        assert result.tx_id is not None and result.height is not None
        names = {v: k for k, v in self._keys.items()}
        participants = tuple(sorted(names[k] for k in call["participants"]))
        if output.result is not None:
            dropouts = dict(output.result.dropouts)
        else:
            dropouts = {names[bytes.fromhex(k)]: v for k, v in (call.get("dropout_stages") or {}).items()}
        return RoundRecord(
            self.policy,
            output.round,
            status,
            reason,
            participants,
            dropouts,
            output.result,
            output.model if status == "done" else None,
            model_hash(output.model) if output.model is not None and status == "done" else None,
            cid,
            snapshot,
            result.tx_id,
            result.height,
        )


def aggregate_output(
    policy: str,
    plan: RoundPlan,
    aggregator: Aggregator,
    result: AggregateResult,
    base: NDArray[np.float64],
    keys: Mapping[str, bytes],
) -> RoundOutput:
    """The round's blob, new model and ledger record from an aggregator's result (pure)."""
    model = base + result.mean
    survivors = sorted(result.survivors, key=lambda n: keys[n])
    call = {
        "policy": policy,
        "round": plan.round,
        "participants": sorted(keys[n] for n in plan.participants),
        "dropouts": sorted(keys[n] for n in result.dropouts),
        "commitments": [result.commitments[n] for n in survivors],
        "weights": [int(result.weights[n]) for n in survivors],
        "aggregate_cid": "",  # filled by the driver once the blob is stored
        "model_hash": model_hash(model),
        "consent_snapshot": plan.consent_snapshot,
        "aggregator": aggregator.name,
        "dropout_stages": {keys[n].hex(): str(s) for n, s in result.dropouts.items()},
        "parameters": {k: v for k, v in result.parameters.items() if _encodable(v)},
    }
    return RoundOutput(plan.round, "done", None, result, model, aggregate_blob(result), call)


def _encodable(value: object) -> bool:
    try:
        encoding.encode(value)  # type: ignore[arg-type]
    except EncodingError:
        return False
    return True


def _failed(
    policy: str, number: int, names: list[str], stages: Mapping[str, str], reason: str, keys: Mapping[str, bytes]
) -> RoundOutput:
    call = {
        "policy": policy,
        "round": number,
        "participants": sorted(keys[n] for n in names),
        "dropouts": sorted(keys[n] for n in stages),
        "reason": reason[:512] or "failed",
        "dropout_stages": {keys[n].hex(): str(s) for n, s in stages.items()},
    }
    return RoundOutput(number, "failed", reason, None, None, None, call)
