"""Proofs about the ledger that anyone can check offline: signed tree heads, receipts, consistency.

No database: only the standard library, the crypto layer and the ledger's pure rules. Every
check starts from a **trust anchor** the auditor holds (the chain id and a validator set it
trusts, e.g. the genesis set, or one it followed itself) and never from data the proof carries.

A receipt (:meth:`Ledger.prove <fedledger.ledger.Ledger.prove>`) is JSON::

    {"type": "fedledger.receipt/3", "chain_id": "...",
     "transaction": "<hex of the transaction's wire bytes>", "log_index": 17,
     "inclusion_proof": ["<hex>", ...],
     "tree_head": {"header": "<hex>", "certificate": "<hex>"},
     "validator_changes": [{"transaction": "<hex>", "log_index": 3, "inclusion_proof": [...]}, ...],
     "outcome": null | {"outcome": "<hex>", "index": 4, "proof": ["<hex>", ...]}}

:func:`verify_receipt` checks, in order: the tree head is for the expected chain; following
``validator_changes`` (each one proved in the same log, each ``gov.validators`` change approved by
more than 2/3 of the stake of the set before it, each ``evidence`` a proof of equivocation) from
the trusted set leads to the set that the header names; that set's validators with more than
2/3 of the stake signed the header; the transaction is well formed, signed and of this chain;
and its RFC 9162 inclusion proof holds under the header's log root.

With an ``outcome`` (``Ledger.prove(tx_id, outcome=True)``), the tree head is the block that
holds the transaction, and the outcome (accepted or denied, the reason, the value returned) is
proved under that header's ``outcome_root`` at the transaction's index in the block: a
certified record that a call was made and what the contract decided, a denial included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fedledger.crypto import merkle, signing
from fedledger.errors import FedLedgerError, InvalidArgument, InvalidArgumentType, InvalidReceipt
from fedledger.ledger.block import BlockHeader, Certificate, Outcome
from fedledger.ledger.state import VALIDATOR_KINDS, next_validators
from fedledger.ledger.transaction import Transaction
from fedledger.ledger.validators import ValidatorSet

__all__ = [
    "ConsistencyProof",
    "LogEntry",
    "OutcomeProof",
    "Receipt",
    "SignedTreeHead",
    "ValidatorChange",
    "verify_consistency",
    "verify_outcome",
    "verify_receipt",
]

RECEIPT_TYPE: Final = "fedledger.receipt/3"
TREE_HEAD_TYPE: Final = "fedledger.tree_head/1"
CONSISTENCY_TYPE: Final = "fedledger.consistency/2"
#: Bounds on untrusted proof documents (JSON text), so checking one is bounded work.
MAX_PROOF_JSON_BYTES: Final = 16 * 2**20
MAX_PROOF_NODES: Final = 64  # an RFC 9162 proof in a log of < 2**63 leaves has at most 63 nodes
MAX_VALIDATOR_CHANGES: Final = 10_000


# -- parsing helpers (every failure is InvalidReceipt naming the field) --------------------------


def _load(document: object, what: str) -> Mapping[str, Any]:
    if isinstance(document, (bytes, bytearray, memoryview)):
        if len(document) > MAX_PROOF_JSON_BYTES:
            raise InvalidReceipt(f"{what}: larger than {MAX_PROOF_JSON_BYTES} bytes")
        try:
            document = bytes(document).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidReceipt(f"{what}: not UTF-8 text (byte {exc.start})") from None
    if isinstance(document, str):
        if len(document) > MAX_PROOF_JSON_BYTES:
            raise InvalidReceipt(f"{what}: larger than {MAX_PROOF_JSON_BYTES} bytes")
        try:
            document = json.loads(document)
        except RecursionError:
            raise InvalidReceipt(f"{what}: JSON nested too deeply") from None
        except ValueError as exc:
            raise InvalidReceipt(f"{what}: not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise InvalidReceipt(f"{what}: expected a JSON object, got {type(document).__name__}")
    return document


def _keys(value: Mapping[str, Any], keys: frozenset[str], what: str) -> None:
    if set(value) != keys:
        raise InvalidReceipt(f"{what}: expected the keys {sorted(keys)}, got {sorted(map(str, value))}")


def _hex(value: object, what: str) -> bytes:
    if type(value) is not str:
        raise InvalidReceipt(f"{what} must be a hex string, got {type(value).__name__}")
    if len(value) > 2 * MAX_PROOF_JSON_BYTES:
        raise InvalidReceipt(f"{what} is too long")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidReceipt(f"{what} is not valid hex") from None


def _index(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise InvalidReceipt(f"{what} must be an integer in [0, 2**63)")
    return value


def _path(value: object, what: str) -> tuple[bytes, ...]:
    if type(value) is not list:
        raise InvalidReceipt(f"{what} must be a list of hex strings")
    if len(value) > MAX_PROOF_NODES:
        raise InvalidReceipt(f"{what} has {len(value)} nodes, at most {MAX_PROOF_NODES}")
    nodes = tuple(_hex(node, f"{what}[{i}]") for i, node in enumerate(value))
    if any(len(node) != merkle.HASH_SIZE for node in nodes):
        raise InvalidReceipt(f"{what}: every node must be {merkle.HASH_SIZE} bytes")
    return nodes


def _text(value: object, what: str) -> str:
    if type(value) is not str:
        raise InvalidReceipt(f"{what} must be text, got {type(value).__name__}")
    return value


def _anchor(chain_id: object, trusted_validators: object) -> tuple[str, ValidatorSet]:
    if chain_id is None or trusted_validators is None:
        raise InvalidArgument(
            "trusted_validators" if chain_id is not None else "chain_id",
            "a proof checked without a trust anchor proves nothing: pass the chain id and the validator "
            "set you trust (from the genesis record you hold, or one you followed yourself)",
        )
    if type(chain_id) is not str:
        raise InvalidArgumentType("chain_id", f"expected str, got {type(chain_id).__name__}")
    if not isinstance(trusted_validators, ValidatorSet):
        raise InvalidArgumentType(
            "trusted_validators", f"expected ValidatorSet, got {type(trusted_validators).__name__}"
        )
    return chain_id, trusted_validators


# -- the documents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedTreeHead:
    """A finalized block header (it carries the log's size and root) and the certificate that finalized it.

    Keep one somewhere the ledger's host cannot rewrite: :meth:`Ledger.verify(head=...)
    <fedledger.ledger.Ledger.verify>` then detects a file whose newest blocks were cut off.
    """

    header: BlockHeader
    certificate: Certificate

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def log_size(self) -> int:
        return self.header.log_size

    @property
    def log_root(self) -> bytes:
        return self.header.log_root

    def to_value(self) -> dict[str, str]:
        return {"header": self.header.to_bytes().hex(), "certificate": self.certificate.to_bytes().hex()}

    @classmethod
    def from_value(cls, value: object, what: str = "tree_head") -> SignedTreeHead:
        if not isinstance(value, Mapping):
            raise InvalidReceipt(f"{what} must be an object with header and certificate")
        _keys(value, frozenset({"header", "certificate"}), what)
        try:
            return cls(
                BlockHeader.from_bytes(_hex(value["header"], f"{what}.header")),
                Certificate.from_bytes(_hex(value["certificate"], f"{what}.certificate")),
            )
        except InvalidReceipt:
            raise
        except FedLedgerError as exc:
            raise InvalidReceipt(f"{what}: malformed: {exc}") from None

    def to_json(self) -> str:
        """``{"type", "chain_id", "height", "log_size", "log_root", "header", "certificate"}``."""
        return json.dumps(
            {
                "type": TREE_HEAD_TYPE,
                "chain_id": self.header.chain_id,
                "height": self.height,
                "log_size": self.log_size,
                "log_root": self.log_root.hex(),
                **self.to_value(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, document: str | bytes | Mapping[str, Any]) -> SignedTreeHead:
        """Parse :meth:`to_json`'s output; the readable fields must agree with the signed header."""
        value = _load(document, "tree head")
        _keys(
            value,
            frozenset({"type", "chain_id", "height", "log_size", "log_root", "header", "certificate"}),
            "tree head",
        )
        if value["type"] != TREE_HEAD_TYPE:
            raise InvalidReceipt(f"tree head: type is {value['type']!r}, expected {TREE_HEAD_TYPE!r}")
        head = cls.from_value({"header": value["header"], "certificate": value["certificate"]}, "tree head")
        readable = (value["chain_id"], value["height"], value["log_size"], value["log_root"])
        if readable != (head.header.chain_id, head.height, head.log_size, head.log_root.hex()):
            raise InvalidReceipt("tree head: chain_id, height, log_size or log_root disagree with the signed header")
        return head


@dataclass(frozen=True)
class LogEntry:
    """A transaction's bytes, its index in the global log, and its RFC 9162 inclusion proof."""

    transaction: bytes
    log_index: int
    inclusion_proof: tuple[bytes, ...]

    def to_value(self) -> dict[str, Any]:
        return {
            "transaction": self.transaction.hex(),
            "log_index": self.log_index,
            "inclusion_proof": [node.hex() for node in self.inclusion_proof],
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any], what: str) -> LogEntry:
        return cls(
            _hex(value["transaction"], f"{what}.transaction"),
            _index(value["log_index"], f"{what}.log_index"),
            _path(value["inclusion_proof"], f"{what}.inclusion_proof"),
        )

    def parse(self, what: str) -> Transaction:
        try:
            return Transaction.from_bytes(self.transaction)
        except FedLedgerError as exc:
            raise InvalidReceipt(f"{what}: malformed transaction: {exc}") from None

    def check_inclusion(self, head: SignedTreeHead, what: str) -> None:
        if self.log_index >= head.log_size:
            raise InvalidReceipt(f"{what}: log_index {self.log_index} is outside the log of {head.log_size}")
        try:
            merkle.verify_inclusion(
                self.transaction, self.log_index, head.log_size, list(self.inclusion_proof), head.log_root
            )
        except FedLedgerError as exc:
            raise InvalidReceipt(f"{what}: not in the certified log: {exc}") from None


_ENTRY_KEYS: Final = frozenset({"transaction", "log_index", "inclusion_proof"})
_CHANGE_KEYS: Final = _ENTRY_KEYS | {"block"}


@dataclass(frozen=True)
class ValidatorChange:
    """A validator-set change (``gov.validators`` or ``evidence``) with the certified block that
    holds it: ``entry``'s inclusion proof is under that block's log root, and the block's
    certificate must come from the set in force before it, so only a quorum of that set can
    have put the change on the chain."""

    entry: LogEntry
    block: SignedTreeHead

    def to_value(self) -> dict[str, Any]:
        return {**self.entry.to_value(), "block": self.block.to_value()}

    @classmethod
    def from_value(cls, value: Mapping[str, Any], what: str) -> ValidatorChange:
        return cls(LogEntry.from_value(value, what), SignedTreeHead.from_value(value["block"], f"{what}.block"))


_RECEIPT_KEYS: Final = _ENTRY_KEYS | {"type", "chain_id", "tree_head", "validator_changes", "outcome"}
_OUTCOME_KEYS: Final = frozenset({"outcome", "index", "proof"})


@dataclass(frozen=True)
class OutcomeProof:
    """A transaction's outcome and its inclusion proof under its block's ``outcome_root``."""

    outcome: bytes
    index: int
    proof: tuple[bytes, ...]

    def to_value(self) -> dict[str, Any]:
        return {"outcome": self.outcome.hex(), "index": self.index, "proof": [n.hex() for n in self.proof]}

    @classmethod
    def from_value(cls, value: object, what: str) -> OutcomeProof:
        if not isinstance(value, Mapping):
            raise InvalidReceipt(f"{what} must be an object or null")
        _keys(value, _OUTCOME_KEYS, what)
        return cls(
            _hex(value["outcome"], f"{what}.outcome"),
            _index(value["index"], f"{what}.index"),
            _path(value["proof"], f"{what}.proof"),
        )

    def check(self, head: SignedTreeHead, entry: LogEntry, tx_id: bytes) -> Outcome:
        """The proved outcome of the transaction ``entry`` holds, in the block ``head``."""
        h = head.header
        first = h.log_size - h.tx_count
        if not first <= entry.log_index < h.log_size:
            raise InvalidReceipt("receipt.outcome: the tree head is not the block that holds the transaction")
        if self.index != entry.log_index - first:
            raise InvalidReceipt(f"receipt.outcome: index {self.index} is not the transaction's place in its block")
        try:
            merkle.verify_inclusion(self.outcome, self.index, h.tx_count, list(self.proof), h.outcome_root)
            outcome = Outcome.from_bytes(self.outcome)
        except FedLedgerError as exc:
            raise InvalidReceipt(f"receipt.outcome: not the certified outcome: {exc}") from None
        if outcome.tx_id != tx_id:
            raise InvalidReceipt("receipt.outcome: it is the outcome of another transaction")
        return outcome


_CONSISTENCY_KEYS: Final = frozenset(
    {"type", "chain_id", "old_size", "old_root", "proof", "tree_head", "validator_changes"}
)


def _changes_from_value(value: object) -> tuple[ValidatorChange, ...]:
    if type(value) is not list:
        raise InvalidReceipt("validator_changes must be a list")
    if len(value) > MAX_VALIDATOR_CHANGES:
        raise InvalidReceipt(f"validator_changes: at most {MAX_VALIDATOR_CHANGES} entries")
    out = []
    for i, item in enumerate(value):
        what = f"validator_changes[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidReceipt(f"{what} must be an object")
        _keys(item, _CHANGE_KEYS, what)
        out.append(ValidatorChange.from_value(item, what))
    return tuple(out)


@dataclass(frozen=True)
class Receipt:
    """Proof that a transaction is in a certified ledger; see the module doc for the JSON form."""

    chain_id: str
    entry: LogEntry
    tree_head: SignedTreeHead
    #: Each validator-set change (``gov.validators`` or ``evidence``) before the head's block,
    #: in log order, from the set named when the receipt was made (genesis by default), each
    #: with the certified block that holds it.
    validator_changes: tuple[ValidatorChange, ...] = ()
    #: What the transaction did, proved under its block's outcome root (None: not included).
    outcome: OutcomeProof | None = None

    @property
    def transaction(self) -> Transaction:
        return self.entry.parse("receipt")

    def to_value(self) -> dict[str, Any]:
        return {
            "type": RECEIPT_TYPE,
            "chain_id": self.chain_id,
            **self.entry.to_value(),
            "tree_head": self.tree_head.to_value(),
            "validator_changes": [c.to_value() for c in self.validator_changes],
            "outcome": None if self.outcome is None else self.outcome.to_value(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_value(), indent=2)

    @classmethod
    def from_json(cls, document: str | bytes | Mapping[str, Any]) -> Receipt:
        """Parse a receipt (JSON text, bytes or an already-loaded object); InvalidReceipt if malformed."""
        value = _load(document, "receipt")
        _keys(value, _RECEIPT_KEYS, "receipt")
        if value["type"] != RECEIPT_TYPE:
            raise InvalidReceipt(f"receipt: type is {value['type']!r}, expected {RECEIPT_TYPE!r}")
        return cls(
            _text(value["chain_id"], "receipt: chain_id"),
            LogEntry.from_value(value, "receipt"),
            SignedTreeHead.from_value(value["tree_head"]),
            _changes_from_value(value["validator_changes"]),
            None if value["outcome"] is None else OutcomeProof.from_value(value["outcome"], "receipt.outcome"),
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """Proof (RFC 9162) that the log of ``old_size`` leaves with root ``old_root`` is a prefix of a certified head's."""

    chain_id: str
    old_size: int
    old_root: bytes
    proof: tuple[bytes, ...]
    tree_head: SignedTreeHead
    validator_changes: tuple[ValidatorChange, ...] = ()

    def to_value(self) -> dict[str, Any]:
        return {
            "type": CONSISTENCY_TYPE,
            "chain_id": self.chain_id,
            "old_size": self.old_size,
            "old_root": self.old_root.hex(),
            "proof": [p.hex() for p in self.proof],
            "tree_head": self.tree_head.to_value(),
            "validator_changes": [c.to_value() for c in self.validator_changes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_value(), indent=2)

    @classmethod
    def from_json(cls, document: str | bytes | Mapping[str, Any]) -> ConsistencyProof:
        value = _load(document, "consistency proof")
        _keys(value, _CONSISTENCY_KEYS, "consistency proof")
        if value["type"] != CONSISTENCY_TYPE:
            raise InvalidReceipt(f"consistency proof: type is {value['type']!r}, expected {CONSISTENCY_TYPE!r}")
        old_root = _hex(value["old_root"], "consistency proof: old_root")
        if len(old_root) != merkle.HASH_SIZE:
            raise InvalidReceipt(f"consistency proof: old_root must be {merkle.HASH_SIZE} bytes")
        return cls(
            _text(value["chain_id"], "consistency proof: chain_id"),
            _index(value["old_size"], "consistency proof: old_size"),
            old_root,
            _path(value["proof"], "consistency proof: proof"),
            SignedTreeHead.from_value(value["tree_head"]),
            _changes_from_value(value["validator_changes"]),
        )


# -- verification ----------------------------------------------------------------------------------


def _follow_validators(
    trusted: ValidatorSet, chain_id: str, head: SignedTreeHead, changes: Sequence[ValidatorChange]
) -> ValidatorSet:
    """The validator set that certified ``head``, reached from ``trusted`` through certified changes.

    Changes come grouped by the block that holds them, blocks in height order below the head.
    A block's certificate must verify under the set in force before it (its header names that
    set's hash): the current set, or the trusted set itself (the auditor trusts that set
    wherever it certified a block). Each change must be included under its block's log root
    and is applied with the ledger's own rule (:func:`next_validators`). So a change counts only
    if a quorum of the set it changes put it on the chain: approvals that never took effect,
    and evidence no certified block holds, change nothing.
    """
    current: ValidatorSet | None = trusted
    last_index, last_height = -1, 0
    block_hash: bytes | None = None
    for i, change in enumerate(changes):
        what = f"validator_changes[{i}]"
        block, entry = change.block, change.entry
        if entry.log_index <= last_index:
            raise InvalidReceipt(f"{what}: validator changes must be in log order")
        last_index = entry.log_index
        if block.header.chain_id != chain_id or block.height >= head.height:
            raise InvalidReceipt(f"{what}: its block is not a block of {chain_id!r} before the head")
        if block.header.hash != block_hash:  # the first change of a new block: who certified it?
            if block.height <= last_height:
                raise InvalidReceipt(f"{what}: blocks must come in height order")
            block_hash, last_height = block.header.hash, block.height
            named = block.header.validators_hash
            if current is not None and named == current.hash():
                signers: ValidatorSet | None = current
            elif named == trusted.hash():
                signers = trusted
            else:
                signers = None  # a block the walk cannot vouch for: the chain is not followed
            current = signers
            if signers is not None:
                try:
                    block.certificate.verify(block.header, signers)
                except FedLedgerError as exc:
                    raise InvalidReceipt(f"{what}: its block is not certified: {exc}") from None
        entry.check_inclusion(block, what)
        tx = entry.parse(what)
        if tx.chain_id != chain_id or tx.kind not in VALIDATOR_KINDS:
            raise InvalidReceipt(f"{what}: not a validator change of chain {chain_id!r}")
        if current is not None:
            try:
                current = next_validators(current, chain_id, tx)
            except FedLedgerError as exc:
                raise InvalidReceipt(f"{what}: a certified block holds a change its rules refuse: {exc}") from None
    named = head.header.validators_hash
    if current is not None and named == current.hash():
        return current
    if named == trusted.hash():
        return trusted
    raise InvalidReceipt(
        "the tree head was certified by a validator set that the trusted set did not hand "
        "over to (wrong trust anchor, a forged chain, or missing validator_changes)"
    )


def _certified(
    head: SignedTreeHead, chain_id: str, trusted: ValidatorSet, changes: Sequence[ValidatorChange], what: str
) -> None:
    if head.header.chain_id != chain_id:
        raise InvalidReceipt(f"{what}: the tree head is for chain {head.header.chain_id!r}, not {chain_id!r}")
    validators = _follow_validators(trusted, chain_id, head, changes)
    try:
        head.certificate.verify(head.header, validators)
    except FedLedgerError as exc:
        raise InvalidReceipt(f"{what}: the tree head is not certified: {exc}") from None


def verify_receipt(
    receipt: Receipt | Mapping[str, Any] | str | bytes,
    *,
    chain_id: str | None = None,
    trusted_validators: ValidatorSet | None = None,
) -> Transaction:
    """Check a receipt offline and return the transaction it proves; InvalidReceipt if it does not hold.

    ``chain_id`` and ``trusted_validators`` are the trust anchor and are required
    (:class:`InvalidArgument` without them): a receipt checked only against what it carries
    proves nothing, since anyone can build a chain of their own with their own validators.
    """
    chain, trusted = _anchor(chain_id, trusted_validators)
    r = receipt if isinstance(receipt, Receipt) else Receipt.from_json(receipt)
    if r.chain_id != chain:
        raise InvalidReceipt(f"receipt: it is for chain {r.chain_id!r}, not {chain!r}")
    _certified(r.tree_head, chain, trusted, r.validator_changes, "receipt")
    tx = r.entry.parse("receipt")
    if tx.chain_id != chain:
        raise InvalidReceipt(f"receipt: the transaction is for chain {tx.chain_id!r}, not {chain!r}")
    try:
        signing.verify(tx.sender, tx.body, tx.signature)
    except FedLedgerError as exc:
        raise InvalidReceipt(f"receipt: the transaction's signature does not verify: {exc}") from None
    r.entry.check_inclusion(r.tree_head, "receipt")
    if r.outcome is not None:
        r.outcome.check(r.tree_head, r.entry, tx.id)
    return tx


def verify_outcome(
    receipt: Receipt | Mapping[str, Any] | str | bytes,
    *,
    chain_id: str | None = None,
    trusted_validators: ValidatorSet | None = None,
) -> tuple[Transaction, Outcome]:
    """Check a receipt that carries an outcome (``Ledger.prove(tx_id, outcome=True)``) offline.

    Returns the transaction and what it did: whether the contract accepted or denied the call,
    why, and what it returned. InvalidReceipt if the receipt does not hold or has no outcome.
    """
    r = receipt if isinstance(receipt, Receipt) else Receipt.from_json(receipt)
    if r.outcome is None:
        raise InvalidReceipt("receipt: it carries no outcome (make it with Ledger.prove(tx_id, outcome=True))")
    tx = verify_receipt(r, chain_id=chain_id, trusted_validators=trusted_validators)
    return tx, r.outcome.check(r.tree_head, r.entry, tx.id)


def verify_consistency(
    proof: ConsistencyProof | Mapping[str, Any] | str | bytes,
    *,
    chain_id: str | None = None,
    trusted_validators: ValidatorSet | None = None,
    old_head: SignedTreeHead | None = None,
) -> SignedTreeHead:
    """Check a :class:`ConsistencyProof` offline and return the certified new head.

    With ``old_head`` (a head kept earlier), the proof must start from exactly that head's log
    size and root, so an auditor learns that today's certified log extends the one it saw.
    """
    chain, trusted = _anchor(chain_id, trusted_validators)
    if old_head is not None and not isinstance(old_head, SignedTreeHead):
        raise InvalidArgumentType("old_head", f"expected SignedTreeHead, got {type(old_head).__name__}")
    p = proof if isinstance(proof, ConsistencyProof) else ConsistencyProof.from_json(proof)
    if p.chain_id != chain:
        raise InvalidReceipt(f"consistency proof: it is for chain {p.chain_id!r}, not {chain!r}")
    _certified(p.tree_head, chain, trusted, p.validator_changes, "consistency proof")
    if old_head is not None and (old_head.header.chain_id, old_head.log_size, old_head.log_root) != (
        chain,
        p.old_size,
        p.old_root,
    ):
        raise InvalidReceipt("consistency proof: it does not start from the head you kept")
    if p.old_size > p.tree_head.log_size:
        raise InvalidReceipt(f"consistency proof: old_size {p.old_size} exceeds the head's {p.tree_head.log_size}")
    try:
        merkle.verify_consistency(p.old_size, p.tree_head.log_size, p.old_root, p.tree_head.log_root, list(p.proof))
    except FedLedgerError as exc:
        raise InvalidReceipt(f"consistency proof: {exc}") from None
    return p.tree_head
