"""Runtime metrics for the periodic ``spikecast/<device>/metrics`` topic.

Counters (events in, events dropped, bad packets, decisions) only grow.
Every loss is also counted by cause in :attr:`RuntimeMetrics.dropped` (see
``CAUSES``): the metrics topic carries them, and :func:`summary_line` and
:func:`exit_status` turn them into the line and the exit status that
``spikecast run`` ends with. Latency percentiles cover the last ``window`` decisions, and SynOps/s covers the
last ``rate_window_s`` seconds, so a snapshot describes the recent past rather
than an average over the whole uptime.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from spikecast.ext.core.checks import check_int, is_finite_number
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.base import PublisherStats

METRICS_VERSION = 1

#: Exit status of ``spikecast run`` when accepted input or decisions were lost.
EXIT_LOSS = 3

#: Why something was dropped: cause -> (what the summary line says, whether it is a
#: loss). Events outside the network input after --crop/--downsample are counted but
#: are no loss: dropping them is what a crop is for.
CAUSES: dict[str, tuple[str, bool]] = {
    "events_shed": ("event{s} shed (queue full)", True),
    "packets_shed": ("packet{s} shed (queue full)", True),  # the events_shed came in these
    "inbound_shed": ("packet{s} shed (MQTT receive queue full)", True),
    "bad_packets": ("bad packet{s}", True),
    # A udp:// source's datagrams the kernel dropped (receive buffer full): UDP says
    # nothing to the sender, the socket counts them (SO_RXQ_OVFL, /proc/net/udp).
    "datagrams_dropped_kernel": ("datagram{s} dropped by the kernel (receive buffer full)", True),
    # Live packets over a limit of docs/mqtt.md "Limits" (runtime.limits.LiveLimits):
    "packets_bad_time": ("packet{s} with t0_us out of range", True),
    "packets_too_long": ("packet{s} spanning too many steps", True),
    "packets_too_many_events": ("packet{s} with too many events", True),
    "packets_over_streams": ("packet{s} of streams over the limit", True),
    "events_late": ("late event{s}", True),
    "files_failed": ("unreadable file{s}", True),
    "files_outside": ("file{s} not decided (events mostly outside the input)", True),
    "files_misfit": ("file{s} of a sensor that does not fit the input (see --fit)", True),
    "decisions_withheld": ("decision{s} withheld (events mostly outside the input)", True),
    "undelivered": ("message{s} not delivered to the broker", True),
    "events_outside": ("event{s} outside the input", False),
}


def _check_count(name: str, n: int) -> int:
    return check_int(name, n, 0)


_is_finite_number = is_finite_number


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
        check_int("latency window", window, 1)
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
        self.files_read = 0
        self.events_read = 0
        self.frames_read = 0
        self.dropped: dict[str, int] = {}
        self.stream_restarts = 0  # fresh segments after a time jump (nothing lost)
        self.streams_closed = 0  # live streams closed after the idle timeout
        self.synops_total = 0
        # (time_s, synops) samples inside the rate window, oldest first.
        self._synops_samples: deque[tuple[float, int]] = deque()

    def count_events(self, n: int) -> None:
        """``n`` events were accepted."""
        self.events_in += _check_count("n", n)

    def count_dropped_events(self, n: int, cause: str = "events_shed") -> None:
        """``n`` events were dropped: shed (queue full), outside the input, late."""
        self.events_dropped += _check_count("n", n)
        self.count_drop(cause, n)

    def count_bad_packet(self, n: int = 1) -> None:
        """A malformed live packet was dropped."""
        self.bad_packets += _check_count("n", n)
        self.count_drop("bad_packets", n)

    def count_drop(self, cause: str, n: int = 1) -> None:
        """``n`` things were dropped for ``cause`` (a key of ``CAUSES``)."""
        if cause not in CAUSES:
            raise ParameterError(f"unknown drop cause {cause!r}; expected one of {sorted(CAUSES)}")
        if _check_count("n", n):
            self.dropped[cause] = self.dropped.get(cause, 0) + n

    def count_file(self, n_events: int, n_frames: int = 0) -> None:
        """A file of ``n_events`` events (or ``n_frames`` frames) was read."""
        self.files_read += 1
        self.events_read += _check_count("n_events", n_events)
        self.frames_read += _check_count("n_frames", n_frames)

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
            "files_read": self.files_read,
            "frames_read": self.frames_read,
            "dropped": dict(sorted(self.dropped.items())),
            "stream_restarts": self.stream_restarts,
            "streams_closed": self.streams_closed,
            "latency_ms_p50": self.latency.p50_ms,
            "latency_ms_p99": self.latency.p99_ms,
            "latency_window": len(self.latency),
            "synops_total": self.synops_total,
            "synops_per_s": self.synops_per_s(),
        }
        if publisher is not None:
            snap["publisher"] = publisher.to_dict()
        return snap


def losses(metrics: RuntimeMetrics, publisher: PublisherStats | None = None) -> dict[str, int]:
    """Every drop by cause, with the publisher's: packets its subscriptions shed and
    messages it never delivered (dropped from a full outbox or still pending)."""
    out = dict(metrics.dropped)
    if publisher is not None:
        for cause, n in (("inbound_shed", publisher.inbound_dropped),
                         ("undelivered", publisher.dropped + publisher.pending)):
            if n:
                out[cause] = out.get(cause, 0) + n
    return out


def exit_status(dropped: dict[str, int]) -> int:
    """0 when nothing accepted was lost, else ``EXIT_LOSS``."""
    return EXIT_LOSS if any(n and CAUSES[c][1] for c, n in dropped.items()) else 0


def _count(n: int) -> str:
    if n >= 10_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n:,}"


def _plural(n: int, label: str) -> str:
    """``n`` and ``label``, whose ``{s}`` is "s" unless n is 1."""
    if "{s}" not in label:
        label += "{s}"
    return f"{n:,} " + label.format(s="" if n == 1 else "s")


def summary_line(metrics: RuntimeMetrics, dropped: dict[str, int], *, files: bool) -> str:
    """One line for stderr at exit: decisions, inputs, losses by cause, then what
    was not used without being a loss (events outside the input after a crop).

    ``spikecast: 999 decisions from 999 files (4.2M events); dropped: none``
    """
    if files:
        events, frames = metrics.events_read, metrics.frames_read
        read = [f"{_count(events)} events"] if events or not frames else []
        read += [_plural(frames, "frame")] if frames else []
        inputs = f"{_plural(metrics.files_read, 'file')} ({', '.join(read)})"
    else:
        inputs = f"{_count(metrics.events_in)} live events"
    parts = [_plural(dropped[c], label) for c, (label, lossy) in CAUSES.items()
             if lossy and dropped.get(c) and c != "packets_shed"]
    if dropped.get("events_shed") and dropped.get("packets_shed"):
        parts[0] += f" in {_plural(dropped['packets_shed'], 'packet')}"
    unused = [_plural(dropped[c], label) for c, (label, lossy) in CAUSES.items()
              if not lossy and dropped.get(c)]
    line = f"spikecast: {_plural(metrics.decisions, 'decision')} from {inputs}; "
    line += "dropped: " + (", ".join(parts) if parts else "none")
    return line + ("; not used: " + ", ".join(unused) if unused else "")


__all__ = [
    "CAUSES",
    "EXIT_LOSS",
    "METRICS_VERSION",
    "LatencyTracker",
    "RuntimeMetrics",
    "exit_status",
    "losses",
    "percentile",
    "summary_line",
]
