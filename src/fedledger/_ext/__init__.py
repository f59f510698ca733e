"""Private native kernels. Import them through :func:`load`, which fails loudly.

Nothing in this package imports from the rest of fedledger.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Every compiled kernel module the package ships; build_info() reports each one.
KERNEL_MODULES: tuple[str, ...] = ("_runtime", "_merkle", "_paillier")

_REBUILD_HINT = (
    "fedledger's native extensions are missing or broken ({name}: {error}). "
    "Rebuild them from the source checkout with `pip install .` (or, for development, "
    "`python setup.py build_ext --inplace`); the build needs a C compiler, Cython >= 3, "
    "and OpenSSL 3 and GMP headers (Debian: `apt-get install build-essential libssl-dev "
    "libgmp-dev`)."
)


def load(name: str) -> ModuleType:
    """Import ``fedledger._ext.<name>`` or raise ImportError with rebuild instructions."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise ImportError(_REBUILD_HINT.format(name=name, error=exc)) from exc
