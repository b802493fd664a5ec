"""Prometheus ``/metrics`` for ``spikecast run --metrics-port PORT`` (the ``metrics`` extra).

The exporter keeps its own registry (never prometheus_client's global one) and
serves it from a daemon thread on ``--metrics-addr`` (127.0.0.1 by default). The
counters the service keeps anyway (events, drops by cause, SynOps, the queue, the
outbox, the broker connection) are read when Prometheus scrapes; only what they
do not hold is counted here: decisions by label and exit reason, and the latency
and steps histograms. Names follow the Prometheus conventions (base units,
``_total`` counters); docs/monitoring.md lists them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.metrics import CAUSES

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ParameterError(
        "--metrics-port needs prometheus-client: pip install 'spikecast[metrics]'"
    ) from exc

if TYPE_CHECKING:
    from spikecast.runtime.mqtt.base import PublisherStats
    from spikecast.runtime.payload import Decision
    from spikecast.runtime.service import Service

log = logging.getLogger(__name__)

#: Decision latency buckets, seconds: 0.5 ms to 10 s.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0)
#: Steps-per-decision buckets.
STEPS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class ServiceCollector(Collector):
    """The service's own counters, read at scrape time."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def _drops(self, stats: PublisherStats) -> dict[str, int]:
        """Every drop by cause so far; monotonic, unlike ``metrics.losses`` (which also
        counts the messages still in the outbox: they are the outbox gauge here)."""
        out = dict(self.service.state.metrics.dropped)
        out["inbound_shed"] = out.get("inbound_shed", 0) + stats.inbound_dropped
        out["undelivered"] = out.get("undelivered", 0) + stats.dropped
        return out

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        m = svc.state.metrics
        stats = svc.publisher.stats()
        info = InfoMetricFamily("spikecast", "The running service")
        info.add_metric([], {"device": svc.cfg.device, "model_sha256": svc.ctx.sha256,
                             "policy": svc.cfg.policy})
        yield info
        yield CounterMetricFamily("spikecast_events", "Events accepted", value=m.events_in)
        events = CounterMetricFamily(
            "spikecast_events_dropped",
            "Events dropped, by cause (events_outside: outside the input after "
            "--crop/--downsample, not a loss)",
            labels=["cause"],
        )
        other = CounterMetricFamily(
            "spikecast_dropped",
            "Other things dropped, by cause: packets, files, decisions or messages, as the "
            "cause says",
            labels=["cause"],
        )
        drops = self._drops(stats)
        for cause in CAUSES:
            (events if cause.startswith("events_") else other).add_metric(
                [cause], drops.get(cause, 0)
            )
        yield events
        yield other
        yield CounterMetricFamily("spikecast_synops", "Synaptic operations", value=m.synops_total)
        yield CounterMetricFamily("spikecast_files_read", "Files read", value=m.files_read)
        yield CounterMetricFamily("spikecast_frames_read", "Frames read from files", value=m.frames_read)
        yield CounterMetricFamily("spikecast_bad_commands", "Commands rejected",
                                  value=svc.state.bad_commands)
        yield CounterMetricFamily("spikecast_messages_sent",
                                  "Messages delivered (acknowledged by the broker; stdout: lines "
                                  "written)", value=stats.sent)
        yield GaugeMetricFamily("spikecast_queue_events", "Events waiting for compute",
                                value=svc.state.queued_events)
        yield GaugeMetricFamily("spikecast_queue_limit_events",
                                "Bound on queued events (--queue-events)", value=svc.cfg.queue_events)
        yield GaugeMetricFamily("spikecast_outbox_messages",
                                "Messages waiting in the outbox for the broker", value=stats.pending)
        if svc.cfg.mqtt is not None:
            yield GaugeMetricFamily("spikecast_broker_connected",
                                    "1 while connected to the broker, else 0",
                                    value=1 if stats.connected else 0)
            yield CounterMetricFamily("spikecast_broker_reconnects",
                                      "Connections to the broker after the first",
                                      value=stats.reconnects)


class PrometheusExporter:
    """A service hook: serves ``/metrics`` from start to stop, counts each decision."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "spikecast_decisions", "Decisions made, by label and exit reason",
            ("label", "exit"), registry=self.registry,
        )
        self.latency = Histogram(
            "spikecast_decision_latency_seconds",
            "Decision latency: latency_ms of the decision payload, in seconds",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.steps = Histogram(
            "spikecast_decision_steps", "Time steps per decision",
            buckets=STEPS_BUCKETS, registry=self.registry,
        )
        self.registry.register(ServiceCollector(service))
        self._server: Any = None

    @property
    def port(self) -> int | None:
        """The port served (the one chosen when asked for 0); None when not serving."""
        return None if self._server is None else int(self._server.server_port)

    async def start(self) -> None:
        cfg = self.service.cfg
        port = cfg.metrics_port if cfg.metrics_port is not None else 0
        try:
            self._server, _ = start_http_server(port, cfg.metrics_addr, registry=self.registry)
        except OSError as exc:
            raise ParameterError(
                f"cannot serve metrics on {cfg.metrics_addr}:{port}: {exc.strerror or exc}"
            ) from exc
        log.info("Prometheus metrics on http://%s:%d/metrics", cfg.metrics_addr, self.port)

    async def decision(self, decision: Decision) -> None:
        self.decisions.labels(decision.label, decision.exit).inc()
        self.latency.observe(decision.latency_ms / 1000.0)
        self.steps.observe(decision.steps)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()


__all__ = ["LATENCY_BUCKETS_S", "STEPS_BUCKETS", "PrometheusExporter", "ServiceCollector"]
