"""Signing, verification and sealing speed, with the peers in the same run.

    PYTHONPATH=src python -m pytest benches/bench_signing.py --benchmark-only \
        --benchmark-json=.benchmarks/signing.json

Groups hold fedledger and its peers on identical inputs; compare medians within a group.
- verify: 10^4 Ed25519 signatures of 256-byte messages by 10^4 distinct keys:
  fedledger.verify_batch (native, OpenMP) vs a Python loop over cryptography's verify (key
  objects built beforehand, the peer's best case) vs a loop over PyNaCl's (libsodium).
- sign: 10^4 signatures of 256-byte messages: fedledger vs cryptography vs PyNaCl.
- seal/unseal: one 1 MiB and one 100 MiB payload (AES-256-GCM).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedledger.crypto import seal, signing

nacl_signing = pytest.importorskip("nacl.signing")

N = 10_000
MSG_SIZE = 256
ROUNDS = 5


@pytest.fixture(scope="module")
def corpus() -> dict[str, list]:
    rng = np.random.default_rng(2026)
    seeds = [rng.bytes(32) for _ in range(N)]
    msgs = [rng.bytes(MSG_SIZE) for _ in range(N)]
    sks = [signing.SigningKey.from_bytes(s) for s in seeds]
    sigs = [sk.sign(m) for sk, m in zip(sks, msgs)]
    return {
        "seeds": seeds,
        "msgs": msgs,
        "sigs": sigs,
        "sks": sks,
        "vks": [sk.verify_key for sk in sks],
        "crypto_sks": [Ed25519PrivateKey.from_private_bytes(s) for s in seeds],
        "crypto_pks": [Ed25519PrivateKey.from_private_bytes(s).public_key() for s in seeds],
        "nacl_sks": [nacl_signing.SigningKey(s) for s in seeds],
        "nacl_vks": [nacl_signing.SigningKey(s).verify_key for s in seeds],
    }


# --- verify ---------------------------------------------------------------------------------


@pytest.mark.benchmark(group="verify 10^4 x 256 B")
def test_verify_fedledger_batch(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    vks, msgs, sigs = corpus["vks"], corpus["msgs"], corpus["sigs"]
    benchmark.extra_info["items"] = N
    ok = benchmark.pedantic(signing.verify_batch, args=(vks, msgs, sigs), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert ok.all()


@pytest.mark.benchmark(group="verify 10^4 x 256 B")
def test_verify_cryptography_loop(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    pks, msgs, sigs = corpus["crypto_pks"], corpus["msgs"], corpus["sigs"]

    def loop() -> int:
        for pk, m, s in zip(pks, msgs, sigs):
            pk.verify(s, m)
        return len(pks)

    benchmark.extra_info["items"] = N
    assert benchmark.pedantic(loop, rounds=ROUNDS, iterations=1, warmup_rounds=1) == N


@pytest.mark.benchmark(group="verify 10^4 x 256 B")
def test_verify_pynacl_loop(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    vks, msgs, sigs = corpus["nacl_vks"], corpus["msgs"], corpus["sigs"]

    def loop() -> int:
        for vk, m, s in zip(vks, msgs, sigs):
            vk.verify(m, s)
        return len(vks)

    benchmark.extra_info["items"] = N
    assert benchmark.pedantic(loop, rounds=ROUNDS, iterations=1, warmup_rounds=1) == N


@pytest.mark.benchmark(group="verify 1 x 256 B")
def test_verify_fedledger_single(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    vk, m, s = corpus["vks"][0], corpus["msgs"][0], corpus["sigs"][0]
    benchmark(signing.verify, vk, m, s)


@pytest.mark.benchmark(group="verify 1 x 256 B")
def test_verify_cryptography_single(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    pk, m, s = corpus["crypto_pks"][0], corpus["msgs"][0], corpus["sigs"][0]
    benchmark(pk.verify, s, m)


# --- sign -----------------------------------------------------------------------------------


@pytest.mark.benchmark(group="sign 10^4 x 256 B")
def test_sign_fedledger(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    sks, msgs = corpus["sks"], corpus["msgs"]
    benchmark.extra_info["items"] = N
    sigs = benchmark.pedantic(lambda: [sk.sign(m) for sk, m in zip(sks, msgs)], rounds=ROUNDS, iterations=1)
    assert sigs == corpus["sigs"]


@pytest.mark.benchmark(group="sign 10^4 x 256 B")
def test_sign_cryptography(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    sks, msgs = corpus["crypto_sks"], corpus["msgs"]
    benchmark.extra_info["items"] = N
    benchmark.pedantic(lambda: [sk.sign(m) for sk, m in zip(sks, msgs)], rounds=ROUNDS, iterations=1)


@pytest.mark.benchmark(group="sign 10^4 x 256 B")
def test_sign_pynacl(benchmark, corpus) -> None:  # type: ignore[no-untyped-def]
    sks, msgs = corpus["nacl_sks"], corpus["msgs"]
    benchmark.extra_info["items"] = N
    benchmark.pedantic(lambda: [sk.sign(m).signature for sk, m in zip(sks, msgs)], rounds=ROUNDS, iterations=1)


# --- seal / unseal --------------------------------------------------------------------------

CTX = seal.SealContext(sender="st-marys", receiver="aggregator", round=1, purpose="update")
KEY = bytes(range(32))
SIZES = {"1MiB": 1 << 20, "100MiB": 100 << 20}


@pytest.mark.parametrize("size", list(SIZES))
def test_seal(benchmark, size: str) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(SIZES[size])
    benchmark.group = f"seal {size}"
    benchmark.extra_info["bytes"] = SIZES[size]
    rounds = 20 if size == "1MiB" else ROUNDS
    sealed = benchmark.pedantic(seal.seal, args=(KEY, payload, CTX), rounds=rounds, iterations=1, warmup_rounds=1)
    assert len(sealed) == SIZES[size] + seal.OVERHEAD


@pytest.mark.parametrize("size", list(SIZES))
def test_unseal(benchmark, size: str) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(SIZES[size])
    sealed = seal.seal(KEY, payload, CTX)
    benchmark.group = f"unseal {size}"
    benchmark.extra_info["bytes"] = SIZES[size]
    rounds = 20 if size == "1MiB" else ROUNDS
    opened = benchmark.pedantic(seal.unseal, args=(KEY, sealed, CTX), rounds=rounds, iterations=1, warmup_rounds=1)
    assert opened == payload
