"""Home Assistant MQTT discovery (``--ha-discovery``).

The payloads are checked against a schema written from Home Assistant's documented
MQTT sensor options (home-assistant.io/integrations/sensor.mqtt and the discovery
docs; the same rules as ``homeassistant/components/mqtt/sensor.py`` and ``schemas.py``):
``state_topic`` required; device info with at least one identifier; origin with a
name; ``options`` only with ``device_class: enum`` and neither a unit nor a state
class; a ``duration`` sensor's unit among d, h, min, s, ms, µs; no
``availability`` together with ``availability_topic``; the discovery topic
``<prefix>/<component>/[<node_id>/]<object_id>/config`` with ids of
``[a-zA-Z0-9_-]``. Then, against a real Mosquitto: the retained configs appear
before the stream's first decision and are gone after a clean stop.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # service_kit, test_service

from mqtt_testkit import make_decision, recording_subscriber, retained, send, wait_until
from service_kit import CLASSES, polarity_net, uniform_events
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.config import RunConfig
from spikecast.runtime.mqtt.homeassistant import (
    SENSORS,
    HomeAssistantDiscovery,
    check_prefix,
    config_topic,
    ha_id,
    stream_configs,
)
from spikecast.runtime.mqtt.settings import MqttSettings
from spikecast.runtime.mqtt.stdout import StdoutPublisher
from spikecast.runtime.mqtt.topics import events_topic, validate_publish_topic

if TYPE_CHECKING:
    from conftest import MosquittoBroker

# -- the documented schema of an MQTT sensor discovery payload ---------------------------

#: Options of an MQTT sensor: its own, the read-only entity ones, the common entity ones.
SENSOR_KEYS = {
    # sensor
    "device_class", "expire_after", "force_update", "last_reset_value_template", "name",
    "options", "suggested_display_precision", "state_class", "unit_of_measurement",
    # read-only MQTT entity
    "state_topic", "value_template", "qos", "encoding",
    # every MQTT entity
    "availability", "availability_mode", "availability_template", "availability_topic",
    "payload_available", "payload_not_available", "device", "origin", "enabled_by_default",
    "entity_category", "entity_picture", "icon", "json_attributes_topic",
    "json_attributes_template", "object_id", "default_entity_id", "unique_id", "platform",
}
REQUIRED = {"state_topic"}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
               "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
               "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
DURATION_UNITS = {"d", "h", "min", "s", "ms", "µs"}
STRINGS = ("name", "unique_id", "value_template", "json_attributes_template",
           "unit_of_measurement", "payload_available", "payload_not_available", "icon")
#: After ``<prefix>/``: the discovery topic pattern of Home Assistant's MQTT discovery.
TOPIC = r"(?P<component>\w+)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config"


def _sub_errors(where: str, value: object, allowed: set[str]) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{where}: expected a map"]
    errors = [f"{where}: unknown key {k!r}" for k in sorted(set(value) - allowed)]
    errors += [f"{where}.{k}: expected a string" for k, v in value.items()
               if k not in ("identifiers", "connections") and not isinstance(v, str)]
    return errors


def _device_errors(device: object) -> list[str]:
    errors = _sub_errors("device", device, DEVICE_KEYS)
    if not errors and not (device.get("identifiers") or device.get("connections")):  # type: ignore[union-attr]
        errors.append("device: needs at least one of identifiers, connections")
    ids = device.get("identifiers", []) if isinstance(device, Mapping) else []
    ids = [ids] if isinstance(ids, str) else ids
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        errors.append("device.identifiers: expected a string or a list of strings")
    return errors


def _class_errors(p: Mapping[str, Any]) -> list[str]:
    errors = []
    if "state_class" in p and p["state_class"] not in STATE_CLASSES:
        errors.append(f"state_class: {p['state_class']!r} is not one of {sorted(STATE_CLASSES)}")
    if "options" in p:
        options = p["options"]
        if not isinstance(options, list) or not options:
            errors.append("options: expected a non-empty list")
        if p.get("device_class") != "enum":
            errors.append("options: only with device_class enum")
        if "state_class" in p or "unit_of_measurement" in p:
            errors.append("options: not with state_class or unit_of_measurement")
    if p.get("device_class") == "duration" and p.get("unit_of_measurement") not in DURATION_UNITS:
        errors.append(f"duration: unit {p.get('unit_of_measurement')!r} not in {DURATION_UNITS}")
    return errors


def sensor_config_errors(topic: str, p: object, prefix: str = "homeassistant") -> list[str]:
    """Every way a discovery message breaks the documented MQTT sensor schema."""
    m = re.fullmatch(re.escape(prefix) + "/" + TOPIC, topic)
    errors = [] if m and m["component"] == "sensor" else [
        f"topic {topic!r} is not {prefix}/sensor/[<node_id>/]<object_id>/config"]
    if not isinstance(p, Mapping):
        return [*errors, "payload: expected a JSON object"]
    errors += [f"unknown key {k!r}" for k in sorted(set(p) - SENSOR_KEYS)]
    errors += [f"missing required key {k!r}" for k in sorted(REQUIRED - set(p))]
    errors += [f"{k}: expected a string" for k in STRINGS if k in p and not isinstance(p[k], str)]
    for k in ("state_topic", "availability_topic", "json_attributes_topic"):
        if k in p:
            try:
                validate_publish_topic(p[k])
            except ParameterError as exc:
                errors.append(f"{k}: {exc}")
    if "availability" in p and "availability_topic" in p:
        errors.append("availability and availability_topic are exclusive")
    if p.get("qos", 0) not in (0, 1, 2):
        errors.append("qos: expected 0, 1 or 2")
    sdp = p.get("suggested_display_precision", 0)
    if isinstance(sdp, bool) or not isinstance(sdp, int) or sdp < 0:
        errors.append("suggested_display_precision: expected an int >= 0")
    if "device" in p:
        errors += _device_errors(p["device"])
    if "origin" in p:
        errors += _sub_errors("origin", p["origin"], ORIGIN_KEYS)
        if isinstance(p["origin"], Mapping) and "name" not in p["origin"]:
            errors.append("origin: name is required")
    return errors + _class_errors(p)


def configs(device: str = "cam0", stream: str = "left", prefix: str = "homeassistant") -> dict[str, Any]:
    return stream_configs(prefix, device, stream, classes=CLASSES, model="polarity.scn")


# -- payloads -----------------------------------------------------------------------------


def test_the_three_sensor_configs_follow_the_documented_schema() -> None:
    got = configs()
    assert list(got) == [f"homeassistant/sensor/cam0/left_{s}/config" for s in SENSORS]
    for topic, payload in got.items():
        assert sensor_config_errors(topic, json.loads(json.dumps(payload))) == [], topic
    label, confidence, latency = got.values()
    for p in got.values():
        assert p["state_topic"] == "spikecast/cam0/left/decision"
        assert (p["availability_topic"], p["payload_available"], p["payload_not_available"]) == (
            "spikecast/cam0/status", "online", "offline")
        assert p["device"]["identifiers"] == ["spikecast_cam0"]
        assert p["device"]["name"] == "spikecast cam0"
    assert len({p["unique_id"] for p in got.values()}) == 3
    assert label["value_template"] == "{{ value_json.label }}"
    assert label["device_class"] == "enum" and label["options"] == list(CLASSES)
    assert label["json_attributes_topic"] == label["state_topic"]
    assert confidence["value_template"] == "{{ (value_json.confidence * 100) | round(2) }}"
    assert (confidence["unit_of_measurement"], confidence["state_class"]) == ("%", "measurement")
    assert latency["value_template"] == "{{ value_json.latency_ms }}"
    assert (latency["unit_of_measurement"], latency["device_class"]) == ("ms", "duration")


def test_the_schema_catches_what_home_assistant_refuses() -> None:
    label, confidence, _ = configs().values()
    topic = "homeassistant/sensor/cam0/left_label/config"
    assert sensor_config_errors(topic, {k: v for k, v in label.items() if k != "state_topic"}) == [
        "missing required key 'state_topic'"]
    assert sensor_config_errors(topic, {**label, "unit_of_measurement": "%"}) == [
        "options: not with state_class or unit_of_measurement"]
    assert sensor_config_errors(topic, {**confidence, "options": ["a"]}) == [
        "options: only with device_class enum", "options: not with state_class or unit_of_measurement"]
    assert sensor_config_errors(topic, {**label, "colour": 1}) == ["unknown key 'colour'"]
    assert sensor_config_errors(topic, {**label, "device": {"name": "x"}}) == [
        "device: needs at least one of identifiers, connections"]
    assert sensor_config_errors("homeassistant/sensor/cam.0/x/config", label) != []


def test_names_that_are_no_topic_ids_are_made_safe_and_distinct() -> None:
    assert ha_id("cam0") == "cam0" and ha_id("left-1_b") == "left-1_b"
    a, b = ha_id("a.b"), ha_id("a b")
    assert a != b and a.startswith("a_b_") and ha_id("a_b") == "a_b"
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", ha_id("kamera Ω/1")) is not None
    topic = config_topic("homeassistant", "hall cam", "front.door", "label")
    payload = configs("hall cam", "front.door")[topic]
    assert sensor_config_errors(topic, payload) == []
    assert payload["state_topic"] == "spikecast/hall cam/front.door/decision"


def test_the_prefix_is_a_plain_topic() -> None:
    assert check_prefix("homeassistant") == "homeassistant"
    assert check_prefix("site/ha") == "site/ha"
    for bad in ("", "ha/#", "ha/+/x", "$SYS", "/ha", "ha/", 3):
        with pytest.raises(ParameterError):
            check_prefix(bad)
    got = configs(prefix="site/ha")
    assert all(sensor_config_errors(t, p, prefix="site/ha") == [] for t, p in got.items())


def test_ha_discovery_needs_a_broker(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="--ha-discovery needs --mqtt"):
        RunConfig(model=tmp_path / "m.scn", source="x", ha_discovery=True)
    with pytest.raises(ParameterError, match="prefix"):
        RunConfig(model=tmp_path / "m.scn", source="x", ha_prefix="ha/#")


async def test_configs_once_per_stream_then_removed() -> None:
    sent: list[tuple[str, bytes, bool]] = []

    class Recording(StdoutPublisher):
        async def publish(self, topic: str, payload: Any, *, qos: int | None = None,
                          retain: bool = False) -> None:
            sent.append((topic, payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
                         retain))

    ha = HomeAssistantDiscovery(Recording(), "cam0", classes=CLASSES, model="m.scn")
    for seq, stream in enumerate(("s0", "s0", "s1", "s0")):
        await ha.decision(make_decision(seq, stream=stream))
    topics = [t for t, _, _ in sent]
    assert topics == list(configs(stream="s0")) + list(configs(stream="s1"))
    assert all(retain for _, _, retain in sent)
    sent.clear()
    await ha.stop()
    assert sent == [(t, b"", True) for t in topics]


# -- against a real broker ------------------------------------------------------------------


async def test_retained_configs_appear_before_the_first_decision_and_go_on_stop(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    from test_service import live_config, running, step_packets

    host, port = mosquitto.host, mosquitto.port
    model = polarity_net(lam=3.0).save(tmp_path / "polarity.scn")
    cfg = live_config(model, mosquitto, tau=0.9, ha_discovery=True)
    topics = list(stream_configs("homeassistant", "cam0", "s0", classes=CLASSES,
                                 model="polarity.scn"))
    async with recording_subscriber(host, port, "#") as rec:
        async with running(cfg, mosquitto) as svc:
            ev = uniform_events(30, 20)
            await send(host, port, events_topic("cam0", "s0"), step_packets(ev, 0, 30))
            await wait_until(lambda: any(d.stream == "s0" for d in svc.decisions), 15, "a decision")
            for topic in topics:
                payload = await retained(host, port, topic)
                assert payload is not None, topic
                assert sensor_config_errors(topic, json.loads(payload)) == [], topic
            # The probe stream the test kit sends first has made no decision: no sensors.
            assert not any(d.stream == "probe" for d in svc.decisions)
            probe = config_topic("homeassistant", "cam0", "probe", "label")
            assert await retained(host, port, probe) is None
            await rec.wait_for(
                lambda r: any(m.topic.value == "spikecast/cam0/s0/decision" for m in r.messages),
                10, "the decision")
        order = [m.topic.value for m in rec.messages]
        assert order.index(topics[0]) < order.index("spikecast/cam0/s0/decision")
        await rec.wait_for(lambda r: r.payloads[-1:] == [b"offline"], 10, "offline")
    # A clean stop removed every config: no retained message is left.
    for topic in topics:
        assert await retained(host, port, topic) is None, topic
    removals = [m for m in rec.messages if m.topic.value in topics and m.payload == b""]
    assert len(removals) == 3


def test_settings_for_discovery_name_the_device() -> None:
    s = MqttSettings(host="h", device="cam0")
    assert RunConfig(model=Path("m"), source="mqtt", device="cam0", mqtt=s, ha_discovery=True,
                     ha_prefix="site/ha").ha_prefix == "site/ha"
