"""Hostile bytes against the SecAgg message decoders and the state machines behind them.

Every ``from_bytes`` is fed truncations, bit flips, every field replaced by a value of
another type or an extreme one (decoded, replaced, re-encoded canonically with
:mod:`fedledger.encoding`, so that the field checks are reached and not just the CBOR
decoder), fields removed or added, giant declared lengths and deep nesting. Only
:class:`~fedledger.errors.FedLedgerError` subclasses may escape, each call within a bounded
time, and a message whose bytes changed never verifies. Hostile messages that parse are
then re-signed by their genuine sender (a malicious party signs whatever it likes) and
delivered to the receiving state machine, which may refuse them only with a typed error.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedledger import Identity, encoding, secagg
from fedledger.crypto import seal
from fedledger.errors import EncodingError, FedLedgerError, InvalidSignature
from fedledger.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    Message,
    RelayedShares,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)

KINDS: Final = (AdvertiseKeys, KeyDirectory, ShareKeys, RelayedShares, MaskedInput, UnmaskRequest, UnmaskResponse)
#: The most one decode (or one state-machine step on a small round) may take, in seconds.
TIME_LIMIT: Final = 2.0
FEW: Final = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IDS: Final = {name: Identity.generate(name) for name in ("c0", "c1", "c2", "c3", "aggregator")}
KEYS: Final = {name: ident.verify_key for name, ident in IDS.items()}


def _samples() -> dict[type[Message], Message]:
    """One genuine, signed message of each kind."""
    c1, srv = IDS["c1"], IDS["aggregator"]
    adv = AdvertiseKeys(
        round_id=5, sender="c1", receiver="aggregator", seal_key=bytes(range(32)), mask_key=bytes(range(1, 33))
    ).signed(c1)
    out: list[Message] = [
        adv,
        KeyDirectory(
            round_id=5,
            sender="aggregator",
            receiver="c1",
            participants=("c0", "c1", "c2"),
            adverts=(adv.to_bytes(), adv.to_bytes()),
            server_key=b"\x09" * 32,
        ).signed(srv),
        ShareKeys(
            round_id=5,
            sender="c1",
            receiver="aggregator",
            sealed={"c1": b"", "c2": b"\x07" * 60},
            digests={"c1": b"\x01" * 64, "c2": b"\x02" * 64},
        ).signed(c1),
        RelayedShares(round_id=5, sender="aggregator", receiver="c1", sealed={"c2": b"\x05" * 60}).signed(srv),
        MaskedInput(round_id=5, sender="c1", receiver="aggregator", data=b"\x03" * 40, weight=3, complaints=("c2",))
        .with_root()
        .signed(c1),
        UnmaskRequest(
            round_id=5, sender="aggregator", receiver="c1", survivors=("c0", "c1", "c2"), dropped=("c3",)
        ).signed(srv),
        UnmaskResponse(round_id=5, sender="c1", receiver="aggregator", sealed=b"\x04" * 50).signed(c1),
    ]
    return {type(m): m for m in out}


SAMPLES: Final = _samples()


# -- framing: the CBOR header, and for MaskedInput the length prefix and raw tail ----------


def split(kind: type[Message], data: bytes) -> tuple[bytes, bytes]:
    """(CBOR header, raw tail)."""
    if kind is MaskedInput:
        (hl,) = struct.unpack(">I", data[:4])
        return data[4 : 4 + hl], data[4 + hl :]
    return data, b""


def join(kind: type[Message], head: bytes, tail: bytes) -> bytes:
    return struct.pack(">I", len(head)) + head + tail if kind is MaskedInput else head


def canonical(value: Any) -> bytes:
    """fedledger's encoding where the value is in its data model, else cbor2's canonical
    mode (giant ints, deep nesting: for the decoder to refuse)."""
    try:
        return encoding.encode(value)
    except FedLedgerError:
        return cbor2.dumps(value, canonical=True)


def parse(kind: type[Message], data: Any) -> Message | None:
    """``kind.from_bytes(data)``: the message, or None after a FedLedgerError; anything else
    fails the test, and so does a slow decode."""
    t0 = time.perf_counter()
    try:
        msg = kind.from_bytes(data)
    except FedLedgerError:
        msg = None
    assert time.perf_counter() - t0 < TIME_LIMIT
    return msg


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a decoded header: map keys and list indices, all depths."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*prefix, i))
            out += paths(v, (*prefix, i))
    return out


def nested(depth: int) -> Any:
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


#: Values of every type of the data model and beyond it, at the edges of their ranges.
hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**64), 2**64, 2**70]),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from([float("inf"), -0.0, 5.0]),
    st.text(max_size=8),
    st.sampled_from(["", "c1", "aggregator", "fedledger/secagg/v1", "masked_input", "\x00"]),
    st.binary(max_size=80),
    st.sampled_from([b"", bytes(32), bytes(64), b"\xff" * 33]),
    st.lists(st.one_of(st.text(max_size=3), st.binary(max_size=3), st.integers()), max_size=4),
    st.dictionaries(
        st.text(max_size=3), st.one_of(st.binary(max_size=3), st.integers(), st.text(max_size=3)), max_size=3
    ),
    st.integers(60, 70).map(nested),
)


def mutate(head: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    """A copy of ``head`` with the item at ``path`` replaced by ``value``, removed, or with
    ``value`` added beside it under a new key (lists: appended)."""
    head = cbor2.loads(cbor2.dumps(head))  # deep copy
    parent = head
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "remove":
        del parent[last]
    elif isinstance(parent, dict):
        parent["extra"] = value
    else:
        parent.append(value)
    return head


@dataclass
class Hostile:
    kind: type[Message]
    data: bytes


@st.composite
def field_mutations(draw: st.DrawFn, kinds: tuple[type[Message], ...] = KINDS) -> Hostile:
    kind = draw(st.sampled_from(kinds))
    head_bytes, tail = split(kind, SAMPLES[kind].to_bytes())
    head = encoding.decode(head_bytes)
    path = draw(st.sampled_from(paths(head)))
    op = draw(st.sampled_from(["replace", "replace", "replace", "remove", "add"]))
    new = mutate(head, path, op, draw(hostile_values))
    return Hostile(kind, join(kind, canonical(new), tail))


# -- the decoders ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_samples_parse_and_verify(kind: type[Message]) -> None:
    msg = SAMPLES[kind]
    back = kind.from_bytes(msg.to_bytes())
    back.verify(KEYS[msg.sender])
    assert back.to_bytes() == msg.to_bytes()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_body_with_an_unknown_or_a_missing_key_is_malformed(kind: type[Message]) -> None:
    # One message, one encoding: a field nobody checks cannot ride along under a signature.
    head_bytes, tail = split(kind, SAMPLES[kind].to_bytes())
    head = encoding.decode(head_bytes)
    assert isinstance(head, dict) and isinstance(head["body"], dict)
    first = sorted(head["body"])[0]
    for op, path in (("add", ("body", first)), ("remove", ("body", first))):
        with pytest.raises(EncodingError, match="body keys"):
            kind.from_bytes(join(kind, encoding.encode(mutate(head, path, op, b"")), tail))


@FEW
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_truncated_messages_raise_typed_errors(kind: type[Message], data: st.DataObject) -> None:
    raw = SAMPLES[kind].to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert parse(kind, raw[:cut]) is None


@FEW
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_bit_flipped_messages_raise_typed_errors_or_never_verify(kind: type[Message], data: st.DataObject) -> None:
    raw = bytearray(SAMPLES[kind].to_bytes())
    for pos in data.draw(st.lists(st.integers(0, 8 * len(raw) - 1), min_size=1, max_size=3, unique=True)):
        raw[pos // 8] ^= 1 << (pos % 8)
    msg = parse(kind, bytes(raw))
    if msg is not None and bytes(raw) != SAMPLES[kind].to_bytes():
        with pytest.raises(InvalidSignature):
            msg.verify(KEYS[SAMPLES[kind].sender])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=field_mutations())
def test_every_field_of_the_wrong_type_or_range_raises_a_typed_error(hostile: Hostile) -> None:
    msg = parse(hostile.kind, hostile.data)
    if msg is None:
        return
    # It parsed: it is well-formed, round-trips, and its old signature does not cover it.
    assert msg.to_bytes() == hostile.data
    if hostile.data != SAMPLES[hostile.kind].to_bytes():
        with pytest.raises(InvalidSignature):
            msg.verify(KEYS[SAMPLES[hostile.kind].sender])


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("head", [b"\x5b", b"\x7b", b"\x9b", b"\xbb"], ids=["bytes", "text", "array", "map"])
def test_giant_declared_lengths_in_any_field_raise_typed_errors_fast(kind: type[Message], head: bytes) -> None:
    # Each field's value in turn becomes a CBOR head declaring 2^62 (or 2^64 - 1) items,
    # with nothing behind it: nothing may be allocated for it.
    msg = SAMPLES[kind]
    head_bytes, tail = split(kind, msg.to_bytes())
    decoded = encoding.decode(head_bytes)
    marker = b"\xa5MARKER\xa5"
    for path in paths(decoded):
        spliced = canonical(mutate(decoded, path, "replace", marker))
        enc = cbor2.dumps(marker)
        for length in (2**62, 2**64 - 1):
            raw = spliced.replace(enc, head + length.to_bytes(8, "big"))
            assert parse(kind, join(kind, raw, tail)) is None


def test_a_giant_or_short_header_length_raises_a_typed_error() -> None:
    raw = SAMPLES[MaskedInput].to_bytes()
    for hl in (0, 1, 2**24, 2**24 + 1, 2**31, 2**32 - 1, len(raw)):
        assert parse(MaskedInput, struct.pack(">I", hl) + raw[4:]) is None
    for short in (b"", b"\x00", b"\x00\x00\x00"):
        assert parse(MaskedInput, short) is None


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deep_nesting_in_any_field_raises_a_typed_error_fast(kind: type[Message], depth: int) -> None:
    msg = SAMPLES[kind]
    head_bytes, tail = split(kind, msg.to_bytes())
    decoded = encoding.decode(head_bytes)
    marker = b"\xa5MARKER\xa5"
    for path in paths(decoded)[:12]:
        spliced = canonical(mutate(decoded, path, "replace", marker))
        raw = spliced.replace(cbor2.dumps(marker), b"\x81" * depth + b"\x00")
        assert parse(kind, join(kind, raw, tail)) is None


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("data", ["text", 7, None, [b"x"], {"p": 1}, 3.5, object()], ids=repr)
def test_a_non_bytes_argument_raises_a_typed_error(kind: type[Message], data: Any) -> None:
    assert parse(kind, data) is None


@FEW
@given(kind=st.sampled_from(KINDS), junk=st.binary(max_size=200))
def test_random_bytes_raise_typed_errors(kind: type[Message], junk: bytes) -> None:
    assert parse(kind, junk) is None or junk == SAMPLES[kind].to_bytes()


@FEW
@given(content=hostile_values, extra=st.booleans())
def test_sealed_unmask_shares_of_any_shape_raise_typed_errors(content: Any, extra: bool) -> None:
    # A client seals whatever it likes under the genuine key: open_shares refuses any
    # content but the map {"b": {dealer: bytes}, "s": {dealer: bytes}}.
    key = bytes(range(32))
    ctx = seal.SealContext(sender="c1", receiver="aggregator", round=5, purpose="fedledger/secagg/unmask")
    for body in (content, {"b": content, "s": {}}, {"b": {}, "s": content}, {"b": {"c0": content}, "s": {}}):
        if extra and isinstance(body, dict):
            body = {**body, "x": 1}
        msg = UnmaskResponse(
            round_id=5, sender="c1", receiver="aggregator", sealed=seal.seal(key, canonical(body), ctx)
        )
        try:
            seeds, keys = msg.open_shares(key, ctx)
        except FedLedgerError:
            continue
        assert all(type(v) is bytes for v in [*seeds.values(), *keys.values()])


# -- hostile but signed: into the state machines ---------------------------------------------

NAMES: Final = ["c0", "c1", "c2", "c3"]


class Round:
    """A four-client round driven by hand up to the stage where ``kind`` is delivered: the
    genuine messages of that stage, and the parties waiting for them."""

    def __init__(self, kind: type[Message]) -> None:
        config = secagg.SecAggConfig(neighbors=None, max_weight=5, round_id=5)
        self.server = secagg.SecAggServer(IDS["aggregator"], config, clients=NAMES, verify_keys=KEYS, dimension=3)
        self.clients = {c: secagg.SecAggClient(IDS[c], config, server="aggregator", verify_keys=KEYS) for c in NAMES}
        self.kind = kind
        self.genuine: dict[str, Message] = {c: self.clients[c].advertise_keys() for c in NAMES}
        if kind is AdvertiseKeys:
            return
        dirs = self.server.key_directories(self.genuine.values())  # type: ignore[arg-type]
        self.genuine = dict(dirs)
        if kind is KeyDirectory:
            return
        shares = {c: self.clients[c].share_keys(dirs[c]) for c in NAMES}
        self.genuine = dict(shares)
        if kind is ShareKeys:
            return
        relayed = self.server.relay_shares(shares.values())
        self.genuine = dict(relayed)
        if kind is RelayedShares:
            return
        inputs = {c: self.clients[c].masked_input(relayed[c], np.full(3, 0.5), 2) for c in NAMES}
        self.genuine = dict(inputs)
        if kind is MaskedInput:
            return
        requests = self.server.unmask_requests(inputs.values())
        self.genuine = dict(requests)
        if kind is UnmaskRequest:
            return
        self.genuine = {c: self.clients[c].unmask(requests[c]) for c in NAMES}

    def deliver(self, bad: Message) -> None:
        """``bad`` in place of c1's message (or the server's message to c1), with the
        others' genuine ones: the receiver may refuse it, typed."""
        others = [m for c, m in self.genuine.items() if c != "c1"]
        server, client = self.server, self.clients["c1"]
        steps: dict[type[Message], Callable[[], object]] = {
            AdvertiseKeys: lambda: server.key_directories([bad, *others]),  # type: ignore[list-item]
            ShareKeys: lambda: server.relay_shares([bad, *others]),  # type: ignore[list-item]
            MaskedInput: lambda: server.unmask_requests([bad, *others]),  # type: ignore[list-item]
            UnmaskResponse: lambda: server.aggregate([bad, *others]),  # type: ignore[list-item]
            KeyDirectory: lambda: client.share_keys(bad),  # type: ignore[arg-type]
            RelayedShares: lambda: client.masked_input(bad, np.full(3, 0.5), 2),  # type: ignore[arg-type]
            UnmaskRequest: lambda: client.unmask(bad),  # type: ignore[arg-type]
        }
        t0 = time.perf_counter()
        try:
            steps[self.kind]()
        except FedLedgerError:
            pass
        assert time.perf_counter() - t0 < TIME_LIMIT


