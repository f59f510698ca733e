"""PyTorch models as fedledger vectors: flatten a model, aggregate, load the result back.

fedledger's aggregators and :class:`~fedledger.federated.FederatedRound` work on flat, finite,
1-D float numpy vectors and integer weights. This module turns a ``torch.nn.Module`` (or a
state dict) into such a vector and a :class:`Spec` that says how to put it back:

- :func:`flatten` gives the vector (float64) of every floating-point entry of the state dict
  (parameters and float buffers such as BatchNorm's running statistics), in state-dict order,
  and the spec;
- :func:`unflatten` gives a state dict back, each entry in its own dtype and on its own device;
  :func:`load_into` loads a vector into a module;
- :func:`update_from` and :func:`client_update` give a site's update for an aggregator: the
  change of its model over local training (a delta vector) and its weight (sample count).

Decisions (docs/integrations.md says more):

- **float64 vectors.** float64 holds every float16, bfloat16, float32 and float64 value
  exactly, so ``unflatten(*flatten(m))`` gives ``m``'s state back bit for bit, and the vector
  is the dtype :func:`fedledger.federated.model_hash` and a round's model use. Loading a
  vector into a lower-precision entry rounds to nearest; a value that does not fit the entry's
  dtype (past float16's 65504, say) is an error, never a silent infinity.
- **Non-float entries are not in the vector.** Integer and bool buffers (BatchNorm's
  ``num_batches_tracked``) are not averaged: :func:`unflatten` gives back exactly the values
  recorded in the spec (the model it was flattened from), and :func:`load_into` leaves the
  module's own values as they are (each site keeps its own counters). They never travel to
  the aggregator.
- Complex, quantized and sparse tensors, and state entries that are not tensors (a module's
  extra state), are refused rather than guessed at.
- Devices: ``cpu`` and ``meta`` are tested. A meta entry has a layout but no values:
  :func:`spec_of` reads it, :func:`flatten` refuses it.

Every bad input raises :class:`~fedledger.errors.InvalidArgument` or
:class:`~fedledger.errors.InvalidArgumentType` naming the argument and the entry (and the
index within it) that is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Union

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import InvalidArgument, InvalidArgumentType, MissingDependency

try:
    import torch
except ImportError as exc:  # the torch extra
    raise MissingDependency("torch", "torch", "fedledger.integrations.torch") from exc

__all__ = ["Spec", "client_update", "flatten", "load_into", "spec_of", "unflatten", "update_from"]

Model = Union[torch.nn.Module, Mapping[str, torch.Tensor]]
"""A module (its ``state_dict()`` is read) or a state dict of tensors."""


@dataclass(frozen=True)
class Spec:
    """How a flat vector maps onto a model's state dict.

    One item per state-dict entry, in state-dict order: ``names``, ``shapes``, ``dtypes`` and
    ``devices``. ``kept`` names the non-float entries (integer and bool buffers), which are
    not in the vector; ``kept_values`` holds their values as flattened (compared by layout
    only: two specs are equal when names, shapes, dtypes, devices and ``kept`` are). The
    float entries fill the vector one after another, each in row-major order.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    devices: tuple[torch.device, ...]
    kept: tuple[str, ...]
    kept_values: Mapping[str, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.shapes) == len(self.dtypes) == len(self.devices) == n):
            raise InvalidArgument(
                "spec",
                f"names, shapes, dtypes and devices must have one item per entry, got "
                f"{n}, {len(self.shapes)}, {len(self.dtypes)}, {len(self.devices)}",
            )
        if len(set(self.names)) != n:
            raise InvalidArgument("spec", "names must be unique")
        floating = {name for name, dtype in zip(self.names, self.dtypes) if dtype.is_floating_point}
        if set(self.kept) != set(self.names) - floating:
            raise InvalidArgument("spec", "kept must name exactly the non-float entries")

    @property
    def size(self) -> int:
        """The vector's length: the number of values of the float entries."""
        return int(self._offsets[-1])

    @cached_property
    def float_names(self) -> tuple[str, ...]:
        """The entries in the vector, in order."""
        kept = set(self.kept)
        return tuple(n for n in self.names if n not in kept)

    def slot(self, name: str) -> slice:
        """Where a float entry's values lie in the vector."""
        i = self._float_index.get(name)
        if i is None:
            raise InvalidArgument("name", f"{name!r} is not a float entry of the spec")
        return slice(int(self._offsets[i]), int(self._offsets[i + 1]))

    @cached_property
    def _float_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.float_names)}

    @cached_property
    def _offsets(self) -> NDArray[np.int64]:
        kept = set(self.kept)
        sizes = [math.prod(s) for n, s in zip(self.names, self.shapes) if n not in kept]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    def locate(self, index: int) -> str:
        """Which entry, and where in it, the vector's value at ``index`` is: ``"fc.weight[1, 0]"``."""
        if not 0 <= index < self.size:
            raise InvalidArgument("index", f"{index} is outside the vector (0 to {self.size - 1})")
        offsets = self._offsets
        i = int(np.searchsorted(offsets, index, side="right")) - 1
        name = self.float_names[i]
        shape = self.shapes[self.names.index(name)]
        if not shape:  # a scalar entry
            return name
        within = np.unravel_index(index - int(offsets[i]), shape)
        return f"{name}[{', '.join(str(int(k)) for k in within)}]"


