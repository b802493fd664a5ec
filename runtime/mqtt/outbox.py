"""A bounded, ordered outbox for messages that wait for the broker.

Why drop the oldest when full: decisions made offline wait and are sent in
order, and drops beyond the bound are counted, never silent (docs/mqtt.md). When an
outage outlasts the bound, the oldest decisions are the least useful to a live
consumer (they describe sensor time long past), while the newest describe what
the sensor sees now; dropping the oldest also keeps the memory bound without
ever blocking the inference loop. The one exception is the item in flight: it
may already be at the broker, so it is never dropped; it either completes or
returns to the head for a retry.

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

    The drain loop calls :meth:`begin` to take the head in flight, then
    :meth:`complete` once the broker acknowledged it, or :meth:`abort` to leave
    it at the head for the next connection.
    """

    def __init__(self, capacity: int) -> None:
        check_int("outbox capacity", capacity, 1)
        self._capacity = capacity
        self._items: deque[OutboxItem] = deque()
        self._in_flight: OutboxItem | None = None
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
        """Items not yet acknowledged, including the one in flight."""
        return len(self._items)

    @property
    def in_flight(self) -> OutboxItem | None:
        return self._in_flight

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: OutboxItem) -> OutboxItem | None:
        """Append ``item``; if that overflows, drop and return the oldest waiting item.

        With capacity 1 and the head in flight, the new item itself is the one
        dropped, since the in-flight item may already be at the broker.
        """
        self._enqueued += 1
        self._items.append(item)
        if len(self._items) <= self._capacity:
            return None
        self._dropped += 1
        if self._in_flight is None:
            return self._items.popleft()
        head = self._items.popleft()
        victim = self._items.popleft()
        self._items.appendleft(head)
        return victim

    def peek(self) -> OutboxItem | None:
        """The head, or None when empty."""
        return self._items[0] if self._items else None

    def begin(self) -> OutboxItem | None:
        """Mark the head as in flight and return it (None when empty)."""
        if self._in_flight is not None:
            raise PublishError("outbox: an item is already in flight")
        if not self._items:
            return None
        self._in_flight = self._items[0]
        return self._in_flight

    def complete(self, item: OutboxItem) -> None:
        """The broker acknowledged ``item``: remove it from the head."""
        if self._in_flight is not item or not self._items or self._items[0] is not item:
            raise PublishError("outbox: completed item is not the one in flight")
        self._items.popleft()
        self._in_flight = None
        self._sent += 1

    def abort(self, item: OutboxItem) -> None:
        """Publishing ``item`` failed: it stays at the head for the next try."""
        if self._in_flight is not item:
            raise PublishError("outbox: aborted item is not the one in flight")
        self._in_flight = None

    def discard_all(self) -> int:
        """Drop every waiting item (shutdown without a broker); return how many."""
        n = len(self._items)
        self._items.clear()
        self._in_flight = None
        self._dropped += n
        return n


__all__ = ["Outbox", "OutboxItem"]