@st.composite
def signed_mutations(draw: st.DrawFn) -> tuple[Round, Message]:
    kind = draw(st.sampled_from(KINDS))
    rnd = Round(kind)
    genuine = rnd.genuine["c1"]
    head_bytes, tail = split(kind, genuine.to_bytes())
    head = encoding.decode(head_bytes)
    body_paths = [p for p in paths(head) if p[0] == "body"] + [("round",), ("from",), ("to",)]
    path = draw(st.sampled_from(body_paths))
    new = mutate(head, path, draw(st.sampled_from(["replace", "replace", "remove", "add"])), draw(hostile_values))
    msg = parse(kind, join(kind, canonical(new), tail))
    if msg is None:
        msg = genuine
    sender = msg.sender if msg.sender in IDS else genuine.sender
    return rnd, replace(msg, sender=sender).signed(IDS[sender])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=signed_mutations())
def test_signed_hostile_fields_are_refused_typed_by_the_receiving_state_machine(case: tuple[Round, Message]) -> None:
    rnd, bad = case
    rnd.deliver(bad)


@pytest.mark.parametrize("weight", [0, 6, 2**63 - 1])
def test_a_signed_masked_input_declaring_an_impossible_weight_is_refused(weight: int) -> None:
    rnd = Round(MaskedInput)
    bad = replace(rnd.genuine["c1"], weight=weight).signed(IDS["c1"])  # type: ignore[type-var]
    assert rnd.server.receive_masked_input(MaskedInput.from_bytes(bad.to_bytes())) is False
    assert "max_weight=5" in rnd.server.rejected["c1"]
    requests = rnd.server.unmask_requests([m for c, m in rnd.genuine.items() if c != "c1"])  # type: ignore[misc]
    assert sorted(requests) == ["c0", "c2", "c3"] and rnd.server.dropped == {"c1": "masked_input"}


