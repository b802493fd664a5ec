"""Latency percentiles, counters and SynOps/s."""

from __future__ import annotations

import json

import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.base import PublisherStats
from spikecast.runtime.mqtt.metrics import LatencyTracker, RuntimeMetrics, percentile


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ParameterError):
        percentile([], 50)


def test_latency_window_slides() -> None:
    tracker = LatencyTracker(window=100)
    assert tracker.p50_ms is None
    for v in range(1000):
        tracker.add(float(v))
    assert len(tracker) == 100
    assert tracker.p50_ms == 949.0 and tracker.p99_ms == 998.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ParameterError):
            tracker.add(bad)


def test_snapshot_counts_and_rates() -> None:
    clock = FakeClock()
    m = RuntimeMetrics(rate_window_s=10.0, clock=clock)
    m.count_events(500)
    m.count_dropped_events(3)
    m.count_bad_packet()
    for i in range(10):
        clock.now_s += 1.0
        m.record_decision(latency_ms=1.0 + i, synops=1000)
    snap = m.snapshot()
    assert snap["events_in"] == 500 and snap["events_dropped"] == 3
    assert snap["bad_packets"] == 1 and snap["decisions"] == 10
    assert snap["latency_ms_p50"] == 5.0 and snap["latency_ms_p99"] == 10.0
    assert snap["synops_total"] == 10_000
    assert snap["synops_per_s"] == pytest.approx(1000.0)
    clock.now_s += 20.0  # quiet for longer than the window: the rate decays to zero
    assert m.snapshot()["synops_per_s"] == 0.0
    json.dumps(m.snapshot(), allow_nan=False)


def test_snapshot_reports_publisher_drops() -> None:
    stats = PublisherStats(
        connected=False, reconnects=2, enqueued=10, sent=4, dropped=5, pending=1
    )
    snap = RuntimeMetrics().snapshot(stats)
    assert snap["publisher"]["dropped"] == 5 and snap["publisher"]["reconnects"] == 2
    json.dumps(snap, allow_nan=False)


def test_rate_before_the_window_fills_uses_uptime() -> None:
    clock = FakeClock()
    m = RuntimeMetrics(rate_window_s=10.0, clock=clock)
    assert m.synops_per_s() == 0.0
    clock.now_s += 2.0
    m.add_synops(500)
    assert m.synops_per_s() == pytest.approx(250.0)


def test_bad_counts_are_refused() -> None:
    m = RuntimeMetrics()
    for call in (m.count_events, m.count_dropped_events, m.count_bad_packet, m.add_synops):
        with pytest.raises(ParameterError):
            call(-1)
    with pytest.raises(ParameterError):
        m.count_events(True)
    with pytest.raises(ParameterError):
        RuntimeMetrics(rate_window_s=0)
