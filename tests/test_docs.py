"""The docstring examples of the public modules run, against the installed package."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["fedledger", "fedledger.crypto.merkle", "fedledger.crypto.shamir", "fedledger.crypto.masking", "fedledger.secagg"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
