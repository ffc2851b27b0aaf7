"""Input validation shared by every metric: one error template, never ``assert``.

Every check raises :class:`ovdiv.errors.MetricInputError` with the message
``"Expected argument `name` to be <what>, but got <what it was>."`` so that a user sees which array
is wrong and what shape or dtype was expected.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from ovdiv.errors import MetricInputError

__all__ = ["MetricWarning"]


class MetricWarning(UserWarning):
    """A metric is undefined for the given input and was returned as NaN (see the function's docstring)."""


def _warn(message: str) -> None:
    warnings.warn(message, MetricWarning, stacklevel=3)


def _fail(name: str, expected: str, got: str) -> MetricInputError:
    return MetricInputError(f"Expected argument `{name}` to be {expected}, but got {got}.")


def _describe(x: np.ndarray) -> str:
    return f"shape {tuple(x.shape)} dtype {x.dtype}"


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise _fail(name, "an array", type(x).__name__) from exc


def _check_float(
    x: Any,
    name: str,
    ndim: int | tuple[int, ...],
    *,
    shape: dict[int, int] | None = None,
    finite: bool = True,
    what: str = "",
) -> npt.NDArray[np.floating]:
    """Validate a real floating array of the given rank; optionally fix sizes of some axes.

    Args:
        x: The array.
        name: Argument name used in the error message.
        ndim: Allowed rank(s).
        shape: ``{axis: size}`` that must match.
        finite: Reject NaN and infinities.
        what: Shape description for the message, e.g. ``"(M, N, C)"``.
    """
    a = _as_array(x, name)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    desc = what or f"a {'/'.join(str(d) for d in dims)}-D array"
    if a.ndim not in dims:
        raise _fail(name, f"a float array {desc}", _describe(a))
    if not np.issubdtype(a.dtype, np.floating):
        raise _fail(name, f"a float array {desc}", _describe(a))
    for axis, size in (shape or {}).items():
        if a.shape[axis] != size:
            raise _fail(name, f"a float array {desc} with size {size} on axis {axis}", _describe(a))
    if finite and a.size and not np.isfinite(a).all():
        raise _fail(name, "finite (no NaN or inf)", f"{int((~np.isfinite(a)).sum())} non-finite values")
    return a


def _check_probs(x: Any, name: str, ndim: int | tuple[int, ...], **kw: Any) -> npt.NDArray[np.floating]:
    a = _check_float(x, name, ndim, **kw)
    if a.size and (a.min() < 0 or a.max() > 1):
        raise _fail(name, "probabilities in [0, 1]", f"values in [{a.min():g}, {a.max():g}]")
    return a


def _check_int(
    x: Any,
    name: str,
    ndim: int,
    *,
    shape: dict[int, int] | None = None,
    num_classes: int | None = None,
    what: str = "",
) -> npt.NDArray[np.int64]:
    """Validate an integer array (labels, predictions) with values in ``[0, num_classes)``."""
    a = _as_array(x, name)
    desc = what or f"a {ndim}-D array"
    if a.ndim != ndim or not (np.issubdtype(a.dtype, np.integer) and not np.issubdtype(a.dtype, np.bool_)):
        raise _fail(name, f"an integer array {desc}", _describe(a))
    for axis, size in (shape or {}).items():
        if a.shape[axis] != size:
            raise _fail(name, f"an integer array {desc} with size {size} on axis {axis}", _describe(a))
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise _fail(name, f"class indices in {bound}", f"values in [{lo}, {hi}]")
    return a.astype(np.int64, copy=False)


def _check_bool(x: Any, name: str, ndim: int, *, what: str = "") -> npt.NDArray[np.bool_]:
    """Validate a boolean (or 0/1 integer) array."""
    a = _as_array(x, name)
    desc = what or f"a {ndim}-D array"
    if a.ndim != ndim:
        raise _fail(name, f"a boolean array {desc}", _describe(a))
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.integer) and (a.size == 0 or (a.min() >= 0 and a.max() <= 1)):
        return a.astype(bool)
    raise _fail(name, f"a boolean (or 0/1) array {desc}", _describe(a))


def _check_positive_int(x: Any, name: str, minimum: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or int(x) < minimum:
        raise _fail(name, f"an int >= {minimum}", repr(x))
    return int(x)


def _check_nonempty(n: int, name: str) -> None:
    if n == 0:
        raise _fail(name, "non-empty (at least one sample)", "0 samples")
