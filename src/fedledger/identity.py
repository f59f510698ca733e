"""Identities: a named participant with an Ed25519 signing key and an X25519 agreement key.

An :class:`Identity` holds secrets and is saved password-encrypted. Its :meth:`Identity.card`
is the public :class:`IdentityCard` that other parties check and register: the name, both
public keys and a self-signature over their canonical CBOR encoding.

>>> from fedledger import Identity, IdentityCard
>>> alice = Identity.generate("st-marys")
>>> card = IdentityCard.from_bytes(alice.card().to_bytes())
>>> card.verify()  # raises InvalidSignature or InvalidKey if it must not be registered
>>> card.name, card.verify_key == alice.verify_key
('st-marys', True)
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Union

from fedledger import encoding
from fedledger.crypto import kdf as _kdf
from fedledger.crypto import signing
from fedledger.crypto.agreement import AgreementKey, AgreementPublicKey
from fedledger.crypto.signing import SigningKey, VerifyKey
from fedledger.errors import (
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidKey,
)

__all__ = ["Identity", "IdentityCard"]

_CARD_TYPE: Final = "fedledger/identity-card/v1"
_FILE_TYPE: Final = "fedledger/identity/v1"
_MAX_NAME_BYTES: Final = 255

PathLike = Union[str, "os.PathLike[str]"]
# Fixed scrypt cost for identity files (RFC 7914; ~32 MiB per guess). load() accepts exactly
# these, so a crafted file cannot make it spend unbounded memory or time.
_SCRYPT: Final[dict[str, int]] = {"n": 2**15, "r": 8, "p": 1}


def _harden(password: bytes | str, kdf: dict[str, encoding.Value]) -> bytes:
    """The PKCS#8 password: scrypt of the user's password, hex-encoded."""
    salt = kdf["salt"]
    assert isinstance(salt, bytes)
    key = _kdf.scrypt_password(password, salt=salt, n=_SCRYPT["n"], r=_SCRYPT["r"], p=_SCRYPT["p"])
    return key.hex().encode("ascii")


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgumentType("name", f"expected str, got {type(name).__name__}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument("name", "is not valid Unicode text") from None
    if not 1 <= size <= _MAX_NAME_BYTES:
        raise InvalidArgument("name", f"must be 1 to {_MAX_NAME_BYTES} UTF-8 bytes, got {size}")
    return name


def _card_body(name: str, verify_key: VerifyKey, agreement_key: AgreementPublicKey) -> dict[str, encoding.Value]:
    return {
        "type": _CARD_TYPE,
        "name": name,
        "ed25519": verify_key.to_bytes(),
        "x25519": agreement_key.to_bytes(),
    }


def _fields(data: object, expected: set[str], what: str) -> dict[str, encoding.Value]:
    if not isinstance(data, dict) or set(data) != expected:
        raise EncodingError(f"not a {what}: expected a map with keys {sorted(expected)}")
    return data


def _field(fields: dict[str, encoding.Value], key: str, kind: type, what: str) -> object:
    value = fields[key]
    if type(value) is not kind:
        raise EncodingError(f"not a {what}: {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class IdentityCard:
    """The public face of an :class:`Identity`: what a consortium registers.

    :meth:`from_bytes` only parses; call :meth:`verify` before trusting a card.
    """

    name: str
    verify_key: VerifyKey
    agreement_key: AgreementPublicKey
    signature: bytes

    def signed_body(self) -> bytes:
        """The canonical CBOR bytes the self-signature covers (everything but the signature)."""
        return encoding.encode(_card_body(self.name, self.verify_key, self.agreement_key))

    @property
    def id(self) -> bytes:
        """SHA-256 of the signed body (never of the signature): see signing.message_id."""
        return signing.message_id(self.signed_body())

    def verify(self) -> None:
        """Check that the card may be registered.

        InvalidKey if either public key is of small (low) order; InvalidSignature if the
        self-signature does not verify (under the same rule as every other signature).
        """
        _check_name(self.name)
        self.verify_key.check_registrable()
        self.agreement_key.check_registrable()
        signing.verify(self.verify_key, self.signed_body(), self.signature)

    def to_bytes(self) -> bytes:
        """Canonical CBOR: the signed body's map plus ``"sig"``."""
        body = _card_body(self.name, self.verify_key, self.agreement_key)
        body["sig"] = self.signature
        return encoding.encode(body)

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityCard:
        """Parse a card (EncodingError if malformed). Does not verify it."""
        what = "identity card"
        fields = _fields(encoding.decode(data), {"type", "name", "ed25519", "x25519", "sig"}, what)
        if fields["type"] != _CARD_TYPE:
            raise EncodingError(f"not a {what}: type is {encoding.short_repr(fields['type'])}")
        name = _field(fields, "name", str, what)
        ed = _field(fields, "ed25519", bytes, what)
        x = _field(fields, "x25519", bytes, what)
        sig = _field(fields, "sig", bytes, what)
        try:
            return cls(_check_name(name), VerifyKey(ed), AgreementPublicKey(x), sig)  # type: ignore[arg-type]
        except InvalidArgument as exc:
            raise EncodingError(f"not a {what}: {exc}") from None


class Identity:
    """A named participant: an Ed25519 signing key and an X25519 key-agreement key.

    Holds secrets; its repr shows only the name and the public signing key.
    """

    __slots__ = ("_agreement_key", "_name", "_signing_key")

    def __init__(self, name: str, signing_key: SigningKey, agreement_key: AgreementKey) -> None:
        self._name = _check_name(name)
        if not isinstance(signing_key, SigningKey):
            raise InvalidArgumentType("signing_key", f"expected SigningKey, got {type(signing_key).__name__}")
        if not isinstance(agreement_key, AgreementKey):
            raise InvalidArgumentType("agreement_key", f"expected AgreementKey, got {type(agreement_key).__name__}")
        self._signing_key = signing_key
        self._agreement_key = agreement_key

    @classmethod
    def generate(cls, name: str) -> Identity:
        """A new identity with fresh keys."""
        return cls(name, SigningKey.generate(), AgreementKey.generate())

    @property
    def name(self) -> str:
        return self._name

    @property
    def signing_key(self) -> SigningKey:
        return self._signing_key

    @property
    def verify_key(self) -> VerifyKey:
        return self._signing_key.verify_key

    @property
    def agreement_key(self) -> AgreementKey:
        """The X25519 private key (for :func:`fedledger.crypto.agreement.pairwise_seed`)."""
        return self._agreement_key

    @property
    def agreement_public_key(self) -> AgreementPublicKey:
        return self._agreement_key.public_key

    def sign(self, message: bytes) -> bytes:
        """Sign with the identity's Ed25519 key."""
        return self._signing_key.sign(message)

    def card(self) -> IdentityCard:
        """The self-signed public card."""
        body = encoding.encode(_card_body(self._name, self.verify_key, self.agreement_public_key))
        return IdentityCard(self._name, self.verify_key, self.agreement_public_key, self.sign(body))

    def save(self, path: PathLike, password: bytes | str) -> None:
        """Write the identity to ``path`` (mode 0600, replaced atomically).

        Both private keys are stored as encrypted PKCS#8 PEM. cryptography encrypts PKCS#8
        with PBKDF2 at only 2048 iterations, so the PEM password is not ``password`` itself but
        scrypt(``password``, random salt, n=2**15, r=8, p=1), which makes each offline guess
        cost ~32 MiB and tens of milliseconds. The name and public keys are stored in the
        self-signed card, which :meth:`load` checks against the decrypted keys.
        """
        kdf: dict[str, encoding.Value] = {"name": "scrypt", "salt": os.urandom(16), **_SCRYPT}
        pem_password = _harden(password, kdf)
        data = encoding.encode(
            {
                "type": _FILE_TYPE,
                "card": self.card().to_bytes(),
                "kdf": kdf,
                "ed25519": self._signing_key.to_pem(pem_password),
                "x25519": self._agreement_key.to_pem(pem_password),
            }
        )
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".identity-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    @classmethod
    def load(cls, path: PathLike, password: bytes | str) -> Identity:
        """Read an identity saved by :meth:`save`.

        InvalidKey for a wrong password; EncodingError for a malformed file; InvalidKey too if
        the stored card does not match the decrypted keys or does not verify.
        """
        what = "fedledger identity file"
        fields = _fields(encoding.decode(Path(path).read_bytes()), {"type", "card", "kdf", "ed25519", "x25519"}, what)
        if fields["type"] != _FILE_TYPE:
            raise EncodingError(f"not a {what}: type is {encoding.short_repr(fields['type'])}")
        card = IdentityCard.from_bytes(_field(fields, "card", bytes, what))  # type: ignore[arg-type]
        kdf = _fields(fields["kdf"], {"name", "salt", "n", "r", "p"}, what)
        if (
            kdf["name"] != "scrypt"
            or any(type(kdf[k]) is not int or kdf[k] != v for k, v in _SCRYPT.items())
            or type(kdf["salt"]) is not bytes
        ):
            raise EncodingError(f"not a {what}: unsupported key-derivation parameters")
        pem_password = _harden(password, kdf)
        signing_key = SigningKey.from_pem(_field(fields, "ed25519", bytes, what), pem_password)  # type: ignore[arg-type]
        agreement_key = AgreementKey.from_pem(_field(fields, "x25519", bytes, what), pem_password)  # type: ignore[arg-type]
        if card.verify_key != signing_key.verify_key or card.agreement_key != agreement_key.public_key:
            raise InvalidKey(f"{what}: the stored card does not match the stored keys")
        try:
            card.verify()
        except FedLedgerError as exc:
            raise InvalidKey(f"{what}: the stored card does not verify ({exc})") from None
        return cls(card.name, signing_key, agreement_key)

    def __repr__(self) -> str:
        return f"Identity(name={self._name!r}, verify_key={self.verify_key.to_bytes().hex()})"
