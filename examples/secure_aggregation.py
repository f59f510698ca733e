"""Secure aggregation among hospitals: the aggregator learns the sum of their model updates,
never one hospital's update, even when some hospitals drop out mid-round.

Run it after `pip install .`:

    python examples/secure_aggregation.py

Twenty sites each hold a model update of 100,000 parameters and a sample count. They run one
SecAgg+ round (Bonawitz et al. with the sparse neighbor graph of Bell et al.) in this process:
every message is signed, passed through bytes, and checked; masked vectors and revealed shares
are sealed to the aggregator (AES-256-GCM); each site's sample count is declared in its signed
message, and the unmasked sum must match those counts and lie within their weighted clip range. Two sites vanish before sending their masked
update and one before the last stage; the round still completes, and its weighted mean matches
the plain one over the sites whose updates arrived. Then a vector tampered with in transit is
caught and left out of the sum.
"""

from __future__ import annotations

import time

import numpy as np

from fedledger import secagg


def main() -> None:
    rng = np.random.default_rng(2026)
    sites = [f"hospital-{i:02d}" for i in range(20)]
    updates = {s: (rng.standard_normal(100_000) * 0.02).astype(np.float32) for s in sites}
    samples = {s: int(rng.integers(50, 500)) for s in sites}
    config = secagg.SecAggConfig(neighbors="auto", clip=0.5, max_weight=1_000, round_id=7)
    n = len(sites)
    print(
        f"{n} sites, {config.degree(n)} neighbors each, threshold {config.threshold_for(n)} "
        f"of {config.neighborhood(n)}, {config.bits}-bit ring, masked vectors sealed: {config.seal_inputs}"
    )

    dropouts = {"hospital-03": "masked_input", "hospital-11": "masked_input", "hospital-17": "unmask"}
    t0 = time.perf_counter()
    result = secagg.run_round(updates, config, dropouts, weights=samples)
    elapsed = time.perf_counter() - t0
    report = result.report
    alive = report.survivors
    plain = sum(np.clip(updates[s], -0.5, 0.5).astype(np.float64) * samples[s] for s in alive) / sum(
        samples[s] for s in alive
    )
    err = float(np.max(np.abs(result.mean - plain)))
    print(f"round done in {elapsed:.2f} s: {len(alive)} updates in the sum, dropped {sorted(report.dropped)}")
    # Stochastic rounding moves each site's weighted value by less than one step (1 / scale).
    bound = len(alive) / (result.scale * result.total_weight)
    assert err <= bound + 1e-12
    print(f"weighted mean of {result.total_weight:,} samples; max |secure - plain| = {err:.1e} (bound {bound:.1e})")
    print(
        f"bytes up {report.total_bytes_up / 1e6:.1f} MB, down {report.total_bytes_down / 1e6:.2f} MB; "
        f"median client compute {1e3 * float(np.median(list(report.client_seconds.values()))):.1f} ms"
    )

    # A bit flips in one site's sealed update on the way: the aggregator refuses it, counts the
    # site as dropped, and the others' sum stays exact.
    def flip(stage: str, sender: str, receiver: str, data: bytes) -> bytes:
        if stage == "masked_input" and sender == "hospital-05":
            raw = bytearray(data)
            raw[-1000] ^= 0x01
            return bytes(raw)
        return data

    tampered = secagg.run_round(updates, config, weights=samples, intercept=flip)
    print(
        f"tampered update caught: hospital-05 {tampered.report.rejected['hospital-05'].split(': ', 1)[1]}; "
        f"{len(tampered.report.survivors)} updates in the sum"
    )

    # Sample counts are declared in each site's signed message: public to the aggregator and
    # recorded beside each commitment; the unmasked weight slot had to match their sum.
    assert report.weights == {s: samples[s] for s in alive} and sum(report.weights.values()) == result.total_weight
    print(f"declared sample counts recorded for {len(report.weights)} sites, beside their commitments")

    # What a ledger stores for the round: the frozen outcome's canonical record (no vectors).
    record = result.outcome.record_bytes()
    assert secagg.RoundOutcome.from_bytes(record) == result.outcome
    print(
        f"round outcome record: {len(record):,} bytes (survivors, dropouts by stage, rejections, "
        f"commitments, weights, parameters)"
    )


if __name__ == "__main__":
    main()
