"""bench/latency.py --workers: the service's counters are every worker's latest, summed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import latency  # noqa: E402


def metrics_message(topic: str, body: dict[str, object]) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, payload=json.dumps(body).encode())


def test_one_service_reads_its_latest_metrics_as_they_are() -> None:
    inbox = latency.Inbox()
    for n in (1, 2):
        body = {"events_in": n, "mode": "mqtt"}
        inbox.on_message(None, None, metrics_message("spikecast/bench/metrics", body))
    assert inbox.last_metrics() == {"events_in": 2, "mode": "mqtt"}


def test_workers_counters_are_summed_over_each_workers_latest() -> None:
    inbox = latency.Inbox()
    w1 = "spikecast/bench/workers/w1/metrics"
    w2 = "spikecast/bench/workers/w2/metrics"
    inbox.on_message(None, None, metrics_message(w1, {"events_in": 5, "publisher": {"inbound_dropped": 1}}))
    inbox.on_message(None, None, metrics_message(w2, {"events_in": 7, "publisher": {"inbound_dropped": 0}}))
    # A newer report from w1 replaces its older one; it is not added to it.
    inbox.on_message(None, None, metrics_message(w1, {"events_in": 6, "publisher": {"inbound_dropped": 2}}))
    got = inbox.last_metrics()
    assert got["events_in"] == 13
    assert got["publisher"] == {"inbound_dropped": 2}


def test_summing_skips_flags_and_text() -> None:
    got = latency.sum_counters([{"a": 1, "ok": True, "name": "w1"}, {"a": 2.5, "ok": False, "name": "w2"}])
    assert got == {"a": 3.5}
