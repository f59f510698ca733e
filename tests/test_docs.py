"""The docstring examples of the public modules run, against the installed package."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

MODULES = [
    "fedledger",
    "fedledger.crypto.merkle",
    "fedledger.crypto.shamir",
    "fedledger.crypto.masking",
    "fedledger.secagg",
    "fedledger.secagg.outcome",
    "fedledger.crypto.paillier",
    "fedledger.blobstore.cid",
    "fedledger.blobstore.store",
    "fedledger.heagg",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


DOCS = Path(__file__).resolve().parents[1] / "docs"
TESTS = Path(__file__).resolve().parent


def test_every_test_that_the_security_docs_cite_exists() -> None:
    """A claim in the security docs names the test that backs it; that test must exist."""
    defined = set()
    for path in TESTS.rglob("test_*.py"):
        defined |= set(re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M))
    for page in sorted(DOCS.glob("security*.md")):
        cited = set(re.findall(r"\b(test_\w+)\b", page.read_text())) - {"test_"}
        cited = {name for name in cited if not name.endswith(".py") and not (TESTS / f"{name}.py").exists()}
        missing = sorted(cited - defined)
        assert not missing, f"{page.name} cites tests that do not exist: {missing}"


def test_docs_speak_of_the_repository_alone() -> None:
    """No issue numbers, process words or paths outside the repository in what users read."""
    pages = [
        *DOCS.glob("*.md"),
        DOCS.parent / "README.md",
        DOCS.parent / "CHANGELOG.md",
        TESTS / "vectors" / "README.md",
    ]
    forbidden = [
        r"\bissue\s*#?\d",
        r"\(issue\b",
        r"\bissue's\b",
        r"#\d{2,}",
        r"/work/",
        r"/root/",
        r"\.\./shared",
        r"\bthe lead\b",
        r"\bnot met\b",
        r"\bsession's\b",
        r"\bprevious session\b",
    ]
    for page in pages:
        text = page.read_text()
        for pattern in forbidden:
            found = re.search(pattern, text, re.I)
            assert found is None, f"{page.name}: {found.group(0)!r} ({pattern})"
