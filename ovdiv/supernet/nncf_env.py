"""The one place ovdiv imports nncf's torch backend, with nncf 2.19's BootstrapNAS traps neutralised.

The workarounds of ``reference/bootstrapnas/NOTES.md`` §3 that concern the environment live here:

1. ``NNCF_TORCH_LEGACY_TRACING=1`` must be set *before* ``nncf.torch`` is imported, else
   ``create_nncf_network`` silently builds an empty graph (0 width groups, 0 blocks).
   :func:`import_nncf_torch` sets it and then verifies that nncf really patched torch's operators;
   if ``nncf.torch`` was already imported in the FunctionHook mode it raises :class:`SupernetError`.
   The variable is process-global (it switches every later nncf use to legacy mode), which is why
   the public ``ovdiv.supernet`` functions run the work in a child process (``python -m ovdiv.supernet``).
3. ``EpochBasedTrainingAlgorithm.run`` calls ``None.add_scalar`` without tensorboard:
   :class:`NullWriter` (ovdiv's own epoch loop does not need a writer, but any nncf entry point that
   takes one gets this).
8. ``matplotlib.cm.get_cmap`` was removed in matplotlib 3.9 and nncf's ``visualize_search_progression``
   calls it: :func:`patch_matplotlib` restores it (ovdiv draws its own plot anyway).
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from ovdiv.errors import SupernetError

__all__ = ["LEGACY_TRACING_ENV", "import_nncf_torch", "NullWriter", "patch_matplotlib", "legacy_tracing_active"]

LEGACY_TRACING_ENV = "NNCF_TORCH_LEGACY_TRACING"


def legacy_tracing_active() -> bool:
    """True when ``nncf.torch`` is imported and has patched torch's operators (legacy tracing)."""
    mod = sys.modules.get("nncf.torch.dynamic_graph.patch_pytorch")
    if mod is None:
        return False
    state = getattr(mod, "PATCHING_STATE", None)
    return bool(getattr(state, "operators_are_wrapped", False))


def import_nncf_torch() -> ModuleType:
    """Import ``nncf.torch`` in legacy-tracing mode (required by BootstrapNAS) and return it.

    Raises:
        SupernetError: ``nncf.torch`` was imported earlier in this process without legacy tracing,
            so BootstrapNAS would build an empty search space.
    """
    already = "nncf.torch" in sys.modules
    if not already:
        os.environ[LEGACY_TRACING_ENV] = "1"
    nncf_torch = importlib.import_module("nncf.torch")
    if not legacy_tracing_active():
        raise SupernetError(
            f"nncf.torch was imported in this process before {LEGACY_TRACING_ENV}=1 was set, so BootstrapNAS "
            "would build an empty search space (0 width groups, 0 skippable blocks)",
            "run supernet work in its own process: the `ovdiv supernet` commands and ovdiv.supernet.train/"
            "search/extract/info do this for you; `python -m ovdiv.supernet` is the child entry point",
        )
    patch_matplotlib()
    return nncf_torch


def patch_matplotlib() -> None:
    """Restore ``matplotlib.cm.get_cmap`` (removed in matplotlib 3.9) for nncf's search plot."""
    try:
        import matplotlib
        import matplotlib.cm
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return
    if not hasattr(matplotlib.cm, "get_cmap"):

        def get_cmap(name: Any = None, lut: int | None = None) -> Any:
            cmap = matplotlib.colormaps[name or matplotlib.rcParams["image.cmap"]]
            return cmap if lut is None else cmap.resampled(lut)

        matplotlib.cm.get_cmap = get_cmap  # type: ignore[attr-defined]


class NullWriter:
    """A tensorboard ``SummaryWriter`` stand-in whose methods do nothing (nncf needs ``add_scalar``)."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        """Ignore a scalar."""

    def add_text(self, *args: Any, **kwargs: Any) -> None:
        """Ignore a text entry."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""
