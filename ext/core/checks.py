"""Argument checks shared by every layer of spikecast.

Each returns the cleaned value or raises :class:`ParameterError` naming the
argument. ``bool`` is never accepted as a number (``True`` is an ``int`` in Python).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from spikecast.ext.core.errors import ParameterError

INT32_MAX = 2**31 - 1


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A real number (Python or numpy int or float), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def is_finite_number(value: Any) -> bool:
    """A real number that is finite as a float (huge ints overflow: not finite)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer in [lo, hi] (either bound optional)."""
    if not is_int(value):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else str(lo)
        hi_s = "inf" if hi is None else str(hi)
        raise ParameterError(f"{name} must be in [{lo_s}, {hi_s}], got {v}")
    return v


def check_float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite real number in the interval given (bounds closed unless ``*_open``)."""
    if not is_finite_number(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ParameterError(
            f"{name} must be in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}, "
            f"got {v}"
        )
    return v


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be true or false, got {value!r}")
    return bool(value)


__all__ = ["INT32_MAX", "check_bool", "check_float", "check_int", "is_finite_number", "is_int", "is_number"]
