"""The QoS 0 PUBLISH fast path parses exactly what paho's decoder parses, takes only the
plain case, and leaves every other packet (and every packet while paho's path has
messages waiting) to paho, so messages keep their order."""

from __future__ import annotations

import random
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_testkit import varint
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from spikecast.runtime.mqtt import paho_publish, paho_read
from spikecast.runtime.mqtt.paho_publish import parse_qos0_publish


def _utf8(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def _body(topic: bytes, props: bytes | None, payload: bytes, mid: int | None = None) -> bytes:
    """A PUBLISH after its fixed header: topic, [packet id], [properties], payload."""
    out = len(topic).to_bytes(2, "big") + topic
    if mid is not None:
        out += mid.to_bytes(2, "big")
    if props is not None:
        out += varint(len(props)) + props
    return out + payload


def _packet_bytes(command: int, body: bytes) -> bytes:
    return bytes([command]) + varint(len(body)) + body


def _sub_ids(*ids: int) -> bytes:
    return b"".join(b"\x0b" + varint(i) for i in ids)


# Properties other than subscription identifiers: each sends the packet to paho.
_OTHER_PROPS = [
    b"\x01\x01",  # payload format indicator
    b"\x02" + (60).to_bytes(4, "big"),  # message expiry interval
    b"\x03" + _utf8("application/octet-stream"),  # content type
    b"\x23" + (7).to_bytes(2, "big"),  # topic alias
    b"\x26" + _utf8("spikecast-worker") + _utf8("w1"),  # user property
]


def _random_case(rng: random.Random) -> tuple[bytes, bool]:
    """A random PUBLISH body (QoS 0) and whether the fast path should take it."""
    topic = rng.choice(["spikecast/cam0/s1/events", "a", "é/ü/漢字", "x" * 300])
    payload = rng.randbytes(rng.choice([0, 1, 8, 127, 128, 5000]))
    ids = [rng.choice([1, 127, 128, 16_383, 16_384, 268_435_455]) for _ in range(rng.choice([0, 1, 1, 2]))]
    props = _sub_ids(*ids)
    plain = True
    if rng.random() < 0.3:
        extra = rng.choice(_OTHER_PROPS)
        props = extra + props if rng.random() < 0.5 else props + extra
        plain = False
    return _body(topic.encode(), props, payload), plain


@pytest.mark.parametrize("seed", range(8))
def test_parse_agrees_with_paho_and_takes_only_the_plain_case(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        body, plain = _random_case(rng)
        ref = _packet.decode_publish(0x30, bytearray(body), MQTTProtocolVersion.MQTTv5)
        got = parse_qos0_publish(bytearray(body), mqtt5=True)
        if not plain:
            assert got is None
            continue
        assert got is not None
        topic, payload, idents = got
        assert topic == ref.topic.decode()
        assert payload == bytes(ref.payload) and type(payload) is bytes
        assert list(idents) == list(getattr(ref.properties, "SubscriptionIdentifier", []) or [])


def test_parse_mqtt311_has_no_properties() -> None:
    body = _body(b"t/1", None, b"\x00\x01\x02")
    ref = _packet.decode_publish(0x30, bytearray(body), MQTTProtocolVersion.MQTTv311)
    assert parse_qos0_publish(body, mqtt5=False) == ("t/1", bytes(ref.payload), ())


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"\x00", "cut in the topic length"),
        (b"\x00\x05abc", "cut in the topic"),
        (_body(b"", _sub_ids(1), b"x"), "a topic alias (empty topic)"),
        (_body(b"\xff\xfe", _sub_ids(1), b"x"), "a topic that is not UTF-8"),
        (_body(b"t", None, b""), "no property length"),
        (b"\x00\x01t\x05\x0b\x01", "properties longer than the packet"),
        (b"\x00\x01t\x02\x0b\x80", "an identifier cut short"),
        (b"\x00\x01t\x06\x0b\x80\x80\x80\x80\x01", "an identifier longer than 4 bytes"),
        (b"\x00\x01t\x05\x80\x80\x80\x80\x01", "a property length longer than 4 bytes"),
        (_body(b"t", _sub_ids(0), b"x"), "identifier 0 (a protocol error)"),
    ],
)
def test_parse_leaves_anything_unusual_to_paho(body: bytes, why: str) -> None:
    assert parse_qos0_publish(body, mqtt5=True) is None, why


