"""What every publisher shares: the Publisher protocol, stats, payload encoding."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.topics import decision_topic

if TYPE_CHECKING:
    from spikecast.runtime.payload import Decision

PayloadLike: TypeAlias = "bytes | bytearray | str | Mapping[str, Any]"
# MQTT's remaining-length field caps a packet at 256 MiB; refuse earlier than the
# broker would, so a poison message never blocks the head of the outbox.
MAX_PAYLOAD_BYTES = 268_435_455 - 65_535 - 16


def encode_payload(payload: PayloadLike) -> bytes:
    """bytes as they are, str as UTF-8, a mapping as compact JSON."""
    if isinstance(payload, (bytes, bytearray)):
        data = bytes(payload)
    elif isinstance(payload, str):
        data = payload.encode("utf-8")
    elif isinstance(payload, Mapping):
        try:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"payload mapping is not JSON-serialisable: {exc}") from exc
        data = text.encode("utf-8")
    else:
        raise ParameterError(
            f"payload must be bytes, str or a mapping, got {type(payload).__name__}"
        )
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ParameterError(f"payload of {len(data)} bytes exceeds the MQTT limit")
    return data


def check_qos(qos: object) -> int:
    if isinstance(qos, bool) or not isinstance(qos, int) or qos not in (0, 1, 2):
        raise ParameterError(f"qos must be 0, 1 or 2, got {qos!r}")
    return qos


@dataclasses.dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters of a publisher. ``enqueued == sent + dropped + pending`` always holds.

    ``reconnects`` counts successful connections after the first;
    ``inbound_dropped`` counts incoming messages dropped because a subscription's
    queue was full; ``last_error`` is the most recent connection error, if any.
    """

    connected: bool
    reconnects: int
    enqueued: int
    sent: int
    dropped: int
    pending: int
    inbound_dropped: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message received on a subscription (commands, live event packets)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Publisher(Protocol):
    """What the service needs from a decision sink (MQTT or stdout)."""

    async def __aenter__(self) -> Publisher: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def publish(
        self,
        topic: str,
        payload: PayloadLike,
        *,
        qos: int | None = None,
        retain: bool = False,
    ) -> None:
        """Queue one message; never waits for the network."""
        ...

    def stats(self) -> PublisherStats: ...


class Subscription(Protocol):
    """Messages of one topic filter, as an async iterator."""

    def __aiter__(self) -> AsyncIterator[InboundMessage]: ...

    def get_nowait(self) -> InboundMessage | None:
        """The next waiting message, or None when none waits."""
        ...


@runtime_checkable
class Subscriber(Protocol):
    """A publisher that can also take messages in (MQTT; stdout cannot)."""

    async def subscribe(
        self, topic_filter: str, *, qos: int = 1, queue_size: int | None = None
    ) -> Subscription:
        """Subscribe now and after every reconnect; raises PublishError if refused."""
        ...


async def publish_decision(publisher: Publisher, decision: Decision) -> None:
    """Publish ``decision`` on its ``spikecast/<device>/<stream>/decision`` topic."""
    await publisher.publish(
        decision_topic(decision.device, decision.stream), decision.to_dict(), retain=False
    )


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "InboundMessage",
    "PayloadLike",
    "Publisher",
    "PublisherStats",
    "Subscriber",
    "Subscription",
    "check_qos",
    "encode_payload",
    "publish_decision",
]
