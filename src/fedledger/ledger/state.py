"""The ledger's replicated state and the rules that transactions must satisfy.

Pure: no I/O, no clocks. The same code admits transactions into the mempool, builds blocks
and replays the whole chain in ``Ledger.verify()``, so the three can never disagree.

The kinds are built in; applications add behaviour with contracts (``contract.call``), which
belong to a ledger (pinned in its genesis or deployed by governance), not to the process.

| kind | who may send | payload |
| --- | --- | --- |
| ``note`` | members | any encodable value |
| ``evidence`` | anyone not revoked | ``{"first": vote, "second": vote}`` (equivocation) |
| ``gov.validators`` | members | governance: ``params = {"stakes": [[key, stake], ...]}`` |
| ``gov.member.add`` | members | governance: ``params = {"card": identity card bytes}`` |
| ``gov.member.revoke`` | members | governance: ``params = {"key": ed25519 key, "reason": text}`` |
| ``blob.erase`` | members | ``{"keyed_id": 32 bytes, "reason": text}`` (a crypto-shredded object) |
| ``contract.call`` | members | ``{"contract": name, "method": name, "args": {name: value}}`` |
| ``gov.contract.deploy`` | members | governance: ``params = {"name", "version", "code_hash"}`` |

Governance payloads are ``{"epoch": n, "params": {...}, "approvals": [[validator, sig], ...]}``
where validators holding more than 2/3 of the current stake signed the proposal body
``{"type": "fedledger.gov/1", "chain", "epoch", "action", "params"}``. The epoch counts applied
governance actions, so an approval can be used once only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, cast

from fedledger import encoding
from fedledger.crypto import signing
from fedledger.errors import (
    ContractError,
    ContractMismatch,
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidCall,
    InvalidEvidence,
    InvalidGovernance,
    InvalidKey,
    InvalidTransaction,
    OversizedPayload,
    ReplayedTransaction,
    UnauthorizedSender,
    UnknownContract,
    UnknownKind,
    WrongChain,
)
from fedledger.identity import Identity, IdentityCard
from fedledger.ledger.block import Evidence, Outcome
from fedledger.ledger.contract import MAX_VALUE_BYTES, CallContext, Contract, ContractState, run_method
from fedledger.ledger.transaction import MAX_PAYLOAD_BYTES, Transaction
from fedledger.ledger.validators import ValidatorSet, advance_priorities

__all__ = [
    "CALL_KIND",
    "DEPLOY_KIND",
    "VALIDATOR_KINDS",
    "ContractKV",
    "GovernanceProposal",
    "LedgerState",
    "next_validators",
]

GOV_TYPE: Final = "fedledger.gov/1"
#: The kinds that change the validator set: governance, and equivocation evidence (slashing).
VALIDATOR_KINDS: Final = ("gov.validators", "evidence")
#: The kind of a contract call, and of the governance action that deploys a contract.
CALL_KIND: Final = "contract.call"
DEPLOY_KIND: Final = "gov.contract.deploy"
#: The highest round a block may carry (each round advances the proposer schedule once).
MAX_ROUND: Final = 10_000
#: The longest reason a contract may give for a denial, in characters (longer ones are cut).
MAX_REASON: Final = 512
#: The largest encoded outcome (what a call returned, with its transaction id).
MAX_OUTCOME_BYTES: Final = MAX_VALUE_BYTES + 64
#: The longest reason a ``blob.erase`` record may give, in characters.
MAX_ERASE_REASON: Final = 1024


class ContractKV:
    """Every contract's entries (full state keys to encoded values), copied cheaply.

    A copy shares the committed entries and keeps its own overlay of changes; :meth:`settle`
    folds a copy's overlay into the shared entries once that copy becomes the committed state.
    Copies made before that are stale: using one raises, rather than read changed entries.
    """

    __slots__ = ("_base", "_born", "_generation", "_overlay")

    def __init__(self) -> None:
        self._base: dict[bytes, bytes] = {}
        self._overlay: dict[bytes, bytes | None] = {}
        self._generation = [0]
        self._born = 0

    def __copy__(self) -> ContractKV:
        self._check()
        out = ContractKV.__new__(ContractKV)
        out._base, out._generation, out._born = self._base, self._generation, self._born
        out._overlay = dict(self._overlay)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContractKV):
            return NotImplemented
        return self.items() == other.items()

    __hash__ = None  # type: ignore[assignment]

    def _check(self) -> None:
        if self._born != self._generation[0]:
            raise RuntimeError("this ledger state is stale: a later copy of it was committed")

    def get(self, key: bytes) -> bytes | None:
        self._check()
        if key in self._overlay:
            return self._overlay[key]
        return self._base.get(key)

    def set(self, key: bytes, value: bytes | None) -> None:
        self._check()
        self._overlay[key] = value

    def settle(self) -> None:
        """Fold this copy's changes into the shared committed entries."""
        self._check()
        base = self._base
        for key, value in self._overlay.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        self._overlay = {}
        self._generation[0] += 1
        self._born = self._generation[0]

    def items(self) -> list[tuple[bytes, bytes]]:
        self._check()
        merged = dict(self._base)
        for key, value in self._overlay.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return sorted(merged.items())


