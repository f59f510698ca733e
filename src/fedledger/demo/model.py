"""A logistic regression in numpy: local training, FedAvg, FedProx, clipped deltas, baselines.

The model is one flat float64 vector: the weights of the features, then the bias. Local
training is ``epochs`` passes of mini-batch gradient descent on the cross-entropy (with a
small L2 term) starting from the global model; FedProx adds ``mu / 2 * ||w - w_global||^2``
to each hospital's objective. What a hospital sends is its **delta**, local model minus
global model, clipped coordinate by coordinate to ``[-clip, clip]`` (the range the secure
aggregators quantize); the server's FedAvg is the sample-weighted mean of the deltas, added
to the global model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import InvalidArgument

__all__ = [
    "TrainConfig",
    "accuracy",
    "centralized",
    "clip_delta",
    "fedavg",
    "initial",
    "local_only",
    "local_train",
    "predict",
]

Vector = NDArray[np.float64]


@dataclass(frozen=True)
class TrainConfig:
    """The optimizer, the same for federated, centralized and local-only training.

    ``epochs`` per round, mini-batches of ``batch`` samples, step ``lr``, L2 weight ``l2``,
    FedProx's ``mu`` (0: plain FedAvg) and the delta ``clip``.
    """

    epochs: int = 1
    batch: int = 16
    lr: float = 0.1
    l2: float = 1e-4
    mu: float = 0.0
    clip: float = 2.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1:
            raise InvalidArgument("epochs", "epochs and batch must be >= 1")
        if not (self.lr > 0 and self.clip > 0 and self.l2 >= 0 and self.mu >= 0):
            raise InvalidArgument("lr", "lr and clip must be > 0, l2 and mu >= 0")


def initial(features: int) -> Vector:
    """The starting global model: zeros (weights and bias)."""
    return np.zeros(features + 1, dtype=np.float64)


def _sigmoid(z: Vector) -> Vector:
    out: Vector = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|
    return out


def predict(w: Vector, x: NDArray[np.float64]) -> Vector:
    """P(label = 1) for each row of ``x``."""
    return _sigmoid(x @ w[:-1] + w[-1])


def accuracy(w: Vector, x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """The fraction of rows whose thresholded prediction equals the label."""
    return float(np.mean((predict(w, x) >= 0.5) == (y >= 0.5)))


def local_train(
    w_global: Vector,
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    config: TrainConfig,
    rng: np.random.Generator,
    *,
    epochs: int | None = None,
) -> Vector:
    """``epochs`` (default ``config.epochs``) of mini-batch gradient descent from ``w_global``."""
    w = w_global.copy()
    n = x.shape[0]
    if n == 0:
        return w
    for _ in range(config.epochs if epochs is None else epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch):
            rows = order[start : start + config.batch]
            xb, yb = x[rows], y[rows]
            err = predict(w, xb) - yb
            grad = np.empty_like(w)
            grad[:-1] = xb.T @ err / len(rows) + config.l2 * w[:-1]
            grad[-1] = err.mean()
            if config.mu:
                grad += config.mu * (w - w_global)
            w -= config.lr * grad
    return w


def clip_delta(delta: Vector, clip: float) -> tuple[Vector, int]:
    """``delta`` clipped to ``[-clip, clip]`` coordinate-wise, and how many coordinates were cut."""
    over = int(np.count_nonzero(np.abs(delta) > clip))
    return np.clip(delta, -clip, clip), over


def fedavg(deltas: Mapping[str, Vector], weights: Mapping[str, int]) -> Vector:
    """The sample-weighted mean of the deltas: sum(n_k * delta_k) / sum(n_k)."""
    if not deltas:
        raise InvalidArgument("deltas", "no delta to average")
    total = sum(weights[s] for s in deltas)
    if total <= 0:
        raise InvalidArgument("weights", "the weights must sum to more than 0")
    out = np.zeros_like(np.asarray(next(iter(deltas.values())), dtype=np.float64))
    for site, delta in deltas.items():
        out += weights[site] * np.asarray(delta, dtype=np.float64)
    return out / total


def centralized(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    x_test: NDArray[np.float64],
    y_test: NDArray[np.float64],
    rounds: int,
    config: TrainConfig,
    rng: np.random.Generator,
) -> list[float]:
    """All the training data in one place, the same optimizer and budget (``config.epochs`` per
    round, FedProx off): the test accuracy after each round-equivalent."""
    plain = dataclasses.replace(config, mu=0.0)
    w, curve = initial(x.shape[1]), []
    for _ in range(rounds):
        w = local_train(w, x, y, plain, rng)
        curve.append(accuracy(w, x_test, y_test))
    return curve


def local_only(
    sites: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
    x_test: NDArray[np.float64],
    y_test: NDArray[np.float64],
    rounds: int,
    config: TrainConfig,
    rng: np.random.Generator,
) -> list[float]:
    """Each hospital alone on its own data with the same budget: its final test accuracy."""
    return [centralized(x, y, x_test, y_test, rounds, config, rng)[-1] for x, y in sites]
