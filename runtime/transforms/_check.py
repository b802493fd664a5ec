"""Argument checks shared by the transforms (bad arguments are ParameterErrors)."""

from __future__ import annotations

import numpy as np
from spikecast.converters.errors import ParameterError


def require_events(events: np.ndarray) -> np.ndarray:
    """The transforms take structured event arrays with x, y, t, p fields."""
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    if not isinstance(events, np.ndarray) or not {"x", "y", "t", "p"} <= set(names):
        raise ParameterError("expected a structured event array with fields x, y, t, p")
    return events


def require_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """An int (numpy ints too, not bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ParameterError(f"{name} must be an int, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        bound = f"{low}.." + ("" if high is None else str(high))
        raise ParameterError(f"{name} must be in {bound}, got {v}")
    return v
