"""The one event dtype of spikecast, in tonic's layout.

Every source yields events as a structured numpy array with fields ``x``, ``y``
(pixel coordinates), ``t`` (sensor time in microseconds) and ``p`` (polarity,
0 = OFF, 1 = ON). Readers, packets, replay and encoders all use this dtype;
docs/packets.md describes it.
"""

from __future__ import annotations

import numpy as np
from spikecast.ext.core.errors import StreamError

EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])


def make_events(
    x: np.ndarray | list[int],
    y: np.ndarray | list[int],
    t_us: np.ndarray | list[int],
    p: np.ndarray | list[int],
) -> np.ndarray:
    """Pack column arrays into one EVENT_DTYPE array (copies; checks lengths match)."""
    cols = [np.asarray(c) for c in (x, y, t_us, p)]
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise StreamError(f"event columns differ in length: {[len(c) for c in cols]}")
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = cols
    return ev


def validate_events(
    events: np.ndarray,
    *,
    width: int | None = None,
    height: int | None = None,
    where: str = "events",
) -> np.ndarray:
    """Check dtype, coordinate ranges, polarity and timestamp order; return the array.

    ``where`` names the source (a file, a packet) in the error message.
    """
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise StreamError(f"{where}: expected a structured event array, got {type(events).__name__}")
    missing = {"x", "y", "t", "p"} - set(events.dtype.names)
    if missing:
        raise StreamError(f"{where}: event array lacks fields {sorted(missing)}")
    if events.dtype != EVENT_DTYPE:
        events = events.astype(EVENT_DTYPE, casting="unsafe")
    if events.size == 0:
        return events
    if width is not None and int(events["x"].max()) >= width:
        i = int(np.argmax(events["x"] >= width))
        raise StreamError(f"{where}: event {i} has x={int(events['x'][i])} outside width {width}")
    if height is not None and int(events["y"].max()) >= height:
        i = int(np.argmax(events["y"] >= height))
        raise StreamError(f"{where}: event {i} has y={int(events['y'][i])} outside height {height}")
    if int(events["p"].max()) > 1:
        i = int(np.argmax(events["p"] > 1))
        raise StreamError(f"{where}: event {i} has polarity {int(events['p'][i])}, expected 0 or 1")
    dt = np.diff(events["t"])
    if dt.size and int(dt.min()) < 0:
        i = int(np.argmax(dt < 0)) + 1
        raise StreamError(
            f"{where}: timestamps decrease at event {i} "
            f"({int(events['t'][i - 1])} -> {int(events['t'][i])} us)"
        )
    return events


__all__ = ["EVENT_DTYPE", "make_events", "validate_events"]


def merge_events(parts: list[np.ndarray]) -> np.ndarray:
    """One event array from the arrays of several packets, in time order.

    Packets from a live source can arrive out of order; a stable sort keeps the order of
    events with equal ``t``. Copies only when there is more than one part or a reorder.
    """
    if not parts:
        return np.zeros(0, EVENT_DTYPE)
    events = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if len(events) > 1 and np.any(np.diff(events["t"]) < 0):
        events = events[np.argsort(events["t"], kind="stable")]
    return events