# -- bad arguments to the public API ----------------------------------------------------------


def _server(**kw: Any) -> secagg.SecAggServer:
    args: dict[str, Any] = {
        "identity": IDS["aggregator"],
        "config": secagg.SecAggConfig(),
        "clients": NAMES,
        "verify_keys": KEYS,
        "dimension": 3,
        **kw,
    }
    return secagg.SecAggServer(**args)


_UPDATES: Final = {c: np.zeros(3) for c in NAMES}
_CFG: Final = secagg.SecAggConfig(neighbors=None)

BAD_CALLS: Final[dict[str, Callable[[], object]]] = {
    "run_round config": lambda: secagg.run_round(_UPDATES, None),  # type: ignore[arg-type]
    "run_round updates": lambda: secagg.run_round([np.zeros(3)] * 3, _CFG),  # type: ignore[arg-type]
    "run_round update dtype": lambda: secagg.run_round({c: np.zeros(3, dtype=np.int64) for c in NAMES}, _CFG),
    "run_round update objects": lambda: secagg.run_round({c: [None, 1] for c in NAMES}, _CFG),  # type: ignore[misc]
    "run_round weights": lambda: secagg.run_round(_UPDATES, _CFG, weights=[1, 2]),  # type: ignore[arg-type]
    "run_round dropouts": lambda: secagg.run_round(_UPDATES, _CFG, ["c1"]),  # type: ignore[arg-type]
    "run_round identities": lambda: secagg.run_round(_UPDATES, _CFG, identities={"c0": "c0"}),  # type: ignore[dict-item]
    "server identity": lambda: _server(identity="aggregator"),
    "server config": lambda: _server(config=None),
    "server clients": lambda: _server(clients=None),
    "server client names": lambda: _server(clients=[1, 2, 3]),
    "server clients as one str": lambda: _server(clients="c0c1c2"),
    "server verify_keys": lambda: _server(verify_keys=None),
    "server messages": lambda: _server().key_directories(5),  # type: ignore[arg-type]
    "server one message": lambda: _server().key_directories(SAMPLES[AdvertiseKeys]),  # type: ignore[arg-type]
    "client server": lambda: secagg.SecAggClient(IDS["c0"], _CFG, server=3, verify_keys=KEYS),  # type: ignore[arg-type]
    "client verify_keys": lambda: secagg.SecAggClient(IDS["c0"], _CFG, server="aggregator", verify_keys=None),  # type: ignore[arg-type]
    "graph ids": lambda: secagg.neighbor_graph([1, 2, 3], 2, b""),  # type: ignore[list-item]
    "graph ids as one str": lambda: secagg.neighbor_graph("abc", 2, b""),
    "graph k": lambda: secagg.neighbor_graph(["a", "b"], -1, b""),
    "graph seed": lambda: secagg.neighbor_graph(["a", "b", "c"], 2, "seed"),  # type: ignore[arg-type]
    "config degree": lambda: _CFG.degree(0),
    "config threshold_for": lambda: _CFG.threshold_for(None),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("call", list(BAD_CALLS), ids=str)
def test_bad_arguments_to_the_public_api_raise_typed_errors(call: str) -> None:
    with pytest.raises(FedLedgerError):
        BAD_CALLS[call]()