class _FakeClient:
    """Just what install() touches: the packet being handled and paho's handler."""

    def __init__(self) -> None:
        self._protocol = MQTTProtocolVersion.MQTTv5
        self._in_packet: dict[str, Any] = {"command": 0, "packet": bytearray()}
        self.paho_handled: list[bytes] = []

    def _handle_publish(self) -> MQTTErrorCode:
        self.paho_handled.append(bytes(self._in_packet["packet"]))
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def _handle(client: _FakeClient, command: int, body: bytes) -> MQTTErrorCode:
    client._in_packet = {"command": command, "packet": bytearray(body)}
    return client._handle_publish()


def test_install_routes_plain_qos0_to_deliver_and_the_rest_to_paho() -> None:
    client = _FakeClient()
    delivered: list[tuple[str, bytes, bool, tuple[int, ...]]] = []
    waiting = False
    accept = True

    def deliver(topic: str, payload: bytes, retain: bool, idents: tuple[int, ...]) -> bool:
        if accept:
            delivered.append((topic, payload, retain, idents))
        return accept

    assert paho_publish.install(client, deliver, lambda: waiting)
    plain = _body(b"a/b", _sub_ids(3), b"pay")
    assert _handle(client, 0x30, plain) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert _handle(client, 0x31, plain) == MQTTErrorCode.MQTT_ERR_SUCCESS  # retained
    assert delivered == [("a/b", b"pay", False, (3,)), ("a/b", b"pay", True, (3,))]
    assert client.paho_handled == []
    qos1 = _body(b"a/b", _sub_ids(3), b"pay", mid=9)
    _handle(client, 0x32, qos1)  # QoS 1: paho acknowledges it
    _handle(client, 0x34, _body(b"a/b", _sub_ids(3), b"pay", mid=9))  # QoS 2
    _handle(client, 0x30, _body(b"a/b", _OTHER_PROPS[-1] + _sub_ids(3), b"p"))  # a user property
    waiting = True
    _handle(client, 0x30, plain)  # paho's path has messages waiting: this one queues behind them
    waiting, accept = False, False
    _handle(client, 0x30, plain)  # declined by deliver (a half-full subscription)
    assert len(delivered) == 2
    assert len(client.paho_handled) == 5


def test_install_leaves_an_unexpected_client_alone() -> None:
    class Bare:
        pass

    assert not paho_publish.install(Bare(), lambda *a: True, lambda: False)


class _Socket:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, bufsize: int) -> bytes:
        if not self.data:
            raise BlockingIOError
        out, self.data = self.data[:bufsize], self.data[bufsize:]
        return out

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.data = b""


def test_on_a_real_paho_client_the_order_of_both_paths_is_the_arrival_order() -> None:
    """Packets of both kinds through paho's reader: with the publisher's rule (paho's
    messages are routed before the fast path goes on), one list in arrival order."""
    rng = random.Random(5)
    stream, want = [], []
    for i in range(300):
        body, plain = _random_case(rng)
        payload = i.to_bytes(4, "little")
        body = _body(b"s/%d" % i, _sub_ids(1) if plain else _OTHER_PROPS[4] + _sub_ids(1), payload)
        stream.append(_packet_bytes(0x30, body))
        want.append(i)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    routed: list[int] = []
    pending: list[int] = []  # paho's path: aiomqtt's queue, until the reader routes it
    c.on_message = lambda _c, _u, m: pending.append(int.from_bytes(m.payload, "little"))

    def deliver(topic: str, payload: bytes, retain: bool, idents: tuple[int, ...]) -> bool:
        routed.append(int.from_bytes(payload, "little"))
        return True

    c._sock = _Socket(b"".join(stream))  # type: ignore[assignment]
    assert paho_read.install(c)
    assert paho_publish.install(c, deliver, lambda: bool(pending))
    while c._sock.data:  # type: ignore[union-attr]
        assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        routed.extend(pending)  # the reader task's turn
        pending.clear()
    assert routed == want


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_parse_never_raises_and_agrees_with_paho_on_any_bytes(body: bytes, mqtt5: bool) -> None:
    got = parse_qos0_publish(body, mqtt5=mqtt5)
    if got is None:
        return
    version = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
    ref = _packet.decode_publish(0x30, bytearray(body), version)  # paho accepts what we took
    topic, payload, idents = got
    assert (topic.encode(), payload) == (bytes(ref.topic), bytes(ref.payload))
    assert list(idents) == list(getattr(ref.properties, "SubscriptionIdentifier", []) or [])
