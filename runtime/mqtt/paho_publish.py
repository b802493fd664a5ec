"""Received QoS 0 PUBLISH packets handed straight to the subscriptions.

For every PUBLISH it receives, paho-mqtt builds an ``MQTTMessage`` and its
``Properties``, formats a DEBUG log line (properties included, whether or not
anything logs it) and matches its callback filters; aiomqtt then wraps the message
in its own ``Message`` and queues it for an iterator task, and the publisher copies
it into an :class:`~spikecast.runtime.mqtt.base.InboundMessage`. With 16 live
streams of 10 ms packets that was about 45% of the service's event-loop time on the
bench host (``bench/latency.py``), more than decoding and deciding on the packets.

:func:`install` gives one paho client a PUBLISH handler that parses the packets the
service gets by the thousand itself: QoS 0, a UTF-8 topic, and no property but the
subscription identifiers that the service asks the broker for. It hands them to
``deliver(topic, payload, retain, subscription_ids)`` at once, on the thread where
paho reads (the event loop's). Everything else goes to paho's own handler, as before:

- QoS 1 and 2 (acknowledgements and in-flight state are paho's);
- a topic alias (empty topic), any other property, a topic that is not valid UTF-8,
  a malformed packet (paho reports it and drops the connection as it would);
- a message that ``deliver`` declines (returns False: the publisher's subscription
  is half full, so its backlog should reach the reader in slices), and every packet
  that arrives while ``busy()`` says messages of paho's path still wait to be routed,
  so that messages leave in the order they arrived.

It changes nothing for a paho release whose client does not have the handler it
replaces (then paho's own handling stays in use).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

log = logging.getLogger(__name__)

#: ``deliver(topic, payload, retain, subscription_ids)``: True when it took the message.
Deliver = Callable[[str, bytes, bool, "tuple[int, ...]"], bool]

_SUBSCRIPTION_IDENTIFIER = 0x0B  # MQTT 5 property identifier
_QOS_BITS = 0x06
_RETAIN_BIT = 0x01


def _varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """An MQTT variable byte integer at ``pos``: (value, next position), or None when
    it is cut short or longer than the four bytes MQTT allows."""
    value, shift = 0, 0
    for k in range(4):
        if pos + k >= len(data):
            return None
        byte = data[pos + k]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + k + 1
        shift += 7
    return None


def _subscription_ids(packet: bytes | bytearray, pos: int) -> tuple[tuple[int, ...], int] | None:
    """The MQTT 5 properties at ``pos`` when they are subscription identifiers only:
    (the identifiers, where the payload starts), else None."""
    head = _varint(packet, pos)
    if head is None:
        return None
    length, pos = head
    stop = pos + length
    if stop > len(packet):
        return None
    found = []
    while pos < stop:
        if packet[pos] != _SUBSCRIPTION_IDENTIFIER:
            return None
        item = _varint(packet, pos + 1)
        if item is None or item[1] > stop or item[0] == 0:  # 0 is a protocol error
            return None
        found.append(item[0])
        pos = item[1]
    return tuple(found), pos


def parse_qos0_publish(
    packet: bytes | bytearray, mqtt5: bool
) -> tuple[str, bytes, tuple[int, ...]] | None:
    """The topic, payload and subscription identifiers of a QoS 0 PUBLISH packet
    (``packet``: everything after the fixed header), or None when it is anything
    but the plain case (see the module docstring): paho's handler takes those."""
    if len(packet) < 2:
        return None
    end = 2 + ((packet[0] << 8) | packet[1])
    if end == 2 or end > len(packet):  # a topic alias, or cut short
        return None
    try:
        topic = packet[2:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not mqtt5:
        return topic, bytes(packet[end:]), ()
    props = _subscription_ids(packet, end)
    if props is None:
        return None
    idents, start = props
    return topic, bytes(packet[start:]), idents


def install(client: Any, deliver: Deliver, busy: Callable[[], bool]) -> bool:
    """Give one paho ``Client`` the QoS 0 PUBLISH fast path; False (nothing changed)
    when the client does not look as expected. ``busy()`` is true while messages
    that took paho's path wait to be routed (the fast path then waits its turn)."""
    handle = getattr(client, "_handle_publish", None)
    if not callable(handle) or not isinstance(getattr(client, "_in_packet", None), dict):
        log.debug("paho client without _handle_publish: its own PUBLISH handling stays in use")
        return False
    mqtt5 = getattr(client, "_protocol", None) == MQTTProtocolVersion.MQTTv5
    success = MQTTErrorCode.MQTT_ERR_SUCCESS

    def handle_publish() -> MQTTErrorCode:
        in_packet = client._in_packet
        command = in_packet["command"]
        if command & _QOS_BITS or busy():
            return handle()  # type: ignore[no-any-return]
        parsed = parse_qos0_publish(in_packet["packet"], mqtt5)
        if parsed is None:
            return handle()  # type: ignore[no-any-return]
        topic, payload, idents = parsed
        if deliver(topic, payload, bool(command & _RETAIN_BIT), idents):
            return success
        return handle()  # type: ignore[no-any-return]

    client._handle_publish = handle_publish
    return True