@dataclass
class LedgerState:
    """Everything a block's validity depends on, after the last applied block.

    The replicated part (validators, proposer priorities, members, revocations, nonces, the
    governance epoch, deployed contracts and their state) is committed by the state root; the
    rest is the block being applied (``height``, ``time_ms``), the keys it touched, and which
    contract classes this process offers.
    """

    chain_id: str
    validators: ValidatorSet
    members: dict[bytes, IdentityCard]
    priorities: dict[bytes, int] = field(default_factory=dict)
    revoked: set[bytes] = field(default_factory=set)
    nonces: dict[bytes, int] = field(default_factory=dict)
    gov_epoch: int = 0
    #: Deployed contracts: name -> (version, code hash).
    contracts: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    kv: ContractKV = field(default_factory=ContractKV)
    #: Contract classes this process offers, by (name, code hash): not replicated.
    bindings: dict[tuple[str, bytes], type[Contract]] = field(default_factory=dict)
    height: int = 0
    time_ms: int = 0
    #: State keys changed since begin_block (besides validators, priorities and epoch).
    touched: set[bytes] = field(default_factory=set)

    def copy(self) -> LedgerState:
        """An independent copy: every field is copied, so a field added later is never dropped.

        Containers are copied one level deep (their items, keys and cards, are immutable);
        contract entries are shared with an overlay of changes (see :class:`ContractKV`).
        """
        return replace(self, **{f.name: copy.copy(getattr(self, f.name)) for f in fields(self)})

    def begin_block(self, height: int = 0, time_ms: int = 0, round: int = 0) -> bytes:
        """Advance the proposer schedule to ``round`` of the next block and return whose turn
        it is: one step per round (Tendermint's schedule), so round r's proposer is the one
        after round r - 1's."""
        if type(round) is not int or not 0 <= round <= MAX_ROUND:
            raise InvalidArgument("round", f"must be an int in [0, {MAX_ROUND}], got {round!r}")
        for _ in range(round + 1):
            proposer, self.priorities = advance_priorities(self.validators, self.priorities)
        self.height, self.time_ms = height, time_ms
        self.touched = set()
        return proposer

    # -- the state root's entries -----------------------------------------------------------

    def entry(self, key: bytes) -> bytes | None:
        """The encoded value of one state entry (None: absent)."""
        tag, rest = key[:2], key[2:]
        if key == b"v":
            return encoding.encode(self.validators.to_value())
        if key == b"p":
            return encoding.encode([[k, p] for k, p in sorted(self.priorities.items())])
        if key == b"e":
            return encoding.encode(self.gov_epoch)
        if tag == b"n/":
            nonce = self.nonces.get(rest)
            return None if nonce is None else encoding.encode(nonce)
        if tag == b"c/":
            return self.kv.get(key)
        if tag == b"m/":
            card = self.members.get(rest)
            return None if card is None else card.to_bytes()
        if tag == b"r/":
            return b"" if rest in self.revoked else None
        if tag == b"k/":
            deployed = self.contracts.get(rest.decode())
            return None if deployed is None else encoding.encode(list(deployed))
        raise InvalidArgument("key", f"{key[:16]!r} is not a state key")

    def changes(self) -> dict[bytes, bytes | None]:
        """The entries changed since :meth:`begin_block`, with their new values."""
        keys = self.touched | {b"v", b"p", b"e"}
        return {k: self.entry(k) for k in keys}

    def entries(self) -> list[tuple[bytes, bytes]]:
        """Every entry of the replicated state, sorted by key (a snapshot's content)."""
        keys = [b"v", b"p", b"e"]
        keys += [b"n/" + k for k in self.nonces]
        keys += [b"m/" + k for k in self.members]
        keys += [b"r/" + k for k in self.revoked]
        keys += [b"k/" + n.encode() for n in self.contracts]
        out = [(k, self.entry(k)) for k in keys]
        out += self.kv.items()
        return sorted((k, v) for k, v in out if v is not None)

    @classmethod
    def from_entries(
        cls,
        chain_id: str,
        entries: list[tuple[bytes, bytes]],
        bindings: dict[tuple[str, bytes], type[Contract]] | None = None,
    ) -> LedgerState:
        """The inverse of :meth:`entries`: the replicated state a snapshot holds.

        Strict: the entries must be sorted by key, each key of a known form with a value in
        the form :meth:`entry` writes, and :meth:`entries` of the result must give them back
        exactly; anything else raises :class:`InvalidArgument` (or :class:`EncodingError`).
        """
        validators: ValidatorSet | None = None
        priorities: dict[bytes, int] | None = None
        epoch: int | None = None
        members: dict[bytes, IdentityCard] = {}
        nonces: dict[bytes, int] = {}
        revoked: set[bytes] = set()
        contracts: dict[str, tuple[int, bytes]] = {}
        kv: dict[bytes, bytes] = {}
        for key, value in entries:
            if type(key) is not bytes or type(value) is not bytes:
                raise InvalidArgument("entries", "every entry must be a pair of byte strings")
            tag, rest = key[:2], key[2:]
            if key == b"v":
                validators = ValidatorSet.from_value(encoding.decode(value))
            elif key == b"p":
                pairs = encoding.decode(value)
                if type(pairs) is not list or not all(
                    type(x) is list and len(x) == 2 and type(x[0]) is bytes and type(x[1]) is int for x in pairs
                ):
                    raise InvalidArgument("entries", "proposer priorities must be [[key, int], ...]")
                priorities = {cast(bytes, x[0]): cast(int, x[1]) for x in cast(list[list[Any]], pairs)}
            elif key == b"e":
                epoch = encoding.decode(value)  # type: ignore[assignment]
                if type(epoch) is not int or epoch < 0:
                    raise InvalidArgument("entries", "the governance epoch must be a non-negative int")
            elif tag == b"n/":
                nonce = encoding.decode(value)
                if type(nonce) is not int or nonce < 0:
                    raise InvalidArgument("entries", "a nonce must be a non-negative int")
                nonces[rest] = nonce
            elif tag == b"m/":
                card = IdentityCard.from_bytes(value)
                if card.verify_key.to_bytes() != rest:
                    raise InvalidArgument("entries", "a member entry's key differs from its card's")
                members[rest] = card
            elif tag == b"r/":
                revoked.add(rest)
            elif tag == b"k/":
                deployed = encoding.decode(value)
                if not (
                    type(deployed) is list
                    and len(deployed) == 2
                    and type(deployed[0]) is int
                    and type(deployed[1]) is bytes
                ):
                    raise InvalidArgument("entries", "a deployed contract must be [version, code hash]")
                try:
                    name = rest.decode()
                except UnicodeDecodeError:
                    raise InvalidArgument("entries", "a contract name is not UTF-8") from None
                contracts[name] = (deployed[0], deployed[1])
            elif tag == b"c/":
                kv[key] = value
            else:
                raise InvalidArgument("entries", f"{key[:16]!r} is not a state key")
        if validators is None or priorities is None or epoch is None:
            raise InvalidArgument("entries", "the validators, proposer priorities and epoch entries are required")
        state = cls(
            chain_id, validators, members, priorities, revoked, nonces, epoch, contracts, bindings=dict(bindings or {})
        )
        state.kv._base.update(kv)
        if state.entries() != list(entries):
            raise InvalidArgument(
                "entries", "not the canonical entries of a state (unsorted, duplicated or re-encoded)"
            )
        return state

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

    def apply(self, tx: Transaction) -> Outcome:
        """Apply an admitted transaction (call :meth:`check` first) and say what it did.

        A contract that refuses a call gives a denied outcome (the nonce is still used). A
        built-in kind whose ``apply`` raises leaves this state half-applied: callers apply to a
        copy and discard it on error.
        """
        sender = tx.sender.to_bytes()
        self.nonces[sender] = tx.nonce + 1
        self.touched.add(b"n/" + sender)
        if tx.kind == CALL_KIND:
            return self._call(tx)
        try:
            _KINDS[tx.kind].apply(self, tx)
        except FedLedgerError:
            raise
        except Exception as exc:
            raise InvalidTransaction(f"kind {tx.kind!r}: its apply raised {type(exc).__name__}: {exc}") from exc
        return Outcome(tx.id, True)

    # -- contracts ----------------------------------------------------------------------------

    def contract_class(self, name: object) -> type[Contract]:
        """The class bound to the deployed contract ``name`` (UnknownContract, ContractMismatch)."""
        deployed = self.contracts.get(name) if type(name) is str else None
        if deployed is None:
            raise UnknownContract(
                f"no contract {encoding.short_repr(name)} is deployed on this ledger; deployed: {sorted(self.contracts)}"
            )
        cls = self.bindings.get((name, deployed[1]))  # type: ignore[arg-type]
        if cls is None:
            raise ContractMismatch(
                f"contract {name!r} v{deployed[0]} (code sha256 {deployed[1].hex()[:16]}) is deployed on this "
                "ledger but its class was not offered: pass it in contracts=[...]"
            )
        return cls

    def _parse_call(self, tx: Transaction) -> None:
        # The mempool checks a call at submission and again when the block is built: the second
        # time, if the contract's deployed code is the same, the arguments need no new check.
        p = tx.payload
        memo = tx.__dict__.get("_call_checked_for")
        if memo is not None and type(p) is dict and memo == (p.get("contract"), self.contracts.get(p.get("contract"))):  # type: ignore[arg-type]
            return
        self.check_call(p)
        assert type(p) is dict
        tx.__dict__["_call_checked_for"] = (p["contract"], self.contracts[p["contract"]])  # type: ignore[index]

    def check_call(self, payload: object) -> tuple[type[Contract], str, dict[str, encoding.Value]]:
        """The contract, method and arguments of a call payload; the typed error that refuses it."""
        p = payload
        if type(p) is not dict or set(p) != {"contract", "method", "args"}:
            raise InvalidCall(f"{CALL_KIND}: payload must be {{'contract', 'method', 'args'}}")
        cls = self.contract_class(p["contract"])
        spec = cls.method(p["method"])
        if spec.kind != "call":
            raise InvalidCall(f"{cls.name}.{spec.name} is a view: read it with Ledger.view, not a call")
        return cls, spec.name, spec.check_args(cls.name, p["args"])

    def context(self, sender: bytes | None, tx_id: bytes | None) -> CallContext:
        return CallContext(sender, self.height, self.time_ms, tx_id, frozenset(self.validators.raw_keys()))

    def _call(self, tx: Transaction) -> Outcome:
        # check() admitted this call, so its contract, method and arguments are known good.
        p = cast(dict[str, Any], tx.payload)
        cls = self.contract_class(p["contract"])
        spec = cls.method(p["method"])
        handle = ContractState(cls.name, self.kv.get)
        try:
            value = run_method(cls, spec, handle, self.context(tx.sender.to_bytes(), tx.id), p["args"])
            outcome = Outcome(tx.id, True, value=value)
            size = len(outcome.to_bytes())
        except ContractError as exc:
            return Outcome(tx.id, False, _reason(exc.reason))
        except EncodingError as exc:
            return Outcome(
                tx.id, False, f"{cls.name}.{spec.name} returned a value that is not encodable: {exc}"[:MAX_REASON]
            )
        except (MemoryError, RecursionError):
            raise  # not a decision: depends on the machine, so it must not be recorded
        except Exception as exc:  # a bug in the contract: recorded as a denial, deterministically
            return Outcome(tx.id, False, f"{cls.name}.{spec.name} raised {type(exc).__name__}")
        if size > MAX_OUTCOME_BYTES:
            return Outcome(
                tx.id, False, f"{cls.name}.{spec.name} returned {size} bytes, the limit is {MAX_OUTCOME_BYTES}"
            )
        for key, raw in handle.writes.items():
            self.kv.set(key, raw)
            self.touched.add(key)
        return Outcome(tx.id, True, value=value)


