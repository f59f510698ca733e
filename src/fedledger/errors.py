"""Every exception fedledger raises on purpose.

One flat family under :class:`FedLedgerError`, one class per kind of failure, so callers
can catch precisely (``except InvalidProof``) or broadly (``except FedLedgerError``).
Messages say what was wrong and where (which argument, which index, which height).
"""

from __future__ import annotations

__all__ = [
    "FedLedgerError",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidProof",
    "InvalidCiphertext",
    "KeyMismatch",
    "LayoutMismatch",
    "PaillierOverflow",
    "DecryptionError",
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
