"""Helpers shared by the file readers: errors with byte offsets and event checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from spikecast.ext.core.errors import ParameterError, StreamError
from spikecast.ext.core.events import EVENT_DTYPE


def fail(path: Path | str, offset: int, problem: str) -> StreamError:
    """Build the one error shape readers raise: file, byte offset, problem."""
    return StreamError(f"{path}: at byte offset {offset}: {problem}")


def forward_fill_index(mask: np.ndarray) -> np.ndarray:
    """For each position, the index of the latest True at or before it, else -1.

    This is how a stateful decoder's "last seen X" is computed without a loop.
    """
    idx = np.where(mask, np.arange(mask.size, dtype=np.int64), -1)
    return np.maximum.accumulate(idx) if idx.size else idx


def pack_events(x: np.ndarray, y: np.ndarray, t_us: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Column arrays (already range-checked by the caller) into an EVENT_DTYPE array."""
    ev = np.empty(x.size, dtype=EVENT_DTYPE)
    ev["x"] = x
    ev["y"] = y
    ev["t"] = t_us
    ev["p"] = p
    return ev


def check_events(
    events: np.ndarray,
    *,
    path: Path | str,
    width: int,
    height: int,
    offset_of: Callable[[int], int],
) -> None:
    """Raise StreamError for the first event outside the sensor, with a bad polarity,
    or earlier than the event before it. ``offset_of`` maps an event index to the
    byte offset in the file where that event was encoded."""
    if events.size == 0:
        return
    for name, limit in (("x", width), ("y", height)):
        col = events[name]
        if int(col.max()) >= limit:
            i = int(np.argmax(col >= limit))
            raise fail(
                path,
                offset_of(i),
                f"event {i} has {name}={int(col[i])} outside sensor size {limit}",
            )
    if int(events["p"].max()) > 1:
        i = int(np.argmax(events["p"] > 1))
        raise fail(path, offset_of(i), f"event {i} has polarity {int(events['p'][i])}")
    t = events["t"]
    if t.size > 1:
        back = t[1:] < t[:-1]
        if bool(back.any()):
            i = int(np.argmax(back)) + 1
            raise fail(
                path,
                offset_of(i),
                f"timestamps decrease at event {i} ({int(t[i - 1])} -> {int(t[i])} us)",
            )


def size_from_events(events: np.ndarray) -> tuple[int, int]:
    """Fallback sensor size when a file does not state one: max coordinate + 1."""
    if events.size == 0:
        return 0, 0
    return int(events["x"].max()) + 1, int(events["y"].max()) + 1


def resolve_size(
    stated: tuple[int | None, int | None],
    override: tuple[int, int] | None,
    events: np.ndarray,
) -> tuple[int, int]:
    """Sensor (width, height): the caller's override, else the file's, else max + 1."""
    if override is not None:
        w, h = override
        if not (isinstance(w, int) and isinstance(h, int) and 0 < w <= 65535 and 0 < h <= 65535):
            raise ParameterError(f"sensor_size must be two ints in 1..65535, got {override!r}")
        return w, h
    if stated[0] is not None and stated[1] is not None:
        return stated[0], stated[1]
    return size_from_events(events)
