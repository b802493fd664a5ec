"""Prometheus ``/metrics`` (``--metrics-port``): scraped over HTTP, parsed with
prometheus_client's own parser, checked against the decisions the service made."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "mqtt"))  # mqtt_testkit

from mqtt_testkit import send, wait_until
from prometheus_client.parser import text_string_to_metric_families
from service_kit import polarity_net, uniform_events
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.config import RunConfig
from spikecast.runtime.mqtt.metrics import CAUSES
from spikecast.runtime.mqtt.stdout import StdoutPublisher
from spikecast.runtime.mqtt.topics import events_topic
from spikecast.runtime.payload import Decision
from spikecast.runtime.prom import PrometheusExporter
from spikecast.runtime.service import Service

if TYPE_CHECKING:
    from conftest import MosquittoBroker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return polarity_net(lam=3.0).save(tmp_path / "polarity.scn")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


def samples(text: str) -> Samples:
    """(sample name, sorted labels) -> value; the text must parse as Prometheus text."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: Samples, name: str, **labels: str) -> float:
    return got[(name, tuple(sorted(labels.items())))]


class Scraper:
    """A hook after the exporter: it is stopped first, so it scrapes the endpoint
    once the run is over and before the endpoint closes."""

    def __init__(self, exporter: PrometheusExporter) -> None:
        self.exporter = exporter
        self.text = ""
        self.port = 0

    async def start(self) -> None:
        return None

    async def decision(self, decision: Decision) -> None:
        return None

    async def stop(self) -> None:
        port = self.exporter.port
        assert port is not None
        self.port = port
        self.text = await asyncio.to_thread(scrape, port)


def exporter_of(svc: Service) -> PrometheusExporter:
    (exp,) = [h for h in svc.hooks if isinstance(h, PrometheusExporter)]
    return exp


def check_decisions(got: Samples, made: list[Decision]) -> None:
    """Decisions by label and exit, the latency and steps histograms, SynOps."""
    for label, exit_ in {(d.label, d.exit) for d in made}:
        n = sum(d.label == label and d.exit == exit_ for d in made)
        assert value(got, "spikecast_decisions_total", label=label, exit=exit_) == n
    assert value(got, "spikecast_decision_latency_seconds_count") == len(made)
    assert value(got, "spikecast_decision_latency_seconds_sum") == pytest.approx(
        sum(d.latency_ms for d in made) / 1000.0
    )
    assert value(got, "spikecast_decision_latency_seconds_bucket", le="+Inf") == len(made)
    assert value(got, "spikecast_decision_steps_count") == len(made)
    assert value(got, "spikecast_decision_steps_sum") == sum(d.steps for d in made)
    le_10 = value(got, "spikecast_decision_steps_bucket", le="10.0")
    assert le_10 == sum(d.steps <= 10 for d in made)
    assert value(got, "spikecast_synops_total") == sum(d.synops for d in made)


async def test_metrics_scraped_from_a_file_run_match_its_decisions(
    model: Path, tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    for name, pol, seed in (("a_on", 1, 0), ("b_off", 0, 1), ("c_on", 1, 2)):
        ev = uniform_events(100, 20, polarity=pol, seed=seed)
        np.savez(rec / f"{name}.npz", events=ev, width=np.int64(34), height=np.int64(34))
    cfg = RunConfig(model=model, source=str(rec / "*.npz"), device="cam0", metrics_port=0)
    pub = StdoutPublisher(io.StringIO())
    svc = Service(cfg, pub)
    exporter = exporter_of(svc)
    scraper = Scraper(exporter)
    svc.hooks.append(scraper)
    async with pub:
        made = await asyncio.wait_for(svc.run(), 30)
    assert [d.label for d in made] == ["on", "off", "on"]
    got = samples(scraper.text)
    check_decisions(got, made)
    assert value(got, "spikecast_decisions_total", label="on", exit="confident") == 2
    m = svc.state.metrics
    assert value(got, "spikecast_events_total") == m.events_in > 0
    assert value(got, "spikecast_files_read_total") == 3
    assert value(got, "spikecast_frames_read_total") == 0  # an event network
    for cause in CAUSES:  # every cause is there from the start, at 0 here
        family = "spikecast_events_dropped_total" if cause[:7] == "events_" else "spikecast_dropped_total"
        assert value(got, family, cause=cause) == 0
    assert value(got, "spikecast_queue_events") == 0
    assert value(got, "spikecast_queue_limit_events") == cfg.queue_events
    assert value(got, "spikecast_outbox_messages") == 0
    assert value(got, "spikecast_messages_sent_total") == 3  # three decision lines
    info = value(got, "spikecast_info", device="cam0", model_sha256=svc.ctx.sha256, policy="reset")
    assert info == 1
    # No broker in stdout mode, so no broker gauge.
    assert not any(name.startswith("spikecast_broker") for name, _ in got)
    # The endpoint is gone once the run is over.
    assert exporter.port is None
    with pytest.raises(urllib.error.URLError):
        scrape(scraper.port)


def test_a_taken_port_is_a_parameter_error(model: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = RunConfig(model=model, source="nothing/*.npz", metrics_port=port)
        svc = Service(cfg, StdoutPublisher(io.StringIO()))

        async def run() -> None:
            async with svc.publisher:
                await svc.run()

        with pytest.raises(ParameterError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            asyncio.run(run())


def test_no_exporter_without_a_port(model: Path) -> None:
    svc = Service(RunConfig(model=model, source="x"), StdoutPublisher(io.StringIO()))
    assert svc.hooks == []


async def test_live_metrics_show_the_broker_drops_and_decisions(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    from test_service import live_config, running, step_packets

    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.9, metrics_port=0)
    async with running(cfg, mosquitto) as svc:
        exp = exporter_of(svc)
        assert exp.port is not None
        ev = uniform_events(30, 20)
        await send(host, port, events_topic("cam0", "s0"), [b"not a packet", *step_packets(ev, 0, 30)])
        await wait_until(lambda: any(d.stream == "s0" for d in svc.decisions), 15, "a decision")
        await wait_until(lambda: svc.publisher.stats().pending == 0, 10, "an empty outbox")
        text: Any = await asyncio.to_thread(scrape, exp.port)
        got = samples(text)
        assert value(got, "spikecast_broker_connected") == 1
        assert value(got, "spikecast_broker_reconnects_total") == 0
        assert value(got, "spikecast_dropped_total", cause="bad_packets") == 1
        assert value(got, "spikecast_events_total") == svc.state.metrics.events_in
        check_decisions(got, list(svc.decisions))
