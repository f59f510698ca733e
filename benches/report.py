"""Print a markdown table (median, ops/s, ratio to fedledger) from pytest-benchmark JSON files.

python benches/report.py .benchmarks/merkle.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(paths: list[str]) -> None:
    groups: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
    machine = None
    for path in paths:
        data = json.loads(open(path).read())
        machine = data.get("machine_info", {})
        for b in data["benchmarks"]:
            groups[b["group"]].append((b["name"], b["stats"]["median"], b["stats"]["rounds"]))
    if machine:
        print(
            f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
            f"{machine.get('cpu', {}).get('count', '?')} cores, Python {machine.get('python_version')}\n"
        )
    print("| group | bench | median | rounds | ratio (peer / fedledger) |")
    print("| --- | --- | --- | --- | --- |")
    for group, rows in groups.items():
        ours = [m for name, m, _ in rows if "fedledger" in name]
        best = max(ours) if ours else None  # the slowest fedledger variant: a conservative ratio
        for name, median, rounds in sorted(rows, key=lambda r: r[1]):
            ratio = "" if best is None or "fedledger" in name else f"{median / best:,.1f}x"
            print(f"| {group} | {name.removeprefix('test_')} | {_fmt(median)} | {rounds} | {ratio} |")


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


if __name__ == "__main__":
    main(sys.argv[1:])
