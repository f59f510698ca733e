"""fedledger.integrations.torch: flatten/unflatten round trips bit for bit over real modules
and random state dicts, meta-device handling, typed errors, and torch models trained on the
breast-cancer data aggregated through Masked (and a FederatedRound) as plain FedAvg would,
within the quantization bound.

torch is an optional extra: without it these tests skip, except where
FEDLEDGER_REQUIRE_TORCH is set (CI's torch step), where they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

if os.environ.get("FEDLEDGER_REQUIRE_TORCH"):  # CI's torch step installs torch first: never skip there
    import torch
else:
    torch = pytest.importorskip(
        "torch",
        reason="torch is not installed (pip install 'fedledger[torch]'); set FEDLEDGER_REQUIRE_TORCH to make this a failure",
    )

from fedledger.aggregators import AggregateResult, Masked, Plain  # noqa: E402
from fedledger.errors import InvalidArgument, InvalidArgumentType  # noqa: E402
from fedledger.integrations.torch import (  # noqa: E402
    Spec,
    client_update,
    flatten,
    load_into,
    spec_of,
    unflatten,
    update_from,
)

nn = torch.nn
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def mlp() -> torch.nn.Module:
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))


def convnet() -> torch.nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 4, 3),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    )


def batchnormed() -> torch.nn.Module:
    """A net with BatchNorm buffers (running statistics and the integer num_batches_tracked),
    trained a few batches so none of them is at its initial value."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5)
    )
    net.train()
    for _ in range(3):
        net(torch.randn(8, 2, 6, 6))
    return net


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names in the same order, and each entry equal bit for bit, in dtype and device."""
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype
        and a[k].device == b[k].device
        and a[k].shape == b[k].shape
        and torch.equal(
            a[k].view(-1).view(torch.uint8) if a[k].numel() else a[k],
            b[k].view(-1).view(torch.uint8) if b[k].numel() else b[k],
        )
        for k in a
    )


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [mlp, convnet, batchnormed], ids=["mlp", "convnet", "batchnorm"])
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_real_modules_round_trip_exactly(make: Callable[[], torch.nn.Module], dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = make().to(dtype)
    state = net.state_dict()
    vector, spec = flatten(net)
    assert vector.dtype == np.float64 and vector.ndim == 1
    assert spec.size == vector.size == sum(t.numel() for t in state.values() if t.dtype.is_floating_point)
    assert same_state(unflatten(vector, spec), state)
    assert spec == spec_of(net) == flatten(state)[1]
    # into a fresh module of the same layout: every float entry, bit for bit
    other = make().to(dtype)
    load_into(other, vector, spec)
    assert np.array_equal(flatten(other)[0], vector)


def test_batchnorm_counters_are_kept_aside_exactly_never_averaged() -> None:
    net = batchnormed()
    vector, spec = flatten(net)
    assert spec.kept == ("1.num_batches_tracked", "5.num_batches_tracked")
    assert "1.running_mean" in spec.float_names and "1.running_var" in spec.float_names
    assert all(name not in spec.float_names for name in spec.kept)
    assert int(net[1].num_batches_tracked) == 3
    back = unflatten(vector, spec)
    assert back["1.num_batches_tracked"].dtype == torch.int64 and int(back["1.num_batches_tracked"]) == 3
    # load_into leaves the receiving module's own counters: a fresh one keeps its 0
    fresh = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5)
    )
    load_into(fresh, vector, spec)
    assert int(fresh[1].num_batches_tracked) == 0 and int(fresh[5].num_batches_tracked) == 0
    assert torch.equal(fresh[1].running_var, net[1].running_var)
    # the spec's copy does not follow the module afterwards
    net[1].num_batches_tracked += 10
    assert int(unflatten(vector, spec)["1.num_batches_tracked"]) == 3
    # the layout compares, not the kept values
    assert spec == flatten(net)[1]


def test_the_vector_is_a_copy_and_unflatten_does_not_alias_it() -> None:
    net = mlp()
    vector, spec = flatten(net)
    kept = vector.copy()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert np.array_equal(vector, kept)
    state = unflatten(vector, spec)
    vector[:] = 0
    assert torch.equal(state["0.weight"], torch.from_numpy(kept[spec.slot("0.weight")]).float().reshape(16, 30))


def test_narrow_dtypes_round_to_nearest_and_refuse_what_does_not_fit() -> None:
    net = nn.Linear(2, 2).to(torch.float16)
    vector, spec = flatten(net)
    vector[0] = 1.0 + 2.0**-12  # halfway below the next float16 after 1: rounds to even, 1.0
    assert float(unflatten(vector, spec)["weight"][0, 0]) == 1.0
    vector[0] = 65504.0  # float16's largest finite value
    assert float(unflatten(vector, spec)["weight"][0, 0]) == 65504.0
    vector[3] = 70000.0
    with pytest.raises(
        InvalidArgument, match=r"value 70000.0 at index 3 \(weight\[1, 1\]\) does not fit in torch.float16"
    ):
        unflatten(vector, spec)
    with pytest.raises(InvalidArgument, match="does not fit"):
        load_into(net, vector, spec)


def test_special_values_survive_negative_zero_and_subnormals() -> None:
    tiny = torch.tensor([-0.0, 2.0**-149, -(2.0**-140), 3.4e38], dtype=torch.float32)
    state = {"w": tiny, "h": torch.tensor([2.0**-24, -0.0], dtype=torch.float16)}
    vector, spec = flatten(state)
    assert same_state(unflatten(vector, spec), state)
    assert np.signbit(vector[0])


def test_views_scalars_and_empty_entries() -> None:
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    state = {"t": base.T, "s": torch.tensor(2.5, dtype=torch.float64), "e": torch.zeros(0, 3), "n": base[:, 1]}
    vector, spec = flatten(state)
    assert vector.tolist() == [0, 3, 1, 4, 2, 5, 2.5, 1, 4]  # each entry row-major, as it reads
    back = unflatten(vector, spec)
    assert all(torch.equal(back[k], v) for k, v in state.items()) and back["t"].is_contiguous()
    assert spec.locate(6) == "s" and spec.locate(8) == "n[1]" and spec.locate(0) == "t[0, 0]"
    with pytest.raises(InvalidArgument, match="index: 9 is outside the vector"):
        spec.locate(9)
    with pytest.raises(InvalidArgument, match="device: not a torch device: 'gpu0'"):
        unflatten(vector, spec, device="gpu0")


def test_a_spec_must_be_consistent() -> None:
    with pytest.raises(InvalidArgument, match="one item per entry"):
        Spec(("a",), (), (torch.float32,), (torch.device("cpu"),), ())
    with pytest.raises(InvalidArgument, match="names must be unique"):
        Spec(("a", "a"), ((), ()), (torch.float32,) * 2, (torch.device("cpu"),) * 2, ())
    with pytest.raises(InvalidArgument, match="kept must name exactly the non-float entries"):
        Spec(("a",), ((),), (torch.int64,), (torch.device("cpu"),), ())
    by_hand = Spec(("a",), ((),), (torch.int64,), (torch.device("cpu"),), ("a",))
    with pytest.raises(InvalidArgument, match="spec: non-float entry 'a' has no value in kept_values"):
        unflatten(np.zeros(0), by_hand)


# -- random shapes and dtypes -----------------------------------------------------------------

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
entries = st.tuples(shapes, st.sampled_from(FLOATS + [torch.int64, torch.int32, torch.uint8, torch.bool]))


@settings(max_examples=40)
@given(layout=st.lists(entries, min_size=0, max_size=6), seed=st.integers(0, 2**31 - 1))
def test_random_state_dicts_round_trip_exactly(layout: list[tuple[tuple[int, ...], torch.dtype]], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for i, (shape, dtype) in enumerate(layout):
        if dtype.is_floating_point:
            value = (torch.randn(shape, generator=gen, dtype=torch.float64) * 100).to(dtype)
        elif dtype == torch.bool:
            value = torch.randint(0, 2, shape, generator=gen).bool()
        else:
            value = torch.randint(0, 200, shape, generator=gen).to(dtype)
        state[f"layer{i}.{'w' if dtype.is_floating_point else 'count'}"] = value
    vector, spec = flatten(state)
    assert vector.size == spec.size == sum(t.numel() for t in state.values() if t.dtype.is_floating_point)
    assert set(spec.kept) == {n for n, t in state.items() if not t.dtype.is_floating_point}
    assert same_state(unflatten(vector, spec), state)
    for name in spec.float_names:  # each entry's slot holds that entry, row-major
        assert np.array_equal(vector[spec.slot(name)], state[name].double().reshape(-1).numpy())


@settings(max_examples=20)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    conv=st.booleans(),
    bias=st.booleans(),
    dtype=st.sampled_from(FLOATS),
)
def test_random_linear_and_conv_stacks_round_trip(
    widths: list[int], conv: bool, bias: bool, dtype: torch.dtype
) -> None:
    layers = [
        (nn.Conv1d(a, b, 1, bias=bias) if conv else nn.Linear(a, b, bias=bias)) for a, b in zip(widths, widths[1:])
    ]
    net = nn.Sequential(*layers).to(dtype)
    vector, spec = flatten(net)
    assert same_state(unflatten(vector, spec), net.state_dict())
    assert spec.names == tuple(net.state_dict())


# -- meta ---------------------------------------------------------------------------------------


def test_meta_modules_give_a_spec_and_take_a_vector_once_materialized() -> None:
    source = batchnormed()
    vector, spec = flatten(source)
    with torch.device("meta"):
        skeleton = nn.Sequential(
            nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5)
        )
    meta = spec_of(skeleton)
    assert meta.names == spec.names and meta.shapes == spec.shapes and meta.size == spec.size
    assert set(meta.devices) == {torch.device("meta")} and meta != spec  # the devices differ
    with pytest.raises(InvalidArgument, match=r"model\['0.weight'\]: is on the meta device"):
        flatten(skeleton)
    with pytest.raises(InvalidArgument, match="meta device: materialize it first"):
        load_into(skeleton, vector, spec)
    with pytest.raises(InvalidArgument, match="would land on the meta device"):
        unflatten(vector, meta)
    with pytest.raises(InvalidArgument, match="recorded on the meta device: its value is unknown"):
        unflatten(vector, meta, device="cpu")
    skeleton.to_empty(device="cpu")
    load_into(skeleton, vector, meta)  # the layout matches; devices are the module's own
    assert np.array_equal(flatten(skeleton)[0], vector)
    # a spec from a real model can be unflattened onto another device explicitly
    state = unflatten(vector, spec, device="cpu")
    assert all(t.device == torch.device("cpu") for t in state.values())


# -- errors ---------------------------------------------------------------------------------------


def test_bad_vectors_say_what_and_where() -> None:
    vector, spec = flatten(batchnormed())
    with pytest.raises(
        InvalidArgument, match=r"vector: has 10 values, the spec's float entries hold \d+ \(0.weight 72"
    ):
        unflatten(vector[:10], spec)
    with pytest.raises(InvalidArgumentType, match="expected a numpy array, got list"):
        unflatten(list(vector), spec)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="must be a 1-D float array"):
        unflatten(vector.astype(np.int64), spec)
    with pytest.raises(InvalidArgument, match="must be a 1-D float array"):
        unflatten(vector.reshape(1, -1), spec)
    for bad in (np.nan, np.inf, -np.inf):
        broken = vector.copy()
        broken[73] = bad
        with pytest.raises(
            InvalidArgument, match=r"holds 1 NaN or infinite values, the first \S+ at index 73: 0.bias\[1\]"
        ):
            unflatten(broken, spec)
    with pytest.raises(InvalidArgumentType, match="spec: expected a Spec"):
        unflatten(vector, {"names": ()})  # type: ignore[arg-type]
    # a float32 vector is taken too (as float64)
    assert same_state(
        unflatten(vector.astype(np.float32), spec), unflatten(vector.astype(np.float32).astype(np.float64), spec)
    )


def test_bad_models_and_spec_mismatches_are_typed_errors() -> None:
    net = mlp()
    with torch.no_grad():
        net[2].weight[3, 5] = float("nan")
    with pytest.raises(InvalidArgument, match=r"model: holds 1 NaN .* at index \d+: 2.weight\[3, 5\]"):
        flatten(net)
    with pytest.raises(InvalidArgumentType, match="expected a torch.nn.Module or a state dict, got list"):
        flatten([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match=r"model\['w'\]: expected a tensor, got float"):
        flatten({"w": 1.0})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="complex tensors are not supported"):
        flatten({"w": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(InvalidArgument, match="sparse"):
        flatten({"w": torch.zeros(2, 2).to_sparse()})
    vector, spec = flatten(mlp())
    with pytest.raises(
        InvalidArgument, match=r"module: does not match the spec: missing entries \['4.weight', '4.bias'\]"
    ):
        load_into(nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 8)), vector[:-9], spec)
    with pytest.raises(InvalidArgument, match=r"module\['0.weight'\]: has shape \(16, 31\), the spec says \(16, 30\)"):
        load_into(
            nn.Sequential(nn.Linear(31, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1)), vector, spec
        )
    with pytest.raises(
        InvalidArgument, match=r"module\['0.weight'\]: has dtype torch.float64, the spec says torch.float32"
    ):
        load_into(mlp().double(), vector, spec)
    with pytest.raises(InvalidArgumentType, match="module: expected a torch.nn.Module"):
        load_into(mlp().state_dict(), vector, spec)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="name: 'nope' is not a float entry"):
        spec.slot("nope")


def test_update_from_checks_its_inputs() -> None:
    net = mlp()
    before, spec = flatten(net)
    with pytest.raises(InvalidArgument, match="before: shares the same object with after"):
        update_from(net, net, samples=3)
    snapshot = net.state_dict()  # a view of the module's tensors, not a copy
    with pytest.raises(InvalidArgument, match="shares the memory of entry '0.weight' with after"):
        update_from(snapshot, net, samples=3)
    with pytest.raises(InvalidArgument, match="spec: is needed when before is a vector"):
        update_from(before, net, samples=3)
    with pytest.raises(InvalidArgumentType, match="samples: expected an int sample count, got bool"):
        update_from(before, net, samples=True, spec=spec)
    with pytest.raises(InvalidArgument, match="samples: must be positive, got 0"):
        update_from(before, net, samples=0, spec=spec)
    with pytest.raises(InvalidArgument, match=r"after\['0.weight'\]: has dtype torch.float64"):
        update_from(before, mlp().double(), samples=3, spec=spec)
    with pytest.raises(InvalidArgument, match="after: does not match the spec"):
        update_from(before, nn.Linear(30, 16), samples=3, spec=spec)
    with pytest.raises(InvalidArgument, match="train: returned -1: return the number of samples"):
        client_update(net, lambda m: -1)
    with pytest.raises(InvalidArgument, match="train: returned None"):
        client_update(net, lambda m: None)
    with pytest.raises(InvalidArgument, match="samples: must be positive, got 0"):
        client_update(net, lambda m: 5, 0)
    delta, weight = update_from(before, net, samples=5, spec=spec)
    assert weight == 5 and delta.dtype == np.float64 and not delta.any()


def test_client_update_is_the_change_over_training() -> None:
    net = batchnormed()
    start, spec = flatten(net)

    def train(model: torch.nn.Module) -> int:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.25)
        model(torch.randn(4, 2, 6, 6))  # moves the running statistics and the counters
        return 4

    delta, weight = client_update(net, train)
    assert weight == 4
    after, _ = flatten(net)
    assert np.array_equal(delta, after - start)
    assert np.allclose(delta[spec.slot("0.weight")], 0.25)
    assert delta[spec.slot("1.running_mean")].any()  # float buffers are part of the update
    assert client_update(net, lambda m: None, 9)[1] == 9


# -- a round ------------------------------------------------------------------------------------


def hospitals(n: int = 4) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """The breast-cancer data, standardized, split into ``n`` hospitals and a held-out test set."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(y))
    x = (x - x.mean(0)) / x.std(0)
    xt, yt = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order], dtype=torch.float32)
    test = slice(0, 100)
    parts = np.array_split(np.arange(100, len(y)), n)
    sites = {f"hospital-{chr(97 + i)}": (xt[p], yt[p]) for i, p in enumerate(parts)}
    return sites, xt[test], yt[test]


