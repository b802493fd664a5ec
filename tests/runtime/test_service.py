"""The service end to end against a real Mosquitto broker and real aiomqtt clients.

Networks come from ``service_kit.polarity_net`` (no torch): ON events mean class
"on", OFF events class "off", and confidence rises step by step, so τ decides how
many steps a decision takes. Live input is SCEV packets, one per step on the step
grid, with an empty packet as the watermark that completes the last step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "mqtt"))  # mqtt_testkit

from mqtt_testkit import recording_subscriber, retained, send, wait_until
from service_kit import polarity_net, split_steps, uniform_events
from spikecast.runtime.config import RunConfig
from spikecast.runtime.decision import OperatingPoint
from spikecast.runtime.mqtt.publisher import MqttPublisher
from spikecast.runtime.mqtt.settings import MqttSettings
from spikecast.runtime.mqtt.topics import (
    cmd_topic,
    config_topic,
    events_topic,
    metrics_topic,
    status_topic,
)
from spikecast.runtime.packets import HEADER, encode_packet
from spikecast.runtime.payload import validate_decision_payload
from spikecast.runtime.service import Service, make_publisher, run_service, serve

if TYPE_CHECKING:
    from conftest import MosquittoBroker

    BrokerFactory = Callable[..., MosquittoBroker]

DEVICE = "cam0"
DT = 1000
DECISIONS = f"spikecast/{DEVICE}/+/decision"
NMNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "nmnist" / "train"


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return polarity_net(lam=3.0).save(tmp_path / "polarity.scn")


def url(broker: MosquittoBroker) -> str:
    return (
        f"mqtt://{broker.host}:{broker.port}"
        "?reconnect_min_s=0.05&reconnect_max_s=0.3&timeout_s=3&keepalive_s=5"
    )


def mqtt(broker: MosquittoBroker) -> MqttSettings:
    return MqttSettings.from_url(url(broker), device=DEVICE)


def live_config(model: Path, broker: MosquittoBroker, **kw: Any) -> RunConfig:
    point = OperatingPoint(tau=kw.pop("tau", 0.9), t_min=1, t_max=kw.pop("t_max", 200))
    return RunConfig(
        model=model, source="mqtt", device=DEVICE, mqtt=mqtt(broker), point=point, **kw
    )


def step_packets(
    events: np.ndarray, t0_us: int, n_steps: int, *, watermark: bool = True
) -> list[bytes]:
    """One SCEV packet per step from t0_us, then an empty packet whose t0 is the watermark."""
    out = [
        encode_packet(part, 34, 34, t0_us=t0_us + k * DT)
        for k, part in enumerate(split_steps(events, t0_us, DT, n_steps))
    ]
    if watermark:
        out.append(encode_packet(events[:0], 34, 34, t0_us=t0_us + n_steps * DT))
    return out


def payloads(rec: Any, stream: str | None = None) -> list[dict[str, Any]]:
    """The decisions a recording subscriber saw (of one stream), parsed."""
    out = [json.loads(m.payload) for m in rec.messages if m.topic.value.endswith("/decision")]
    return [d for d in out if stream is None or d["stream"] == stream]


@contextlib.asynccontextmanager
async def running(cfg: RunConfig, broker: MosquittoBroker) -> AsyncIterator[Service]:
    """An in-process live service, subscribed and taking packets once this yields."""
    pub = make_publisher(cfg)
    svc = Service(cfg, pub)
    async with pub:
        task = asyncio.create_task(svc.run())
        try:
            assert isinstance(pub, MqttPublisher)
            await pub.wait_connected(10)
            # Probe until the events subscription is live (one event on a stream of its own).
            probe = encode_packet(uniform_events(1, 1), 34, 34)
            deadline = time.monotonic() + 10
            while svc.state.metrics.events_in == 0:
                assert time.monotonic() < deadline, "the service never took a packet"
                assert not task.done(), task
                await send(broker.host, broker.port, events_topic(DEVICE, "probe"), [probe])
                await asyncio.sleep(0.05)
            yield svc
        finally:
            svc.stop()
            await asyncio.wait_for(task, 20)


async def wait_decisions(rec: Any, svc: Service, stream: str, timeout_s: float = 10) -> None:
    """Until the subscriber holds every decision the service made on ``stream``."""
    want = lambda: len([d for d in svc.decisions if d.stream == stream])  # noqa: E731
    await wait_until(
        lambda: len(payloads(rec, stream)) >= want() > 0, timeout_s, f"decisions of {stream}"
    )


def write_npz(path: Path, events: np.ndarray) -> Path:
    np.savez(path, events=events, width=np.int64(34), height=np.int64(34))
    return path


# -- decision payloads -----------------------------------------------------------------


async def test_file_source_decisions_follow_the_schema(
    mosquitto: MosquittoBroker, model: Path, tmp_path: Path
) -> None:
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    for name, pol, seed in (("a_on", 1, 0), ("b_off", 0, 1), ("c_on", 1, 2)):
        write_npz(rec_dir / f"{name}.npz", uniform_events(100, 20, polarity=pol, seed=seed))
    cfg = RunConfig(
        model=model, source=str(rec_dir / "*.npz"), device=DEVICE, mqtt=mqtt(mosquitto)
    )
    async with recording_subscriber(mosquitto.host, mosquitto.port, DECISIONS) as rec:
        made = await asyncio.wait_for(serve(cfg), 30)
        await rec.wait_count(3, 10)
    got = payloads(rec)
    for d in got:
        validate_decision_payload(d)
    assert [(d["stream"], d["seq"], d["label"]) for d in got] == [
        ("a_on", 0, "on"),
        ("b_off", 0, "off"),
        ("c_on", 0, "on"),
    ]
    assert [d.to_dict() for d in made] == got
    assert all(d["exit"] == "confident" and d["device"] == DEVICE for d in got)
    assert all(d["expected_accuracy"] is not None for d in got)  # the net has a table


async def test_nmnist_file_decisions_follow_the_schema(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    files = sorted(NMNIST.glob("*.bin"))[:3]
    if not files:
        pytest.skip(f"no N-MNIST recordings at {NMNIST} (shared data not present)")
    cfg = RunConfig(
        model=model,
        source=str(NMNIST / "0000[123].bin"),
        device=DEVICE,
        mqtt=mqtt(mosquitto),
        point=OperatingPoint(tau=0.5, t_max=100),
    )
    async with recording_subscriber(mosquitto.host, mosquitto.port, DECISIONS) as rec:
        await asyncio.wait_for(serve(cfg), 30)
        await rec.wait_count(3, 10)
    got = payloads(rec)
    for d in got:
        validate_decision_payload(d)
    assert [d["stream"] for d in got] == ["00001", "00002", "00003"]
    assert all(1 <= d["steps"] <= 100 and d["synops"] > 0 for d in got)


async def test_live_packet_decisions_follow_the_schema(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    cfg = live_config(model, mosquitto, tau=0.9)
    host, port = mosquitto.host, mosquitto.port
    async with recording_subscriber(host, port, DECISIONS) as rec, running(cfg, mosquitto) as svc:
        t0 = 1_700_000_000_000_000  # a wall-clock-like sensor time
        for stream, pol in (("left", 1), ("right", 0)):
            ev = uniform_events(40, 20, polarity=pol, t0_us=t0, seed=pol)
            await send(host, port, events_topic(DEVICE, stream), step_packets(ev, t0, 40))
        await wait_decisions(rec, svc, "left")
        await wait_decisions(rec, svc, "right")
    for stream, label in (("left", "on"), ("right", "off")):
        got = payloads(rec, stream)
        assert len(got) >= 3
        for d in got:
            validate_decision_payload(d)
        assert [d["seq"] for d in got] == list(range(len(got)))
        assert {d["label"] for d in got} == {label}
        # Spans follow the packets' step grid and tile the stream.
        assert got[0]["sensor_t0_us"] == t0
        assert all(
            b["sensor_t0_us"] == a["sensor_t1_us"] for a, b in itertools.pairwise(got)
        )
        assert all(d["steps"] * DT == d["sensor_t1_us"] - d["sensor_t0_us"] for d in got)
        assert all(d["latency_ms"] < 1000 for d in got)


async def test_packets_with_an_end_are_decided_without_a_watermark_packet(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    # 10-step packets that carry their end (t1_us): every step of the stream is decided on
    # with the packet that holds it, one message per packet and no empty watermark packet.
    cfg = live_config(model, mosquitto, tau=0.0)  # a decision at every step
    host, port = mosquitto.host, mosquitto.port
    t0 = 2_000_000
    ev = uniform_events(40, 20, polarity=1, t0_us=t0, seed=5)
    cut = np.searchsorted(ev["t"], t0 + np.arange(0, 50, 10) * DT)
    pk = [encode_packet(ev[cut[k] : cut[k + 1]], 34, 34, t0_us=t0 + 10 * k * DT,
                        t1_us=t0 + 10 * (k + 1) * DT) for k in range(4)]
    async with recording_subscriber(host, port, DECISIONS) as rec, running(cfg, mosquitto) as svc:
        await send(host, port, events_topic(DEVICE, "ends"), pk)
        await wait_until(lambda: len(payloads(rec, "ends")) >= 40, 10, "40 decisions")
        assert svc.state.metrics.events_in >= len(ev)
    got = payloads(rec, "ends")
    assert [d["sensor_t1_us"] for d in got] == [t0 + (k + 1) * DT for k in range(40)]


# -- status, Last Will, clean shutdown (the CLI in a subprocess) -------------------------


async def start_cli(
    model: Path, broker: MosquittoBroker, log: Path, *extra: str
) -> asyncio.subprocess.Process:
    """``spikecast run --source mqtt`` in a subprocess; returns once status is ``online``."""
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "spikecast.runtime.cli",
            "run",
            "--model",
            str(model),
            "--source",
            "mqtt",
            "--mqtt",
            url(broker),
            "--device",
            DEVICE,
            "--tau",
            "0.9",
            "--metrics-interval-s",
            "30",
            *extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    status = status_topic(DEVICE)
    deadline = time.monotonic() + 30
    while await retained(broker.host, broker.port, status) != b"online":
        if proc.returncode is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"service never went online:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.1)
    return proc


async def test_last_will_says_offline_when_the_service_is_killed(
    mosquitto: MosquittoBroker, model: Path, tmp_path: Path
) -> None:
    proc = await start_cli(model, mosquitto, tmp_path / "svc.log")
    try:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        # No DISCONNECT was sent: the broker publishes the Will, retained.
        status = status_topic(DEVICE)
        await wait_until_async(
            lambda: retained(mosquitto.host, mosquitto.port, status), b"offline", 10
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly_with_explicit_offline(
    mosquitto: MosquittoBroker, model: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    host, port = mosquitto.host, mosquitto.port
    log = tmp_path / "svc.log"
    proc = await start_cli(model, mosquitto, log)
    try:
        async with recording_subscriber(host, port, f"spikecast/{DEVICE}/#") as rec:
            # It decides on live packets...
            ev = uniform_events(30, 20)
            await send(host, port, events_topic(DEVICE, "s0"), step_packets(ev, 0, 30))
            await rec.wait_for(
                lambda r: any(m.topic.value.endswith("/decision") for m in r.messages),
                15,
                "a decision from the subprocess",
            )
            proc.send_signal(sig)
            assert await asyncio.wait_for(proc.wait(), 20) == 0, log.read_text()[-3000:]
            # ...and on the signal it publishes its last metrics and says offline itself.
            await rec.wait_for(lambda r: r.payloads[-1:] == [b"offline"], 10, "offline")
        topics = [m.topic.value for m in rec.messages]
        last = len(topics) - 1 - topics[::-1].index(metrics_topic(DEVICE))
        assert topics[-1] == status_topic(DEVICE) and last < len(topics) - 1
        last_metrics = json.loads(rec.payloads[last])
        assert last_metrics["decisions"] >= 1 and last_metrics["events_in"] > 0
        assert await retained(host, port, status_topic(DEVICE)) == b"offline"
        assert "Traceback" not in log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def tau_of(config: Any) -> float | None:
    raw = await config
    return None if raw is None else float(json.loads(raw)["tau"])


async def wait_until_async(
    get: Callable[[], Any], want: object, timeout_s: float, what: str = "retained value"
) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await get()) != want:
        assert time.monotonic() < deadline, f"{what}: {got!r}, wanted {want!r}"
        await asyncio.sleep(0.05)


# -- delivery across a broker restart --------------------------------------------------


async def test_every_decision_arrives_in_order_across_a_broker_restart(
    mosquitto_factory: BrokerFactory, model: Path, tmp_path: Path
) -> None:
    # A file replayed in real time keeps deciding while the broker is away; the subscriber
    # has a persistent session on a persistent broker, so it misses nothing itself: every
    # decision made during the outage must come from the service's outbox.
    broker = mosquitto_factory(persistence=True)
    path = write_npz(tmp_path / "long.npz", uniform_events(1500, 20, seed=7))
    cfg = RunConfig(
        model=model,
        source=str(path),
        device=DEVICE,
        mqtt=mqtt(broker),
        realtime=True,
        one_per_file=False,
    )
    pub = make_publisher(cfg)
    assert isinstance(pub, MqttPublisher)
    filt = f"spikecast/{DEVICE}/long/decision"
    async with recording_subscriber(broker.host, broker.port, filt, persistent=True) as rec:
        service = asyncio.create_task(serve(cfg, pub))
        await rec.wait_count(20, 10)
        broker.stop()
        await wait_until(lambda: not pub.stats().connected, 5, "the service to notice")
        waiting = []
        for _ in range(20):  # 0.4 s without a broker
            await asyncio.sleep(0.02)
            waiting.append(pub.stats().pending)
        broker.start()
        made = await asyncio.wait_for(service, 30)
        assert max(waiting) > 5, waiting  # decisions were made while the broker was down
        await rec.wait_for(lambda r: len(set(r.payloads)) >= len(made), 10, "every decision")
    stats = pub.stats()
    assert stats.reconnects >= 1 and stats.dropped == 0 and stats.pending == 0
    seqs = [d["seq"] for d in payloads(rec)]
    # QoS 1 may repeat a message whose acknowledgement died with the broker; new ones come
    # with no gap and in order.
    assert list(dict.fromkeys(seqs)) == list(range(len(made))) and len(made) > 100
    assert len(seqs) - len(made) <= 10


# -- live commands ---------------------------------------------------------------------


async def test_cmd_set_changes_tau_config_and_steps_per_decision(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.99)
    ev = uniform_events(80, 20, seed=5)
    async with recording_subscriber(host, port, DECISIONS) as rec, running(cfg, mosquitto) as svc:
        config = lambda: retained(host, port, config_topic(DEVICE))  # noqa: E731
        assert json.loads(await config() or b"{}")["tau"] == 0.99
        await send(host, port, events_topic(DEVICE, "before"), step_packets(ev, 0, 80))
        await wait_decisions(rec, svc, "before")

        await send(host, port, cmd_topic(DEVICE, "set"), [b'{"tau": 0.3}'])
        await wait_until(lambda: svc.point().tau == 0.3, 5, "tau 0.3 in force")
        # The retained config follows.
        await wait_until_async(lambda: tau_of(config()), 0.3, 5, "retained config")
        # The same packets again, on a fresh stream.
        await send(host, port, events_topic(DEVICE, "after"), step_packets(ev, 0, 80))
        await wait_decisions(rec, svc, "after")
    slow = [d["steps"] for d in payloads(rec, "before")]
    fast = [d["steps"] for d in payloads(rec, "after")]
    assert np.mean(fast) * 2 < np.mean(slow), (slow, fast)
    assert len(fast) > 2 * len(slow)


async def test_bad_commands_are_counted_and_change_nothing(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.8)
    async with running(cfg, mosquitto) as svc:
        bad = [b"not json", b"[1, 2]", b'{"tau": 2.0}', b'{"speed": 3}', b'{"t_min": 1.5}']
        await send(host, port, cmd_topic(DEVICE, "set"), bad)
        await send(host, port, cmd_topic(DEVICE, "reboot"), [b"{}"])
        await wait_until(lambda: svc.state.bad_commands == 6, 5, "6 rejected commands")
        assert svc.point() == cfg.point
        # A target accuracy derives tau from the table; an explicit tau then replaces it.
        await send(host, port, cmd_topic(DEVICE, "set"), [b'{"target_accuracy": 0.8}'])
        await wait_until(lambda: svc.point().target_accuracy == 0.8, 5, "target in force")
        derived = svc.point().tau
        await send(host, port, cmd_topic(DEVICE, "set"), [b'{"tau": 0.55}'])
        await wait_until(lambda: svc.point().tau == 0.55, 5, "explicit tau in force")
        assert svc.point().target_accuracy is None and derived != 0.55
        config = lambda: retained(host, port, config_topic(DEVICE))  # noqa: E731
        await wait_until_async(lambda: tau_of(config()), 0.55, 5, "retained config")
        assert json.loads(await config() or b"{}")["target_accuracy"] is None
        assert svc.state.bad_commands == 6


# -- bad input and overload --------------------------------------------------------------


def bad_packets() -> dict[str, bytes]:
    good = encode_packet(uniform_events(1, 5, seed=9), 34, 34)
    bad_magic = b"SCEX" + good[4:]
    truncated = good[:-3]
    ev = uniform_events(1, 5, seed=9)
    out_of_range = bytearray(encode_packet(ev, 34, 34))
    out_of_range[HEADER.size] = 40  # x of event 0 beyond the stated width 34
    return {"bad magic": bad_magic, "truncated": truncated, "x >= width": bytes(out_of_range)}


async def test_malformed_packets_are_counted_and_dropped_while_deciding_goes_on(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.9, metrics_interval_s=0.2)
    ev = uniform_events(60, 20, seed=11)
    good = step_packets(ev, 0, 60)
    wide = ev[:7].copy()  # a valid packet from a bigger sensor: events outside the input
    wide["x"] = 50
    wide["t"] = 29_000
    stream: list[bytes] = good[:29] + list(bad_packets().values())
    stream += [encode_packet(wide, 64, 64, t0_us=29000), *good[29:]]
    async with (
        recording_subscriber(host, port, f"spikecast/{DEVICE}/#") as rec,
        running(cfg, mosquitto) as svc,
    ):
        await send(host, port, events_topic(DEVICE, "s0"), stream)
        await wait_decisions(rec, svc, "s0")
        await rec.wait_for(
            lambda r: any(
                json.loads(m.payload).get("bad_packets") == 3
                for m in r.messages
                if m.topic.value == metrics_topic(DEVICE)
            ),
            5,
            "metrics with 3 bad packets",
        )
        m = svc.state.metrics
        # The first decisions can arrive before the last packets: wait for all of them.
        await wait_until(lambda: m.events_in == 1 + len(ev) + 7, 10, "every packet taken")
        await wait_decisions(rec, svc, "s0")
        assert m.bad_packets == 3
        assert m.events_dropped == 7  # the wide packet's events, outside the network input
    decided = payloads(rec, "s0")
    # Decisions go on past the bad packets, over the whole stream, in order.
    assert [d["seq"] for d in decided] == list(range(len(decided)))
    assert decided[-1]["sensor_t1_us"] >= 50_000 and len(decided) >= 4


async def test_overload_sheds_whole_packets_with_counters(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    bound = 1000
    cfg = live_config(model, mosquitto, tau=0.9, queue_events=bound)
    n_packets, per = 300, 400
    ev = uniform_events(20 * n_packets, 20, seed=13)
    packets = [
        encode_packet(part, 34, 34, t0_us=20_000 * k)
        for k, part in enumerate(split_steps(ev, 0, 20_000, n_packets))
    ]
    assert {len(p) for p in packets} == {22 + 9 * per}
    async with running(cfg, mosquitto) as svc:
        m = svc.state.metrics
        base = m.events_in
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, svc.state.queued_events)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        async with mqtt_client(host, port) as client:
            for p in packets:
                await client.publish(events_topic(DEVICE, "flood"), p, qos=0)
        total = n_packets * per
        await wait_until(
            lambda: m.events_in - base + m.events_dropped >= total,
            15,
            "every packet accepted or shed",
        )
        await wait_until(lambda: svc.state.queued_events == 0, 15, "the queue to drain")
        watcher.cancel()
        assert m.events_in - base + m.events_dropped == total
        assert m.events_dropped > 0 and m.events_dropped % per == 0  # whole packets
        assert peak <= bound
        assert any(d.stream == "flood" for d in svc.decisions)  # it kept deciding
        snap = m.snapshot()
        assert snap["events_dropped"] == m.events_dropped


@contextlib.asynccontextmanager
async def mqtt_client(host: str, port: int) -> AsyncIterator[Any]:
    import aiomqtt

    async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5, timeout=5) as c:
        yield c


async def test_a_crash_in_compute_ends_the_live_service(
    mosquitto: MosquittoBroker, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug must surface as an error, not leave a service that is online but deaf.
    cfg = live_config(model, mosquitto)
    pub = make_publisher(cfg)
    svc = Service(cfg, pub)

    def broken(items: list[Any]) -> Any:
        raise RuntimeError("bug in compute")

    monkeypatch.setattr(svc, "_work_batch", broken)
    async with pub:
        task = asyncio.create_task(svc.run())
        assert isinstance(pub, MqttPublisher)
        await pub.wait_connected(10)
        probe = encode_packet(uniform_events(1, 1), 34, 34)
        deadline = time.monotonic() + 10
        while not task.done() and time.monotonic() < deadline:  # until it is subscribed
            await send(mosquitto.host, mosquitto.port, events_topic(DEVICE, "probe"), [probe])
            await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="bug in compute"):
            await asyncio.wait_for(task, 1)


# -- loss accounting -------------------------------------------------------------------


async def test_a_live_source_that_sheds_exits_3_with_a_summary(
    mosquitto: MosquittoBroker, model: Path, tmp_path: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    log = tmp_path / "svc.log"
    proc = await start_cli(model, mosquitto, log, "--queue-events", "1000")
    n_packets = 300  # of 400 events each
    ev = uniform_events(20 * n_packets, 20, seed=13)
    packets = [
        encode_packet(part, 34, 34, t0_us=20_000 * k)
        for k, part in enumerate(split_steps(ev, 0, 20_000, n_packets))
    ]
    try:
        async with recording_subscriber(host, port, DECISIONS) as rec:
            async with mqtt_client(host, port) as client:
                for p in packets:
                    await client.publish(events_topic(DEVICE, "flood"), p, qos=0)
            await rec.wait_for(lambda r: len(r.messages) > 0, 15, "a decision on the flood")
        await asyncio.sleep(1.0)  # let it take what reached it
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert rc == 3, text[-3000:]
    line = text.strip().splitlines()[-1]
    assert line.startswith("spikecast: ") and "live events; dropped: " in line, line
    assert "shed (queue full) in " in line or "shed (MQTT receive queue full)" in line, line
    assert "Traceback" not in text


async def test_an_unreachable_broker_loses_decisions_and_says_so(
    model: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = MqttSettings.from_url(
        f"mqtt://127.0.0.1:{port}?timeout_s=0.3&reconnect_min_s=0.05&reconnect_max_s=0.1",
        device=DEVICE,
    )
    path = write_npz(tmp_path / "a.npz", uniform_events(100, 20, seed=1))
    cfg = RunConfig(model=model, source=str(path), device=DEVICE, mqtt=settings)
    svc = await asyncio.wait_for(
        run_service(cfg, MqttPublisher(settings, flush_timeout_s=0.2)), 20
    )
    assert len(svc.decisions) == 1
    line, status = svc.report()
    assert status == 3
    # config, the decision and the last metrics: none reached a broker.
    assert line == (
        "spikecast: 1 decision from 1 file (2,000 events); "
        "dropped: 3 messages not delivered to the broker"
    )


async def test_a_live_stream_mostly_outside_the_input_has_its_decisions_withheld(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.99, t_max=10)
    ev = uniform_events(60, 20, seed=21)
    ev["x"][ev["x"] < 27] += 40  # about 80% of the events beyond the 34x34 input
    packets = [
        encode_packet(part, 80, 34, t0_us=k * DT)
        for k, part in enumerate(split_steps(ev, 0, DT, 60))
    ]
    async with running(cfg, mosquitto) as svc:
        m = svc.state.metrics
        await send(host, port, events_topic(DEVICE, "far"), packets)
        await wait_until(lambda: m.dropped.get("decisions_withheld", 0) >= 3, 10, "withheld")
        assert not [d for d in svc.decisions if d.stream == "far"]
        assert m.dropped["events_outside"] == int((ev["x"] >= 34).sum())
        assert "events_late" not in m.dropped
    line, status = svc.report()
    assert status == 3 and "withheld (events mostly outside the input)" in line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_a_realtime_file_replay_promptly_with_the_summary(
    model: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    # 10 minutes of sensor time, replayed in real time with every decision.
    path = write_npz(tmp_path / "long.npz", uniform_events(600, 50, dt_us=1_000_000))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spikecast.runtime.cli", "run", "--model", str(model),
        "--source", str(path), "--realtime", "--all-decisions",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 30)  # deciding
        began = time.monotonic()
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert time.monotonic() - began < 2
        assert proc.returncode == 0, err.decode()[-2000:]
        assert err.decode().splitlines()[-1].startswith("spikecast: ")
        assert b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_file_spanning_198_days_is_replayed_in_seconds(model: Path, tmp_path: Path) -> None:
    # 2,000 events over 198 days with --all-decisions: silences are jumped, not stepped.
    from spikecast.ext.core.events import make_events

    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 198 * 86_400 * 10**6, 2_000))
    ev = make_events(rng.integers(0, 34, 2_000), rng.integers(0, 34, 2_000), t, np.ones(2_000, int))
    path = write_npz(tmp_path / "months.npz", ev)
    cfg = RunConfig(model=model, source=str(path), one_per_file=False)
    began = time.monotonic()
    svc = await asyncio.wait_for(run_service(cfg), 60)
    assert time.monotonic() - began < 20
    assert svc.state.metrics.decisions <= 2_000 + 1
    assert svc.report()[1] == 0


def test_small_batches_run_inline_until_compute_takes_half_of_the_time(model: Path) -> None:
    import io

    from spikecast.runtime import service as service_module
    from spikecast.runtime.mqtt.stdout import StdoutPublisher

    item = service_module._Item
    window_s = service_module._BUSY_WINDOW_S
    svc = Service(RunConfig(model=model, source="x"), StdoutPublisher(io.StringIO()))
    small = [item("s", 0.0, events=np.zeros(0), n_events=10), item("t", 0.0, n_events=20)]
    big = [item("s", 0.0, n_events=service_module._INLINE_EVENTS + 1)]
    ends = [item("s", 0.0, end=True)]
    frames = [item("s", 0.0, frame=np.zeros((1, 2, 2), np.float32))]
    # Files only: nothing live to keep reading, so every batch runs on the loop.
    assert not svc.live
    svc._compute_busy_s, svc._compute_busy_at = 0.9 * window_s, time.perf_counter()
    assert all(svc._inline(b) for b in (small, big, ends, frames))
    svc.live = True
    svc._compute_busy_s = 0.0
    assert svc._inline(small)
    # Live: too many events, a frame or a stream's end always go to the worker thread.
    assert not svc._inline(big)
    assert not svc._inline(ends)
    assert not svc._inline(frames)
    # Compute took 40% of the last window: still on the loop.
    svc._compute_busy_s, svc._compute_busy_at = 0.4 * window_s, time.perf_counter()
    assert svc._inline(small)
    # 60%: hand small batches over too.
    svc._compute_busy_s, svc._compute_busy_at = 0.6 * window_s, time.perf_counter()
    assert not svc._inline(small)
    # Three windows with nothing to compute: 60% decays to 3%, inline again.
    svc._compute_busy_s, svc._compute_busy_at = 0.6 * window_s, time.perf_counter() - 3 * window_s
    assert svc._inline(small)
    assert svc._compute_busy_s < 0.04 * window_s


class _OrderPublisher:
    """Records publishes into a shared log (the compute side logs into it too)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def publish(self, topic: str, payload: Any, *, qos: int | None = None,
                      retain: bool = False) -> None:
        self.log.append(f"publish {payload['seq']}")


