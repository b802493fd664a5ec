"""StdoutPublisher: the no-broker default, one JSON line per decision."""

from __future__ import annotations

import io
import json

import pytest
from mqtt_testkit import make_decision
from spikecast.ext.core.errors import ParameterError, PublishError
from spikecast.runtime.mqtt import (
    MqttPublisher,
    MqttSettings,
    Publisher,
    StdoutPublisher,
    publish_decision,
)
from spikecast.runtime.mqtt.topics import decision_topic, metrics_topic
from spikecast.runtime.payload import validate_decision_payload


async def test_one_line_per_decision() -> None:
    out = io.StringIO()
    async with StdoutPublisher(out) as pub:
        await publish_decision(pub, make_decision(0))
        await pub.publish(decision_topic("cam0", "s0"), make_decision(1).to_json())
        await pub.publish(decision_topic("cam0", "s0"), make_decision(2).to_json().encode())
        await pub.publish(metrics_topic("cam0"), {"decisions": 3})  # not a decision: skipped
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for seq, line in enumerate(lines):
        payload = json.loads(line)
        validate_decision_payload(payload)
        assert payload["seq"] == seq
    stats = pub.stats()
    assert (stats.enqueued, stats.sent, stats.dropped, stats.pending) == (3, 3, 0, 0)


async def test_all_topics_wraps_non_decisions() -> None:
    out = io.StringIO()
    async with StdoutPublisher(out, all_topics=True) as pub:
        await pub.publish(metrics_topic("cam0"), {"decisions": 3})
        await pub.publish("spikecast/cam0/status", "online")
        await pub.publish("spikecast/cam0/raw", b"\xff\x00")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"topic": "spikecast/cam0/metrics", "payload": {"decisions": 3}}
    assert lines[1] == {"topic": "spikecast/cam0/status", "payload": "online"}
    assert lines[2] == {"topic": "spikecast/cam0/raw", "payload_b64": "/wA="}


async def test_defaults_to_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    async with StdoutPublisher() as pub:
        await publish_decision(pub, make_decision(4))
    assert json.loads(capsys.readouterr().out)["seq"] == 4


async def test_errors() -> None:
    out = io.StringIO()
    pub = StdoutPublisher(out)
    with pytest.raises(PublishError):
        await pub.publish(decision_topic("cam0", "s0"), {})
    async with pub:
        with pytest.raises(ParameterError):
            await pub.publish(decision_topic("cam0", "s0"), b"not json")
        with pytest.raises(ParameterError):
            await pub.publish("a/#", b"{}")
    closed = io.StringIO()
    closed.close()
    async with StdoutPublisher(closed) as broken:
        with pytest.raises((PublishError, ValueError)):
            await publish_decision(broken, make_decision(0))


def test_both_publishers_satisfy_the_protocol() -> None:
    # The real check is static: mypy rejects these calls if either class drifts.
    def accepts(publisher: Publisher) -> str:
        return type(publisher).__name__

    assert accepts(StdoutPublisher(io.StringIO())) == "StdoutPublisher"
    assert accepts(MqttPublisher(MqttSettings(device="cam0"))) == "MqttPublisher"
