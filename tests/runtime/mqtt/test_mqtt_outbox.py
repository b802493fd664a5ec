"""The bounded outbox: order, drop-oldest, in-flight protection, counters."""

from __future__ import annotations

import pytest
from spikecast.ext.core.errors import ParameterError, PublishError
from spikecast.runtime.mqtt.outbox import Outbox, OutboxItem


def item(n: int) -> OutboxItem:
    return OutboxItem(topic="t", payload=str(n).encode(), qos=1, retain=False)


def drain(box: Outbox) -> list[bytes]:
    out = []
    while (head := box.begin()) is not None:
        box.complete(head)
        out.append(head.payload)
    return out


def invariant(box: Outbox) -> bool:
    return box.enqueued == box.sent + box.dropped + box.pending


def test_fifo_and_counters() -> None:
    box = Outbox(10)
    for n in range(5):
        assert box.put(item(n)) is None
    assert (box.enqueued, box.pending) == (5, 5)
    assert drain(box) == [b"0", b"1", b"2", b"3", b"4"]
    assert (box.sent, box.pending, box.dropped) == (5, 0, 0) and invariant(box)


def test_overflow_drops_oldest_and_counts() -> None:
    box = Outbox(3)
    dropped = [box.put(item(n)) for n in range(7)]
    assert [d.payload if d else None for d in dropped] == [None, None, None, b"0", b"1", b"2", b"3"]
    assert (box.dropped, box.pending) == (4, 3) and invariant(box)
    assert drain(box) == [b"4", b"5", b"6"]


def test_in_flight_head_is_never_dropped() -> None:
    box = Outbox(3)
    for n in range(3):
        box.put(item(n))
    head = box.begin()
    assert head is not None and head.payload == b"0"
    victim = box.put(item(3))
    assert victim is not None and victim.payload == b"1"  # the next-oldest goes instead
    box.complete(head)
    assert drain(box) == [b"2", b"3"] and invariant(box)


def test_capacity_one_with_item_in_flight_drops_the_new_item() -> None:
    box = Outbox(1)
    box.put(item(0))
    head = box.begin()
    victim = box.put(item(1))
    assert victim is not None and victim.payload == b"1"
    assert head is not None
    box.complete(head)
    assert (box.sent, box.dropped, box.pending) == (1, 1, 0)


def test_abort_keeps_the_item_at_the_head_for_a_retry() -> None:
    box = Outbox(5)
    box.put(item(0))
    box.put(item(1))
    head = box.begin()
    assert head is not None
    box.abort(head)
    assert box.in_flight is None and box.peek() is head and box.pending == 2
    assert drain(box) == [b"0", b"1"]


def test_misuse_is_reported() -> None:
    box = Outbox(2)
    box.put(item(0))
    head = box.begin()
    assert box.begin() is None  # nothing else waits
    with pytest.raises(PublishError):
        box.complete(item(9))
    with pytest.raises(PublishError):
        box.abort(item(9))
    assert head is not None
    box.complete(head)
    with pytest.raises(PublishError):
        box.complete(head)  # not in flight any more
    with pytest.raises(ParameterError):
        Outbox(0)


def test_several_in_flight_complete_from_the_head() -> None:
    box = Outbox(10)
    for n in range(5):
        box.put(item(n))
    sent = [box.begin() for _ in range(3)]
    assert [s.payload for s in sent if s] == [b"0", b"1", b"2"] and box.in_flight_count == 3
    with pytest.raises(PublishError):
        box.complete(sent[1])  # acknowledged out of order: a broken broker or a bug
    assert sent[0] is not None and box.in_flight is sent[0]
    box.complete(sent[0])
    assert box.in_flight_count == 2 and box.in_flight is sent[1] and invariant(box)


def test_overflow_never_drops_items_in_flight() -> None:
    box = Outbox(3)
    for n in range(3):
        box.put(item(n))
    a, b = box.begin(), box.begin()
    victim = box.put(item(3))
    assert victim is not None and victim.payload == b"2"  # the oldest waiting
    victim = box.put(item(4))
    assert victim is not None and victim.payload == b"3"
    c = box.begin()
    assert c is not None and c.payload == b"4"
    victim = box.put(item(5))  # all three in flight: the new one goes
    assert victim is not None and victim.payload == b"5"
    assert a is not None and b is not None
    box.complete(a)
    box.complete(b)
    box.complete(c)
    assert (box.sent, box.dropped, box.pending) == (3, 3, 0) and invariant(box)


def test_abort_puts_it_and_everything_sent_after_it_back_in_order() -> None:
    box = Outbox(10)
    for n in range(4):
        box.put(item(n))
    a, b, _c = box.begin(), box.begin(), box.begin()
    assert a is not None and b is not None
    box.complete(a)
    box.abort(b)  # the connection broke: b and c were not acknowledged
    assert box.in_flight_count == 0 and box.peek() is b
    assert drain(box) == [b"1", b"2", b"3"] and invariant(box)


def test_discard_all_counts_as_dropped() -> None:
    box = Outbox(4)
    for n in range(3):
        box.put(item(n))
    assert box.discard_all() == 3
    assert (box.dropped, box.pending) == (3, 0) and invariant(box)


def test_equal_items_are_distinct() -> None:
    box = Outbox(4)
    a, b = item(1), item(1)
    box.put(a)
    box.put(b)
    head = box.begin()
    assert head is a
    box.complete(a)
    assert box.peek() is b
