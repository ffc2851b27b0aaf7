"""Severity-magnitude helpers shared by every corruption (the reference's ``float_parameter``/``int_parameter``).

A corruption's ``severity`` is the *magnitude* on the reference's 0..10 scale (e.g. ``lines`` 1.6), not the
official 1..5 index; :func:`ovdiv.data.corruptions.severity_table` maps an index to its magnitude.
"""

from __future__ import annotations

__all__ = ["float_parameter", "int_parameter"]


def float_parameter(level: float, maxval: float) -> float:
    """``float(level) * maxval / 10.`` evaluated left to right in float64, exactly as the reference does.

    Example: ``float_parameter(7.0, 0.25) == 0.175`` and ``float_parameter(1.6, 1.0) == 0.16``.
    """
    return float(level) * maxval / 10.0


def int_parameter(level: float, maxval: float) -> int:
    """``int(level * maxval / 10)`` (truncation toward zero), as the reference does."""
    return int(level * maxval / 10)
