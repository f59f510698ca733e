"""Contracts: deterministic state machines driven by ledger transactions.

A contract is a class with a ``name``, a ``version`` and methods marked :func:`call` (signed,
recorded, may change state) or :func:`view` (a read at a height, never recorded)::

    class Counter(Contract):
        name = "counter"
        version = 1

        @call
        def add(self, state: ContractState, ctx: CallContext, amount: int) -> int:
            if amount <= 0:
                raise ContractError("amount must be positive")
            state["total"] = state.get("total", 0) + amount
            return state["total"]

        @view
        def total(self, state: ContractState, ctx: CallContext) -> int:
            return state.get("total", 0)

A method sees only its state and its :class:`CallContext` (sender, height, block time): no
clock, no randomness, no I/O. Replaying the chain therefore runs every call again and reaches
the same state, which the state root in every block header checks. A call either returns
(its writes are kept, its return value recorded) or raises :class:`ContractError` (its writes
are dropped and the call is recorded as denied, with the reason). Contracts hold no instance
state: setting an attribute on one raises.

Arguments are checked against the method's annotations before a call is admitted: ``bytes``,
``str``, ``int``, ``bool``, ``list[...]``, ``dict[str, ...]``, ``X | None`` and ``object``
(any encodable value), with the size limits below.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar, Union

from fedledger import encoding
from fedledger.errors import (
    ContractError,
    ContractMismatch,
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidCall,
)

__all__ = [
    "MAX_ARG_BYTES",
    "MAX_ARG_ITEMS",
    "MAX_KEY_CHARS",
    "MAX_VALUE_BYTES",
    "CallContext",
    "Contract",
    "ContractState",
    "call",
    "view",
]

#: The longest ``str`` or ``bytes`` argument, in characters or bytes.
MAX_ARG_BYTES: Final = 4096
#: The most items a ``list`` or ``dict`` argument of a call may hold.
MAX_ARG_ITEMS: Final = 1024
#: The same for a view (not recorded: a training cohort may be large).
MAX_VIEW_ITEMS: Final = 1_000_000
#: The longest state key, in characters.
MAX_KEY_CHARS: Final = 256
#: The largest encoded state value or return value.
MAX_VALUE_BYTES: Final = 16 * 1024
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CallContext:
    """What a contract method may know besides its state.

    ``sender`` is the caller's Ed25519 key (None in a view), ``height`` and ``time_ms`` the
    block's, ``tx_id`` the call's transaction id (None in a view), and ``validators`` the keys
    of the validator set in force (consortium operators).
    """

    sender: bytes | None
    height: int
    time_ms: int
    tx_id: bytes | None
    validators: frozenset[bytes]


def call(fn: F) -> F:
    """Mark a contract method as a call: signed, recorded, may change state."""
    fn._fedledger_method = "call"  # type: ignore[attr-defined]
    return fn


def view(fn: F) -> F:
    """Mark a contract method as a view: a read of the state at a height, never recorded."""
    fn._fedledger_method = "view"  # type: ignore[attr-defined]
    return fn


# -- argument checking ------------------------------------------------------------------------

Checker = Callable[[object, str], None]


def _fail(path: str, what: str) -> typing.NoReturn:
    raise InvalidCall(f"argument {path}: {what}")


def _checker(annotation: object, where: str, items: int = MAX_ARG_ITEMS) -> Checker:
    """A function that raises InvalidCall unless a decoded value fits ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is bytes or annotation is str:
        kind = annotation

        def check_blob(v: object, path: str) -> None:
            if type(v) is not kind:
                _fail(path, f"expected {kind.__name__}, got {type(v).__name__}")
            if len(v) > MAX_ARG_BYTES:
                _fail(path, f"is {len(v)} long, the limit is {MAX_ARG_BYTES}")

        return check_blob
    if annotation is int:

        def check_int(v: object, path: str) -> None:
            if type(v) is not int or not -(2**63) <= v < 2**63:
                _fail(path, f"expected a 64-bit int, got {encoding.short_repr(v)}")

        return check_int
    if annotation is bool:

        def check_bool(v: object, path: str) -> None:
            if type(v) is not bool:
                _fail(path, f"expected bool, got {type(v).__name__}")

        return check_bool
    if annotation is object or annotation is Any:
        return lambda v, path: None  # the payload is already canonical CBOR; sizes are bounded by it
    if annotation is type(None):

        def check_none(v: object, path: str) -> None:
            if v is not None:
                _fail(path, f"expected None, got {type(v).__name__}")

        return check_none
    if origin in (Union, types.UnionType):
        options = [_checker(a, where, items) for a in args]

        def check_union(v: object, path: str) -> None:
            for option in options:
                try:
                    option(v, path)
                    return
                except InvalidCall:
                    continue
            _fail(path, f"expected {annotation}, got {encoding.short_repr(v)}")

        return check_union
    if origin is list and len(args) == 1:
        item = _checker(args[0], where, items)

        def check_list(v: object, path: str) -> None:
            if type(v) is not list:
                _fail(path, f"expected a list, got {type(v).__name__}")
            if len(v) > items:
                _fail(path, f"has {len(v)} items, the limit is {items}")
            for i, x in enumerate(v):
                item(x, f"{path}[{i}]")

        return check_list
    if origin is dict and len(args) == 2 and args[0] is str:
        value = _checker(args[1], where, items)

        def check_dict(v: object, path: str) -> None:
            if type(v) is not dict:
                _fail(path, f"expected a dict, got {type(v).__name__}")
            if len(v) > items:
                _fail(path, f"has {len(v)} items, the limit is {items}")
            for k, x in v.items():
                if type(k) is not str:
                    _fail(path, "keys must be text")
                value(x, f"{path}[{k!r}]")

        return check_dict
    raise InvalidArgument(where, f"unsupported argument annotation {annotation!r}")


