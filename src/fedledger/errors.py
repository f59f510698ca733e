"""Every exception fedledger raises on purpose.

One flat family under :class:`FedLedgerError`, one class per kind of failure, so callers
can catch precisely (``except InvalidProof``) or broadly (``except FedLedgerError``).
Messages say what was wrong and where (which argument, which index, which height).
"""

from __future__ import annotations

__all__ = [
    "EncodingError",
    "FedLedgerError",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidKey",
    "InvalidProof",
    "InvalidSignature",
    "SealError",
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
    ``"small-order-key"``, ``"non-canonical-key"``, ``"small-order-r"``, ``"bad-key"`` or
    ``"mismatch"``.
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
