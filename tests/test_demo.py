"""fedledger demo: the data split, the model, FedAvg."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fedledger.demo import data, model  # noqa: E402
from fedledger.errors import InvalidArgument  # noqa: E402

# -- data ------------------------------------------------------------------------------------


def test_dirichlet_split_assigns_every_sample_once_and_repeats_with_the_seed() -> None:
    labels = np.repeat([0.0, 1.0], [170, 286])
    first = data.dirichlet_split(labels, 5, 0.5, np.random.default_rng(7))
    again = data.dirichlet_split(labels, 5, 0.5, np.random.default_rng(7))
    other = data.dirichlet_split(labels, 5, 0.5, np.random.default_rng(8))
    assert len(first) == 5
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(len(labels)))  # each sample exactly once
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert min(len(s) for s in first) >= 10


def test_dirichlet_split_is_non_iid_and_alpha_controls_how_much() -> None:
    labels = np.repeat([0.0, 1.0], [500, 500])

    def spread(alpha: float) -> float:
        """Mean over seeds of the spread of the sites' shares of label 1."""
        out = []
        for seed in range(10):
            sites = data.dirichlet_split(labels, 5, alpha, np.random.default_rng(seed))
            shares = [labels[s].mean() for s in sites]
            out.append(max(shares) - min(shares))
        return float(np.mean(out))

    assert spread(0.5) > 0.5  # skewed label mixes
    assert spread(100.0) < 0.2  # close to IID
    assert spread(0.1) > spread(0.5) > spread(100.0)


def test_dirichlet_split_refuses_impossible_requests() -> None:
    with pytest.raises(InvalidArgument):
        data.dirichlet_split(np.zeros(20), 5, 0.5, np.random.default_rng(0), min_per_site=10)
    with pytest.raises(InvalidArgument):
        data.dirichlet_split(np.zeros(100), 5, 0.0, np.random.default_rng(0))


def test_load_splits_and_standardizes_with_training_statistics_only() -> None:
    split = data.load(alpha=0.5, seed=3)
    again = data.load(alpha=0.5, seed=3)
    assert split.x_train.shape == (456, 30) and split.x_test.shape == (113, 30)
    assert all(np.array_equal(a, b) for a, b in zip(split.sites, again.sites))
    assert np.array_equal(split.x_test, again.x_test)
    assert np.array_equal(np.sort(np.concatenate(split.sites)), np.arange(456))
    # the training split is standardized (pooled from the sites' sums), the test set with its statistics
    assert np.allclose(split.x_train.mean(axis=0), 0, atol=1e-9)
    assert np.allclose(split.x_train.std(axis=0), 1, atol=1e-9)
    assert not np.allclose(split.x_test.mean(axis=0), 0, atol=1e-3)
    # the sites' summed statistics are the pooled ones
    raw = [data.site_statistics(split.x_train[rows] * split.std + split.mean) for rows in split.sites]
    mean, std = data.standardize(raw)
    assert np.allclose(mean, split.mean) and np.allclose(std, split.std)
    assert split.raw_bytes == 456 * 31 * 8


# -- model -----------------------------------------------------------------------------------


def test_logistic_regression_learns_the_data() -> None:
    split = data.load(seed=0)
    rng = np.random.default_rng(0)
    w = model.local_train(
        model.initial(split.features), split.x_train, split.y_train, model.TrainConfig(), rng, epochs=5
    )
    majority = max(split.y_test.mean(), 1 - split.y_test.mean())
    assert model.accuracy(w, split.x_test, split.y_test) > 0.93 > majority + 0.25
    assert (
        model.centralized(split.x_train, split.y_train, split.x_test, split.y_test, 5, model.TrainConfig(), rng)[-1]
        > 0.93
    )


def test_fedavg_of_deltas_is_the_sample_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    deltas = {f"hospital-{i}": rng.normal(size=31) for i in range(5)}
    weights = {s: int(n) for s, n in zip(deltas, [16, 107, 40, 171, 122])}
    expected = sum(weights[s] * deltas[s] for s in deltas) / sum(weights.values())
    assert np.allclose(model.fedavg(deltas, weights), expected)
    equal = model.fedavg(deltas, dict.fromkeys(deltas, 3))
    assert np.allclose(equal, np.mean(list(deltas.values()), axis=0))
    with pytest.raises(InvalidArgument):
        model.fedavg({}, {})


def test_fedprox_keeps_the_local_model_nearer_the_global_one() -> None:
    split = data.load(seed=0)
    x, y = split.site(1)
    start = model.initial(split.features)
    far = model.local_train(start, x, y, model.TrainConfig(epochs=5), np.random.default_rng(2))
    near = model.local_train(start, x, y, model.TrainConfig(epochs=5, mu=5.0), np.random.default_rng(2))
    assert np.linalg.norm(near - start) < np.linalg.norm(far - start)


def test_clip_delta_counts_what_it_cut() -> None:
    clipped, count = model.clip_delta(np.array([-3.0, -1.0, 0.5, 2.5]), 2.0)
    assert clipped.tolist() == [-2.0, -1.0, 0.5, 2.0] and count == 2
