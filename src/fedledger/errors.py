"""Every exception fedledger raises on purpose.

One flat family under :class:`FedLedgerError`, one class per kind of failure, so callers
can catch precisely (``except InvalidProof``) or broadly (``except FedLedgerError``).
Messages say what was wrong and where (which argument, which index, which height).
"""

from __future__ import annotations

__all__ = [
    "ContractError",
    "ContractMismatch",
    "CorruptBlob",
    "DecryptionError",
    "EncodingError",
    "Erased",
    "FedLedgerError",
    "InsufficientShares",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidBlock",
    "InvalidCall",
    "InvalidCiphertext",
    "InvalidEvidence",
    "InvalidGovernance",
    "InvalidKey",
    "InvalidProof",
    "InvalidReceipt",
    "InvalidShare",
    "InvalidSignature",
    "InvalidSnapshot",
    "InvalidTransaction",
    "InvalidVote",
    "KeyMismatch",
    "LayoutMismatch",
    "LedgerLocked",
    "MalformedTransaction",
    "MissingDependency",
    "NodeError",
    "NotALedger",
    "NotFound",
    "OrdererUnavailable",
    "OversizedPayload",
    "PaillierOverflow",
    "PolicyViolation",
    "QuantizationError",
    "QuorumNotReached",
    "ReadOnlyLedger",
    "ReplayedTransaction",
    "RevisionCompacted",
    "RoundFailed",
    "SealError",
    "SecAggError",
    "ShareIntegrityError",
    "TamperedLedger",
    "UnauthorizedSender",
    "UnknownContract",
    "UnknownKind",
    "UnsupportedStrategy",
    "UnsupportedVersion",
    "WrongChain",
]


class FedLedgerError(Exception):
    """Base class of every error raised by fedledger."""


class InvalidArgument(FedLedgerError, ValueError):
    """An argument has a wrong value (out of range, wrong length, inconsistent with another).

    ``argument`` names the offending parameter, e.g. ``"index"`` or ``"leaves[17]"``.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument has the wrong type (for example ``str`` where ``bytes`` is required)."""


class InvalidProof(FedLedgerError):
    """A Merkle inclusion or consistency proof does not verify."""


class InvalidSignature(FedLedgerError):
    """An Ed25519 signature does not verify under fedledger's rule (see docs/security-signing.md).

    ``reason`` is a short machine-readable word: ``"length"``, ``"non-canonical-s"``,
    ``"small-order-key"``, ``"non-canonical-key"``, ``"small-order-r"``, ``"bad-key"``,
    ``"mismatch"``, or ``"data-mismatch"`` (a signed digest or root does not match the data
    it stands for).
    """

    def __init__(self, message: str, reason: str = "mismatch") -> None:
        super().__init__(message)
        self.reason = reason


class InvalidKey(FedLedgerError):
    """A key cannot be used: malformed, of small order, or not decryptable with the password."""


class SealError(FedLedgerError):
    """A sealed message cannot be opened: tampered, truncated, wrong key or wrong associated data.

    Deliberately one exception with no detail about which, and never any plaintext.
    """


class EncodingError(FedLedgerError):
    """A value cannot be encoded as, or bytes are not, fedledger's deterministic CBOR."""


# -- the ledger -----------------------------------------------------------------------------


class InvalidTransaction(FedLedgerError):
    """The ledger will not accept this transaction (see the subclass for why)."""


class MalformedTransaction(InvalidTransaction):
    """Bytes that are not a well-formed transaction."""


class OversizedPayload(InvalidTransaction):
    """A transaction payload over the documented size limit."""


class ReplayedTransaction(InvalidTransaction):
    """A nonce that is not exactly the sender's next one: a replay, a duplicate or a gap."""


class WrongChain(InvalidTransaction):
    """A transaction signed for another chain id."""


class UnknownKind(InvalidTransaction):
    """A transaction kind that no registered handler knows."""


class UnauthorizedSender(InvalidTransaction):
    """A sender that is not a member of the consortium, or whose identity was revoked."""


class InvalidGovernance(InvalidTransaction):
    """A governance action without a valid quorum of validator approvals, or with bad parameters."""


class InvalidEvidence(InvalidTransaction):
    """Equivocation evidence that does not prove a validator signed two blocks at one height."""


class UnknownContract(InvalidTransaction):
    """A call to a contract that is not deployed on this ledger."""


class InvalidCall(InvalidTransaction):
    """A contract call that cannot be made: an unknown method, a view called as a call, or
    arguments of the wrong name, type or size. Rejected at submission, never recorded."""


