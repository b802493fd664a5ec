"""Latency percentiles, counters and SynOps/s."""

from __future__ import annotations

import json

import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.base import PublisherStats
from spikecast.runtime.mqtt.metrics import (
    EXIT_LOSS,
    LatencyTracker,
    RuntimeMetrics,
    exit_status,
    losses,
    percentile,
    summary_line,
)


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


def test_drops_are_counted_by_cause_and_summed_up_in_one_line() -> None:
    m = RuntimeMetrics()
    m.count_file(4_200_000)
    m.record_decision(1.0, 10)
    assert summary_line(m, losses(m), files=True) == (
        "spikecast: 1 decision from 1 file (4.2M events); dropped: none"
    )
    assert exit_status(losses(m)) == 0
    m.count_dropped_events(1234, "events_shed")
    m.count_drop("packets_shed", 3)
    m.count_bad_packet(2)
    m.count_dropped_events(7, "events_outside")
    stats = PublisherStats(connected=False, reconnects=0, enqueued=5, sent=2, dropped=2, pending=1)
    dropped = losses(m, stats)
    assert m.events_dropped == 1241 and m.bad_packets == 2
    assert m.snapshot()["dropped"] == {
        "bad_packets": 2, "events_outside": 7, "events_shed": 1234, "packets_shed": 3
    }
    assert summary_line(m, dropped, files=False) == (
        "spikecast: 1 decision from 0 live events; dropped: 1,234 events shed (queue full) "
        "in 3 packets, 2 bad packets, 3 messages not delivered to the broker; "
        "not used: 7 events outside the input"
    )
    assert exit_status(dropped) == EXIT_LOSS == 3
    with pytest.raises(ParameterError, match="unknown drop cause"):
        m.count_drop("gremlins")


def test_events_outside_the_input_alone_are_no_loss() -> None:
    m = RuntimeMetrics()
    m.count_dropped_events(10, "events_outside")
    assert exit_status(losses(m)) == 0
    assert summary_line(m, losses(m), files=True).endswith(
        "dropped: none; not used: 10 events outside the input"
    )
    m.count_drop("files_failed")
    assert exit_status(losses(m)) == EXIT_LOSS
