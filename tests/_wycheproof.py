"""Load the Wycheproof vectors kept in tests/vectors/wycheproof/ (see tests/vectors/README.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors" / "wycheproof"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def cases(name: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(group, test) for every test in the file."""
    data = load(name)
    count = 0
    for group in data["testGroups"]:
        for test in group["tests"]:
            count += 1
            yield group, test
    assert count == data["numberOfTests"], f"{name}: {count} tests, header says {data['numberOfTests']}"


def case_id(case: tuple[dict[str, Any], dict[str, Any]]) -> str:
    return f"tc{case[1]['tcId']}"
