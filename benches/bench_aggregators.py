"""One round of each aggregator, N=10 sites, against Plain in the same run.

    PYTHONPATH=src python -m pytest benches/bench_aggregators.py --benchmark-only \
        --benchmark-json=.benchmarks/aggregators.json        # -k masked to skip the slow Paillier round

Every round goes through ``Aggregator.run``: fresh identities, every message as bytes in an
Envelope, updates sealed (AES-256-GCM) to the aggregator and signed. Updates are float32
U(-0.05, 0.05), weights 1..10 (total 55, within Paillier's max_total_weight of 128).

- Plain: float32 on the wire; Masked: SecAgg+ at 32 bits, ``neighbors="auto"``;
  Paillier: 16-bit values, 2048-bit key, 2 of 3 trustees (all three answer), the dealing
  made once, outside the timing.
- D is 10^6 for Plain and Masked. A trustee's partial decryption is one exponentiation mod
  n^2 with a secret exponent of about 4096 bits per ciphertext (88 values), some minutes per
  trustee at D=10^6 on a small machine, so Paillier runs at D=10^5 unless
  ``AGG_BENCH_PAILLIER_D`` says otherwise; bytes and times grow linearly in D.

extra_info: ``bytes_up_per_site`` (mean over sites), its ratio to Plain's (Plain run at the
same D in the same test), ``site_s`` (mean compute per site), ``server_s``,
``trustee_s`` (mean per trustee), and Plain's figures alongside.
"""

from __future__ import annotations

import os
import statistics

import numpy as np
import pytest

from fedledger import heagg
from fedledger.aggregators import AggregateResult, Masked, Paillier, Plain

N = 10
D = 10**6
D_PAILLIER = int(os.environ.get("AGG_BENCH_PAILLIER_D", str(10**5)))


def updates(d: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"site-{i:02d}": rng.uniform(-0.05, 0.05, d).astype(np.float32) for i in range(N)}


WEIGHTS = {f"site-{i:02d}": i + 1 for i in range(N)}


def figures(res: AggregateResult, prefix: str = "") -> dict[str, float]:
    sites = [c for c in res.bytes_up if c.startswith("site-")]
    trustees = [c for c in res.seconds if c.startswith("trustee-")]
    out = {
        "bytes_up_per_site": statistics.mean(res.bytes_up[c] for c in sites),
        "bytes_down_per_site": statistics.mean(res.bytes_down.get(c, 0) for c in sites),
        "site_s": statistics.mean(res.seconds[c] for c in sites),
        "server_s": res.seconds["server"],
    }
    if trustees:
        out["trustee_s"] = statistics.mean(res.seconds[t] for t in trustees)
        out["bytes_down_per_trustee"] = statistics.mean(res.bytes_down[t] for t in trustees)
    return {prefix + k: v for k, v in out.items()}


def _bench(benchmark, agg: Masked | Paillier | Plain, d: int) -> None:  # type: ignore[no-untyped-def]
    ups = updates(d)
    got: list[AggregateResult] = []
    benchmark.pedantic(lambda: got.append(agg.run(ups, WEIGHTS)), rounds=1, iterations=1)
    res = got[-1]
    plain = Plain().run(ups, WEIGHTS)
    info = {"N": N, "D": d, **figures(res), **figures(plain, "plain_")}
    info["bytes_ratio_to_plain"] = info["bytes_up_per_site"] / info["plain_bytes_up_per_site"]
    info["max_abs_error"] = float(np.max(np.abs(res.aggregate - plain.aggregate)))
    benchmark.extra_info.update(info)


@pytest.mark.benchmark(group="aggregators N=10")
def test_plain(benchmark) -> None:  # type: ignore[no-untyped-def]
    _bench(benchmark, Plain(), D)


@pytest.mark.benchmark(group="aggregators N=10")
def test_masked(benchmark) -> None:  # type: ignore[no-untyped-def]
    _bench(benchmark, Masked(), D)
    assert benchmark.extra_info["bytes_ratio_to_plain"] <= 1.1


@pytest.mark.benchmark(group="aggregators N=10")
def test_paillier(benchmark) -> None:  # type: ignore[no-untyped-def]
    dealing = heagg.deal(["trustee-1", "trustee-2", "trustee-3"], 2, key_bits=2048)
    _bench(benchmark, Paillier(dealing=dealing), D_PAILLIER)
