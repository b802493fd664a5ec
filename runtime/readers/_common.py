"""Helpers shared by the file readers: errors with byte offsets and event checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from spikecast.ext.core.checks import check_int
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


# -- bounded decoding -----------------------------------------------------------

#: Words decoded per step by the chunked decoders: their workspace (about 160 bytes a
#: word for EVT 3.0, 0.33 MB) is the same whatever the file size. Small, so that it
#: stays within 20x a small file's size (bench/fuzz.py: peak <= 20 x max(file, 64 kB)).
CHUNK_WORDS = 1 << 11


def check_max_events(max_events: int | None) -> None:
    if max_events is not None:
        check_int("max_events", max_events, 0)


def too_many(path: Path | str, offset: int, cap: int, n: int | None = None) -> StreamError:
    count = "more events than" if n is None else f"{n} events, more than"
    return fail(path, offset, f"file holds {count} max_events={cap}; pass a larger max_events to read it")


def latest(values: np.ndarray, mask: np.ndarray, carry: int) -> np.ndarray:
    """For each position, values at the latest True of ``mask`` so far, else ``carry``."""
    at = forward_fill_index(mask)
    out: np.ndarray = np.where(at >= 0, values[np.maximum(at, 0)], carry)
    return out


def wrap_counts(values: np.ndarray, mask: np.ndarray, last: int, wraps: int) -> np.ndarray:
    """Running count of decreases between consecutive ``values[mask]`` (a counter wrap),
    continuing from the previous chunk's ``last`` value (-1: none) and ``wraps``."""
    seen = values[mask]
    prev = np.concatenate(([last if last >= 0 else (seen[0] if seen.size else 0)], seen[:-1]))
    at_mark = np.zeros(values.size, dtype=np.int64)
    at_mark[mask] = wraps + np.cumsum(seen < prev)
    return latest(at_mark, mask, wraps)


class EventBuffer:
    """Preallocated events and their byte offsets, filled chunk by chunk.

    ``capacity`` is what the file can hold at most (counted before decoding), capped
    by ``max_events``: at most 21 bytes per event (13 for EVENT_DTYPE, 8 for the
    offset), allocated once.
    """

    def __init__(self, path: Path | str, upper_bound: int, max_events: int) -> None:
        self.path, self.cap = path, max_events
        size = min(upper_bound, max_events)
        self.events = np.empty(size, dtype=EVENT_DTYPE)
        self.offsets = np.empty(size, dtype=np.int64)
        self.n = 0

    def add(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray, offsets: np.ndarray) -> None:
        end = self.n + x.size
        if end > self.events.size:
            raise too_many(self.path, int(offsets[self.events.size - self.n]), self.cap)
        ev = self.events[self.n : end]
        ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
        self.offsets[self.n : end] = offsets
        self.n = end

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.events[: self.n], self.offsets[: self.n]
