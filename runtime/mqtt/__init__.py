"""spikecast.runtime.mqtt: topics, settings, metrics, the outbox and the publishers.

Importing this package does not import aiomqtt: :class:`MqttPublisher` (and the
rest of :mod:`.publisher`) load on first use, so stdout mode runs without the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spikecast.runtime.mqtt.base import (
    InboundMessage,
    PayloadLike,
    Publisher,
    PublisherStats,
    Subscriber,
    encode_payload,
    publish_decision,
)
from spikecast.runtime.mqtt.metrics import LatencyTracker, RuntimeMetrics
from spikecast.runtime.mqtt.outbox import Outbox, OutboxItem
from spikecast.runtime.mqtt.settings import MqttSettings
from spikecast.runtime.mqtt.stdout import StdoutPublisher

if TYPE_CHECKING:
    from spikecast.runtime.mqtt.publisher import MqttPublisher, Subscription, backoff_delay_s

_LAZY = ("MqttPublisher", "Subscription", "backoff_delay_s")

__all__ = [
    "InboundMessage",
    "LatencyTracker",
    "MqttPublisher",
    "MqttSettings",
    "Outbox",
    "OutboxItem",
    "PayloadLike",
    "Publisher",
    "PublisherStats",
    "RuntimeMetrics",
    "StdoutPublisher",
    "Subscriber",
    "Subscription",
    "backoff_delay_s",
    "encode_payload",
    "publish_decision",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from spikecast.runtime.mqtt import publisher

        return getattr(publisher, name)
    raise AttributeError(f"module 'spikecast.runtime.mqtt' has no attribute {name!r}")