def _state(model: object, what: str) -> dict[str, torch.Tensor]:
    """The state dict of a module or mapping, every entry checked to be a plain dense tensor."""
    if isinstance(model, torch.nn.Module):
        state: Mapping[Any, object] = model.state_dict()
    elif isinstance(model, Mapping):
        state = model
    else:
        raise InvalidArgumentType(what, f"expected a torch.nn.Module or a state dict, got {type(model).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise InvalidArgumentType(what, f"state dict keys are str, got {type(name).__name__} {name!r}")
        where = f"{what}[{name!r}]"
        if not isinstance(value, torch.Tensor):
            raise InvalidArgumentType(
                where, f"expected a tensor, got {type(value).__name__} (extra state is not supported)"
            )
        if value.is_quantized or value.layout != torch.strided:
            raise InvalidArgument(where, f"quantized and sparse tensors are not supported (layout {value.layout})")
        if value.dtype.is_complex:
            raise InvalidArgument(where, f"complex tensors are not supported ({value.dtype})")
        out[name] = value
    return out


def _is_float(tensor: torch.Tensor) -> bool:
    return tensor.dtype.is_floating_point


def _spec(state: Mapping[str, torch.Tensor]) -> Spec:
    kept = tuple(n for n, t in state.items() if not _is_float(t))
    return Spec(
        names=tuple(state),
        shapes=tuple(tuple(int(d) for d in t.shape) for t in state.values()),
        dtypes=tuple(t.dtype for t in state.values()),
        devices=tuple(t.device for t in state.values()),
        kept=kept,
        kept_values={n: state[n].detach().clone() for n in kept},
    )


def spec_of(model: Model) -> Spec:
    """The :class:`Spec` of a module or state dict, without reading any value (meta works)."""
    return _spec(_state(model, "model"))


def _check_spec(spec: object) -> Spec:
    if not isinstance(spec, Spec):
        raise InvalidArgumentType("spec", f"expected a Spec, got {type(spec).__name__}")
    return spec


def _check_layout(state: Mapping[str, torch.Tensor], spec: Spec, what: str) -> None:
    """``state`` has the spec's entries, in its order, with its shapes and dtypes (devices may differ)."""
    if tuple(state) != spec.names:
        missing = [n for n in spec.names if n not in state]
        extra = [n for n in state if n not in spec.names]
        if missing or extra:
            raise InvalidArgument(
                what, f"does not match the spec: missing entries {missing}, unexpected entries {extra}"
            )
        raise InvalidArgument(what, "has the spec's entries in another order")
    for name, shape, dtype in zip(spec.names, spec.shapes, spec.dtypes):
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise InvalidArgument(f"{what}[{name!r}]", f"has shape {tuple(tensor.shape)}, the spec says {shape}")
        if tensor.dtype != dtype:
            raise InvalidArgument(f"{what}[{name!r}]", f"has dtype {tensor.dtype}, the spec says {dtype}")


def _check_finite(vector: NDArray[np.float64], spec: Spec, what: str) -> None:
    bad = ~np.isfinite(vector)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidArgument(
            what,
            f"holds {int(bad.sum())} NaN or infinite values, the first ({vector[i]}) at index {i}: {spec.locate(i)}",
        )


def _values(state: Mapping[str, torch.Tensor], spec: Spec, what: str) -> NDArray[np.float64]:
    """The float entries of ``state`` (laid out as ``spec``) as one new float64 vector."""
    for name, tensor in state.items():
        if tensor.device.type == "meta":
            raise InvalidArgument(
                f"{what}[{name!r}]",
                "is on the meta device and holds no values (spec_of reads its layout; "
                "materialize it with module.to_empty(device=...) and load_into)",
            )
    vector = np.empty(spec.size, dtype=np.float64)
    for name in spec.float_names:
        values = state[name].detach().to(device="cpu", dtype=torch.float64).resolve_neg().reshape(-1)
        vector[spec.slot(name)] = values.numpy()  # a copy: the vector never shares the model's memory
    _check_finite(vector, spec, what)
    return vector


def flatten(model: Model) -> tuple[NDArray[np.float64], Spec]:
    """The float64 vector of a module's (or state dict's) float entries, and its :class:`Spec`.

    The vector is a copy (training the model afterwards does not change it). Raises
    InvalidArgument for NaN or infinite values (naming the entry and index) and for entries on
    the meta device.
    """
    state = _state(model, "model")
    spec = _spec(state)
    return _values(state, spec, "model"), spec


def _check_vector(vector: object, spec: Spec, what: str) -> NDArray[np.float64]:
    if not isinstance(vector, np.ndarray):
        raise InvalidArgumentType(what, f"expected a numpy array, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.dtype.kind != "f":
        raise InvalidArgument(what, f"must be a 1-D float array, got shape {vector.shape} dtype {vector.dtype}")
    if vector.shape[0] != spec.size:
        floats = ", ".join(f"{n} {spec.slot(n).stop - spec.slot(n).start}" for n in spec.float_names[:6])
        more = ", ..." if len(spec.float_names) > 6 else ""
        raise InvalidArgument(
            what, f"has {vector.shape[0]} values, the spec's float entries hold {spec.size} ({floats}{more})"
        )
    values = vector.astype(np.float64, copy=False)
    _check_finite(values, spec, what)
    return values


def _entry(vector: NDArray[np.float64], spec: Spec, name: str, device: torch.device, what: str) -> torch.Tensor:
    """One float entry from the vector, cast to its dtype (a value that does not fit is an error)."""
    i = spec.names.index(name)
    where = spec.slot(name)
    tensor = torch.from_numpy(vector[where].copy()).reshape(spec.shapes[i]).to(spec.dtypes[i])
    bad = np.zeros(0, dtype=bool) if spec.dtypes[i] == torch.float64 else ~np.isfinite(tensor.to(torch.float64).numpy())
    if bad.any():
        k = int(np.argmax(bad.reshape(-1)))
        raise InvalidArgument(
            what,
            f"value {vector[where.start + k]} at index {where.start + k} ({spec.locate(where.start + k)}) "
            f"does not fit in {spec.dtypes[i]}",
        )
    return tensor.to(device)


def unflatten(
    vector: NDArray[np.floating], spec: Spec, *, device: str | torch.device | None = None
) -> dict[str, torch.Tensor]:
    """The state dict that ``vector`` stands for under ``spec``.

    Each float entry takes its values from the vector, in its own dtype (rounded to nearest
    where the dtype is narrower than float64) and on its own device, or on ``device`` when
    given. Each non-float entry is exactly the value recorded in the spec. An entry that would
    land on the meta device is refused (it would drop the values): pass ``device``.
    """
    spec = _check_spec(spec)
    values = _check_vector(vector, spec, "vector")
    try:
        target = None if device is None else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgument("device", f"not a torch device: {device!r} ({exc})") from None
    kept = set(spec.kept)
    out: dict[str, torch.Tensor] = {}
    for name, own in zip(spec.names, spec.devices):
        where = target if target is not None else own
        if where.type == "meta":
            raise InvalidArgument(
                "device", f"entry {name!r} would land on the meta device, which holds no values: pass device=..."
            )
        if name in kept:
            value = spec.kept_values.get(name)
            if value is None or value.device.type == "meta":
                why = "was recorded on the meta device" if value is not None else "has no value in kept_values"
                raise InvalidArgument(
                    "spec", f"non-float entry {name!r} {why}: its value is unknown (load_into keeps a module's own)"
                )
            out[name] = value.clone().to(where)
        else:
            out[name] = _entry(values, spec, name, where, "vector")
    return out


def load_into(module: torch.nn.Module, vector: NDArray[np.floating], spec: Spec) -> None:
    """Load ``vector`` into ``module``'s float entries, each on the module's own device.

    The module's non-float entries (integer counters) keep their own values. The module must
    have the spec's layout (names, shapes, dtypes) and must not be on the meta device.
    """
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgumentType("module", f"expected a torch.nn.Module, got {type(module).__name__}")
    spec = _check_spec(spec)
    state = _state(module, "module")
    _check_layout(state, spec, "module")
    values = _check_vector(vector, spec, "vector")
    kept = set(spec.kept)
    new: dict[str, torch.Tensor] = {}
    for name in spec.names:
        if state[name].device.type == "meta":
            raise InvalidArgument(
                f"module[{name!r}]", "is on the meta device: materialize it first (module.to_empty(device=...))"
            )
        # non-float entries: the module's own values, loaded back as they are
        new[name] = state[name] if name in kept else _entry(values, spec, name, state[name].device, "vector")
    module.load_state_dict(new, strict=True)


def _as_vector(model: object, spec: Spec | None, what: str) -> tuple[NDArray[np.float64], Spec]:
    if isinstance(model, np.ndarray):
        if spec is None:
            raise InvalidArgument("spec", f"is needed when {what} is a vector")
        return _check_vector(model, spec, what), spec
    state = _state(model, what)
    if spec is not None:
        _check_layout(state, spec, what)
    else:
        spec = _spec(state)
    return _values(state, spec, what), spec


def _shared(before: object, after: object) -> str | None:
    """The first float entry that ``before`` and ``after`` hold in the same memory, if any."""
    if isinstance(before, np.ndarray) or isinstance(after, np.ndarray):
        return None
    a, b = _state(before, "before"), _state(after, "after")
    for name, tensor in a.items():
        other = b.get(name)
        if (
            other is not None
            and _is_float(tensor)
            and tensor.device.type != "meta"
            and tensor.numel() > 0
            and tensor.data_ptr() == other.data_ptr()
        ):
            return name
    return None


def _check_samples(samples: object) -> int:
    if not isinstance(samples, int) or isinstance(samples, bool):
        raise InvalidArgumentType("samples", f"expected an int sample count, got {type(samples).__name__}")
    if samples <= 0:
        raise InvalidArgument("samples", f"must be positive, got {samples}")
    return samples


def update_from(
    before: Model | NDArray[np.floating],
    after: Model | NDArray[np.floating],
    *,
    samples: int,
    spec: Spec | None = None,
) -> tuple[NDArray[np.float64], int]:
    """A site's update for an aggregator: ``(after - before, samples)``.

    ``before`` and ``after`` are modules, state dicts or vectors (a vector needs ``spec``);
    with ``spec``, both must have its layout, else ``after`` must have ``before``'s. The delta
    is float64 and finite; ``samples`` (a positive int, the site's sample count) is the weight.
    A ``before`` that shares memory with ``after`` (``model.state_dict()`` taken before
    training is a view of the same tensors) is refused: snapshot with :func:`flatten` instead.
    """
    weight = _check_samples(samples)
    if spec is not None:
        spec = _check_spec(spec)
    if before is after or (name := _shared(before, after)) is not None:
        where = "the same object" if before is after else f"the memory of entry {name!r}"
        raise InvalidArgument(
            "before",
            f"shares {where} with after, so their difference is zero: take the snapshot with flatten(model) before training",
        )
    old, spec = _as_vector(before, spec, "before")
    new, _ = _as_vector(after, spec, "after")
    delta = new - old
    _check_finite(delta, spec, "update")
    return delta, weight


def client_update(
    module: torch.nn.Module,
    train: Callable[[torch.nn.Module], object],
    samples: int | None = None,
) -> tuple[NDArray[np.float64], int]:
    """Run ``train(module)`` and return the module's change and weight, as :func:`update_from`.

    The weight is ``samples``, or, when it is None, what ``train`` returns (then it must be a
    positive int: the number of samples it trained on). ``train`` must keep the module's layout.
    """
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgumentType("module", f"expected a torch.nn.Module, got {type(module).__name__}")
    if samples is not None:
        _check_samples(samples)
    before, spec = flatten(module)
    returned = train(module)
    if samples is None and (not isinstance(returned, int) or isinstance(returned, bool) or returned <= 0):
        raise InvalidArgument(
            "train", f"returned {returned!r}: return the number of samples it trained on, or pass samples"
        )
    weight = _check_samples(returned if samples is None else samples)
    return update_from(before, module, samples=weight, spec=spec)
