"""Hostile live input against a real Mosquitto broker: every packet and command is
checked against the service's limits (runtime.limits.LiveLimits, docs/mqtt.md
"Limits"); a violation is counted by cause and dropped, or starts a fresh segment,
and the service goes on deciding on every other stream.

Helpers (a live service in-process, step packets) come from test_service.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "mqtt"))  # mqtt_testkit

from mqtt_testkit import send, wait_until
from service_kit import polarity_net, uniform_events
from spikecast.runtime.limits import LiveLimits
from spikecast.runtime.mqtt.topics import cmd_topic, events_topic
from spikecast.runtime.packets import encode_packet
from spikecast.runtime.payload import validate_decision_payload
from test_service import DEVICE, live_config, running, step_packets

if TYPE_CHECKING:
    from conftest import MosquittoBroker
    from spikecast.runtime.service import Service


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return polarity_net(lam=3.0).save(tmp_path / "polarity.scn")


def empty(t0_us: int) -> bytes:
    return encode_packet(uniform_events(1, 1)[:0], 34, 34, t0_us=t0_us)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decided(svc: Service, stream: str) -> list[Any]:
    return [d for d in svc.decisions if d.stream == stream]


async def test_a_far_future_packet_restarts_its_stream_and_the_others_keep_deciding(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.9)
    far = 2**52  # in range (t0_us < 2**53) but 142 years ahead: a fresh segment
    peak = rss_mb()
    async with running(cfg, mosquitto) as svc:
        m = svc.state.metrics
        normal = step_packets(uniform_events(5, 20, t0_us=0), 0, 5, watermark=False)
        await send(host, port, events_topic(DEVICE, "jump"), normal)
        began = time.monotonic()
        # Out of range: dropped and counted; the service does not notice otherwise.
        await send(host, port, events_topic(DEVICE, "jump"), [empty(2**62), empty(-1)])
        await wait_until(lambda: m.dropped.get("packets_bad_time") == 2, 5, "2 bad times")
        # Far ahead, in range: the pending segment decides, a fresh one starts there.
        ahead = uniform_events(40, 20, t0_us=far)
        await send(host, port, events_topic(DEVICE, "jump"), step_packets(ahead, far, 40))
        steady = uniform_events(40, 20, polarity=0, seed=3)
        await send(host, port, events_topic(DEVICE, "steady"), step_packets(steady, 0, 40))
        await wait_until(lambda: len(decided(svc, "steady")) >= 3, 10, "steady decisions")
        await wait_until(lambda: any(d.sensor_t0_us >= far for d in decided(svc, "jump")), 10,
                         "decisions after the jump")
        assert time.monotonic() - began < 5
        assert m.stream_restarts == 1
        # ...and back to the old time: another fresh segment, nothing late.
        back = uniform_events(40, 20, t0_us=10_000)
        await send(host, port, events_topic(DEVICE, "jump"), step_packets(back, 10_000, 40))
        await wait_until(lambda: m.stream_restarts == 2, 10, "a second restart")
        await wait_until(lambda: decided(svc, "jump")[-1].sensor_t0_us < far, 10, "back")
        assert "events_late" not in m.dropped
    jump = decided(svc, "jump")
    assert [d.seq for d in jump] == list(range(len(jump)))  # seq goes on across segments
    for d in jump:
        validate_decision_payload(d.to_dict())
    assert rss_mb() - peak < 100


async def test_packets_over_a_limit_are_dropped_by_cause(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    limits = LiveLimits(max_packet_steps=1_000, max_packet_events=3_000, max_streams=4,
                        idle_timeout_s=3.0)
    cfg = live_config(model, mosquitto, tau=0.9, limits=limits)
    async with running(cfg, mosquitto) as svc:  # the probe is stream 1 of 4
        m = svc.state.metrics
        # 2,600 events over 390k steps: refused whole, at once; so is a packet of 3,001.
        long = uniform_events(2_600, 1, dt_us=150_000, seed=4)
        began = time.monotonic()
        await send(host, port, events_topic(DEVICE, "long"), [
            encode_packet(long, 34, 34), encode_packet(uniform_events(1, 3_001), 34, 34)])
        await wait_until(lambda: m.dropped.get("packets_too_many_events") == 1, 5, "too many")
        assert m.dropped["packets_too_long"] == 1 and time.monotonic() - began < 2
        assert "long" not in svc._active
        # 3 streams more are admitted, the next 3 are not.
        await send(host, port, events_topic(DEVICE, "probe"), [empty(1_000)])
        for k in range(6):
            await send(host, port, events_topic(DEVICE, f"s{k}"), [empty(1_000)])
        await wait_until(lambda: m.dropped.get("packets_over_streams") == 3, 5, "over streams")
        assert sorted(svc._active) == ["probe", "s0", "s1", "s2"]
        # Idle streams are closed and freed; then new streams are welcome again.
        await wait_until(lambda: not svc._active and not svc.deciders, 10, "idle streams closed")
        assert m.streams_closed == 4 and not svc._seen
        ev = uniform_events(30, 20, seed=5)
        await send(host, port, events_topic(DEVICE, "fresh"), step_packets(ev, 0, 30))
        await wait_until(lambda: len(decided(svc, "fresh")) >= 2, 10, "decisions of a new stream")
    line, status = svc.report()
    assert status == 3
    assert "1 packet spanning too many steps" in line and "3 packets of streams over the limit" in line


async def test_many_stream_names_stay_bounded(mosquitto: MosquittoBroker, model: Path) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.9, limits=LiveLimits(max_streams=50,
                                                                   decision_history=20))
    peak = rss_mb()
    async with running(cfg, mosquitto) as svc:
        m = svc.state.metrics
        one = step_packets(uniform_events(30, 20, seed=6), 0, 30)
        for k in range(100):
            await send(host, port, events_topic(DEVICE, f"n{k}"), one)
        await wait_until(lambda: m.dropped.get("packets_over_streams", 0) >= 51 * len(one), 20,
                         "streams beyond 50 dropped")
        await wait_until(lambda: m.decisions >= 49, 10, "decisions on 49 streams")
        assert len(svc._active) == 50 and len(svc.deciders) <= 50
        assert len(svc.decisions) == 20  # the newest only
    assert rss_mb() - peak < 100


async def test_hostile_commands_are_counted_and_the_loop_goes_on(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.8)
    hostile = {
        "bad_value": [b'{"t_max": Infinity}', b'{"t_max": 1e400}', b'{"t_min": 1' + b"0" * 400 + b"}",
                      b'{"tau": NaN}', b'{"t_max": [200]}', b'{"t_max": true}'],
        "out_of_range": [b'{"t_max": 3000000000}', b'{"t_max": 10001}'],
        "too_large": [b"[" * 100_000 + b"]" * 100_000],
        "too_deep": [b"[" * 1500 + b"]" * 1500],  # under 4096 bytes, deeper than json goes
        "not_json": [b"\xff\xfe", b"{"],
        "not_object": [b"3"],
    }
    async with running(cfg, mosquitto) as svc:
        for body in hostile.values():
            await send(host, port, cmd_topic(DEVICE, "set"), body)
        n = sum(len(v) for v in hostile.values())
        await wait_until(lambda: svc.state.bad_commands == n, 10, f"{n} refused commands")
        assert svc.state.command_errors == {k: len(v) for k, v in hostile.items()}
        assert svc.point() == cfg.point
        await send(host, port, cmd_topic(DEVICE, "set"), [b'{"t_max": 10000, "tau": 0.6}'])
        await wait_until(lambda: svc.point().tau == 0.6, 5, "a later valid command applied")
        assert svc.point().t_max == 10_000
        # Packets are still decided on.
        ev = uniform_events(30, 20, seed=7)
        await send(host, port, events_topic(DEVICE, "s0"), step_packets(ev, 0, 30))
        await wait_until(lambda: len(decided(svc, "s0")) >= 1, 10, "decisions")


async def test_an_idle_stream_makes_its_pending_decision(
    mosquitto: MosquittoBroker, model: Path
) -> None:
    host, port = mosquitto.host, mosquitto.port
    cfg = live_config(model, mosquitto, tau=0.999, t_max=500,
                      limits=LiveLimits(idle_timeout_s=0.5))
    async with running(cfg, mosquitto) as svc:
        ev = uniform_events(20, 1, seed=8)  # 20 steps of one event: far from confident
        await send(host, port, events_topic(DEVICE, "quiet"), step_packets(ev, 0, 20))
        await wait_until(lambda: len(decided(svc, "quiet")) == 1, 5, "the pending decision")
        d = decided(svc, "quiet")[0]
        assert d.exit == "end_of_stream" and d.steps == 20
        await wait_until(lambda: "quiet" not in svc.deciders, 5, "freed")


def test_limits_are_checked() -> None:
    for bad in ({"max_streams": 0}, {"idle_timeout_s": 0.0}, {"max_t_max": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LiveLimits(**bad)  # type: ignore[arg-type]


def test_a_limits_section_in_toml(tmp_path: Path) -> None:
    from spikecast.ext.core.errors import ParameterError
    from spikecast.runtime.config import load_toml

    path = tmp_path / "c.toml"
    path.write_text("[limits]\nmax_streams = 8\nidle_timeout_s = 5.0\n")
    assert load_toml(path)["limits"] == LiveLimits(max_streams=8, idle_timeout_s=5.0)
    path.write_text("[limits]\nmax_stream = 8\n")
    with pytest.raises(ParameterError, match="max_stream"):
        load_toml(path)