# -- kinds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindHandler:
    """How one transaction kind is checked and applied. Both must be deterministic and pure."""

    check: Callable[[LedgerState, Transaction], None]
    apply: Callable[[LedgerState, Transaction], None]
    members_only: bool = True


_KINDS: dict[str, KindHandler] = {}


def register_kind(kind: str, handler: KindHandler) -> None:
    """Teach every ledger in this process a built-in transaction kind.

    For fedledger's own kinds only: application logic belongs in a :class:`Contract`, which a
    ledger pins, so that an auditor's process replays it the same way.
    """
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
    state.touched.add(b"m/" + card.verify_key.to_bytes())
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
    key = _revoked_key(_proposal(state, tx))
    state.revoked.add(key)
    state.touched.add(b"r/" + key)
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


def _reason(reason: object) -> str:
    text = reason if type(reason) is str else "denied"
    return (text or "denied")[:MAX_REASON]


def _check_call(state: LedgerState, tx: Transaction) -> None:
    state._parse_call(tx)


register_kind(CALL_KIND, KindHandler(_check_call, _nothing))


def _deployment(state: LedgerState, proposal: GovernanceProposal) -> tuple[str, int, bytes]:
    params = proposal.params
    if (
        set(params) != {"name", "version", "code_hash"}
        or type(params["name"]) is not str
        or type(params["version"]) is not int
        or type(params["code_hash"]) is not bytes
        or len(params["code_hash"]) != 32
    ):
        raise InvalidGovernance(
            f"{DEPLOY_KIND}: params must be {{'name': text, 'version': int, 'code_hash': 32 bytes}}"
        )
    name, version, code_hash = params["name"], params["version"], params["code_hash"]
    old = state.contracts.get(name)
    if old is not None and version <= old[0]:
        raise InvalidGovernance(f"{DEPLOY_KIND}: {name!r} is at version {old[0]}; a deployment must raise it")
    if not 1 <= version < 2**31:
        raise InvalidGovernance(f"{DEPLOY_KIND}: version must be a positive int")
    if (name, code_hash) not in state.bindings:
        raise ContractMismatch(
            f"{DEPLOY_KIND}: contract {name!r} v{version} (code sha256 {code_hash.hex()[:16]}) is not offered "
            "by this process: pass its class in contracts=[...]"
        )
    return name, version, code_hash


def _check_deploy(state: LedgerState, tx: Transaction) -> None:
    _deployment(state, _proposal(state, tx))


def _apply_deploy(state: LedgerState, tx: Transaction) -> None:
    name, version, code_hash = _deployment(state, _proposal(state, tx))
    state.contracts[name] = (version, code_hash)
    state.touched.add(b"k/" + name.encode())
    state.gov_epoch += 1


register_kind(DEPLOY_KIND, KindHandler(_check_deploy, _apply_deploy))


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
