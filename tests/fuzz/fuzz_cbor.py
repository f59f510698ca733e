"""Coverage-guided fuzz target: fedledger.encoding.decode and decode_authenticated.

Properties checked on every input:

* only FedLedgerError escapes either decoder (anything else is a crash);
* what decode accepts is canonical: encode(decode(data)) == data, byte for byte;
* decode_authenticated accepts everything decode accepts, with the same value.

Run it with ``python tests/fuzz/run.py --targets cbor`` (see docs/fuzzing.md), or directly:
``python tests/fuzz/fuzz_cbor.py CORPUS_DIR -max_total_time=60``; replay one input with
``python tests/fuzz/fuzz_cbor.py path/to/crash-file``.
"""

from __future__ import annotations

import sys


def check(data: bytes) -> None:
    """The property for one input; raises (not FedLedgerError) when it is violated."""
    from fedledger import encoding
    from fedledger.errors import FedLedgerError

    try:
        value = encoding.decode(data)
    except FedLedgerError:
        accepted = False
    else:
        accepted = True
        again = encoding.encode(value)
        if again != data:
            raise AssertionError(f"decode accepted non-canonical bytes: {data.hex()} re-encodes as {again.hex()}")
    try:
        loose = encoding.decode_authenticated(data)
    except FedLedgerError:
        if accepted:
            raise AssertionError(f"decode_authenticated refused what decode accepted: {data.hex()}") from None
        return
    if accepted and encoding.encode_decoded(loose) != data:
        raise AssertionError(f"decode_authenticated gave another value than decode: {data.hex()}")


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["fedledger"]):
        import fedledger.encoding  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
