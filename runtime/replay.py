"""Replay a recorded event stream in chunks, paced by its own sensor timestamps.

Chunk k holds the events with t in [t0 + k*chunk_us, t0 + (k+1)*chunk_us), where
t0 is the first event's time unless given; the last chunk ends at the last event's
time + 1 us (the recording says nothing about the time after it). Every chunk is
yielded, empty ones too, because sensor time passing without events is information
an engine needs (its steps advance). Replayed as fast as possible, a run of empty
chunks comes as one empty chunk spanning it, so a silence of days costs one chunk,
not millions. With ``realtime=True`` chunk k is released once its end has passed on
the wall clock: at start + (k+1) * chunk_us / speed (the last one at its own end).
Deadlines are absolute, so sleep overshoot does not accumulate; a consumer that
falls behind gets the next chunks at once (nothing is dropped). ``clock`` and
``sleep`` are injectable so tests can run on a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import numpy as np
from spikecast.ext.core.checks import check_float, check_int
from spikecast.ext.core.errors import ParameterError


@dataclass(frozen=True, eq=False)
class Chunk:
    """Events with t0_us <= t < t1_us (a view into the replayed array)."""

    events: np.ndarray
    t0_us: int
    t1_us: int


def _check(events: np.ndarray, chunk_us: int, speed: float) -> None:
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    if not isinstance(events, np.ndarray) or "t" not in names:
        raise ParameterError("events must be a structured event array with a t field")
    check_int("chunk_us", chunk_us, 1)
    check_float("speed", speed, 0.0, lo_open=True)
    t = events["t"]
    if t.size > 1 and bool(np.any(t[1:] < t[:-1])):
        raise ParameterError("events must be sorted by t to be replayed")


def schedule(
    events: np.ndarray, *, chunk_us: int, t0_us: int | None = None, speed: float = 1.0,
    merge_silence: bool = False,
) -> Iterator[tuple[Chunk, float]]:
    """The pure core: each chunk with its release time in seconds after the start.

    ``merge_silence``: a run of empty chunks comes as one empty chunk that spans it, so
    a silence costs one chunk however long it is (replay as fast as possible)."""
    _check(events, chunk_us, speed)
    # One contiguous copy: searchsorted on the strided field view would copy it per chunk.
    t = np.ascontiguousarray(events["t"])
    if t.size == 0:
        return
    start = int(t[0]) if t0_us is None else int(t0_us)
    if start > int(t[0]):
        raise ParameterError(f"t0_us {start} is after the first event at {int(t[0])}")
    last = int(t[-1])
    lo = 0
    k = 0
    while True:
        t1 = start + (k + 1) * chunk_us
        hi = int(np.searchsorted(t, t1, side="left"))
        if merge_silence and hi == lo:  # up to the chunk of the next event (one exists)
            k_next = (int(t[lo]) - start) // chunk_us
            t1 = start + k_next * chunk_us
            yield Chunk(events[lo:lo], t1 - (k_next - k) * chunk_us, t1), k_next * chunk_us / 1e6 / speed
            k = k_next
            continue
        if t1 > last:
            # The last chunk ends just after the last event, not at the chunk grid: sensor
            # time after the last event is not in the recording, and a consumer that
            # completes steps up to t1_us must not count empty steps that never happened.
            end = last + 1
            yield Chunk(events[lo:hi], t1 - chunk_us, end), (end - start) / 1e6 / speed
            return
        yield Chunk(events[lo:hi], t1 - chunk_us, t1), (k + 1) * chunk_us / 1e6 / speed
        lo, k = hi, k + 1


async def replay(
    events: np.ndarray,
    *,
    chunk_us: int,
    realtime: bool,
    speed: float = 1.0,
    t0_us: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> AsyncIterator[Chunk]:
    """Yield chunks of ``events``; in real time (scaled by ``speed``) or at once.

    As fast as possible still awaits ``sleep(0)`` between chunks so other tasks
    on the event loop keep running (not before the first: a file that fits in one
    chunk then costs no extra pass of the event loop).
    """
    chunks = schedule(events, chunk_us=chunk_us, t0_us=t0_us, speed=speed,
                      merge_silence=not realtime)
    began = clock()
    first = True
    for chunk, due_s in chunks:
        if realtime:
            await sleep(max(0.0, began + due_s - clock()))
        elif not first:
            await sleep(0.0)
        first = False
        yield chunk


def replay_sync(
    events: np.ndarray,
    *,
    chunk_us: int,
    realtime: bool,
    speed: float = 1.0,
    t0_us: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[Chunk]:
    """The blocking twin of :func:`replay` (no sleeping at all when not realtime)."""
    chunks = schedule(events, chunk_us=chunk_us, t0_us=t0_us, speed=speed,
                      merge_silence=not realtime)
    began = clock()
    for chunk, due_s in chunks:
        if realtime:
            delay = began + due_s - clock()
            if delay > 0:
                sleep(delay)
        yield chunk


__all__ = ["Chunk", "replay", "replay_sync", "schedule"]
