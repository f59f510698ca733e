"""fedledger: auditable, privacy-preserving federated learning on a consortium ledger.

>>> import fedledger
>>> info = fedledger.build_info()
>>> "_merkle" in info["modules"] and "_shamir" in info["modules"]  # every native kernel, with its file
True
>>> info["num_threads"] >= 1
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from fedledger._version import __version__

if TYPE_CHECKING:
    from fedledger.blobstore import BlobStore
    from fedledger.identity import Identity, IdentityCard
    from fedledger.ledger import Contract, Ledger, Receipt, Transaction, ValidatorSet, verify_receipt

__all__ = [
    "BlobStore",
    "BuildInfo",
    "Contract",
    "Identity",
    "IdentityCard",
    "Ledger",
    "Receipt",
    "Transaction",
    "ValidatorSet",
    "__version__",
    "build_info",
    "set_num_threads",
    "verify_receipt",
]

# Public names imported on first use, so that ``import fedledger`` stays cheap
# (no numpy, no cryptography until something needs them).
_LAZY = {
    "BlobStore": "fedledger.blobstore",
    "Contract": "fedledger.ledger",
    "Identity": "fedledger.identity",
    "IdentityCard": "fedledger.identity",
    "Ledger": "fedledger.ledger",
    "Receipt": "fedledger.ledger",
    "Transaction": "fedledger.ledger",
    "ValidatorSet": "fedledger.ledger",
    "verify_receipt": "fedledger.ledger",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fedledger' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class BuildInfo(TypedDict):
    """What :func:`build_info` reports."""

    #: fedledger's version.
    version: str
    #: Every compiled kernel module (``_runtime``, ``_merkle``, ``_signing``, ``_paillier``,
    #: ``_masking``, ``_seal``, ``_shamir``: all Cython, compiled ahead of time) -> its file.
    modules: dict[str, str]
    #: The OpenSSL the kernels run on, as OpenSSL words it ("OpenSSL 3.x.y ...").
    openssl: str
    #: GMP's version ("6.x.y").
    gmp: str
    #: libsodium's version ("1.0.x").
    libsodium: str
    #: Whether the kernels were built with OpenMP.
    openmp: bool
    #: OpenMP's own thread limit (omp_get_max_threads()).
    omp_max_threads: int
    #: How many threads fedledger's parallel kernels use (see :func:`set_num_threads`).
    num_threads: int


def build_info() -> BuildInfo:
    """What the native build provides: loaded kernel modules (the Shamir kernel among them),
    library versions (OpenSSL, GMP, libsodium), OpenMP, threads.

    Raises ImportError, with rebuild instructions, if any kernel module is missing or broken.
    """
    from fedledger import _ext
    from fedledger.crypto import _threads

    runtime = _ext.load("_runtime")
    modules = {name: str(_ext.load(name).__file__) for name in _ext.KERNEL_MODULES}
    return BuildInfo(
        version=__version__,
        modules=modules,
        openssl=str(runtime.openssl_version()),
        gmp=str(runtime.gmp_version_string()),
        libsodium=str(_ext.load("_signing").libsodium_version()),
        openmp=bool(runtime.openmp_enabled()),
        omp_max_threads=int(runtime.omp_max_threads()),
        num_threads=_threads.num_threads(),
    )


def set_num_threads(n: int) -> None:
    """Set how many threads the parallel kernels use (default: all cores, or FEDLEDGER_NUM_THREADS)."""
    from fedledger.crypto import _threads

    _threads.set_num_threads(n)
