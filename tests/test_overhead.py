"""fedledger bench: every variant runs on the same updates, the figures are consistent with
each other and with what the layers add, and the outputs (table, JSON, CSV, plot) are written."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fedledger
from fedledger import overhead
from fedledger.errors import InvalidArgument

PACKAGE_ROOT = str(Path(fedledger.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def grid():  # type: ignore[no-untyped-def]
    return overhead.run_grid([3, 4], [64], key_bits=512, train_seconds=0.5, repeat=2)


def test_every_variant_runs_on_every_cell_and_sums_right(grid) -> None:  # type: ignore[no-untyped-def]
    cells, facts = grid
    assert [(c.variant, c.n) for c in cells] == [(v, n) for n in (3, 4) for v in overhead.VARIANTS]
    for c in cells:
        bound = 1e-5 if c.variant in ("plain", "sealed") else 0.05  # float32 on the wire / quantization
        assert c.max_abs_error < bound, c
        assert c.site_seconds_max >= c.site_seconds_mean > 0 and c.server_seconds > 0
        assert c.stage_seconds and all(v >= 0 for stage in c.stage_seconds.values() for v in stage.values())
    assert facts["paillier_deal_seconds"] > 0 and facts["key_bits"] == 512


def test_the_ratios_are_against_plain_and_the_seal_adds_bytes(grid) -> None:  # type: ignore[no-untyped-def]
    cells, _ = grid
    by = {(c.variant, c.n): c for c in cells}
    for n in (3, 4):
        plain = by[("plain", n)]
        assert plain.time_ratio == 1.0 and plain.bytes_ratio == 1.0 and plain.round_overhead == 0.0
        for layered, bare in (("sealed", "plain"), ("masked+sealed", "masked"), ("paillier+sealed", "paillier")):
            assert by[(layered, n)].bytes_up_per_site > by[(bare, n)].bytes_up_per_site  # tags and headers
        for c in (by[(v, n)] for v in overhead.VARIANTS):
            assert c.bytes_ratio == pytest.approx(c.bytes_up_per_site / plain.bytes_up_per_site)
            assert c.time_ratio == pytest.approx(c.critical_path / plain.critical_path)
            expected = (0.5 + c.critical_path) / (0.5 + plain.critical_path) - 1
            assert c.round_overhead == pytest.approx(expected)
        assert by[("paillier", n)].trustee_seconds_mean > 0 and by[("masked", n)].trustee_seconds_mean == 0


def test_json_and_csv_hold_every_cell(grid) -> None:  # type: ignore[no-untyped-def]
    cells, facts = grid
    doc = json.loads(overhead.to_json(cells, facts))
    assert doc["type"] == "fedledger.bench/1" and len(doc["cells"]) == len(cells)
    assert doc["cells"][0]["critical_path"] == pytest.approx(cells[0].critical_path)
    rows = list(csv.DictReader(io.StringIO(overhead.to_csv(cells))))
    assert [r["variant"] for r in rows] == [c.variant for c in cells]
    assert float(rows[-1]["bytes_up_per_site"]) == pytest.approx(cells[-1].bytes_up_per_site)
    table = overhead.render(cells, facts, 0.5)
    assert "paillier+sealed" in table and "round overhead" in table


def test_bad_grids_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown"):
        overhead.run_grid([3], [8], ["plain", "ckks"])
    with pytest.raises(InvalidArgument, match=">= 3"):
        overhead.run_grid([2], [8])
    with pytest.raises(InvalidArgument, match="positive"):
        overhead.run_grid([3], [0])
    with pytest.raises(InvalidArgument, match="repeat"):
        overhead.run_grid([3], [8], repeat=0)


def test_the_command_line_writes_the_table_json_csv_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    cmd = [
        sys.executable, "-m", "fedledger", "bench", "--clients", "3", "--dims", "32,4000", "--key-bits", "512",
        "--paillier-max-d", "100", "--repeat", "1", "--train-seconds", "1",
        "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv"), "--plot", str(tmp_path / "b.png"),
    ]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": PACKAGE_ROOT}, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "masked+sealed" in out.stdout and "skipped: paillier N=3 D=4000" in out.stdout
    doc = json.loads((tmp_path / "b.json").read_text())
    assert len(doc["cells"]) == 6 + 4  # D=4000 runs without the Paillier pair
    assert (tmp_path / "b.csv").read_text().count("\n") == 11
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
