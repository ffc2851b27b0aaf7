"""ovdiv: design-diversity evaluation of deployed image-classifier ensembles.

The top-level names below are imported lazily so that ``import ovdiv.metrics`` and
``import ovdiv.data.corruptions`` stay free of torch and openvino.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ovdiv.errors import OvdivError
from ovdiv.versions import __version__

__all__ = [
    "__version__",
    "OvdivError",
    "Ensemble",
    "EvalResult",
    "Policy",
    "evaluate",
    "load_member",
]

logging.getLogger("ovdiv").addHandler(logging.NullHandler())

# public name -> module that defines it (imported on first access)
_LAZY = {
    "load_member": "ovdiv.runtime",
    "Ensemble": "ovdiv.evaluate",
    "EvalResult": "ovdiv.evaluate",
    "evaluate": "ovdiv.evaluate",
    "Policy": "ovdiv.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ovdiv' has no attribute {name!r}")
