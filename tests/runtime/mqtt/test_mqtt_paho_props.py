"""FastProperties decodes every MQTT 5 property exactly as paho's own class does."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from spikecast.runtime.mqtt import paho_props
from spikecast.runtime.mqtt.paho_props import FastProperties

_SAMPLE = {  # a legal value per paho type index
    0: 1, 1: 300, 2: 70000, 3: 200, 4: b"\x00\x01bin", 5: "text/é", 6: ("key", "välue"),
}
_TABLES = ("packetType", "types", "names", "properties")


def _state(p: Properties) -> dict[str, Any]:
    return {k: v for k, v in vars(p).items() if k not in _TABLES}


def _cases() -> list[tuple[int, str, Any]]:
    """(packet type, compressed name, value) for every property a packet type allows."""
    ref = Properties(PacketTypes.PUBLISH)
    out = []
    for name, ident in ref.names.items():
        kind, packets = ref.properties[ident]
        for pt in packets:
            out.append((pt, name.replace(" ", ""), _SAMPLE[kind]))
    return out


def _decode(cls: type[Properties], pt: int, buf: bytes) -> Any:
    try:
        p = cls(pt)
        used = p.unpack(buf)[1]
        return ("ok", _state(p), used, str(p), p.json(), p.isEmpty())
    except Exception as exc:
        return ("error", type(exc))


@pytest.mark.parametrize(("pt", "name", "value"), _cases())
def test_every_property_decodes_as_paho_does(pt: int, name: str, value: Any) -> None:
    src = Properties(pt)
    setattr(src, name, value)
    buf = src.pack()
    assert _decode(FastProperties, pt, buf) == _decode(Properties, pt, buf)
    assert _decode(FastProperties, pt, buf)[0] == "ok"


def test_repeated_and_mixed_properties() -> None:
    src = Properties(PacketTypes.PUBLISH)
    src.SubscriptionIdentifier = 5
    src.SubscriptionIdentifier = 268435455
    src.UserProperty = ("a", "1")
    src.UserProperty = [("b", "2"), ("a", "3")]
    src.ContentType = "application/octet-stream"
    src.MessageExpiryInterval = 30
    buf = src.pack()
    fast = _decode(FastProperties, PacketTypes.PUBLISH, buf)
    assert fast == _decode(Properties, PacketTypes.PUBLISH, buf)
    assert fast[1]["SubscriptionIdentifier"] == [5, 268435455]
    assert fast[1]["UserProperty"] == [("a", "1"), ("b", "2"), ("a", "3")]


def _raw(*props: bytes) -> bytes:
    body = b"".join(props)
    return bytes([len(body)]) + body


@pytest.mark.parametrize(
    "buf",
    [
        _raw(bytes([3, 0, 1, ord("a")]), bytes([3, 0, 1, ord("b")])),  # content type twice
        _raw(bytes([11, 0])),  # subscription identifier 0: out of range
        _raw(bytes([17, 0, 0, 0, 1])),  # session expiry: not a PUBLISH property
        _raw(bytes([99, 1])),  # no such property
        _raw(bytes([1, 2])),  # payload format indicator 2
        bytes([9, 3, 0, 5, ord("a")]),  # claims more than there is
        _raw(bytes([38, 0, 1, ord("k"), 0, 4, ord("v")])),  # truncated string pair
        b"",  # nothing at all
    ],
)
def test_malformed_buffers_fail_as_paho_does(buf: bytes) -> None:
    assert _decode(FastProperties, PacketTypes.PUBLISH, buf) == _decode(
        Properties, PacketTypes.PUBLISH, buf)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SubscriptionIdentifier", 0), ("TopicAlias", 70000), ("ReceiveMaximum", 0),
     ("PayloadFormatIndicator", 3), ("NoSuchThing", 1), ("SessionExpiryInterval", 5)],
)
def test_setting_a_bad_value_fails_as_paho_does(name: str, value: Any) -> None:
    def attempt(cls: type[Properties]) -> Any:
        try:
            setattr(cls(PacketTypes.PUBLISH), name, value)
        except Exception as exc:
            return type(exc)
        return None

    assert attempt(FastProperties) is attempt(Properties) is not None


def test_install_makes_paho_decode_publish_use_it() -> None:
    topic = b"spikecast/dev/s1/events"
    packet = struct.pack("!H", len(topic)) + topic + _raw(bytes([11, 7])) + b"payload"
    before = _packet.decode_publish(0x30, packet, MQTTProtocolVersion.MQTTv5)
    assert paho_props.install()
    assert paho_props.install()  # idempotent
    after = _packet.decode_publish(0x30, packet, MQTTProtocolVersion.MQTTv5)
    assert isinstance(after.properties, FastProperties)
    assert _state(after.properties) == _state(before.properties) == {"SubscriptionIdentifier": [7]}
    assert (after.topic, after.payload) == (before.topic, before.payload) == (topic, b"payload")