@dataclass(frozen=True)
class MethodSpec:
    """A contract method as the ledger sees it: its kind and how to check its arguments."""

    name: str
    kind: str  # "call" or "view"
    function: Callable[..., Any]
    params: dict[str, Checker]
    required: frozenset[str]

    def check_args(self, contract: str, args: object) -> dict[str, encoding.Value]:
        """``args`` if they fit the method's signature; InvalidCall naming what does not."""
        where = f"{contract}.{self.name}"
        if type(args) is not dict:
            raise InvalidCall(f"{where}: args must be a map of name to value")
        unknown = sorted(set(args) - set(self.params), key=str)
        if unknown:
            raise InvalidCall(f"{where}: unknown argument(s) {unknown}; it takes {sorted(self.params)}")
        missing = sorted(self.required - set(args))
        if missing:
            raise InvalidCall(f"{where}: missing argument(s) {missing}")
        for name, value in args.items():
            self.params[name](value, f"{where}({name})")
        return args


def _annotation(fn: Callable[..., Any], param: inspect.Parameter, where: str) -> object:
    """A parameter's annotation, evaluated in the function's module if it is a string."""
    annotation = param.annotation
    if annotation is param.empty:
        raise InvalidArgument(where, f"argument {param.name} needs a type annotation")
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, vars(typing) | dict(fn.__globals__))  # noqa: S307 - the contract's own source
        except Exception as exc:
            raise InvalidArgument(
                where, f"argument {param.name}: annotation {annotation!r} cannot be resolved: {exc}"
            ) from None
    return annotation


