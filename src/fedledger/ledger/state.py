"""The ledger's replicated state and the rules that transactions must satisfy.

Pure: no I/O, no clocks. The same code admits transactions into the mempool, builds blocks
and replays the whole chain in ``Ledger.verify()``, so the three can never disagree.

Built-in kinds (contracts add more through :func:`register_kind`):

| kind | who may send | payload |
| --- | --- | --- |
| ``note`` | members | any encodable value |
| ``evidence`` | anyone not revoked | ``{"first": vote, "second": vote}`` (equivocation) |
| ``gov.validators`` | members | governance: ``params = {"stakes": [[key, stake], ...]}`` |
| ``gov.member.add`` | members | governance: ``params = {"card": identity card bytes}`` |
| ``gov.member.revoke`` | members | governance: ``params = {"key": ed25519 key, "reason": text}`` |
| ``blob.erase`` | members | ``{"keyed_id": 32 bytes, "reason": text}`` (a crypto-shredded object) |

Governance payloads are ``{"epoch": n, "params": {...}, "approvals": [[validator, sig], ...]}``
where validators holding more than 2/3 of the current stake signed the proposal body
``{"type": "fedledger.gov/1", "chain", "epoch", "action", "params"}``. The epoch counts applied
governance actions, so an approval can be used once only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Final, cast

from fedledger import encoding
from fedledger.crypto import signing
from fedledger.errors import (
    FedLedgerError,
    InvalidArgument,
    InvalidEvidence,
    InvalidGovernance,
    InvalidKey,
    InvalidTransaction,
    OversizedPayload,
    ReplayedTransaction,
    UnauthorizedSender,
    UnknownKind,
    WrongChain,
)
from fedledger.identity import Identity, IdentityCard
from fedledger.ledger.block import Evidence
from fedledger.ledger.transaction import MAX_PAYLOAD_BYTES, Transaction
from fedledger.ledger.validators import ValidatorSet, advance_priorities

__all__ = ["VALIDATOR_KINDS", "GovernanceProposal", "LedgerState", "next_validators", "register_kind"]

GOV_TYPE: Final = "fedledger.gov/1"
#: The kinds that change the validator set: governance, and equivocation evidence (slashing).
VALIDATOR_KINDS: Final = ("gov.validators", "evidence")
#: The longest reason a ``blob.erase`` record may give, in characters.
MAX_ERASE_REASON: Final = 1024


@dataclass
class LedgerState:
    """Everything a block's validity depends on, after the last applied block."""

    chain_id: str
    validators: ValidatorSet
    members: dict[bytes, IdentityCard]
    priorities: dict[bytes, int] = field(default_factory=dict)
    revoked: set[bytes] = field(default_factory=set)
    nonces: dict[bytes, int] = field(default_factory=dict)
    gov_epoch: int = 0

    def copy(self) -> LedgerState:
        """An independent copy: every field is copied, so a field added later is never dropped.

        Containers are copied one level deep (their items, keys and cards, are immutable).
        """
        return replace(self, **{f.name: copy.copy(getattr(self, f.name)) for f in fields(self)})

    def begin_block(self) -> bytes:
        """Advance the proposer schedule by one block and return whose turn it is."""
        proposer, self.priorities = advance_priorities(self.validators, self.priorities)
        return proposer

    def is_member(self, key: bytes) -> bool:
        return (key in self.members or key in self.validators) and key not in self.revoked

    # -- admission ------------------------------------------------------------------------

    def check(self, tx: Transaction, expected_nonce: int | None = None) -> None:
        """Raise the typed error that rejects ``tx`` now, or return if it may be applied next.

        ``expected_nonce`` overrides the sender's next nonce (the mempool counts pending ones).
        The signature is not checked here: callers verify signatures in batches.
        """
        if tx.chain_id != self.chain_id:
            raise WrongChain(f"transaction is for chain {tx.chain_id!r}, this ledger is {self.chain_id!r}")
        handler = _KINDS.get(tx.kind)
        if handler is None:
            raise UnknownKind(f"unknown transaction kind {tx.kind!r}; known: {sorted(_KINDS)}")
        # The body bounds the payload from above, so the re-encoding runs only for big bodies.
        if len(tx.body) > MAX_PAYLOAD_BYTES and len(encoding.encode(tx.payload)) > MAX_PAYLOAD_BYTES:
            raise OversizedPayload(f"payload is over the {MAX_PAYLOAD_BYTES}-byte limit")
        sender = tx.sender.to_bytes()
        if sender in self.revoked:
            raise UnauthorizedSender(f"sender {sender.hex()[:16]} has been revoked")
        if handler.members_only and not self.is_member(sender):
            raise UnauthorizedSender(f"sender {sender.hex()[:16]} is not a member of this consortium")
        want = self.nonces.get(sender, 0) if expected_nonce is None else expected_nonce
        if tx.nonce != want:
            raise ReplayedTransaction(
                f"nonce {tx.nonce} from sender {sender.hex()[:16]} is not its next nonce ({want})"
            )
        try:
            handler.check(self, tx)
        except FedLedgerError:
            raise
        except Exception as exc:  # a kind's own code: whatever it raises rejects this transaction only
            raise InvalidTransaction(f"kind {tx.kind!r}: its check raised {type(exc).__name__}: {exc}") from exc

    def apply(self, tx: Transaction) -> None:
        """Apply an admitted transaction (call :meth:`check` first).

        A kind whose ``apply`` raises leaves this state half-applied: callers apply to a copy
        and discard it on error (:class:`InvalidTransaction` for errors outside our family).
        """
        sender = tx.sender.to_bytes()
        self.nonces[sender] = tx.nonce + 1
        try:
            _KINDS[tx.kind].apply(self, tx)
        except FedLedgerError:
            raise
        except Exception as exc:
            raise InvalidTransaction(f"kind {tx.kind!r}: its apply raised {type(exc).__name__}: {exc}") from exc


