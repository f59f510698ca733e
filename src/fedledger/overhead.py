"""``fedledger bench``: what the two encryption layers cost, on your own hardware.

For each number of sites N and parameters D of a grid, one round of each variant runs in this
process on the same random updates and weights:

| variant | first layer (hides the update from the aggregator) | second layer (AEAD to the aggregator) |
| --- | --- | --- |
| ``plain`` | none | none |
| ``sealed`` | none | yes |
| ``masked`` | SecAgg+ masks | none |
| ``masked+sealed`` | SecAgg+ masks | yes |
| ``paillier`` | packed Paillier, t-of-n trustees | none |
| ``paillier+sealed`` | packed Paillier, t-of-n trustees | yes |

Every variant signs its messages; what differs is the layers. Reported per cell: the time of
the slowest site (sites run in parallel in a real round), the aggregator's time, the mean
trustee time (Paillier), the time per stage, bytes up and down per site, and the ratios to
``plain`` (same N and D). With a local training time of S seconds per site (``--train-seconds``),
the overhead of a whole round is ``(S + slowest site + server) / (S + the same for plain) - 1``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np

from fedledger.aggregators import AggregateResult, Masked, Paillier, Plain
from fedledger.aggregators.base import Aggregator
from fedledger.errors import InvalidArgument

__all__ = ["VARIANTS", "Cell", "run_grid", "to_csv", "to_json"]

VARIANTS: Final = ("plain", "sealed", "masked", "masked+sealed", "paillier", "paillier+sealed")


@dataclass
class Cell:
    """One variant at one (N, D): times in seconds, bytes per site, ratios to ``plain``."""

    variant: str
    n: int
    d: int
    site_seconds_max: float
    site_seconds_mean: float
    server_seconds: float
    trustee_seconds_mean: float
    bytes_up_per_site: float
    bytes_down_per_site: float
    stage_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    time_ratio: float = 1.0
    bytes_ratio: float = 1.0
    round_overhead: float | None = None
    max_abs_error: float = 0.0

    @property
    def critical_path(self) -> float:
        """What a round waits for when sites run in parallel: the slowest site and the server."""
        return self.site_seconds_max + self.server_seconds + self.trustee_seconds_mean


def _aggregator(
    variant: str, *, n: int, neighbors: int | str | None, key_bits: int, paillier: Paillier | None
) -> Aggregator:
    sealed = variant.endswith("+sealed") or variant == "sealed"
    if variant in ("plain", "sealed"):
        return Plain(3, sealed=sealed)
    if variant.startswith("masked"):
        return Masked(3, neighbors=neighbors, max_weight=1000, sealed=sealed)
    assert paillier is not None
    return Paillier(
        3,
        max_total_weight=paillier.max_total_weight,
        dealing=paillier.dealing,
        key_bits=key_bits,
        insecure_for_tests=key_bits < 2048,
        sealed=sealed,
    )


def _cell(variant: str, n: int, d: int, result: AggregateResult, sites: Sequence[str], elapsed: float) -> Cell:
    site_times = [result.seconds.get(s, 0.0) for s in sites]
    trustees = [k for k in result.seconds if k.startswith("trustee-")]
    return Cell(
        variant,
        n,
        d,
        max(site_times),
        float(np.mean(site_times)),
        result.seconds.get("server", 0.0),
        float(np.mean([result.seconds[t] for t in trustees])) if trustees else 0.0,
        float(np.mean([result.bytes_up.get(s, 0) for s in sites])),
        float(np.mean([result.bytes_down.get(s, 0) for s in sites])),
        {k: dict(v) for k, v in result.stage_seconds.items()},
    )


def run_grid(
    clients: Sequence[int],
    dims: Sequence[int],
    variants: Sequence[str] = VARIANTS,
    *,
    neighbors: int | str | None = 3,
    key_bits: int = 2048,
    paillier_max_d: int = 10_000,
    train_seconds: float | None = None,
    seed: int = 0,
    repeat: int = 3,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Cell], dict[str, Any]]:
    """Run every variant on every (N, D); return the cells and facts about the run.

    Each cell is the round with the median critical path of ``repeat`` rounds (Paillier: one
    round), after one untimed warm-up round of each variant. Paillier cells with D above
    ``paillier_max_d`` are skipped (its trustees' partial decryptions take about 25 ms per
    2048-bit ciphertext of 88 values here); the key is dealt once, outside the timed rounds,
    and its time is reported.
    """
    if type(repeat) is not int or repeat < 1:
        raise InvalidArgument("repeat", f"must be a positive int, got {repeat!r}")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise InvalidArgument("variants", f"unknown {unknown}; known: {list(VARIANTS)}")
    if not clients or any(type(n) is not int or n < 3 for n in clients):
        raise InvalidArgument("clients", f"each N must be an int >= 3 (the minimum cohort), got {list(clients)}")
    if not dims or any(type(d) is not int or d < 1 for d in dims):
        raise InvalidArgument("dims", f"each D must be a positive int, got {list(dims)}")
    if train_seconds is not None and not train_seconds >= 0:
        raise InvalidArgument("train_seconds", f"must be >= 0, got {train_seconds!r}")
    say = progress or (lambda _: None)
    facts: dict[str, Any] = {"neighbors": neighbors, "key_bits": key_bits, "skipped": []}
    paillier: Paillier | None = None
    if any(v.startswith("paillier") for v in variants):
        paillier = Paillier(
            3, key_bits=key_bits, max_total_weight=max(128, 10 * max(clients)), insecure_for_tests=key_bits < 2048
        )
        t0 = time.perf_counter()
        paillier.dealing  # noqa: B018 - deal the key (safe primes) once, outside the rounds
        facts["paillier_deal_seconds"] = time.perf_counter() - t0
        say(f"dealt a {key_bits}-bit Paillier key to 3 trustees in {facts['paillier_deal_seconds']:.1f} s")
    rng = np.random.default_rng(seed)
    warm = {f"site-{i}": np.zeros(8) for i in range(3)}
    for variant in variants:  # first-call costs (imports, kernel loading) outside the figures
        _aggregator(variant, n=3, neighbors=neighbors, key_bits=key_bits, paillier=paillier).run(warm)
    cells: list[Cell] = []
    for n in clients:
        for d in dims:
            sites = [f"site-{i:03d}" for i in range(n)]
            updates = {s: np.clip(rng.normal(0, 0.05, d), -1, 1) for s in sites}
            weights = {s: int(w) for s, w in zip(sites, rng.integers(1, 10, n))}
            exact = sum(weights[s] * updates[s] for s in sites)
            base: Cell | None = None
            for variant in variants:
                if variant.startswith("paillier") and d > paillier_max_d:
                    facts["skipped"].append(f"{variant} N={n} D={d} (D above --paillier-max-d {paillier_max_d})")
                    continue
                runs = []
                for _ in range(1 if variant.startswith("paillier") else repeat):
                    agg = _aggregator(variant, n=n, neighbors=neighbors, key_bits=key_bits, paillier=paillier)
                    t0 = time.perf_counter()
                    result = agg.run(updates, weights)
                    one = _cell(variant, n, d, result, sites, time.perf_counter() - t0)
                    one.max_abs_error = float(np.max(np.abs(result.aggregate - exact)))
                    runs.append(one)
                cell = sorted(runs, key=lambda c: c.critical_path)[len(runs) // 2]
                if variant == "plain":
                    base = cell
                if base is not None:
                    cell.time_ratio = cell.critical_path / base.critical_path if base.critical_path else float("nan")
                    cell.bytes_ratio = cell.bytes_up_per_site / base.bytes_up_per_site
                    if train_seconds is not None:
                        cell.round_overhead = (train_seconds + cell.critical_path) / (
                            train_seconds + base.critical_path
                        ) - 1
                cells.append(cell)
                say(
                    f"N={n} D={d} {variant}: slowest site {cell.site_seconds_max * 1e3:.1f} ms, "
                    f"server {cell.server_seconds * 1e3:.1f} ms, {cell.bytes_up_per_site / 1e3:.1f} kB up per site"
                )
    return cells, facts


def to_json(cells: Sequence[Cell], facts: dict[str, Any]) -> str:
    rows = [{**asdict(c), "critical_path": c.critical_path} for c in cells]
    return json.dumps({"type": "fedledger.bench/1", "facts": facts, "cells": rows}, indent=2)


CSV_COLUMNS: Final = (
    "variant",
    "n",
    "d",
    "site_seconds_max",
    "site_seconds_mean",
    "server_seconds",
    "trustee_seconds_mean",
    "bytes_up_per_site",
    "bytes_down_per_site",
    "time_ratio",
    "bytes_ratio",
    "round_overhead",
    "max_abs_error",
)


def to_csv(cells: Sequence[Cell]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for c in cells:
        writer.writerow([getattr(c, col) for col in CSV_COLUMNS])
    return out.getvalue()


def render(cells: Sequence[Cell], facts: dict[str, Any], train_seconds: float | None) -> str:
    """A table for the console (rich if installed, plain text otherwise)."""
    headers = [
        "variant",
        "N",
        "D",
        "slowest site",
        "server",
        "trustee",
        "bytes up/site",
        "x plain time",
        "x plain bytes",
    ]
    if train_seconds is not None:
        headers.append(f"round overhead (S={train_seconds:g} s)")
    rows = []
    for c in cells:
        row = [
            c.variant,
            str(c.n),
            f"{c.d:,}",
            f"{c.site_seconds_max * 1e3:.1f} ms",
            f"{c.server_seconds * 1e3:.1f} ms",
            f"{c.trustee_seconds_mean * 1e3:.1f} ms" if c.trustee_seconds_mean else "-",
            f"{c.bytes_up_per_site:,.0f}",
            f"{c.time_ratio:.2f}x",
            f"{c.bytes_ratio:.3f}x",
        ]
        if train_seconds is not None:
            row.append("-" if c.round_overhead is None else f"{100 * c.round_overhead:+.1f}%")
        rows.append(row)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)
    table = Table(title="fedledger bench: the cost of the two encryption layers")
    for h in headers:
        table.add_column(h, justify="left" if h == "variant" else "right")
    for r in rows:
        table.add_row(*r)
    console = Console(record=True, width=160)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def plot(cells: Sequence[Cell], path: str) -> None:
    """A bar chart of each variant's critical path per (N, D), as a PNG (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised where matplotlib is absent
        from fedledger.errors import MissingDependency

        raise MissingDependency("matplotlib", "demo", "--plot") from exc
    groups = sorted({(c.n, c.d) for c in cells})
    variants = [v for v in VARIANTS if any(c.variant == v for c in cells)]
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(groups)), 4))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        values = [
            next((c.critical_path * 1e3 for c in cells if (c.n, c.d, c.variant) == (n, d, v)), 0.0) for n, d in groups
        ]
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=v)
    ax.set_xticks([g + width * (len(variants) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"N={n}\nD={d:,}" for n, d in groups])
    ax.set_ylabel("slowest site + server (+ trustee), ms")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
