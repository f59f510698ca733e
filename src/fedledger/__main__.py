"""The fedledger command line.

    fedledger info                       the native build report, as JSON
    fedledger ledger verify PATH [--head FILE]
                                         full audit of a ledger file (read-only); with --head,
                                         also against a signed tree head kept elsewhere
    fedledger ledger head PATH           the signed tree head (JSON): keep it elsewhere
    fedledger ledger genesis PATH        the genesis record (JSON): an auditor's trust anchor
    fedledger ledger show PATH [--height H] [--force]
                                         --force: what can be read of a file that fails the
                                         audit, marked unverified (forensics)
    fedledger ledger prove PATH TX_ID    a receipt (JSON) that anyone can check offline
    fedledger ledger export PATH         every block and transaction, as JSON lines
    fedledger receipt verify FILE (--genesis FILE | --validators FILE [--chain-id ID])
    fedledger audit export PATH [--format fhir|csv]
                                         the access trail (and consents) of a verified ledger:
                                         a FHIR R4B Bundle (needs 'fedledger[fhir]') or CSV
    fedledger audit report PATH [--format text|json]
                                         HIPAA 164.312(b) audit report: accesses by subject and
                                         by resource, denials and break-glass for review
    fedledger blob put STORE FILE        store a file ('-': stdin); prints its CID
    fedledger blob get STORE CID [-o FILE]
                                         the object's bytes (stdout, or FILE written atomically)
    fedledger blob stat STORE CID        size and sealed size (JSON)
    fedledger blob shred STORE CID --ledger PATH --identity FILE --reason TEXT
                                         destroy the object's key and record the erasure;
                                         the identity's password comes from the environment
                                         variable FEDLEDGER_IDENTITY_PASSWORD, else a prompt
    fedledger node init DIR --chain-id ID --validators NAME:STAKE,... [--members NAME,...]
                                         a new consortium: identities and genesis.json in DIR
    fedledger node run --genesis FILE --identity FILE --data DIR --etcd URL,... [--listen H:P]
                                         one consortium node (fedledger node --help: how)
    fedledger node status URL            a running node's height, round and state root
    fedledger demo [--rounds N] [--out DIR] [--aggregator masked|paillier|plain]
                   [--alpha A] [--seed S] [--fedprox MU] [--quiet]
                                         five hospitals train a model under consent on a new
                                         ledger in DIR (needs 'fedledger[demo]')

Every ledger command opens the file read-only and changes nothing.
Exit codes: 0 success, 1 verification failed (tampered ledger, invalid receipt, corrupted
object), 2 bad usage or input, 3 not found (or erased).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
#: Where ``blob shred`` reads the identity file's password (else it prompts).
PASSWORD_ENV = "FEDLEDGER_IDENTITY_PASSWORD"


def _parser() -> argparse.ArgumentParser:
    from fedledger._version import __version__

    parser = argparse.ArgumentParser(
        prog="fedledger", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fedledger {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the native build report (kernels, OpenSSL, GMP, OpenMP) as JSON")
    ledger = sub.add_parser("ledger", help="inspect, audit and prove a ledger file")
    ledger.add_argument(
        "--contracts",
        default="",
        help="contract classes the ledger pinned or deployed, besides the built-in ones: "
        "'module:Class,module:Class' (importable from the current directory or PYTHONPATH)",
    )
    lsub = ledger.add_subparsers(dest="action", required=True)
    verify = lsub.add_parser(
        "verify", help="full audit: hash chain, Merkle roots, signatures, quorum, nonces, contract replay, state roots"
    )
    verify.add_argument("path")
    verify.add_argument(
        "--head",
        help="a signed tree head kept elsewhere (from 'fedledger ledger head'): "
        "detects a file whose newest blocks were cut off",
    )
    for name, text in (
        ("export", "every block with its transactions, one JSON object per line"),
        ("head", "the signed tree head (JSON), to keep somewhere the ledger's host cannot rewrite"),
        ("genesis", "the genesis record (JSON), an auditor's trust anchor for receipts"),
    ):
        lsub.add_parser(name, help=text).add_argument("path")
    show = lsub.add_parser("show", help="summary, or one block with --height")
    show.add_argument("path")
    show.add_argument("--height", type=int)
    show.add_argument(
        "--force", action="store_true", help="if the audit fails, print what can be read anyway, marked unverified"
    )
    prove = lsub.add_parser("prove", help="receipt for a transaction id (hex)")
    prove.add_argument("path")
    prove.add_argument("tx_id")
    prove.add_argument(
        "--outcome", action="store_true", help="also prove what the transaction did (accepted, or denied and why)"
    )
    receipt = sub.add_parser("receipt", help="check receipts offline")
    rsub = receipt.add_subparsers(dest="action", required=True)
    check = rsub.add_parser("verify", help="verify a receipt JSON file ('-' for stdin)")
    check.add_argument("file")
    check.add_argument("--genesis", help="the genesis record you trust (what 'fedledger ledger genesis' prints)")
    check.add_argument(
        "--validators",
        help="the validator set you trust: JSON [[hex key, stake], ...] or what 'fedledger ledger show' prints",
    )
    check.add_argument("--chain-id", help="the chain the receipt must be of (needed with a bare --validators list)")
    audit = sub.add_parser("audit", help="the access trail and consents for auditors: FHIR or CSV, HIPAA report")
    audit.add_argument(
        "--contracts", default="", help="the ledger's contracts besides the built-in ones (module:Class,...)"
    )
    asub = audit.add_subparsers(dest="action", required=True)
    export = asub.add_parser(
        "export", help="the access trail as a FHIR R4B Bundle (AuditEvent and Consent resources) or as CSV"
    )
    export.add_argument("path")
    export.add_argument("--format", choices=("fhir", "csv"), default="fhir", help="fhir (default) or csv")
    report = asub.add_parser(
        "report", help="HIPAA 164.312(b) report: accesses by subject and resource, denials, break-glass"
    )
    report.add_argument("path")
    report.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    blob = sub.add_parser("blob", help="the off-chain blob store: put, get, stat, shred")
    bsub = blob.add_subparsers(dest="action", required=True)
    put = bsub.add_parser("put", help="store a file ('-' for stdin) and print its CID")
    put.add_argument("store")
    put.add_argument("file")
    get = bsub.add_parser("get", help="write an object's bytes to stdout or -o FILE")
    get.add_argument("store")
    get.add_argument("cid")
    get.add_argument("-o", "--output", help="write here (atomically, only once the object verified)")
    stat = bsub.add_parser("stat", help="an object's size and sealed size, as JSON")
    stat.add_argument("store")
    stat.add_argument("cid")
    shred = bsub.add_parser("shred", help="erase an object (destroy its key) and record it on the ledger")
    shred.add_argument("store")
    shred.add_argument("cid")
    shred.add_argument("--ledger", required=True, help="the ledger file that records the erasure")
    shred.add_argument(
        "--contracts", default="", help="the ledger's contracts besides the built-in ones (module:Class,...)"
    )
    shred.add_argument(
        "--identity",
        required=True,
        help=f"a member's identity file (its password from ${PASSWORD_ENV}, else a prompt)",
    )
    shred.add_argument("--reason", required=True, help="why (recorded on the ledger; no personal data)")
    from fedledger.node.usage import HOW_A_NODE_STARTS

    node = sub.add_parser(
        "node",
        help="run a consortium node: one replica and one key, ordering through etcd (needs 'fedledger[node]')",
        description=HOW_A_NODE_STARTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    nsub = node.add_subparsers(dest="action", required=True)
    ninit = nsub.add_parser("init", help="identities and genesis.json for a new consortium")
    ninit.add_argument("dir", help="a folder for genesis.json and the NAME.identity files")
    ninit.add_argument("--chain-id", required=True, help="the chain's name")
    ninit.add_argument("--validators", required=True, metavar="NAME:STAKE,...", help="validators and their stake")
    ninit.add_argument("--members", default="", metavar="NAME,...", help="members that do not validate")
    ninit.add_argument("--contracts", default="", metavar="module:Class,...", help="contracts beside the built-ins")
    nrun = nsub.add_parser("run", help="run one node until SIGTERM")
    nrun.add_argument("--genesis", required=True, help="the consortium's genesis.json")
    nrun.add_argument("--identity", required=True, help=f"this member's identity file (password: ${PASSWORD_ENV})")
    nrun.add_argument("--data", required=True, help="this node's folder (ledger replica, vote record)")
    nrun.add_argument("--etcd", required=True, metavar="URL,...", help="the etcd members' client URLs")
    nrun.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="HTTP interface (default: any port)")
    nrun.add_argument("--name", help="the node's name in etcd (default: the identity's)")
    nrun.add_argument("--contracts", default="", metavar="module:Class,...", help="contracts beside the built-ins")
    nrun.add_argument(
        "--round-timeout", type=float, default=2.0, metavar="S", help="seconds before a silent round is skipped"
    )
    nrun.add_argument(
        "--batch-delay", type=float, default=0.05, metavar="S", help="seconds a proposer gathers transactions"
    )
    nrun.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="kernel threads for signature checks (default 1: a node checks in small slices between "
        "consensus messages, and idle OpenMP threads spin on cores that other processes need)",
    )
    nrun.add_argument(
        "--keep-heights",
        type=int,
        default=1000,
        metavar="N",
        help="blocks etcd keeps below the lowest head any node published; older ones are pruned "
        "(0: keep everything; default 1000)",
    )
    nrun.add_argument(
        "--max-block-txs", type=int, default=None, metavar="N", help="transactions per block at most (default 2000)"
    )
    nstatus = nsub.add_parser("status", help="a running node's status (JSON)")
    nstatus.add_argument("url", help="the node's HTTP address, e.g. http://127.0.0.1:8700")
    demo = sub.add_parser(
        "demo", help="federated training among five hospitals on a new ledger, end to end (needs 'fedledger[demo]')"
    )
    demo.add_argument("--rounds", type=int, default=20, metavar="N", help="training rounds (default 20)")
    demo.add_argument(
        "--out", metavar="DIR", help="a new or empty output folder (default: a new ./fedledger-demo-out[-N])"
    )
    demo.add_argument(
        "--aggregator",
        choices=("masked", "paillier", "plain"),
        default="masked",
        help="masked (SecAgg+ masking, default), paillier (packed Paillier, 2-of-3 trustees) or plain "
        "(the baseline: sealed, but visible to the aggregator)",
    )
    demo.add_argument(
        "--alpha", type=float, default=0.5, metavar="A", help="Dirichlet alpha of the non-IID split (default 0.5)"
    )
    demo.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the data split and the training (default 0)"
    )
    demo.add_argument("--fedprox", type=float, default=0.0, metavar="MU", help="FedProx proximal term mu (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress lines; only the final table")
    bench = sub.add_parser(
        "bench",
        help="what the two encryption layers cost on this machine: plain, sealed, masked, Paillier, with and "
        "without sealing, over a grid of sites N and parameters D",
    )
    bench.add_argument("--clients", default="5,10", metavar="N,...", help="numbers of sites (default 5,10)")
    bench.add_argument(
        "--dims", default="10000,100000", metavar="D,...", help="parameters per update (default 10000,100000)"
    )
    bench.add_argument(
        "--variants",
        default="plain,sealed,masked,masked+sealed,paillier,paillier+sealed",
        metavar="V,...",
        help="which of plain, sealed, masked, masked+sealed, paillier, paillier+sealed (default: all)",
    )
    bench.add_argument(
        "--neighbors", default="3", metavar="K", help="SecAgg+ neighbors per site, 'auto' or 'all' (default 3)"
    )
    bench.add_argument("--key-bits", type=int, default=2048, metavar="B", help="Paillier key size (default 2048)")
    bench.add_argument(
        "--paillier-max-d", type=int, default=10_000, metavar="D", help="skip Paillier above this D (default 10000)"
    )
    bench.add_argument(
        "--train-seconds",
        type=float,
        metavar="S",
        help="also state each variant's overhead as a share of a round whose local training takes S s per site",
    )
    bench.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the random updates (default 0)")
    bench.add_argument(
        "--repeat", type=int, default=3, metavar="R", help="rounds per cell, the median kept (Paillier: 1; default 3)"
    )
    bench.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    bench.add_argument("--csv", metavar="FILE", help="write one row per variant and (N, D) as CSV")
    bench.add_argument("--plot", metavar="FILE", help="a PNG bar chart of each round's critical path (matplotlib)")
    return parser


def _block_json(block: Any) -> dict[str, Any]:
    h = block.header
    return {
        "height": h.height,
        "hash": h.hash.hex(),
        "prev": h.prev_hash.hex(),
        "time_ms": h.time_ms,
        "proposer": h.proposer.hex(),
        "tx_root": h.tx_root.hex(),
        "log_size": h.log_size,
        "log_root": h.log_root.hex(),
        "validators_hash": h.validators_hash.hex(),
        "state_root": h.state_root.hex(),
        "outcome_root": h.outcome_root.hex(),
        "signers": [k.hex() for k, _ in block.certificate.signatures],
        "transactions": [
            {
                "id": t.id.hex(),
                "kind": t.kind,
                "sender": t.sender.to_bytes().hex(),
                "nonce": t.nonce,
                "bytes": t.to_bytes().hex(),
                "accepted": o.ok,
                "reason": o.reason,
            }
            for t, o in zip(block.transactions, block.outcomes)
        ],
    }


def load_contracts(spec: str) -> list[Any]:
    """fedledger's built-in contracts plus the classes named in ``spec`` ('module:Class,...')."""
    import importlib

    from fedledger.contracts import BUILTIN
    from fedledger.ledger import Contract

    out: list[Any] = list(BUILTIN)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        module_name, _, attr = item.partition(":")
        if not module_name or not attr:
            raise _UsageError(f"--contracts: expected module:Class, got {item!r}")
        if "" not in sys.path:
            sys.path.insert(0, "")  # the current directory, as 'python -m' has it
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise _UsageError(f"--contracts: cannot load {item}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Contract)):
            raise _UsageError(f"--contracts: {item} is not a Contract class")
        out.append(cls)
    return out


def _open(path: str, contracts: str = "") -> Any:
    from fedledger.ledger import Ledger

    return Ledger.open(path, read_only=True, contracts=load_contracts(contracts))


def _read(path: str, what: str) -> bytes:
    from fedledger.errors import NotFound

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no {what} file at {path}") from None


def _ledger(args: argparse.Namespace) -> int:
    from fedledger.errors import TamperedLedger

    head = None
    if args.action == "verify" and args.head:
        from fedledger.ledger import SignedTreeHead

        head = SignedTreeHead.from_json(_read(args.head, "tree head"))
    try:
        opened = _open(args.path, args.contracts)
    except TamperedLedger as exc:
        if args.action == "show" and args.force:
            return _forensic_show(args.path, args.height, exc)
        raise
    with opened as ledger:
        if args.action == "verify":
            ledger.verify(head=head)
            against = f"; matches the head kept at height {head.height}" if head is not None else ""
            print(
                f"ok: {ledger.chain_id}, {ledger.height} blocks, {ledger.log_size} transactions, "
                f"log root {ledger.tree_head().log_root.hex() if ledger.height else '-'}{against}"
            )
        elif args.action == "head":
            print(ledger.tree_head().to_json())
        elif args.action == "genesis":
            print(ledger.genesis.to_json())
        elif args.action == "show":
            if args.height is None:
                print(
                    json.dumps(
                        {
                            "chain_id": ledger.chain_id,
                            "height": ledger.height,
                            "log_size": ledger.log_size,
                            "validators": [[k.hex(), s] for k, s in ledger.validators.to_value()],
                        },
                        indent=2,
                    )
                )
            else:
                print(json.dumps(_block_json(ledger.block(args.height)), indent=2))
        elif args.action == "prove":
            try:
                tx_id = bytes.fromhex(args.tx_id)
            except ValueError:
                print(f"fedledger: TX_ID must be hex, got {args.tx_id!r}", file=sys.stderr)
                return EXIT_USAGE
            print(ledger.prove(tx_id, outcome=args.outcome).to_json())
        else:  # export
            for h in range(1, ledger.height + 1):
                print(json.dumps(_block_json(ledger.block(h))))
    return EXIT_OK


def _forensic_show(path: str, height: int | None, failure: Exception) -> int:
    """What can be read of a file that fails the audit: nothing here is verified."""
    from fedledger.ledger import BlockHeader, Genesis, Transaction
    from fedledger.ledger.store import SQLiteStore

    def attempt(parse: Any, data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # forensics: report whatever the bytes are
            return f"unreadable: {type(exc).__name__}: {exc}"

    store = SQLiteStore(path, read_only=True)
    try:
        genesis = store.get_meta("genesis")
        out: dict[str, Any] = {
            "UNVERIFIED": f"this file fails the audit ({failure}); nothing below is verified",
            "genesis": None
            if genesis is None
            else attempt(lambda b: json.loads(Genesis.from_bytes(b).to_json()), genesis),
            "blocks": store.count("blocks"),
            "transaction_rows": store.count("txs"),
        }
        if height is not None:
            stored = store.block(height)
            out["block"] = (
                None
                if stored is None
                else {
                    "height": stored.height,
                    "stored_hash": bytes(stored.hash).hex(),
                    "header": attempt(
                        lambda b: {
                            k: v.hex() if isinstance(v, bytes) else v
                            for k, v in BlockHeader.from_bytes(b).__dict__.items()
                        },
                        stored.header,
                    ),
                    "transactions": [
                        {
                            "seq": row.seq,
                            "id": bytes(row.id).hex(),
                            "kind": row.kind,
                            "parsed": attempt(lambda b: Transaction.from_bytes(b).id.hex(), row.data),
                        }
                        for row in store.block_txs(height)
                    ],
                }
            )
        print(json.dumps(out, indent=2, default=str))
    finally:
        store.close()
    return EXIT_INVALID


class _UsageError(Exception):
    """Bad command-line input: exit 2 with this message."""


def _trusted_validators(path: str) -> tuple[Any, str | None]:
    """The validator set in --validators FILE, and the chain id when the file names one."""
    from fedledger.errors import FedLedgerError
    from fedledger.ledger import ValidatorSet

    expected = "--validators FILE must hold [[hex key, stake], ...] or what 'fedledger ledger show' prints"
    try:
        value = json.loads(_read(path, "validators"))
    except (ValueError, RecursionError):
        raise _UsageError(f"{expected}; {path} is not JSON") from None
    chain_id = None
    if isinstance(value, dict) and "validators" in value:
        chain_id = value.get("chain_id")
        if chain_id is not None and not isinstance(chain_id, str):
            raise _UsageError(f"{expected}; its chain_id is not text")
        value = value["validators"]
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise _UsageError(f"{expected}; got {type(value).__name__}")
    try:
        stakes = {}
        for key, stake in value:
            if not isinstance(key, str) or type(stake) is not int:
                raise ValueError
            stakes[bytes.fromhex(key)] = stake
        return ValidatorSet(stakes), chain_id
    except ValueError:
        raise _UsageError(f"{expected}; an entry is not [hex key, integer stake]") from None
    except FedLedgerError as exc:
        raise _UsageError(f"--validators FILE: {exc}") from None


def _receipt(args: argparse.Namespace) -> int:
    from fedledger.ledger import Genesis, verify_receipt

    if args.genesis and args.validators:
        raise _UsageError("give one trust anchor: --genesis FILE or --validators FILE, not both")
    chain_id: str | None
    if args.genesis:
        genesis = Genesis.from_json(_read(args.genesis, "genesis"))
        trusted, chain_id = genesis.validators, genesis.chain_id
        if args.chain_id is not None and args.chain_id != chain_id:
            raise _UsageError(f"--chain-id {args.chain_id!r} differs from the genesis record's {chain_id!r}")
    elif args.validators:
        trusted, named = _trusted_validators(args.validators)
        if named is not None and args.chain_id is not None and named != args.chain_id:
            raise _UsageError(f"--chain-id {args.chain_id!r} differs from the validators file's {named!r}")
        chain_id = args.chain_id or named
        if chain_id is None:
            raise _UsageError("--validators with a bare list needs --chain-id ID (the chain the receipt must be of)")
    else:
        raise _UsageError(
            "a receipt proves nothing without a trust anchor: give --genesis FILE (what "
            "'fedledger ledger genesis' prints) or --validators FILE (the validator set you trust)"
        )
    text = _read(args.file, "receipt")
    tx = verify_receipt(text, chain_id=chain_id, trusted_validators=trusted)
    print(f"ok: transaction {tx.id.hex()} ({tx.kind}) is in the ledger {tx.chain_id}")
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    """Export or report the access trail; the ledger is fully verified first."""
    from fedledger import audit

    if args.action == "export" and args.format == "fhir":
        from fedledger.audit import fhir

        fhir.fhir_models()  # MissingDependency before the (longer) audit, not after
    with _open(args.path, args.contracts) as ledger:
        if args.action == "report":
            report = audit.hipaa_report(ledger)  # verifies the ledger
            sys.stdout.write(
                json.dumps(report, indent=2) + "\n" if args.format == "json" else audit.format_report(report)
            )
            return EXIT_OK
        ledger.verify()
        if args.format == "csv":
            sys.stdout.write(audit.csv_text(audit.access_events(ledger)))
        else:
            print(fhir.bundle(ledger).model_dump_json(indent=2))
    return EXIT_OK


def _blob(args: argparse.Namespace) -> int:
    from fedledger.blobstore import BlobStore

    store = BlobStore(args.store)
    if args.action == "put":
        if args.file == "-":
            cid = store.put(sys.stdin.buffer.read())
        else:
            try:
                cid = store.put_file(args.file)
            except FileNotFoundError:
                raise _UsageError(f"no file at {args.file}") from None
        print(cid)
    elif args.action == "get":
        if args.output is None:
            with store.open(args.cid) as f:
                while block := f.read(1 << 20):
                    sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
        else:
            out = Path(args.output)
            tmp = out.with_name(f".{out.name}.partial")
            try:
                with store.open(args.cid) as f, open(tmp, "wb") as w:
                    while block := f.read(1 << 20):
                        w.write(block)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
    elif args.action == "stat":
        info = store.stat(args.cid)
        print(json.dumps({"cid": info.cid, "size": info.size, "sealed_size": info.sealed_size}))
    else:
        return _shred(store, args)
    return EXIT_OK


def _shred(store: Any, args: argparse.Namespace) -> int:
    import getpass

    from fedledger.errors import QuorumNotReached
    from fedledger.identity import Identity
    from fedledger.ledger import Ledger

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = getpass.getpass(f"password for {args.identity}: ")
    if not Path(args.identity).is_file():
        raise _UsageError(f"no identity file at {args.identity}")
    identity = Identity.load(args.identity, password)
    if not Path(args.ledger).is_file():
        raise _UsageError(f"no ledger file at {args.ledger}")
    contracts = load_contracts(getattr(args, "contracts", ""))
    with Ledger.open(args.ledger, read_only=True, contracts=contracts) as peek:
        is_validator = identity.verify_key.to_bytes() in peek.validators
    with Ledger.open(args.ledger, local_validators=[identity] if is_validator else [], contracts=contracts) as ledger:
        tx = store.shred(args.cid, ledger=ledger, identity=identity, reason=args.reason)
        try:
            block = ledger.commit()
        except QuorumNotReached:
            ledger.abandon_proposal()
            print(f"erased {args.cid}; the erasure record needs the validators' votes: relay this transaction")
            print(tx.to_bytes().hex())
            return EXIT_OK
    print(f"erased {args.cid}; recorded as transaction {tx.id.hex()} in block {block.height}")
    return EXIT_OK


def _node(args: argparse.Namespace) -> int:
    if args.action == "status":
        from fedledger.node.client import status

        print(json.dumps(status(args.url), indent=2))
        return EXIT_OK
    import asyncio
    import getpass

    from fedledger.node import cli

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = getpass.getpass("password for the identity files: ")
    contracts = load_contracts(args.contracts)
    if args.action == "init":
        members = [m.strip() for m in args.members.split(",") if m.strip()]
        genesis = cli.init(
            Path(args.dir), args.chain_id, cli.parse_validators(args.validators), members, contracts, password
        )
        print(json.dumps({"genesis": str(Path(args.dir) / "genesis.json"), "hash": genesis.hash.hex()}))
        return EXIT_OK
    from fedledger.identity import Identity
    from fedledger.ledger import Genesis

    genesis = Genesis.from_json(_read(args.genesis, "genesis"))
    if not Path(args.identity).is_file():
        raise _UsageError(f"no identity file at {args.identity}")
    identity = Identity.load(args.identity, password)
    etcd = [u.strip() for u in args.etcd.split(",") if u.strip()]
    import fedledger

    fedledger.set_num_threads(args.threads)
    asyncio.run(
        cli.run(
            genesis,
            identity,
            Path(args.data),
            etcd,
            args.listen,
            name=args.name,
            contracts=contracts,
            round_timeout=args.round_timeout,
            batch_delay=args.batch_delay,
            max_block_txs=args.max_block_txs,
            keep_heights=args.keep_heights or None,
        )
    )
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from fedledger.demo.scenario import DemoOptions, run

    run(
        DemoOptions(
            rounds=args.rounds,
            out=Path(args.out) if args.out else None,
            aggregator=args.aggregator,
            alpha=args.alpha,
            seed=args.seed,
            fedprox=args.fedprox,
            quiet=args.quiet,
        )
    )
    return EXIT_OK


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise _UsageError(f"{what}: expected comma-separated integers, got {text!r}") from None


def _bench(args: argparse.Namespace) -> int:
    from fedledger import overhead

    neighbors: int | str | None = {"auto": "auto", "all": None}.get(args.neighbors, args.neighbors)
    if isinstance(neighbors, str) and neighbors != "auto":
        neighbors = _ints(neighbors, "--neighbors")[0]
    cells, facts = overhead.run_grid(
        _ints(args.clients, "--clients"),
        _ints(args.dims, "--dims"),
        [v.strip() for v in args.variants.split(",") if v.strip()],
        neighbors=neighbors,
        key_bits=args.key_bits,
        paillier_max_d=args.paillier_max_d,
        train_seconds=args.train_seconds,
        seed=args.seed,
        repeat=args.repeat,
        progress=lambda line: print(line, file=sys.stderr),
    )
    print(overhead.render(cells, facts, args.train_seconds))
    for skipped in facts["skipped"]:
        print(f"skipped: {skipped}")
    if args.json:
        Path(args.json).write_text(overhead.to_json(cells, facts))
    if args.csv:
        Path(args.csv).write_text(overhead.to_csv(cells))
    if args.plot:
        overhead.plot(cells, args.plot)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        import fedledger

        try:
            info = fedledger.build_info()
        except ImportError as exc:
            print(f"fedledger: {exc}", file=sys.stderr)
            return EXIT_INVALID
        print(json.dumps(info, indent=2))
        return EXIT_OK
    from fedledger.errors import CorruptBlob, Erased, FedLedgerError, InvalidProof, NotFound, TamperedLedger

    try:
        if args.command == "blob":
            return _blob(args)
        if args.command == "audit":
            return _audit(args)
        if args.command == "node":
            return _node(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "bench":
            return _bench(args)
        return _ledger(args) if args.command == "ledger" else _receipt(args)
    except _UsageError as exc:
        print(f"fedledger: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotFound as exc:
        print(f"fedledger: not found: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except Erased as exc:
        print(f"fedledger: erased: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (TamperedLedger, InvalidProof, CorruptBlob) as exc:
        print(f"fedledger: FAILED: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (FedLedgerError, OSError, ValueError) as exc:
        print(f"fedledger: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