# -- kinds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindHandler:
    """How one transaction kind is checked and applied. Both must be deterministic and pure."""

    check: Callable[[LedgerState, Transaction], None]
    apply: Callable[[LedgerState, Transaction], None]
    members_only: bool = True


_KINDS: dict[str, KindHandler] = {}


def register_kind(kind: str, handler: KindHandler) -> None:
    """Teach every ledger in this process a new transaction kind (contracts use this)."""
    if kind in _KINDS:
        raise InvalidArgument("kind", f"{kind!r} is already registered")
    _KINDS[kind] = handler


def _nothing(state: LedgerState, tx: Transaction) -> None:
    return None


register_kind("note", KindHandler(_nothing, _nothing))


def _evidence(state: LedgerState, tx: Transaction) -> Evidence:
    evidence = Evidence.from_value(tx.payload)
    evidence.check(state.chain_id)
    if evidence.first.validator not in state.validators:
        raise InvalidEvidence("evidence: the validator has no stake left to slash")
    return evidence


def _apply_evidence(state: LedgerState, tx: Transaction) -> None:
    evidence = _evidence(state, tx)
    key = evidence.first.validator.to_bytes()
    if len(state.validators) == 1:
        raise InvalidEvidence("evidence: cannot slash the last validator")
    state.validators = state.validators.with_stake(key, 0)
    state.priorities.pop(key, None)


def _check_evidence(state: LedgerState, tx: Transaction) -> None:
    evidence = _evidence(state, tx)
    if len(state.validators) == 1:
        raise InvalidEvidence("evidence: cannot slash the last validator")
    del evidence


register_kind("evidence", KindHandler(_check_evidence, _apply_evidence, members_only=False))


# -- governance ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GovernanceProposal:
    """A change to the consortium that validators with > 2/3 of the stake must approve.

    >>> # proposal = GovernanceProposal(chain_id, ledger.governance_epoch, "gov.member.revoke",
    >>> #                               {"key": bad.verify_key.to_bytes(), "reason": "breach"})
    >>> # payload = proposal.payload([proposal.approve(v) for v in validators])
    """

    chain_id: str
    epoch: int
    action: str
    params: dict[str, encoding.Value]

    def body(self) -> bytes:
        return encoding.encode(
            {
                "type": GOV_TYPE,
                "chain": self.chain_id,
                "epoch": self.epoch,
                "action": self.action,
                "params": self.params,
            }
        )

    def approve(self, validator: Identity) -> list[bytes]:
        """``validator``'s approval, ``[key, signature]``."""
        return [validator.verify_key.to_bytes(), validator.sign(self.body())]

    def payload(self, approvals: list[list[bytes]]) -> dict[str, encoding.Value]:
        """The transaction payload carrying this proposal and its approvals."""
        return {"epoch": self.epoch, "params": self.params, "approvals": approvals}  # type: ignore[dict-item]


def _proposal(state: LedgerState, tx: Transaction) -> GovernanceProposal:
    p = tx.payload
    if type(p) is not dict or set(p) != {"epoch", "params", "approvals"} or type(p["params"]) is not dict:
        raise InvalidGovernance(f"{tx.kind}: payload must be {{'epoch', 'params', 'approvals'}}")
    if p["epoch"] != state.gov_epoch:
        raise InvalidGovernance(
            f"{tx.kind}: approvals are for epoch {p['epoch']!r}, the ledger is at {state.gov_epoch}"
        )
    proposal = GovernanceProposal(state.chain_id, state.gov_epoch, tx.kind, p["params"])
    approvals = p["approvals"]
    if (
        type(approvals) is not list
        or not approvals
        or not all(type(a) is list and len(a) == 2 and type(a[0]) is bytes and type(a[1]) is bytes for a in approvals)
    ):
        raise InvalidGovernance(f"{tx.kind}: approvals must be a non-empty list of [key, signature]")
    pairs = cast(list[list[bytes]], approvals)
    keys = [a[0] for a in pairs]
    if len(set(keys)) != len(keys) or any(k not in state.validators for k in keys):
        raise InvalidGovernance(f"{tx.kind}: approvals must come from distinct current validators")
    body = proposal.body()
    ok = signing.verify_batch(keys, [body] * len(keys), [a[1] for a in pairs])
    if not ok.all():
        raise InvalidGovernance(f"{tx.kind}: approval {int((~ok).nonzero()[0][0])} does not verify")
    if not state.validators.is_quorum(keys):
        raise InvalidGovernance(
            f"{tx.kind}: approvals hold {state.validators.signed_stake(keys)} of {state.validators.total} stake, "
            "not more than 2/3"
        )
    return proposal


