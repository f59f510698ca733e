"""phe is an optional dependency of fedledger.crypto.paillier: importing the package never
imports it, and without it the calls that need phe objects raise MissingDependency naming
the extra, while packed vectors and the JWK forms keep working."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import fedledger
from fedledger.crypto import paillier as P
from fedledger.errors import FedLedgerError, MissingDependency

SRC = str(Path(fedledger.__file__).resolve().parents[1])


def test_importing_the_package_does_not_import_phe() -> None:
    code = (
        "import sys\n"
        "import fedledger\n"
        "import fedledger.crypto.paillier as P\n"
        "from fedledger.crypto.paillier import _common, interop, keys, packing, threshold, vectors\n"
        "pk, sk = P.generate_keypair(512, insecure_for_tests=True)\n"
        "v = pk.encrypt_vector([0.5, -0.25])\n"
        "assert [round(float(x), 3) for x in sk.decrypt_vector(v + v)] == [1.0, -0.5]\n"
        "assert P.PublicKey.from_jwk(pk.to_jwk(), insecure_for_tests=True) == pk\n"
        "assert 'phe' not in sys.modules, 'phe was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def no_phe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import phe`` fail, as when the extra is not installed."""
    monkeypatch.setitem(sys.modules, "phe", None)


def test_phe_calls_without_phe_raise_missing_dependency(no_phe: None) -> None:
    pk, sk = P.generate_keypair(512, insecure_for_tests=True)  # fresh: no cached phe keys
    calls: list[tuple[str, Callable[[], object]]] = [
        ("PublicKey.encrypt", lambda: pk.encrypt(1)),
        ("PrivateKey.decrypt", lambda: sk.decrypt(object())),
        ("PublicKey.to_phe", pk.to_phe),
        ("PrivateKey.to_phe", sk.to_phe),
        ("PublicKey.from_phe", lambda: P.PublicKey.from_phe(object())),
        ("PrivateKey.from_phe", lambda: P.PrivateKey.from_phe(object())),
        ("to_phe", lambda: P.to_phe(pk)),
        ("from_phe", lambda: P.from_phe(object())),
        ("encrypted_numbers_to_json", lambda: P.encrypted_numbers_to_json([object()])),
        ("encrypted_numbers_from_json", lambda: P.encrypted_numbers_from_json("{}")),
    ]
    for name, call in calls:
        with pytest.raises(MissingDependency, match=r"fedledger\[phe\]") as info:
            call()
        assert isinstance(info.value, FedLedgerError) and isinstance(info.value, ImportError), name
        assert info.value.name == "phe" and info.value.extra == "phe", name


def test_without_phe_vectors_and_jwks_still_work(no_phe: None) -> None:
    pk, sk = P.generate_keypair(512, insecure_for_tests=True)
    v = pk.encrypt_vector([0.5, -0.25, 1.0], clip=1.0, max_summands=4)
    np.testing.assert_allclose(sk.decrypt_vector(P.sum_vectors([v, v])), [1.0, -0.5, 2.0], atol=1e-3)
    assert P.PublicKey.from_jwk(pk.to_jwk(), insecure_for_tests=True) == pk
    assert P.PrivateKey.from_jwk(sk.to_jwk(), insecure_for_tests=True) == sk
    # A packed vector is refused as a phe number for what it is, with or without phe.
    with pytest.raises(FedLedgerError, match="decrypt_vector"):
        sk.decrypt(v)