class ContractError(FedLedgerError):
    """Raised by a contract to refuse a call. The call is still recorded, as denied, with
    ``reason`` (keep it short and free of personal data: it goes on the ledger)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContractMismatch(FedLedgerError):
    """The contracts offered to a ledger are not the ones it pinned: another version or code
    hash, or a pinned contract whose class was not offered. Never a silent fork."""


class PolicyViolation(FedLedgerError):
    """A federated round that its training policy or patient consent forbids (a site outside the
    policy or revoked, too few sites, a cohort not covered by consent). Raised before any
    update moves; the refusal is recorded on the ledger (``tx_id``)."""

    def __init__(self, reason: str, tx_id: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tx_id = tx_id


class UnsupportedVersion(FedLedgerError):
    """A ledger file, header or record in a format this version of fedledger does not read."""


class InvalidVote(FedLedgerError):
    """A vote that is not a valid validator signature on the block being finalized."""


class InvalidBlock(FedLedgerError):
    """A block proposed or sent by another node breaks a rule of the ledger: nothing of it is kept."""

    def __init__(self, height: int, message: str) -> None:
        super().__init__(f"block {height}: {message}")
        self.height = height


class QuorumNotReached(FedLedgerError):
    """The votes gathered hold 2/3 of the stake or less, so the block is not final."""


class TamperedLedger(FedLedgerError):
    """Stored ledger content fails the audit. ``height`` is the first bad block (0: genesis/storage)."""

    def __init__(self, height: int, what: str) -> None:
        super().__init__(f"ledger tampered at height {height}: {what}")
        self.height = height
        self.what = what


class InvalidSnapshot(TamperedLedger):
    """A stored state snapshot does not match the certified block it names (``height``: the
    snapshot's height). A kind of :class:`TamperedLedger`: the file was changed."""


class NotALedger(FedLedgerError):
    """The file is not a fedledger ledger (not SQLite, or no genesis record): bad input, not tampering."""


class LedgerLocked(FedLedgerError):
    """Another process has this ledger file open for writing; open it with ``read_only=True`` to read."""


class ReadOnlyLedger(FedLedgerError):
    """A write (submit, propose, commit) on a ledger opened with ``read_only=True``."""


class NotFound(FedLedgerError, KeyError):
    """No such block, transaction or file."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidReceipt(InvalidProof):
    """A ledger receipt that does not prove what it claims (checked offline by verify_receipt)."""


class InvalidCiphertext(FedLedgerError, ValueError):
    """A Paillier ciphertext is not in [1, n^2) or shares a factor with n.

    ``index`` is the position of the first bad ciphertext (-1 for a single value).
    """

    def __init__(self, message: str, index: int = -1) -> None:
        super().__init__(message)
        self.index = index


class KeyMismatch(FedLedgerError, ValueError):
    """Operands or a ciphertext and a key belong to different Paillier keys."""


class LayoutMismatch(FedLedgerError, ValueError):
    """Two packed encrypted vectors use different packing layouts (bits, clip, headroom, length)."""


class PaillierOverflow(FedLedgerError, OverflowError):
    """A homomorphic operation would overflow a packed slot, or a decrypted slot is out of range."""


class DecryptionError(FedLedgerError):
    """Decryption produced an impossible plaintext: wrong private key, or corrupted ciphertexts."""


# -- secret sharing and secure aggregation -----------------------------------------------------


class InvalidShare(FedLedgerError, ValueError):
    """A Shamir share that cannot be used: malformed, index 0, a duplicate index, a wrong
    length, or shares of different secrets (different commitments) combined together."""


class InsufficientShares(InvalidShare):
    """Fewer distinct shares than the threshold."""


class ShareIntegrityError(FedLedgerError):
    """Shares that combine to a value their commitment does not match: at least one share is
    corrupted (or its dealer dealt inconsistent shares). No secret is returned."""


class QuantizationError(FedLedgerError, ValueError):
    """A value cannot be quantized into the aggregation ring: non-finite input, a weight over
    the configured maximum, or a configuration whose sum could overflow the ring."""


class SecAggError(FedLedgerError):
    """A secure-aggregation message was rejected: bad signature, wrong round or stage, wrong
    sender or receiver, wrong vector length, a share that does not verify, or a protocol
    violation. ``client`` names the party blamed ("" when unknown)."""

    def __init__(self, message: str, client: str = "") -> None:
        super().__init__(message)
        self.client = client


class RoundFailed(SecAggError):
    """The secure-aggregation round cannot complete: too many dropouts for the threshold, or a
    secret that cannot be reconstructed. Nothing about the sum is revealed."""


# -- the blob store ------------------------------------------------------------------------------


class Erased(FedLedgerError):
    """The object was crypto-shredded: its data key is destroyed, so nothing can decrypt it."""


class CorruptBlob(FedLedgerError):
    """A stored object, its wrapped data key or the store's master key fails its check (a flipped
    byte, a truncated file, a wrong key, or plaintext whose id differs). No bytes are returned."""


# -- the ordering service (etcd) ----------------------------------------------------------------


class OrdererUnavailable(FedLedgerError):
    """No etcd member of the ordering service answered within the call's timeout: every endpoint
    was tried, in turn, until it ran out. ``endpoints`` are the ones tried, ``last`` the last error
    seen. A write that ends here was not acknowledged; whether it took effect is unknown."""

    def __init__(self, endpoints: list[str], last: str) -> None:
        super().__init__(f"no etcd member answered in time (tried {', '.join(endpoints)}); last error: {last}")
        self.endpoints = endpoints
        self.last = last


class NodeError(FedLedgerError):
    """A node's HTTP interface answered with an error, or did not answer."""


class RevisionCompacted(FedLedgerError):
    """A watch asked for changes that etcd has compacted away. ``compacted`` is the oldest revision
    still kept: a watch may start there, after reading the current state again."""

    def __init__(self, revision: int, compacted: int) -> None:
        super().__init__(f"revision {revision} is compacted; the oldest revision kept is {compacted}")
        self.revision = revision
        self.compacted = compacted


# -- optional dependencies ---------------------------------------------------------------------


class MissingDependency(FedLedgerError, ImportError):
    """A call needs an optional package that is not installed. ``name`` is the package,
    ``extra`` the fedledger extra that installs it (``pip install 'fedledger[extra]'``)."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{package} is needed for {purpose}: pip install 'fedledger[{extra}]'", name=package)
        self.extra = extra


# -- framework integrations ----------------------------------------------------------------------


class UnsupportedStrategy(FedLedgerError, TypeError):
    """A framework strategy cannot run under a fedledger wrapper: ``strategy`` names it and the
    message says why (e.g. it reads each client's update, and secure aggregation gives only the
    sum)."""

    def __init__(self, strategy: str, why: str) -> None:
        super().__init__(f"{strategy} cannot run under this wrapper: {why}")
        self.strategy = strategy
