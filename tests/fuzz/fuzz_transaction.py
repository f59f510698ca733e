"""Coverage-guided fuzz target: Transaction.from_bytes and from_authenticated_bytes.

Properties checked on every input:

* only FedLedgerError escapes either parser (anything else is a crash);
* a transaction that from_bytes accepts round-trips: to_bytes() gives the input back, and
  Transaction.body_for (the rules of Transaction.create) rebuilds its body byte for byte, so
  everything that parses could have been created;
* from_authenticated_bytes accepts everything from_bytes accepts, as the same transaction.

Run it with ``python tests/fuzz/run.py --targets transaction`` (see docs/fuzzing.md); replay
one input with ``python tests/fuzz/fuzz_transaction.py path/to/crash-file``.
"""

from __future__ import annotations

import sys


def check(data: bytes) -> None:
    """The property for one input; raises (not FedLedgerError) when it is violated."""
    from fedledger.errors import FedLedgerError
    from fedledger.ledger.transaction import Transaction

    try:
        tx = Transaction.from_bytes(data)
    except FedLedgerError:
        tx = None
    else:
        if tx.to_bytes() != data:
            raise AssertionError(f"to_bytes() differs from the parsed bytes: {data.hex()}")
        body = Transaction.body_for(tx.chain_id, tx.kind, tx.sender, tx.nonce, tx.payload)
        if body != tx.body:
            raise AssertionError(f"a parsed transaction's body is not what create makes: {data.hex()}")
    try:
        loose = Transaction.from_authenticated_bytes(data)
    except FedLedgerError:
        if tx is not None:
            raise AssertionError(f"from_authenticated_bytes refused what from_bytes accepted: {data.hex()}") from None
        return
    if tx is not None and (loose != tx or loose.id != tx.id or loose.payload != tx.payload):
        raise AssertionError(f"from_authenticated_bytes parsed another transaction: {data.hex()}")


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["fedledger"]):
        import fedledger.encoding  # noqa: F401
        import fedledger.ledger.transaction  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
