"""Replay pacing on a fake clock, for the async and the blocking versions."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.events import EVENT_DTYPE, make_events
from spikecast.runtime.replay import Chunk, replay, replay_sync, schedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def stream() -> np.ndarray:
    # 10 ms of events starting at t = 5 s, with a gap from 3 to 7 ms
    t = [5_000_000, 5_000_500, 5_001_000, 5_002_999, 5_007_000, 5_009_000, 5_010_000]
    return make_events([1] * 7, [2] * 7, t, [0, 1, 0, 1, 0, 1, 0])


def collect_async(**kwargs: object) -> list[Chunk]:
    async def run() -> list[Chunk]:
        return [c async for c in replay(stream(), **kwargs)]  # type: ignore[arg-type]

    return asyncio.run(run())


def test_chunks_cover_time_including_empty_ones() -> None:
    chunks = [c for c, _ in schedule(stream(), chunk_us=2_000)]
    assert [(c.t0_us - 5_000_000, c.t1_us - 5_000_000) for c in chunks] == [
        (0, 2_000), (2_000, 4_000), (4_000, 6_000), (6_000, 8_000), (8_000, 10_000),
        (10_000, 10_001),
    ]  # fmt: skip
    # The last chunk ends just after the last event (5_010_000), not at the 12 ms grid line.
    assert [c.events.size for c in chunks] == [3, 1, 0, 1, 1, 1]
    assert sum(c.events.size for c in chunks) == stream().size
    for c in chunks:
        assert bool(np.all((c.events["t"] >= c.t0_us) & (c.events["t"] < c.t1_us)))


def test_sync_realtime_paced_by_sensor_time() -> None:
    clock = FakeClock()
    got = []
    for chunk in replay_sync(
        stream(), chunk_us=2_000, realtime=True, clock=clock, sleep=clock.sleep
    ):
        got.append((round(clock.now - 100.0, 6), chunk.t1_us - 5_000_000))
    # each chunk is released when its end time has passed on the wall clock
    # (the last at its own end, just after the last event)
    assert got == [(0.002, 2_000), (0.004, 4_000), (0.006, 6_000), (0.008, 8_000),
                   (0.01, 10_000), (0.010001, 10_001)]  # fmt: skip


def test_speed_scales_the_wall_time() -> None:
    clock = FakeClock()
    list(
        replay_sync(
            stream(), chunk_us=2_000, realtime=True, speed=4.0, clock=clock, sleep=clock.sleep
        )
    )
    assert clock.now - 100.0 == pytest.approx(0.010001 / 4)


def test_slow_consumer_is_not_made_to_wait_more() -> None:
    clock = FakeClock()
    for i, _ in enumerate(
        replay_sync(stream(), chunk_us=2_000, realtime=True, clock=clock, sleep=clock.sleep)
    ):
        if i == 0:
            clock.now += 0.007  # the consumer stalls for 7 ms
    # deadlines are absolute: after the stall only the remaining schedule is slept
    assert clock.now - 100.0 == pytest.approx(0.010001)
    assert len(clock.sleeps) == 3  # chunks 2 to 4 were already due and came at once


def test_not_realtime_never_sleeps() -> None:
    clock = FakeClock()
    chunks = list(
        replay_sync(stream(), chunk_us=2_000, realtime=False, clock=clock, sleep=clock.sleep)
    )
    assert len(chunks) == 6 and clock.sleeps == []


def test_async_realtime() -> None:
    clock = FakeClock()
    chunks = collect_async(chunk_us=5_000, realtime=True, clock=clock, sleep=clock.asleep)
    assert [c.events.size for c in chunks] == [4, 2, 1]
    assert clock.sleeps == pytest.approx([0.005, 0.005, 0.000001])


def test_async_fast_yields_to_the_loop() -> None:
    clock = FakeClock()
    chunks = collect_async(chunk_us=5_000, realtime=False, clock=clock, sleep=clock.asleep)
    # Between chunks, not before the first (a one-chunk file costs no extra loop pass).
    assert len(chunks) == 3 and clock.sleeps == [0.0, 0.0]


def test_async_with_the_real_clock_is_quick() -> None:
    chunks = collect_async(chunk_us=1_000, realtime=True, speed=100.0)
    assert sum(c.events.size for c in chunks) == stream().size


def test_explicit_t0_and_empty_stream() -> None:
    chunks = [c for c, _ in schedule(stream(), chunk_us=5_000, t0_us=4_999_000)]
    assert [c.events.size for c in chunks] == [4, 1, 2]
    assert chunks[0].t0_us == 4_999_000
    assert list(replay_sync(np.zeros(0, EVENT_DTYPE), chunk_us=10, realtime=True)) == []
    with pytest.raises(ParameterError, match="after the first event"):
        list(schedule(stream(), chunk_us=5_000, t0_us=5_000_001))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunk_us": 0},
        {"chunk_us": 1.5},
        {"chunk_us": 10, "speed": 0},
        {"chunk_us": 10, "speed": float("inf")},
    ],
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ParameterError):
        list(replay_sync(stream(), realtime=False, **kwargs))  # type: ignore[arg-type]


def test_unsorted_events_rejected() -> None:
    with pytest.raises(ParameterError, match="sorted"):
        list(replay_sync(stream()[::-1], chunk_us=10, realtime=False))


def test_fast_replay_merges_a_silence_into_one_chunk() -> None:
    # 2,000 events over 198 days: as fast as possible, a silence is one empty chunk.
    t = np.sort(np.random.default_rng(0).integers(0, 198 * 86_400 * 10**6, 2_000))
    ev = make_events([1] * 2_000, [2] * 2_000, t, [1] * 2_000)
    chunks = list(replay_sync(ev, chunk_us=10_000, realtime=False))
    assert len(chunks) < 2 * 2_000 + 2
    assert sum(c.events.size for c in chunks) == 2_000
    assert all(b.t0_us == a.t1_us for a, b in itertools.pairwise(chunks))
    for c in chunks:
        assert bool(np.all((c.events["t"] >= c.t0_us) & (c.events["t"] < c.t1_us)))
    # The same stream of the test above, merged: the 2 ms silence is one chunk here too.
    merged = [c for c, _ in schedule(stream(), chunk_us=1_000, merge_silence=True)]
    plain = [c for c, _ in schedule(stream(), chunk_us=1_000)]
    assert [c.events.size for c in merged if c.events.size] == [
        c.events.size for c in plain if c.events.size]
    assert len(merged) < len(plain) and merged[-1].t1_us == plain[-1].t1_us


@pytest.mark.parametrize("chunk_us", [1_000, 3_000, 10_000])
def test_the_last_chunk_ends_at_the_last_event(chunk_us: int) -> None:
    # Whatever the chunk size, the replay ends 1 us after the last event: a consumer that
    # completes steps up to t1_us sees no empty steps that are not in the recording.
    for realtime in (False, True):
        clock = FakeClock()
        chunks = list(replay_sync(stream(), chunk_us=chunk_us, realtime=realtime, clock=clock,
                                  sleep=clock.sleep))
        assert chunks[-1].t1_us == 5_010_001
        assert chunks[-1].t0_us < chunks[-1].t1_us <= chunks[-1].t0_us + chunk_us
        assert all(b.t0_us == a.t1_us for a, b in itertools.pairwise(chunks))
        if realtime:  # released when that end has passed, not at the grid line after it
            assert clock.now - 100.0 == pytest.approx(0.010001)
