"""spikecast.runtime.mqtt: topics, settings, decision payload, metrics and publishers.

Importing this package imports aiomqtt (through :mod:`.publisher`);
``spikecast.runtime`` itself does not import this package.
"""

from __future__ import annotations

from spikecast.runtime.mqtt.base import (
    InboundMessage,
    PayloadLike,
    Publisher,
    PublisherStats,
    encode_payload,
    publish_decision,
)
from spikecast.runtime.mqtt.metrics import LatencyTracker, RuntimeMetrics
from spikecast.runtime.mqtt.outbox import Outbox, OutboxItem
from spikecast.runtime.mqtt.payload import (
    Decision,
    TopK,
    decision_payload_errors,
    validate_decision_payload,
)
from spikecast.runtime.mqtt.publisher import MqttPublisher, Subscription, backoff_delay_s
from spikecast.runtime.mqtt.settings import MqttSettings
from spikecast.runtime.mqtt.stdout import StdoutPublisher

__all__ = [
    "Decision",
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
    "Subscription",
    "TopK",
    "backoff_delay_s",
    "decision_payload_errors",
    "encode_payload",
    "publish_decision",
    "validate_decision_payload",
]
