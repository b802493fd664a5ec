"""A bounded, ordered outbox for messages that wait for the broker.

Why drop the oldest when full: decisions made offline wait and are sent in
order, and drops beyond the bound are counted, never silent (docs/mqtt.md). When an
outage outlasts the bound, the oldest decisions are the least useful to a live
consumer (they describe sensor time long past), while the newest describe what
the sensor sees now; dropping the oldest also keeps the memory bound without
ever blocking the inference loop. The exception is the items in flight (sent, not
yet acknowledged): they may already be at the broker, so they are never dropped;
each either completes or returns to the waiting line for a retry.

Several items may be in flight at once, always the first ones: the drain loop sends
the next item without waiting for the broker to acknowledge the one before, and the
broker acknowledges QoS 1 messages in the order it received them (MQTT 5, 4.6), so
items complete from the head. After a failure every item in flight waits again, and
is sent again, in order, on the next connection (QoS 1 is at least once).

Invariant: ``enqueued == sent + dropped + pending``.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from spikecast.ext.core.checks import check_int
from spikecast.ext.core.errors import PublishError


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class OutboxItem:
    """One message to publish. Compared by identity: two equal payloads are two items."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """FIFO of :class:`OutboxItem` holding at most ``capacity`` items.

    The drain loop calls :meth:`begin` to send the next waiting item (the first
    ``in_flight_count`` items are in flight), :meth:`complete` once the broker
    acknowledged the head, or :meth:`abort` to put an item in flight and every
    one after it back in the waiting line for the next connection.
    """

    def __init__(self, capacity: int) -> None:
        check_int("outbox capacity", capacity, 1)
        self._capacity = capacity
        self._items: deque[OutboxItem] = deque()
        self._n_in_flight = 0
        self._enqueued = 0
        self._sent = 0
        self._dropped = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def enqueued(self) -> int:
        return self._enqueued

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def pending(self) -> int:
        """Items not yet acknowledged, including those in flight."""
        return len(self._items)

    @property
    def in_flight(self) -> OutboxItem | None:
        """The oldest item in flight (the next to complete), or None."""
        return self._items[0] if self._n_in_flight else None

    @property
    def in_flight_count(self) -> int:
        return self._n_in_flight

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: OutboxItem) -> OutboxItem | None:
        """Append ``item``; if that overflows, drop and return the oldest waiting item.

        Items in flight are never dropped: when every other item is in flight, the
        new item itself is the one dropped.
        """
        self._enqueued += 1
        self._items.append(item)
        if len(self._items) <= self._capacity:
            return None
        self._dropped += 1
        victim = self._items[self._n_in_flight]  # the oldest waiting (maybe ``item``)
        del self._items[self._n_in_flight]
        return victim

    def peek(self) -> OutboxItem | None:
        """The head, or None when empty."""
        return self._items[0] if self._items else None

    def begin(self) -> OutboxItem | None:
        """Mark the oldest waiting item as in flight and return it (None when none waits)."""
        if self._n_in_flight == len(self._items):
            return None
        item = self._items[self._n_in_flight]
        self._n_in_flight += 1
        return item

    def complete(self, item: OutboxItem) -> None:
        """The broker acknowledged ``item``, the oldest in flight: remove it."""
        if not self._n_in_flight or self._items[0] is not item:
            raise PublishError("outbox: completed item is not the oldest in flight")
        self._items.popleft()
        self._n_in_flight -= 1
        self._sent += 1

    def abort(self, item: OutboxItem) -> None:
        """Publishing ``item`` failed: it, and every item sent after it, wait again."""
        for k in range(self._n_in_flight):
            if self._items[k] is item:
                self._n_in_flight = k
                return
        raise PublishError("outbox: aborted item is not in flight")

    def discard_all(self) -> int:
        """Drop every waiting item (shutdown without a broker); return how many."""
        n = len(self._items)
        self._items.clear()
        self._n_in_flight = 0
        self._dropped += n
        return n


__all__ = ["Outbox", "OutboxItem"]
