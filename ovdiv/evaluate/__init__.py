"""The evaluation engine: ensembles of deployed members on datasets, cached, with tidy results.

Public API: :class:`Ensemble`, :func:`evaluate`, :class:`EvalResult`, :class:`EvalOptions`,
:class:`ArrayDataset`, and :class:`Policy` (certification rules, :mod:`ovdiv.evaluate.policy`).
The package object is callable and forwards to :func:`evaluate` (``ovdiv.evaluate(...)``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ovdiv.evaluate.cache import EvalCache, default_cache_dir
from ovdiv.evaluate.datasets import ArrayDataset
from ovdiv.evaluate.engine import evaluate
from ovdiv.evaluate.ensemble import Ensemble, ensemble_name
from ovdiv.evaluate.options import EvalOptions, parse_shard
from ovdiv.evaluate.policy import Policy
from ovdiv.evaluate.results import RESULTS_SCHEMA, EvalResult

__all__ = [
    "ArrayDataset",
    "Ensemble",
    "EvalCache",
    "EvalOptions",
    "EvalResult",
    "Policy",
    "RESULTS_SCHEMA",
    "default_cache_dir",
    "ensemble_name",
    "evaluate",
    "parse_shard",
]


class _CallableModule(types.ModuleType):
    """``ovdiv.evaluate`` is both this package and the :func:`evaluate` function of the public API.

    Importing the package binds ``ovdiv.evaluate`` to the module (Python sets a submodule as an attribute
    of its parent), so the module itself forwards calls: ``ovdiv.evaluate(ens, datasets=[...])`` works
    whichever of the two the name currently refers to.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> EvalResult:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