def local_training(data: tuple[torch.Tensor, torch.Tensor], steps: int = 10) -> Callable[[torch.nn.Module], int]:
    def train(model: torch.nn.Module) -> int:
        x, y = data
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y).backward()
            opt.step()
        return len(y)

    return train


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x).squeeze(1) > 0).float() == y).float().mean())


def masked_bound(res: AggregateResult) -> float:
    """Masked's bound on the aggregate (as tests/test_aggregators.py): < 1 unit per survivor."""
    return len(res.survivors) / float(res.parameters["scale"]) + 1e-9  # type: ignore[arg-type]


def test_torch_models_aggregated_through_masked_equal_plain_fedavg() -> None:
    torch.manual_seed(0)
    sites, xt, yt = hospitals(4)
    global_model = mlp()
    base, spec = flatten(global_model)
    before = accuracy(global_model, xt, yt)
    for _ in range(3):
        updates, weights = {}, {}
        for name, data in sites.items():
            local = mlp()
            load_into(local, base, spec)
            updates[name], weights[name] = client_update(local, local_training(data))
        assert max(float(np.abs(u).max()) for u in updates.values()) < 1.0  # inside Masked's clip: nothing clipped
        res = Masked(min_cohort=3).run(updates, weights)
        exact = sum(updates[s] * weights[s] for s in sites)
        assert res.total_weight == sum(weights.values()) == 469
        assert np.max(np.abs(res.aggregate - exact)) <= masked_bound(res)
        assert np.max(np.abs(res.mean - exact / res.total_weight)) <= masked_bound(res) / res.total_weight
        plain = Plain(min_cohort=3).run(updates, weights)
        assert np.max(np.abs(res.aggregate - plain.aggregate)) <= masked_bound(res) + res.total_weight * 2.0**-23
        base = base + res.mean
        load_into(global_model, base, spec)
    assert accuracy(global_model, xt, yt) > max(before, 0.85)


