"""Private native kernels. A missing or broken one fails loudly, saying how to rebuild:

    try:
        from fedledger._ext import _merkle as _k
    except ImportError as exc:
        raise rebuild_error("_merkle", exc) from exc


Nothing in this package imports from the rest of fedledger.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Every compiled kernel module the package ships; build_info() reports each one.
KERNEL_MODULES: tuple[str, ...] = ("_runtime", "_merkle", "_signing", "_paillier", "_masking", "_seal", "_shamir")

_REBUILD_HINT = (
    "fedledger's native extensions are missing or broken ({name}: {error}). "
    "Rebuild them from the source checkout with `pip install .` (or, for development, "
    "`python setup.py build_ext --inplace`); the build needs a C compiler, Cython >= 3, "
    "and OpenSSL 3, GMP and libsodium headers (Debian: `apt-get install build-essential "
    "libssl-dev libgmp-dev libsodium-dev`)."
)


def rebuild_error(name: str, error: BaseException) -> ImportError:
    """The ImportError to raise when kernel ``name`` cannot be imported: it says how to rebuild."""
    return ImportError(_REBUILD_HINT.format(name=name, error=error))


def load(name: str) -> ModuleType:
    """Import ``fedledger._ext.<name>`` or raise ImportError with rebuild instructions."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise rebuild_error(name, exc) from exc
