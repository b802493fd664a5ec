"""Runtime metrics for the periodic ``spikecast/<device>/metrics`` topic.

Counters (events in, events dropped, bad packets, decisions) only grow.
Latency percentiles cover the last ``window`` decisions, and SynOps/s covers the
last ``rate_window_s`` seconds, so a snapshot describes the recent past rather
than an average over the whole uptime.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.base import PublisherStats

METRICS_VERSION = 1


def _check_count(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ParameterError(f"{name} must be an int >= 0, got {n!r}")
    return n


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list (p in [0, 100])."""
    if not sorted_values:
        raise ParameterError("percentile of an empty list")
    if not 0.0 <= p <= 100.0:
        raise ParameterError(f"percentile p must be in [0, 100], got {p!r}")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class LatencyTracker:
    """Latencies of the last ``window`` decisions, with p50 and p99."""

    def __init__(self, window: int = 1024) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ParameterError(f"latency window must be an int >= 1, got {window!r}")
        self._values: deque[float] = deque(maxlen=window)

    def add(self, latency_ms: float) -> None:
        if not _is_finite_number(latency_ms) or latency_ms < 0:
            raise ParameterError(f"latency_ms must be a finite number >= 0, got {latency_ms!r}")
        self._values.append(float(latency_ms))

    def __len__(self) -> int:
        return len(self._values)

    def percentile_ms(self, p: float) -> float | None:
        """The p-th percentile over the window; None before the first sample."""
        if not self._values:
            return None
        return percentile(sorted(self._values), p)

    @property
    def p50_ms(self) -> float | None:
        return self.percentile_ms(50.0)

    @property
    def p99_ms(self) -> float | None:
        return self.percentile_ms(99.0)


class RuntimeMetrics:
    """Accumulates what the service reports; :meth:`snapshot` is the metrics payload.

    ``clock`` returns seconds (monotonic); tests pass a fake one.
    """

    def __init__(
        self,
        *,
        latency_window: int = 1024,
        rate_window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _is_finite_number(rate_window_s) or rate_window_s <= 0:
            raise ParameterError(f"rate_window_s must be a finite number > 0: {rate_window_s!r}")
        self._clock = clock
        self._started_s = clock()
        self._rate_window_s = float(rate_window_s)
        self.latency = LatencyTracker(latency_window)
        self.events_in = 0
        self.events_dropped = 0
        self.bad_packets = 0
        self.decisions = 0
        self.synops_total = 0
        # (time_s, synops) samples inside the rate window, oldest first.
        self._synops_samples: deque[tuple[float, int]] = deque()

    def count_events(self, n: int) -> None:
        """``n`` events were accepted."""
        self.events_in += _check_count("n", n)

    def count_dropped_events(self, n: int) -> None:
        """``n`` events were dropped (queue full, out of range...)."""
        self.events_dropped += _check_count("n", n)

    def count_bad_packet(self, n: int = 1) -> None:
        """A malformed live packet was dropped."""
        self.bad_packets += _check_count("n", n)

    def add_synops(self, synops: int) -> None:
        """Synaptic operations done; :meth:`record_decision` calls this for its own."""
        _check_count("synops", synops)
        now = self._clock()
        self.synops_total += synops
        self._synops_samples.append((now, synops))
        self._expire(now)

    def record_decision(self, latency_ms: float, synops: int) -> None:
        """A decision was published after ``latency_ms``, costing ``synops``."""
        self.latency.add(latency_ms)
        self.add_synops(synops)
        self.decisions += 1

    def _expire(self, now_s: float) -> None:
        horizon = now_s - self._rate_window_s
        while self._synops_samples and self._synops_samples[0][0] < horizon:
            self._synops_samples.popleft()

    def synops_per_s(self) -> float:
        """SynOps per second over the rate window (or the uptime, while shorter)."""
        now = self._clock()
        self._expire(now)
        span_s = min(self._rate_window_s, now - self._started_s)
        if span_s <= 0:
            return 0.0
        return sum(n for _, n in self._synops_samples) / span_s

    def snapshot(self, publisher: PublisherStats | None = None) -> dict[str, Any]:
        """The JSON-ready metrics payload; ``publisher`` adds its counters (drops included)."""
        snap: dict[str, Any] = {
            "v": METRICS_VERSION,
            "uptime_s": round(self._clock() - self._started_s, 3),
            "events_in": self.events_in,
            "events_dropped": self.events_dropped,
            "bad_packets": self.bad_packets,
            "decisions": self.decisions,
            "latency_ms_p50": self.latency.p50_ms,
            "latency_ms_p99": self.latency.p99_ms,
            "latency_window": len(self.latency),
            "synops_total": self.synops_total,
            "synops_per_s": self.synops_per_s(),
        }
        if publisher is not None:
            snap["publisher"] = publisher.to_dict()
        return snap


__all__ = ["METRICS_VERSION", "LatencyTracker", "RuntimeMetrics", "percentile"]