def _method_spec(cls: type, attr: str, fn: Callable[..., Any]) -> MethodSpec:
    where = f"{cls.__name__}.{attr}"
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 3 or [p.name for p in params[:1]] != ["self"]:
        raise InvalidArgument(where, "a contract method takes (self, state, ctx, ...arguments)")
    checkers: dict[str, Checker] = {}
    required = set()
    for p in params[3:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise InvalidArgument(where, f"argument {p.name}: only named arguments are supported")
        items = MAX_VIEW_ITEMS if fn._fedledger_method == "view" else MAX_ARG_ITEMS  # type: ignore[attr-defined]
        checkers[p.name] = _checker(_annotation(fn, p, where), f"{where}({p.name})", items)
        if p.default is p.empty:
            required.add(p.name)
    return MethodSpec(attr, fn._fedledger_method, fn, checkers, frozenset(required))  # type: ignore[attr-defined]


# -- state -------------------------------------------------------------------------------------


def _check_key(key: object) -> str:
    if type(key) is not str:
        raise ContractError(f"state keys are text, got {type(key).__name__}")
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise ContractError(f"state keys are 1-{MAX_KEY_CHARS} printable characters, got {key[:40]!r}")
    return key


class ContractState:
    """One contract's key-value state as a call sees it: text keys, encodable values.

    Values are stored encoded and decoded on every read, so mutating a value read from the
    state changes nothing until it is written back. (What is read was encoded by this class,
    canonically, so reads skip decode's canonical re-check.) :meth:`read` reads another contract's
    state (never writes it).
    """

    __slots__ = ("_prefix", "_read", "_writes")

    def __init__(self, contract: str, read: Callable[[bytes], bytes | None]) -> None:
        self._prefix = b"c/" + contract.encode() + b"/"
        self._read = read
        self._writes: dict[bytes, bytes | None] = {}

    def _raw(self, full: bytes) -> bytes | None:
        return self._writes[full] if full in self._writes else self._read(full)

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._raw(self._prefix + _check_key(key).encode())
        return default if raw is None else encoding.decode_authenticated(raw)

    def __getitem__(self, key: str) -> Any:
        raw = self._raw(self._prefix + _check_key(key).encode())
        if raw is None:
            raise KeyError(key)
        return encoding.decode_authenticated(raw)

    def __contains__(self, key: object) -> bool:
        return self._raw(self._prefix + _check_key(key).encode()) is not None

    def __setitem__(self, key: str, value: Any) -> None:
        full = self._prefix + _check_key(key).encode()
        try:
            raw = encoding.encode(value)
        except EncodingError as exc:
            raise ContractError(f"state value for {key!r} is not encodable: {exc}") from None
        if len(raw) > MAX_VALUE_BYTES:
            raise ContractError(f"state value for {key!r} is {len(raw)} bytes, the limit is {MAX_VALUE_BYTES}")
        self._writes[full] = raw

    def __delitem__(self, key: str) -> None:
        self._writes[self._prefix + _check_key(key).encode()] = None

    def read(self, contract: str, key: str) -> Any:
        """The value of ``key`` in another contract's state, or None."""
        raw = self._raw(b"c/" + str(contract).encode() + b"/" + _check_key(key).encode())
        return None if raw is None else encoding.decode_authenticated(raw)

    @property
    def writes(self) -> dict[bytes, bytes | None]:
        """The full keys this call wrote (None: deleted), for the ledger to apply."""
        return self._writes


# -- the base class ----------------------------------------------------------------------------


class Contract:
    """Base class of ledger contracts. Subclasses set ``name`` and ``version`` and mark their
    methods with :func:`call` or :func:`view`; see the module docstring."""

    name: ClassVar[str]
    version: ClassVar[int]
    _methods: ClassVar[dict[str, MethodSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods: dict[str, MethodSpec] = {}
        for base in reversed(cls.__mro__):
            for attr, fn in vars(base).items():
                if callable(fn) and getattr(fn, "_fedledger_method", None) in ("call", "view"):
                    methods[attr] = _method_spec(cls, attr, fn)
        cls._methods = methods

    def __setattr__(self, name: str, value: object) -> None:
        raise ContractError("contracts hold no instance state: keep it in the ContractState")

    @classmethod
    def check_definition(cls) -> None:
        """InvalidArgument unless the class can be deployed: a valid name and version, methods."""
        name = getattr(cls, "name", None)
        if type(name) is not str or not _NAME.match(name):
            raise InvalidArgument(
                f"{cls.__name__}.name", f"must match {_NAME.pattern} (lowercase, 1-64 chars), got {name!r}"
            )
        version = getattr(cls, "version", None)
        if type(version) is not int or not 1 <= version < 2**31:
            raise InvalidArgument(f"{cls.__name__}.version", f"must be a positive int, got {version!r}")
        if not cls._methods:
            raise InvalidArgument(cls.__name__, "declares no @call or @view method")

    @classmethod
    def code_hash(cls) -> bytes:
        """SHA-256 of the source file of the module that defines the class: what a ledger pins."""
        cached = cls.__dict__.get("_code_hash")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        module = sys.modules.get(cls.__module__)
        try:
            source = inspect.getsourcefile(module) if module is not None else None
        except TypeError:
            source = None
        if source is None or not Path(source).is_file():
            raise ContractMismatch(f"contract {cls.__name__}: its module has no source file to pin")
        digest = hashlib.sha256(Path(source).read_bytes()).digest()
        type.__setattr__(cls, "_code_hash", digest)
        return digest

    @classmethod
    def method(cls, name: object) -> MethodSpec:
        """The method ``name`` (InvalidCall if the contract has none)."""
        spec = cls._methods.get(name) if type(name) is str else None
        if spec is None:
            raise InvalidCall(
                f"contract {cls.name!r} has no method {encoding.short_repr(name)}; it has {sorted(cls._methods)}"
            )
        return spec


def run_method(
    cls: type[Contract], spec: MethodSpec, state: ContractState, ctx: CallContext, args: dict[str, encoding.Value]
) -> encoding.Value:
    """Run one method (arguments already checked against its signature)."""
    instance = _INSTANCES.get(cls)
    if instance is None:
        instance = _INSTANCES[cls] = object.__new__(cls)
    return spec.function(instance, state, ctx, **args)  # type: ignore[no-any-return]


_INSTANCES: dict[type[Contract], Contract] = {}


def check_contract_class(value: object, argument: str) -> type[Contract]:
    if not (isinstance(value, type) and issubclass(value, Contract)):
        raise InvalidArgumentType(argument, f"expected a Contract subclass, got {encoding.short_repr(value)}")
    try:
        value.check_definition()
    except FedLedgerError:
        raise
    return value
