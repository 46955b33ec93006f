"""Every use lyre makes of bm25s, in one module: the import, the versions it was checked against, and
the private scoring helpers lyre's streamed BM25 build relies on.

Why a module of its own:

- **Private helpers.** lyre writes bm25s' index format itself (see :mod:`indexes.bm25`), so it needs
  bm25s' per-method idf and term-frequency functions, which bm25s exposes only as the private
  ``scoring._select_idf_scorer`` / ``scoring._select_tfc_scorer``. They have kept their names and
  signatures from 0.2.6 to 0.3.16 (both checked: ``tests/test_bm25s_compat.py`` compares lyre's scores with
  bm25s' own index under each); a version outside ``SUPPORTED`` is refused with one line before any work,
  rather than failing deep inside a build or, worse, scoring differently.
- **JAX stays out.** ``bm25s/__init__`` imports ``bm25s.selection``, which does ``import jax.lax`` when JAX
  is installed and then runs ``jax.lax.top_k`` once. That initialises JAX's backend, and on a GPU machine
  JAX reserves 75% of the GPU's memory (139 GiB free became 34 GiB on an H200) and can crash parallel
  processes. lyre never uses bm25s' top-k selection (it scores with numpy), so bm25s is imported with
  ``sys.modules["jax"]`` set to ``None`` for the duration of the import: Python then raises
  ``ModuleNotFoundError`` for ``import jax`` and ``import jax.lax`` (documented import-system behaviour),
  which bm25s catches and takes as "JAX not installed". This was chosen over the alternatives because it
  also holds when JAX was already imported by the caller (a meta-path finder is consulted only for modules
  not yet imported, and an already imported ``jax.lax`` would still be initialised by bm25s' ``top_k``
  call), it does not change the environment of the process (``JAX_PLATFORMS=cpu`` would move the
  caller's own JAX work to the CPU and still spend a second importing JAX), and it depends on no bm25s
  internals. The previous ``sys.modules`` entries are restored afterwards, so the caller's later
  ``import jax`` works as usual. The block lasts only while bm25s itself is imported, in the importing
  thread's call; another thread importing JAX at that very moment would see it missing, which lyre, whose
  imports of bm25s happen on the main thread before BM25 work starts, never does.

Nothing here is imported at module load: ``import indexes.bm25s_compat`` costs nothing, so the CLI's
``--help`` stays instant.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from types import ModuleType
from typing import Any

from lyre.basics.errors import LyreError

SUPPORTED = ((0, 2, 6), (0, 4))
"""bm25s releases lyre works with: at least the first, below the second (``bm25s>=0.2.6,<0.4``)."""
CHECKED = ("0.2.6", "0.3.16")
"""The releases the compatibility tests were run against (the ends of the supported range)."""
BLOCKED_MODULES = ("jax", "jax.lax")
"""Modules bm25s would import (and initialise) as a side effect, hidden while it is imported."""


def requirement() -> str:
    """The pip requirement for the supported range, e.g. ``bm25s>=0.2.6,<0.4``."""
    low, high = (".".join(map(str, bound)) for bound in SUPPORTED)
    return f"bm25s>={low},<{high}"


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string (``0.3.2.post1`` -> (0, 3, 2))."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def check_version(installed: str | None = None) -> str:
    """The installed bm25s version, or a one-line :class:`LyreError` when it is missing or outside
    ``SUPPORTED``. ``installed`` replaces the lookup (for tests)."""
    if installed is None:
        try:
            installed = metadata.version("bm25s")
        except metadata.PackageNotFoundError:
            raise LyreError(
                f"bm25s is not installed; install it with pip install '{requirement()}'"
            ) from None
    if not SUPPORTED[0] <= release(installed) < SUPPORTED[1]:
        raise LyreError(
            f"bm25s {installed} is installed but lyre's BM25 uses bm25s internals checked only for "
            f"{requirement()}; install a version in that range with pip install '{requirement()}'"
        )
    return installed


@contextmanager
def modules_hidden(names: tuple[str, ...]) -> Iterator[None]:
    """While inside, ``import name`` raises ``ModuleNotFoundError`` for each of ``names`` (even if it was
    imported before); afterwards ``sys.modules`` holds what it held before."""
    saved = {name: sys.modules[name] for name in names if name in sys.modules}
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]  # None = "import halted", by the import system
    try:
        yield
    finally:
        for name in names:
            if name in saved:
                sys.modules[name] = saved[name]
            elif sys.modules.get(name, ...) is None:
                del sys.modules[name]


def import_bm25s() -> ModuleType:
    """bm25s, imported without JAX (see the module docstring) after its version is checked.

    When bm25s was already imported (by the caller, before lyre), the version is still checked but the
    module is returned as it is: whatever it imported is the caller's doing.
    """
    check_version()
    loaded = sys.modules.get("bm25s")
    if loaded is not None:
        return loaded
    with modules_hidden(BLOCKED_MODULES):
        import bm25s
    return bm25s


def idf_scorer(method: str) -> Callable[..., float]:
    """bm25s' idf function of ``method``: ``idf(df, N=num_docs) -> float``."""
    return import_bm25s().scoring._select_idf_scorer(method)


def tf_scorer(method: str) -> Callable[..., Any]:
    """bm25s' term-frequency component of ``method``, vectorised over numpy arrays:
    ``tfc(tf_array=, l_d=, l_avg=, k1=, b=, delta=)``."""
    return import_bm25s().scoring._select_tfc_scorer(method)


def stopwords(list_name: str) -> tuple[str, ...] | None:
    """bm25s' stopword list ``list_name`` (``"en"``, ``"german"``, ...), or None when it has none."""
    words = getattr(import_bm25s().stopwords, "STOPWORDS_" + list_name.upper(), None)
    return tuple(words) if words is not None else None
