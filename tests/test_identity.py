"""Identity and IdentityCard: generation, cards, registration checks, password-protected files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import fedledger
from fedledger import Identity, IdentityCard, encoding
from fedledger.crypto.agreement import AgreementPublicKey
from fedledger.crypto.signing import SigningKey, VerifyKey, verify
from fedledger.errors import EncodingError, InvalidArgument, InvalidArgumentType, InvalidKey, InvalidSignature

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_generate_and_attributes() -> None:
    alice = Identity.generate("st-marys")
    assert alice.name == "st-marys"
    assert alice.verify_key == alice.signing_key.verify_key
    assert isinstance(alice.agreement_public_key, AgreementPublicKey)
    verify(alice.verify_key, b"m", alice.sign(b"m"))
    assert alice.signing_key.to_bytes().hex() not in repr(alice)
    assert alice.agreement_key.to_bytes().hex() not in repr(alice)


@pytest.mark.parametrize("name", ["", "x" * 256, 7, None])
def test_bad_names(name: object) -> None:
    with pytest.raises((InvalidArgument, InvalidArgumentType)):
        Identity.generate(name)  # type: ignore[arg-type]


def test_card_round_trip_and_verify() -> None:
    alice = Identity.generate("hôpital-é")
    card = alice.card()
    card.verify()
    data = card.to_bytes()
    assert encoding.decode(data)  # canonical CBOR
    again = IdentityCard.from_bytes(data)
    assert again == card
    again.verify()
    assert again.id == card.id and len(card.id) == 32
    assert alice.card().to_bytes() == data  # deterministic


def test_tampered_card_fails() -> None:
    alice, mallory = Identity.generate("alice"), Identity.generate("mallory")
    card = alice.card()
    renamed = IdentityCard("alice2", card.verify_key, card.agreement_key, card.signature)
    with pytest.raises(InvalidSignature):
        renamed.verify()
    swapped = IdentityCard("alice", card.verify_key, mallory.agreement_public_key, card.signature)
    with pytest.raises(InvalidSignature):
        swapped.verify()
    stolen = IdentityCard("alice", mallory.verify_key, card.agreement_key, card.signature)
    with pytest.raises(InvalidSignature):
        stolen.verify()
    bad_sig = bytearray(card.signature)
    bad_sig[5] ^= 1
    with pytest.raises(InvalidSignature):
        IdentityCard("alice", card.verify_key, card.agreement_key, bytes(bad_sig)).verify()


def test_small_order_keys_cannot_register() -> None:
    alice = Identity.generate("alice")
    card = alice.card()
    identity_point = (1).to_bytes(32, "little")
    forged = IdentityCard("alice", VerifyKey(identity_point), card.agreement_key, identity_point + bytes(32))
    with pytest.raises(InvalidKey, match="small order"):
        forged.verify()
    low = IdentityCard("alice", card.verify_key, AgreementPublicKey(bytes(32)), card.signature)
    with pytest.raises(InvalidKey, match="low order"):
        low.verify()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: {**d, "extra": 1},
        lambda d: {k: v for k, v in d.items() if k != "sig"},
        lambda d: {**d, "type": "something-else"},
        lambda d: {**d, "ed25519": d["ed25519"][:31]},
        lambda d: {**d, "name": 5},
        lambda d: [d],
    ],
)
def test_malformed_cards(mutate) -> None:  # type: ignore[no-untyped-def]
    data = encoding.decode(Identity.generate("a").card().to_bytes())
    with pytest.raises(EncodingError):
        IdentityCard.from_bytes(encoding.encode(mutate(data)))


def test_save_and_load(tmp_path: Path) -> None:
    alice = Identity.generate("alice")
    path = tmp_path / "alice.identity"
    alice.save(path, "s3cret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    raw = path.read_bytes()
    assert alice.signing_key.to_bytes() not in raw and alice.agreement_key.to_bytes() not in raw
    back = Identity.load(str(path), b"s3cret")
    assert back.name == "alice"
    assert back.signing_key.to_bytes() == alice.signing_key.to_bytes()
    assert back.agreement_key.to_bytes() == alice.agreement_key.to_bytes()
    assert back.card() == alice.card()
    with pytest.raises(InvalidKey):
        Identity.load(path, "wrong")
    with pytest.raises(InvalidArgument):
        alice.save(tmp_path / "x", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.identity"]  # no temp files left


def test_tampered_file(tmp_path: Path) -> None:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    path = tmp_path / "alice.identity"
    alice.save(path, "pw")
    fields = encoding.decode(path.read_bytes())
    assert isinstance(fields, dict)
    # bob's card next to alice's keys: the keys do not match the card
    path.write_bytes(encoding.encode({**fields, "card": bob.card().to_bytes()}))
    with pytest.raises(InvalidKey, match="does not match"):
        Identity.load(path, "pw")
    # weaker key-derivation parameters are refused
    path.write_bytes(encoding.encode({**fields, "kdf": {**fields["kdf"], "n": 2}}))  # type: ignore[dict-item]
    with pytest.raises(EncodingError):
        Identity.load(path, "pw")
    path.write_bytes(b"\x00garbage")
    with pytest.raises(EncodingError):
        Identity.load(path, "pw")


def test_identity_constructor_types() -> None:
    with pytest.raises(InvalidArgumentType):
        Identity("a", object(), object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        Identity("a", SigningKey.generate(), object())  # type: ignore[arg-type]


def test_import_fedledger_stays_cheap() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import fedledger; dt = time.perf_counter() - t; "
        "assert 'numpy' not in sys.modules and 'cryptography' not in sys.modules and 'cbor2' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'cryptography', 'cbor2')); "
        "print(dt)"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert float(out.stdout) < 0.3
    assert "Identity" in dir(fedledger) and "IdentityCard" in fedledger.__all__
    with pytest.raises(AttributeError):
        fedledger.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_scrypt_lives_in_the_crypto_layer() -> None:
    from fedledger import identity
    from fedledger.crypto import kdf

    # RFC 7914 section 12, the N=1024 vector.
    want = bytes.fromhex(
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
    )
    assert kdf.scrypt_password(b"password", salt=b"NaCl", n=1024, r=8, p=16, length=64) == want
    assert kdf.scrypt_password("password", salt=b"NaCl", n=1024, r=8, p=16, length=64) == want
    # The identity file's PEM password is the hex of that function at the fixed cost.
    salt = bytes(range(16))
    hardened = identity._harden("pw", {"name": "scrypt", "salt": salt, "n": 2**15, "r": 8, "p": 1})
    assert hardened == kdf.scrypt_password("pw", salt=salt, n=2**15, r=8, p=1).hex().encode()
    with pytest.raises(InvalidArgument):
        kdf.scrypt_password("", salt=salt, n=1024, r=8, p=1)
    with pytest.raises(InvalidArgument):
        kdf.scrypt_password("pw", salt=salt, n=1000, r=8, p=1)
    with pytest.raises(InvalidArgument):
        kdf.scrypt_password("pw", salt=salt, n=2**40, r=8, p=1)
    with pytest.raises(InvalidArgumentType):
        kdf.scrypt_password("pw", salt="salt", n=1024, r=8, p=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        kdf.scrypt_password("pw", salt=salt, n=1024.0, r=8, p=1)  # type: ignore[arg-type]
    assert "fedledger.crypto.kdf" in sys.modules
