"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/), deterministically.

Seeds are small valid encodings of every core format plus regression inputs: each input that
once made a decoder raise something other than FedLedgerError (or broke a target's property)
is kept, named ``regress-<what>``. Add a crasher found by a campaign here (preferred: the
test that compares the corpus with this generator then keeps them in step), or copy the crash
file into the corpus as ``crash-<what>``. Run: ``PYTHONPATH=src python tests/fuzz/make_corpus.py``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for hostile.py

import cbor2  # noqa: E402
from hostile import identity, samples  # noqa: E402

from fedledger import encoding  # noqa: E402
from fedledger.ledger.transaction import Transaction, wire_frame  # noqa: E402


def _nested(depth: int) -> encoding.Value:
    value: encoding.Value = 0
    for _ in range(depth):
        value = [value]
    return value


def cbor_seeds() -> dict[str, bytes]:
    seeds = {f"valid-{name}": data for name, data in samples().items()}
    tx = Transaction.from_bytes(seeds["valid-transaction"])
    seeds["valid-transaction-body"] = tx.body
    values: list[encoding.Value] = [
        None,
        True,
        False,
        0,
        23,
        24,
        255,
        256,
        65536,
        2**32,
        2**64 - 1,
        -1,
        -25,
        -(2**64),
        1.5,
        -0.0,
        float("inf"),
        1e300,
        5.960464477539063e-08,
        "",
        "a" * 23,
        "a" * 24,
        "é€😀",
        b"",
        b"\x00" * 24,
        [],
        {},
        [1, [2, [3]]],
        {"a": 1, "b": [True, None], "aa": {"": b""}},
        _nested(64),
    ]
    for value in values:
        data = encoding.encode(value)
        seeds[f"valid-{hashlib.sha256(data).hexdigest()[:12]}"] = data
    # Inputs that once escaped as another exception or broke a property (see git log).
    seeds["regress-bignum-tag-5000-digits"] = cbor2.dumps(cbor2.CBORTag(2, b"\xff" * 1800))
    seeds["regress-datetime-tag"] = bytes.fromhex("c11a514b67b0")
    seeds["regress-shared-cyclic-tag"] = cbor2.dumps(cbor2.CBORTag(28, [cbor2.CBORTag(29, 0)]))
    seeds["regress-int-map-key"] = bytes.fromhex("a10102")
    seeds["regress-duplicate-key"] = bytes.fromhex("a2616101616102")
    seeds["regress-deep-arrays"] = b"\x81" * 200 + b"\x00"
    seeds["regress-giant-length"] = b"\x5b" + (2**63).to_bytes(8, "big") + b"\x00"
    return seeds


def transaction_seeds() -> dict[str, bytes]:
    alice = identity(0)
    seeds: dict[str, bytes] = {}
    payloads: list[encoding.Value] = [
        None,
        {},
        {"round": 1, "digest": bytes(32)},
        [1, -1, 2.5, "x", b"y"],
        {"card": b"\x01" * 40, "stake": 10},
        _nested(50),
    ]
    for i, payload in enumerate(payloads):
        tx = Transaction.create(alice, kind=f"kind.{i}", payload=payload, nonce=i, chain_id="consortium-1")
        seeds[f"valid-{i}"] = tx.to_bytes()
    tx = Transaction.from_bytes(seeds["valid-2"])
    body = encoding.decode(tx.body)
    assert isinstance(body, dict)

    def with_field(key: str, value: object) -> bytes:
        return wire_frame(cbor2.dumps({**body, key: value}, canonical=True), tx.signature)

    seeds["regress-bignum-tag-in-type"] = with_field("type", cbor2.CBORTag(2, b"\xff" * 1800))
    seeds["regress-empty-chain"] = with_field("chain", "")
    seeds["regress-control-character-kind"] = with_field("kind", "a\nb")
    seeds["regress-short-signature"] = wire_frame(tx.body, b"\x00" * 10)
    seeds["regress-nonce-2-63"] = with_field("nonce", 2**63)
    return seeds


def main() -> None:
    for target, seeds in (("cbor", cbor_seeds()), ("transaction", transaction_seeds())):
        directory = HERE / "corpus" / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
        print(f"{directory}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