def test_a_torch_round_through_federated_round_and_the_ledger(tmp_path: Path) -> None:
    from test_federated import SITES, consortium

    from fedledger import BlobStore
    from fedledger.federated import FederatedRound, load_aggregate, model_hash

    torch.manual_seed(0)
    data, _, _ = hospitals(len(SITES))
    global_model = mlp()
    base, spec = flatten(global_model)
    updates, weights = {}, {}
    for site, part in zip(SITES, data.values()):
        local = mlp()
        load_into(local, base, spec)
        updates[site], weights[site] = client_update(local, local_training(part))
    with consortium(tmp_path, "masked", 3) as (ledger, ids, owner, cohorts):
        store = BlobStore(tmp_path / "blobs")
        fr = FederatedRound(ledger, policy="p1", coordinator=owner, aggregator=Masked(3), store=store, sites=ids)
        rec = fr.run(updates, weights, cohorts=cohorts, base_model=base)
    assert rec.status == "done" and rec.model is not None
    aggregate, total = load_aggregate(store.get(rec.aggregate_cid))
    assert total == sum(weights.values())
    exact = sum(updates[s] * weights[s] for s in SITES)
    assert np.max(np.abs(aggregate - exact)) <= masked_bound(rec.result)  # type: ignore[arg-type]
    load_into(global_model, rec.model, spec)
    assert model_hash(flatten(global_model)[0]) != model_hash(base)
    # float32 weights: the loaded model is the recorded model rounded to float32
    assert np.array_equal(flatten(global_model)[0], rec.model.astype(np.float32).astype(np.float64))


def test_spec_is_a_frozen_dataclass() -> None:
    spec = spec_of(mlp())
    assert isinstance(spec, Spec)
    with pytest.raises(AttributeError):
        spec.names = ()  # type: ignore[misc]
    assert hash(spec) == hash(spec_of(mlp()))


def test_the_pytorch_section_of_the_integrations_doc_runs() -> None:
    """Every python block of docs/integrations.md's "## PyTorch" section (up to the next "## ")."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "integrations.md").read_text()
    section = doc.split("\n## PyTorch\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    for code in blocks:
        exec(compile(code, "docs/integrations.md", "exec"), {"__name__": "integrations_doc"})