def _new_validators(proposal: GovernanceProposal) -> ValidatorSet:
    params = proposal.params
    if set(params) != {"stakes"}:
        raise InvalidGovernance("gov.validators: params must be {'stakes': [[key, stake], ...]}")
    try:
        return ValidatorSet.from_value(params["stakes"])
    except (InvalidArgument, InvalidKey) as exc:
        raise InvalidGovernance(f"gov.validators: {exc}") from None


def _check_validators(state: LedgerState, tx: Transaction) -> None:
    _new_validators(_proposal(state, tx))


def _apply_validators(state: LedgerState, tx: Transaction) -> None:
    state.validators = _new_validators(_proposal(state, tx))
    state.priorities = {k: v for k, v in state.priorities.items() if k in state.validators}
    state.gov_epoch += 1


def _card(proposal: GovernanceProposal) -> IdentityCard:
    params = proposal.params
    if set(params) != {"card"} or type(params["card"]) is not bytes:
        raise InvalidGovernance("gov.member.add: params must be {'card': identity card bytes}")
    try:
        card = IdentityCard.from_bytes(params["card"])
        card.verify()
    except FedLedgerError as exc:
        raise InvalidGovernance(f"gov.member.add: {exc}") from None
    return card


def _check_add(state: LedgerState, tx: Transaction) -> None:
    card = _card(_proposal(state, tx))
    if card.verify_key.to_bytes() in state.revoked:
        raise InvalidGovernance("gov.member.add: a revoked key cannot be registered again")


def _apply_add(state: LedgerState, tx: Transaction) -> None:
    card = _card(_proposal(state, tx))
    state.members[card.verify_key.to_bytes()] = card
    state.gov_epoch += 1


def _revoked_key(proposal: GovernanceProposal) -> bytes:
    params = proposal.params
    if (
        set(params) != {"key", "reason"}
        or type(params["key"]) is not bytes
        or len(params["key"]) != 32
        or type(params["reason"]) is not str
    ):
        raise InvalidGovernance("gov.member.revoke: params must be {'key': 32-byte key, 'reason': text}")
    return params["key"]


def _check_revoke(state: LedgerState, tx: Transaction) -> None:
    _revoked_key(_proposal(state, tx))


def _apply_revoke(state: LedgerState, tx: Transaction) -> None:
    state.revoked.add(_revoked_key(_proposal(state, tx)))
    state.gov_epoch += 1


register_kind("gov.validators", KindHandler(_check_validators, _apply_validators))
register_kind("gov.member.add", KindHandler(_check_add, _apply_add))
register_kind("gov.member.revoke", KindHandler(_check_revoke, _apply_revoke))


def _check_blob_erase(state: LedgerState, tx: Transaction) -> None:
    """A record that an off-chain object was crypto-shredded: the keyed id (an HMAC of its id under
    the store's key, never the id itself) and why. Nothing else may be in the payload."""
    p = tx.payload
    if (
        type(p) is not dict
        or set(p) != {"keyed_id", "reason"}
        or type(p["keyed_id"]) is not bytes
        or len(p["keyed_id"]) != 32
        or type(p["reason"]) is not str
        or not 0 < len(p["reason"]) <= MAX_ERASE_REASON
    ):
        raise InvalidTransaction(
            f"blob.erase: payload must be {{'keyed_id': 32 bytes, 'reason': 1 to {MAX_ERASE_REASON} characters}}"
        )


register_kind("blob.erase", KindHandler(_check_blob_erase, _nothing))


def next_validators(validators: ValidatorSet, chain_id: str, tx: Transaction) -> ValidatorSet:
    """The validator set after ``tx``, given the set in force before it; the ledger's own rules.

    For offline checkers that follow validator changes without the rest of the state: a
    ``gov.validators`` transaction must carry approvals from more than 2/3 of ``validators``'
    stake (for the epoch it names), and ``evidence`` must prove that a validator of
    ``validators`` signed two headers at one height. Raises :class:`InvalidGovernance`,
    :class:`InvalidEvidence` or :class:`UnknownKind`.
    """
    if tx.kind not in VALIDATOR_KINDS:
        raise UnknownKind(f"{tx.kind!r} does not change the validator set")
    state = LedgerState(chain_id, validators, {})
    payload = tx.payload
    if tx.kind == "gov.validators" and type(payload) is dict and type(payload.get("epoch")) is int:
        # The approvals sign the epoch; the offline checker takes it from the payload.
        state.gov_epoch = cast(int, payload["epoch"])
    handler = _KINDS[tx.kind]
    handler.check(state, tx)
    handler.apply(state, tx)
    return state.validators