@pytest.mark.parametrize("inline", [True, False])
async def test_an_inline_batch_publishes_each_decision_before_computing_the_next(
    model: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    # A burst of live packets (sixteen aligned sensors) is one batch: on the loop, each
    # decision must leave as soon as it is made, not after the rest of the batch.
    from mqtt_testkit import make_decision
    from spikecast.runtime import service as service_module

    log: list[str] = []
    svc = Service(RunConfig(model=model, source="x"), _OrderPublisher(log))  # type: ignore[arg-type]
    svc.live = True

    def work(item: Any) -> tuple[list[Any], dict[str, int]]:
        k = int(item.stream)
        log.append(f"compute {k}")
        return [make_decision(k, stream=item.stream)], {}

    monkeypatch.setattr(svc, "_work", work)
    n_events = 10 if inline else service_module._INLINE_EVENTS
    item = service_module._Item
    for k in range(3):
        svc.queue.put_nowait(item(str(k), 0.0, events=np.zeros(0), n_events=n_events))
    svc.queue.put_nowait(item("", 0.0, end=True))  # the end marker
    await asyncio.wait_for(svc._compute(), 5)
    if inline:
        assert log == ["compute 0", "publish 0", "compute 1", "publish 1", "compute 2", "publish 2"]
    else:  # one hand-over to the worker thread for the whole batch
        assert log == ["compute 0", "compute 1", "compute 2", "publish 0", "publish 1", "publish 2"]
    assert [d.seq for d in svc.decisions] == [0, 1, 2]
