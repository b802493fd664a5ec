"""Home Assistant MQTT discovery (``spikecast run --ha-discovery``).

On the first decision of each stream, three retained sensor configs go to
``<prefix>/sensor/<node_id>/<object_id>/config`` (prefix ``homeassistant`` by
default; ``node_id`` is the device, ``object_id`` ``<stream>_label``,
``<stream>_confidence`` and ``<stream>_latency``), so Home Assistant creates a
*spikecast <device>* device with those sensors:

- ``label``: the decided class, an ``enum`` sensor whose options are the network's
  classes, with seq, class index, steps, exit and confidence as attributes;
- ``confidence``: in %, a measurement;
- ``latency``: ``latency_ms`` in ms, a ``duration`` measurement.

Each reads the stream's decision topic (``value_json``) and is available while
``spikecast/<device>/status`` says ``online`` (the retained status and the Last
Will). On a clean exit each config is removed (an empty retained payload), so the
sensors go with the service; after a crash they stay, shown unavailable.

Topic ids may hold only ``[a-zA-Z0-9_-]``: other characters in a device or stream
name become ``_`` and a short hash of the name is appended (:func:`ha_id`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

from spikecast.ext.core.errors import ParameterError, SpikecastError
from spikecast.runtime.mqtt.topics import decision_topic, status_topic, validate_publish_topic

if TYPE_CHECKING:
    from spikecast.runtime.mqtt.base import Publisher
    from spikecast.runtime.payload import Decision

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "homeassistant"
#: The sensors made for every stream, in the order they are published.
SENSORS = ("label", "confidence", "latency")
SUPPORT_URL = "https://github.com/spikecast/spikecast"
_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]")
# The decision fields the label sensor carries as attributes.
_ATTRIBUTES = ("seq", "class_index", "steps", "exit", "confidence")


def ha_id(name: str) -> str:
    """``name`` as a discovery topic id (``[a-zA-Z0-9_-]+``).

    Other characters become ``_``; when any were replaced, the first 8 hex digits
    of the name's SHA-256 are appended, so ``a.b`` and ``a_b`` never share an id.
    """
    clean = _NOT_ID.sub("_", name)
    if clean != name:
        clean += "_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return clean


def check_prefix(prefix: object) -> str:
    """A discovery prefix: one or more plain topic levels (no wildcards, no ``$``)."""
    if not isinstance(prefix, str) or not prefix:
        raise ParameterError(f"the Home Assistant discovery prefix must be a topic, not {prefix!r}")
    try:
        validate_publish_topic(prefix)
    except ParameterError as exc:
        raise ParameterError(f"the Home Assistant discovery prefix: {exc}") from None
    if "" in prefix.split("/"):
        raise ParameterError(f"the Home Assistant discovery prefix {prefix!r} has an empty level")
    return prefix


def config_topic(prefix: str, device: str, stream: str, sensor: str) -> str:
    """``<prefix>/sensor/<device id>/<stream id>_<sensor>/config``."""
    return f"{prefix}/sensor/{ha_id(device)}/{ha_id(stream)}_{sensor}/config"


def _version() -> str:
    try:
        return metadata.version("spikecast")
    except metadata.PackageNotFoundError:  # a source tree without install
        return "unknown"


def _sensor_fields(sensor: str, state_topic: str, classes: Sequence[str]) -> dict[str, Any]:
    """What differs between the three sensors."""
    if sensor == "label":
        attrs = ", ".join(f"'{k}': value_json.{k}" for k in _ATTRIBUTES)
        return {
            "value_template": "{{ value_json.label }}",
            "device_class": "enum",
            "options": list(classes),
            "json_attributes_topic": state_topic,
            "json_attributes_template": "{{ {" + attrs + "} | tojson }}",
            "icon": "mdi:label-outline",
        }
    if sensor == "confidence":
        return {
            "value_template": "{{ (value_json.confidence * 100) | round(2) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "suggested_display_precision": 1,
            "icon": "mdi:gauge",
        }
    if sensor == "latency":
        return {
            "value_template": "{{ value_json.latency_ms }}",
            "unit_of_measurement": "ms",
            "device_class": "duration",
            "state_class": "measurement",
            "suggested_display_precision": 2,
        }
    raise ParameterError(f"unknown sensor {sensor!r}; expected one of {SENSORS}")


def sensor_config(
    device: str, stream: str, sensor: str, *, classes: Sequence[str], model: str
) -> dict[str, Any]:
    """The discovery payload of one sensor of ``stream`` (see the module doc)."""
    state_topic = decision_topic(device, stream)
    version = _version()
    return {
        "name": f"{stream} {sensor}",
        "unique_id": f"spikecast_{ha_id(device)}_{ha_id(stream)}_{sensor}",
        **_sensor_fields(sensor, state_topic, classes),
        "state_topic": state_topic,
        "qos": 1,
        "availability_topic": status_topic(device),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [f"spikecast_{ha_id(device)}"],
            "name": f"spikecast {device}",
            "manufacturer": "spikecast",
            "model": model,
            "sw_version": version,
        },
        "origin": {"name": "spikecast", "sw_version": version, "support_url": SUPPORT_URL},
    }


def stream_configs(
    prefix: str, device: str, stream: str, *, classes: Sequence[str], model: str
) -> dict[str, dict[str, Any]]:
    """Discovery topic -> payload for the three sensors of ``stream``."""
    return {
        config_topic(prefix, device, stream, s): sensor_config(
            device, stream, s, classes=classes, model=model
        )
        for s in SENSORS
    }


class HomeAssistantDiscovery:
    """A service hook: configs on each stream's first decision, removed on stop."""

    def __init__(
        self,
        publisher: Publisher,
        device: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        classes: Sequence[str],
        model: str,
    ) -> None:
        self.publisher = publisher
        self.device = device
        self.prefix = check_prefix(prefix)
        self.classes = tuple(classes)
        self.model = model
        self.topics: list[str] = []  # every config published, in order
        self._streams: set[str] = set()

    async def start(self) -> None:
        return None

    async def decision(self, decision: Decision) -> None:
        """Publish the stream's configs (retained) before its first decision."""
        if decision.stream in self._streams:
            return
        self._streams.add(decision.stream)
        configs = stream_configs(self.prefix, self.device, decision.stream,
                                 classes=self.classes, model=self.model)
        for topic, payload in configs.items():
            await self.publisher.publish(topic, payload, qos=1, retain=True)
            self.topics.append(topic)

    async def stop(self) -> None:
        """Remove every config: an empty retained payload deletes it in Home Assistant
        and clears it on the broker."""
        for topic in self.topics:
            try:
                await self.publisher.publish(topic, b"", qos=1, retain=True)
            except SpikecastError as exc:
                log.warning("could not remove the Home Assistant config %s: %s", topic, exc)
                return
        self.topics.clear()
        self._streams.clear()


__all__ = [
    "DEFAULT_PREFIX",
    "SENSORS",
    "HomeAssistantDiscovery",
    "check_prefix",
    "config_topic",
    "ha_id",
    "sensor_config",
    "stream_configs",
]
