"""The demo's data: the Wisconsin breast-cancer data set, split across hospitals non-IID.

The data is the Breast Cancer Wisconsin (Diagnostic) data set (W. H. Wolberg, W. N. Street,
O. L. Mangasarian, UCI Machine Learning Repository, 1995) as scikit-learn ships it: 569
samples, 30 real features, a binary label (1 = benign, 0 = malignant).

What happens to it, all with a fixed seed:

1. a stratified train/test split (80/20): the test set stands for data no hospital trains on;
2. the training part is split across hospitals with a Dirichlet split over labels: for each
   label, the hospitals' shares of its samples are drawn from Dirichlet(alpha, ..., alpha), so
   a small alpha gives each hospital a skewed mix of labels (non-IID); the draw is repeated
   until every hospital holds at least ``min_per_site`` samples;
3. standardization with the training split's statistics only: each hospital computes
   ``(n, sum x, sum x^2)`` over its own rows and the three are summed, which gives the pooled
   mean and standard deviation without pooling any row (in a deployment those sums are one
   more secure aggregation). The test set is standardized with the same training statistics,
   never with its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import InvalidArgument, MissingDependency

__all__ = ["FederatedData", "dirichlet_split", "load", "site_statistics", "standardize"]

#: The fraction of the data kept out as the test set.
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class FederatedData:
    """Standardized features and labels, the train/test split, and each hospital's rows.

    ``sites[h]`` holds the indices into ``x_train``/``y_train`` of hospital ``h``'s samples;
    every training sample belongs to exactly one hospital. ``mean``/``std`` are the training
    statistics the features were standardized with.
    """

    x_train: NDArray[np.float64]
    y_train: NDArray[np.float64]
    x_test: NDArray[np.float64]
    y_test: NDArray[np.float64]
    sites: tuple[NDArray[np.int64], ...]
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    alpha: float
    seed: int

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])

    def site(self, h: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Hospital ``h``'s (features, labels)."""
        rows = self.sites[h]
        return self.x_train[rows], self.y_train[rows]

    @property
    def raw_bytes(self) -> int:
        """Bytes of the training data shipped raw to one place: float64 features and labels."""
        return int(self.x_train.size * 8 + self.y_train.size * 8)


def _breast_cancer() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        raise MissingDependency("scikit-learn", "demo", "the demo's data set") from None
    bunch = load_breast_cancer()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64)


def _stratified_split(
    y: NDArray[np.float64], fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(train, test) indices with each label's share of the test set as in the whole."""
    train: list[NDArray[np.int64]] = []
    test: list[NDArray[np.int64]] = []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        k = int(round(len(rows) * fraction))
        test.append(rows[:k])
        train.append(rows[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def dirichlet_split(
    labels: NDArray[np.float64] | NDArray[np.int64],
    sites: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_per_site: int = 10,
    max_tries: int = 1000,
) -> tuple[NDArray[np.int64], ...]:
    """Each sample's hospital, drawn per label from Dirichlet(``alpha``): one index array per site.

    Every index of ``labels`` lands in exactly one site. The draw is repeated (the same ``rng``
    goes on, so a seed gives one answer) until every site holds at least ``min_per_site``
    samples; InvalidArgument if that cannot happen or ``max_tries`` draws all fail.
    """
    if sites < 1:
        raise InvalidArgument("sites", f"must be >= 1, got {sites}")
    if not (alpha > 0 and np.isfinite(alpha)):
        raise InvalidArgument("alpha", f"must be a finite number > 0, got {alpha}")
    if sites * min_per_site > len(labels):
        raise InvalidArgument("min_per_site", f"{sites} sites x {min_per_site} exceeds {len(labels)} samples")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[NDArray[np.int64]]] = [[] for _ in range(sites)]
        for label in classes:
            rows = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
            for h, chunk in enumerate(np.split(rows, cuts)):
                parts[h].append(chunk)
        out = tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
        if min(len(p) for p in out) >= min_per_site:
            return out
    raise InvalidArgument("alpha", f"no split with {min_per_site} samples per site in {max_tries} draws")


def site_statistics(x: NDArray[np.float64]) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
    """What one hospital contributes to the standardization: ``(n, sum x, sum x^2)``."""
    return int(x.shape[0]), x.sum(axis=0), (x * x).sum(axis=0)


def standardize(
    parts: list[tuple[int, NDArray[np.float64], NDArray[np.float64]]],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pooled (mean, std) from the hospitals' summed statistics; a constant feature gets std 1."""
    n = sum(p[0] for p in parts)
    total = sum(p[1] for p in parts)
    squares = sum(p[2] for p in parts)
    mean = np.asarray(total / n, dtype=np.float64)
    var = np.maximum(np.asarray(squares / n, dtype=np.float64) - mean * mean, 0.0)
    std = np.sqrt(var)
    return mean, np.where(std > 0, std, 1.0)


def load(*, sites: int = 5, alpha: float = 0.5, seed: int = 0, min_per_site: int = 10) -> FederatedData:
    """The data set split across ``sites`` hospitals (see the module's docstring)."""
    x, y = _breast_cancer()
    rng = np.random.default_rng(seed)
    train, test = _stratified_split(y, TEST_FRACTION, rng)
    x_train, y_train = x[train], y[train]
    site_rows = dirichlet_split(y_train, sites, alpha, rng, min_per_site=min_per_site)
    mean, std = standardize([site_statistics(x_train[rows]) for rows in site_rows])
    return FederatedData(
        x_train=(x_train - mean) / std,
        y_train=y_train,
        x_test=(x[test] - mean) / std,
        y_test=y[test],
        sites=site_rows,
        mean=mean,
        std=std,
        alpha=float(alpha),
        seed=int(seed),
    )
