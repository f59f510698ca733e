"""The layer rules of docs/architecture.md, read from the code's own imports.

Every ``import`` and ``from ... import`` in a ``.py`` file (at any depth, lazy ones included,
read with ``ast``) and every ``cimport`` line of a ``.pyx``/``.pxd`` file is checked:

- ``fedledger._ext`` imports only ``fedledger._ext``;
- ``fedledger.crypto`` imports only ``fedledger._ext``, ``fedledger.errors`` and itself;
- ``fedledger.ledger`` and ``fedledger.secagg`` never import each other;
- no module imports a package on a higher floor than its own;
- ``torch`` is imported only by ``fedledger.integrations.torch`` (torch is an optional extra).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fedledger"

# Floors, lowest first; a module may import its own floor and the ones below.
FLOORS: dict[str, int] = {
    "_ext": 1,
    "errors": 1,
    "_version": 1,
    "crypto": 2,
    "encoding": 2,
    "identity": 3,
    "ledger": 4,
    "secagg": 4,
    "heagg": 4,
    "blobstore": 5,
    "contracts": 5,
    "aggregators": 5,
    "audit": 6,
    "federated": 6,
    "demo": 7,
    "node": 7,
    "overhead": 7,
    "__init__": 7,
    "__main__": 7,
    # Bridges to frameworks (fedledger.integrations.torch, ...): the top floor, may import everything below.
    "integrations": 7,
}
# The protocols of floor 4 never import each other (a floor's own rule, on top of "never upward");
# the aggregators (floor 5) drive secagg and heagg but never touch the ledger.
_PROTOCOLS = {"ledger", "secagg", "heagg"}
ALLOWED: dict[str, set[str]] = {
    "_ext": {"_ext"},
    "crypto": {"_ext", "errors", "crypto"},
    **{p: set(FLOORS) - (_PROTOCOLS - {p}) for p in _PROTOCOLS},
    "aggregators": set(FLOORS) - {"ledger", "blobstore", "contracts"},
    "contracts": {"errors", "encoding", "crypto", "ledger", "contracts"},
}
_CIMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+cimport|cimport\s+([\w.]+))", re.M)


def _part(module: str) -> str | None:
    """The top-level part of fedledger a dotted module name falls in (None: not fedledger)."""
    names = module.split(".")
    if names[0] != "fedledger":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in one source file."""
    text = path.read_text()
    if path.suffix in (".pyx", ".pxd"):
        found = [(text.count("\n", 0, m.start()) + 1, m.group(1) or m.group(2)) for m in _CIMPORT.finditer(text)]
        text = "\n".join("" if "cimport" in line else line for line in text.splitlines())
        try:
            tree = ast.parse(text)
        except SyntaxError:  # Cython syntax: the cimport lines and plain imports are all we need
            plain = re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", text, re.M)
            return found + [(text.count("\n", 0, m.start()) + 1, m.group(1) or m.group(2)) for m in plain]
    else:
        found, tree = [], ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base == "fedledger":  # "from fedledger import ledger": each name is a module or an attribute
                found += [(node.lineno, f"fedledger.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` (a ``fedledger`` directory) that breaks a rule."""
    problems = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
        own = (
            _part(module.removesuffix(".__init__"))
            if rel.parts[-1] == "__init__" and len(rel.parts) > 2
            else _part(module)
        )
        if own is None or own not in FLOORS:
            problems.append(f"{rel}: not in a known layer ({own})")
            continue
        for line, target in _imports(path, package):
            other = _part(target)
            if other is None or other == own:
                continue
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if other not in FLOORS:
                problems.append(f"{where}: not a known layer")
            elif own in ALLOWED and other not in ALLOWED[own]:
                problems.append(f"{where}: {own} may import only {sorted(ALLOWED[own])}")
            elif FLOORS[other] > FLOORS[own]:
                problems.append(f"{where}: upward, floor {FLOORS[own]} to floor {FLOORS[other]}")
    return problems


def test_the_package_keeps_its_layers() -> None:
    assert layer_violations(SRC) == []


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "fedledger"
    for name, body in {
        "__init__.py": "",
        "crypto/__init__.py": "",
        "_ext/__init__.py": "",
        "ledger/__init__.py": "",
        "secagg/__init__.py": "",
        **files,
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


@pytest.mark.parametrize(
    "files, rule",
    [
        ({"crypto/merkle.py": "from fedledger.ledger import Ledger\n"}, "crypto may import only"),
        ({"crypto/merkle.py": "def f():\n    import fedledger.identity\n"}, "crypto may import only"),
        ({"crypto/merkle.py": "from .. import encoding\n"}, "crypto may import only"),
        ({"_ext/_k.pyx": "from fedledger.crypto._args cimport check\n"}, "_ext may import only"),
        ({"_ext/_k.pyx": "cdef int x = 1\nfrom fedledger.errors import InvalidProof\n"}, "_ext may import only"),
        ({"ledger/state.py": "from fedledger.secagg import server\n"}, "ledger may import only"),
        ({"secagg/server.py": "from fedledger import ledger\n"}, "secagg may import only"),
        ({"identity.py": "from fedledger.ledger import Transaction\n"}, "upward"),
        ({"ledger/state.py": "from fedledger.blobstore import BlobStore\n"}, "upward, floor 4 to floor 5"),
        ({"crypto/seal.py": "from fedledger import blobstore\n"}, "crypto may import only"),
        ({"encoding.py": "import fedledger.secagg.client\n"}, "upward"),
    ],
)
def test_a_deliberate_upward_import_fails(tmp_path: Path, files: dict[str, str], rule: str) -> None:
    problems = layer_violations(_fake_tree(tmp_path, files))
    assert len(problems) == 1 and rule in problems[0], problems


def test_downward_imports_pass_in_a_fake_tree(tmp_path: Path) -> None:
    root = _fake_tree(
        tmp_path,
        {
            "crypto/merkle.py": "from fedledger._ext import _merkle\nfrom fedledger.errors import InvalidProof\n",
            "ledger/state.py": "from fedledger.crypto import merkle\nfrom fedledger import encoding, identity\n",
            "_ext/_k.pyx": "from fedledger._ext._common cimport x\nimport numpy as np\n",
        },
    )
    assert layer_violations(root) == []


# Optional frameworks, each imported by its integration module alone (the rest of fedledger never needs it).
FRAMEWORKS: dict[str, str] = {"torch": "integrations/torch.py", "flwr": "integrations/flower.py"}


def framework_violations(root: Path) -> list[str]:
    """Every import of an optional framework outside the one module allowed to import it."""
    problems = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root.parent)
        module = ".".join(rel.with_suffix("").parts)
        package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
        for line, target in _imports(path, package):
            top = target.split(".")[0]
            if top in FRAMEWORKS and path.relative_to(root).as_posix() != FRAMEWORKS[top]:
                problems.append(f"{rel}:{line} imports {target}: only {FRAMEWORKS[top]} may")
    return problems


def test_only_the_torch_integration_imports_torch() -> None:
    assert framework_violations(SRC) == []
    assert (SRC / FRAMEWORKS["torch"]).exists()


def test_a_torch_import_elsewhere_fails(tmp_path: Path) -> None:
    root = _fake_tree(
        tmp_path,
        {
            "integrations/torch.py": "import torch\n",
            "aggregators/masked.py": "def f():\n    from torch import nn\n",
        },
    )
    problems = framework_violations(root)
    assert len(problems) == 1 and "aggregators/masked.py:2 imports torch" in problems[0], problems
