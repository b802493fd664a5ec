"""MqttPublisher against a real mosquitto broker and real aiomqtt clients."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from mqtt_testkit import (
    make_decision,
    recording_subscriber,
    retained,
    send,
    settings_for,
    wait_until,
)
from spikecast.ext.core.errors import ParameterError, PublishError
from spikecast.runtime.mqtt import MqttPublisher, backoff_delay_s
from spikecast.runtime.mqtt import publisher as publisher_mod
from spikecast.runtime.mqtt.topics import (
    cmd_filter,
    cmd_topic,
    decision_topic,
    events_filter,
    events_topic,
    shared_events_filter,
    status_topic,
)

if TYPE_CHECKING:
    from conftest import MosquittoBroker

    BrokerFactory = Callable[..., MosquittoBroker]

DECISIONS = decision_topic("cam0", "s0")
STATUS = status_topic("cam0")


def seqs_of(payloads: list[bytes]) -> list[int]:
    return [json.loads(p)["seq"] for p in payloads]


# -- backoff (no broker) ---------------------------------------------------------------


def test_backoff_doubles_within_bounds_and_jitters() -> None:
    rng = random.Random(7)
    delays = [backoff_delay_s(a, 0.5, 8.0, rng) for a in range(12) for _ in range(50)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    first = [backoff_delay_s(0, 0.5, 8.0, rng) for _ in range(200)]
    assert max(first) <= 1.0 and len(set(first)) > 100  # jittered within [min, 2*min]
    late = [backoff_delay_s(10, 0.5, 8.0, rng) for _ in range(200)]
    assert min(late) >= 4.0  # capped ceiling: upper half of [0, max]
    same = [backoff_delay_s(a, 0.5, 8.0, random.Random(1)) for a in range(5)]
    assert same == [backoff_delay_s(a, 0.5, 8.0, random.Random(1)) for a in range(5)]


async def test_publish_validates_and_refuses_outside_context(mosquitto: MosquittoBroker) -> None:
    pub = MqttPublisher(settings_for(mosquitto))
    with pytest.raises(PublishError):
        await pub.publish(DECISIONS, b"x")
    async with pub:
        with pytest.raises(ParameterError):
            await pub.publish("spikecast/cam0/+/decision", b"x")
        with pytest.raises(ParameterError):
            await pub.publish(DECISIONS, b"x", qos=3)
        with pytest.raises(ParameterError):
            await pub.publish(DECISIONS, {"bad": float("nan")})
        with pytest.raises(ParameterError):
            await pub.subscribe("spikecast/#/x")
    with pytest.raises(PublishError):
        await pub.publish(DECISIONS, b"x")


# -- status: online, offline, Last Will ------------------------------------------------


async def test_online_retained_then_explicit_offline_on_clean_exit(
    mosquitto: MosquittoBroker,
) -> None:
    host, port = mosquitto.host, mosquitto.port
    async with recording_subscriber(host, port, STATUS) as status:
        async with MqttPublisher(settings_for(mosquitto)) as pub:
            await pub.wait_connected(5)
            assert await retained(host, port, STATUS) == b"online"
            await pub.publish(DECISIONS, make_decision(0).to_dict())
            assert await pub.flush(5)
        # __aexit__ published offline itself: the connection closed with DISCONNECT,
        # for which the broker never sends the Will.
        await status.wait_for(lambda r: r.payloads[-1:] == [b"offline"], 5, "offline")
        assert status.payloads == [b"online", b"offline"]
    assert await retained(host, port, STATUS) == b"offline"
    assert pub.stats().sent == 1 and not pub.stats().connected


_KILLED_PUBLISHER = """
import asyncio, sys
from spikecast.runtime.mqtt import MqttPublisher, MqttSettings

async def main() -> None:
    settings = MqttSettings(host="127.0.0.1", port=int(sys.argv[1]), device="cam0", keepalive_s=1)
    async with MqttPublisher(settings) as pub:
        await pub.wait_connected(10)
        print("ready", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_last_will_offline_after_sigkill(mosquitto: MosquittoBroker) -> None:
    host, port = mosquitto.host, mosquitto.port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_PUBLISHER, str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"ready"
        assert await retained(host, port, STATUS) == b"online"
        async with recording_subscriber(host, port, STATUS) as status:
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 5)
            # No DISCONNECT was sent: the broker publishes the Will (keepalive 1 s bounds
            # the wait even if the dead socket were not noticed at once).
            await status.wait_for(lambda r: r.payloads[-1:] == [b"offline"], 5, "the Will")
        assert await retained(host, port, STATUS) == b"offline"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- the outbox across broker restarts -------------------------------------------------


async def test_outbox_holds_decisions_while_broker_is_down(
    mosquitto_factory: BrokerFactory,
) -> None:
    # The subscriber has a persistent session on a persistent broker, so it misses
    # nothing while it reconnects; every decision sent during the outage can only
    # come from the publisher's outbox.
    broker = mosquitto_factory(persistence=True)
    async with recording_subscriber(broker.host, broker.port, DECISIONS, persistent=True) as sub:
        async with MqttPublisher(settings_for(broker), rng=random.Random(3)) as pub:
            await pub.wait_connected(5)
            for seq in range(80):
                await pub.publish(DECISIONS, make_decision(seq).to_dict())
            assert await pub.flush(10)
            await sub.wait_count(80, 10)
            await asyncio.sleep(0.2)  # let the subscriber's PUBACKs reach the broker

            broker.stop()
            await wait_until(lambda: not pub.stats().connected, 5, "publisher to notice")
            for seq in range(80, 200):
                await pub.publish(DECISIONS, make_decision(seq).to_dict())
            stats = pub.stats()
            assert (stats.sent, stats.pending, stats.dropped) == (80, 120, 0)

            broker.start()
            await pub.wait_connected(10)
            assert await pub.flush(10)
            await sub.wait_count(200, 10)
            stats = pub.stats()
        assert (stats.enqueued, stats.sent, stats.pending, stats.dropped) == (200, 200, 0, 0)
        assert stats.reconnects >= 1
        assert seqs_of(sub.payloads) == list(range(200))  # each exactly once, in order


async def test_stream_stays_ordered_while_broker_restarts_mid_publish(
    mosquitto_factory: BrokerFactory,
) -> None:
    broker = mosquitto_factory(persistence=True)
    n = 200
    async with recording_subscriber(broker.host, broker.port, DECISIONS, persistent=True) as sub:
        async with MqttPublisher(settings_for(broker), rng=random.Random(5)) as pub:
            await pub.wait_connected(5)

            async def produce() -> None:
                for seq in range(n):
                    await pub.publish(DECISIONS, make_decision(seq).to_dict())
                    await asyncio.sleep(0.004)

            producer = asyncio.create_task(produce())
            await wait_until(lambda: pub.stats().sent >= 50, 10, "50 decisions sent")
            broker.stop()
            await asyncio.sleep(0.3)
            broker.start()
            await asyncio.wait_for(producer, 10)
            assert await pub.flush(10)
            await sub.wait_for(lambda r: len(set(r.payloads)) >= n, 10, "every decision")
            stats = pub.stats()
        assert (stats.sent, stats.pending, stats.dropped) == (n, 0, 0)
        assert stats.reconnects >= 1
    seqs = seqs_of(sub.payloads)
    # QoS 1 is at-least-once on both hops: the publisher resends a decision whose PUBACK
    # died with the broker, and the restarted broker replays what it had sent to the
    # subscriber unacknowledged. Repeats are therefore allowed, but only of decisions
    # already seen: new decisions must appear with no gap and in order.
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == list(range(n))
    assert len(seqs) - n <= 10


async def test_a_burst_goes_out_without_waiting_for_each_acknowledgement(
    mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # Decisions made back to back (one compute batch) must not queue behind each
    # other's PUBACK: several are in flight at once, and all arrive once, in order.
    # aiomqtt warns above its default of 10 pending calls: the service's stderr stays quiet.
    caplog.set_level(logging.WARNING)
    async with recording_subscriber(mosquitto.host, mosquitto.port, DECISIONS) as sub:
        async with MqttPublisher(settings_for(mosquitto), rng=random.Random(4)) as pub:
            await pub.wait_connected(5)
            most = 0
            for seq in range(64):
                await pub.publish(DECISIONS, make_decision(seq).to_dict())
                most = max(most, pub._outbox.in_flight_count)
            assert await pub.flush(10)
            assert pub._outbox.in_flight_count == 0
        await sub.wait_count(64, 10)
    assert 1 < most <= 16
    assert seqs_of(sub.payloads) == list(range(64))
    assert (pub.stats().sent, pub.stats().dropped) == (64, 0)
    assert not [r for r in caplog.records if "pending publish calls" in r.getMessage()]


async def test_the_client_warns_only_above_the_drains_own_window() -> None:
    # The drain keeps up to _IN_FLIGHT publishes unacknowledged on purpose; aiomqtt's
    # default threshold (10) would print a warning for every burst of 16 streams.
    pub = MqttPublisher(settings_for(SimpleNamespace(host="127.0.0.1", port=1)))
    client = pub._make_client()
    assert client.pending_calls_threshold >= publisher_mod._IN_FLIGHT + 2


async def test_outbox_overflow_drops_oldest_and_counts(mosquitto_factory: BrokerFactory) -> None:
    broker = mosquitto_factory(persistence=True)
    async with recording_subscriber(broker.host, broker.port, DECISIONS, persistent=True) as sub:
        broker.stop()
        settings = settings_for(broker, outbox_size=5)
        async with MqttPublisher(settings, flush_timeout_s=5) as pub:
            started = time.monotonic()
            for seq in range(12):
                await pub.publish(DECISIONS, make_decision(seq).to_dict())
            assert time.monotonic() - started < 0.5  # never waits for the network
            stats = pub.stats()
            assert (stats.enqueued, stats.pending, stats.dropped, stats.sent) == (12, 5, 7, 0)
            assert not stats.connected
            await wait_until(lambda: pub.stats().last_error is not None, 5, "a failed connect")
            broker.start()
            await pub.wait_connected(10)
            assert await pub.flush(10)
        await sub.wait_count(5, 10)
        await asyncio.sleep(0.1)
    assert seqs_of(sub.payloads) == [7, 8, 9, 10, 11]
    assert pub.stats().dropped == 7


async def test_undelivered_messages_at_exit_are_counted_as_dropped(
    mosquitto: MosquittoBroker,
) -> None:
    mosquitto.stop()
    async with MqttPublisher(settings_for(mosquitto), flush_timeout_s=0.2) as pub:
        for seq in range(3):
            await pub.publish(DECISIONS, make_decision(seq).to_dict())
    stats = pub.stats()
    assert (stats.enqueued, stats.sent, stats.pending, stats.dropped) == (3, 0, 0, 3)


# -- subscriptions -----------------------------------------------------------------------


async def test_subscription_keeps_flowing_across_reconnects(mosquitto: MosquittoBroker) -> None:
    host, port = mosquitto.host, mosquitto.port
    async with MqttPublisher(settings_for(mosquitto)) as pub:
        await pub.wait_connected(5)
        async with await pub.subscribe(cmd_filter("cam0")) as commands:
            await send(host, port, cmd_topic("cam0"), [b'{"tau":0.9}'])
            first = await asyncio.wait_for(commands.__anext__(), 5)
            assert (first.topic, first.payload) == (cmd_topic("cam0"), b'{"tau":0.9}')

            mosquitto.stop()
            await wait_until(lambda: not pub.stats().connected, 5, "disconnect")
            mosquitto.start()
            await pub.wait_connected(10)  # set only after resubscribing

            await send(host, port, cmd_topic("cam0"), [b'{"tau":0.8}'])
            second = await asyncio.wait_for(commands.__anext__(), 5)
            assert second.payload == b'{"tau":0.8}'
        assert commands.closed
        with pytest.raises(StopAsyncIteration):
            await commands.__anext__()
        assert pub.stats().reconnects == 1


async def test_full_subscription_queue_drops_newest_and_counts(
    mosquitto: MosquittoBroker,
) -> None:
    async with MqttPublisher(settings_for(mosquitto)) as pub:
        await pub.wait_connected(5)
        packets = await pub.subscribe(events_topic("cam0", "s0"), queue_size=3)
        await send(mosquitto.host, mosquitto.port, events_topic("cam0", "s0"),
                   [bytes([i]) for i in range(10)])
        await wait_until(lambda: pub.stats().inbound_dropped == 7, 5, "7 inbound drops")
        got = [(await asyncio.wait_for(packets.__anext__(), 1)).payload for _ in range(3)]
        assert got == [b"\x00", b"\x01", b"\x02"]
        assert packets.dropped == 7
        with pytest.raises(PublishError):
            await pub.subscribe(events_topic("cam0", "s0"))  # one subscription per filter


async def test_shared_subscription_splits_events_between_workers(
    mosquitto: MosquittoBroker,
) -> None:
    shared = shared_events_filter("workers", "cam0")
    async with (
        MqttPublisher(settings_for(mosquitto, device="w1")) as w1,
        MqttPublisher(settings_for(mosquitto, device="w2")) as w2,
    ):
        await w1.wait_connected(5)
        await w2.wait_connected(5)
        subs = [await w1.subscribe(shared), await w2.subscribe(shared)]
        payloads = [i.to_bytes(2, "little") for i in range(40)]
        await send(mosquitto.host, mosquitto.port, events_topic("cam0", "left"), payloads[:20])
        await send(mosquitto.host, mosquitto.port, events_topic("cam0", "right"), payloads[20:])
        await wait_until(
            lambda: sum(s._queue.qsize() for s in subs) >= 40, 5, "all packets delivered"
        )
        received: list[list[bytes]] = [[], []]
        for worker, sub in enumerate(subs):
            while sub._queue.qsize():
                received[worker].append((await sub.__anext__()).payload)
    assert sorted(received[0] + received[1]) == payloads  # each packet to one worker only
    assert received[0] and received[1]  # and both workers got a share


async def test_receive_queue_is_bounded_and_counts_what_it_drops(mosquitto: MosquittoBroker) -> None:
    """aiomqtt's queue of read-but-unrouted messages is unbounded by default; ours holds
    INBOUND_QUEUE_MESSAGES and counts every message beyond that as an inbound drop."""
    from spikecast.runtime.mqtt import publisher as publisher_mod

    pub = MqttPublisher(settings_for(mosquitto))
    client = pub._make_client()
    queue = client._queue
    assert queue.maxsize == publisher_mod.INBOUND_QUEUE_MESSAGES > 0
    for i in range(queue.maxsize + 5):
        queue.put_nowait(i)  # what aiomqtt's on_message does, from paho's read
    assert queue.qsize() == queue.maxsize
    assert pub.stats().inbound_dropped == 5
    assert queue.get_nowait() == 0  # the oldest are kept, in order; the newest were dropped


async def test_a_burst_arrives_whole_and_in_order_with_each_read_handing_over_many(
    mosquitto: MosquittoBroker,
) -> None:
    """Sixteen streams' packets sent back to back (what the service gets every 10 ms):
    the buffered reader and the queue drain hand every one over, in order, and one socket
    read carries many packets (paho alone reads each with three or more recv calls)."""
    import paho.mqtt.client as paho

    async with MqttPublisher(settings_for(mosquitto)) as pub:
        await pub.wait_connected(5)
        sub = await pub.subscribe(events_filter("cam0"), qos=0, queue_size=10_000)
        client = pub._client
        assert client is not None
        reads = 0
        real_read = paho.Client._sock_recv

        def counting_read(self: paho.Client, n: int) -> bytes:
            nonlocal reads
            reads += 1
            return real_read(self, n)

        from spikecast.runtime.mqtt.paho_read import BufferedReader

        reader = client._client._sock_recv.__self__
        assert isinstance(reader, BufferedReader)  # installed on the service's client
        reader._read = counting_read.__get__(client._client)
        sender = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        try:
            n = 2000
            for i in range(n):
                sender.publish(events_topic("cam0", f"s{i % 16}"), i.to_bytes(4, "little") * 40, qos=0)
            got = [int.from_bytes((await asyncio.wait_for(sub.__anext__(), 10)).payload[:4], "little")
                   for _ in range(n)]
        finally:
            sender.loop_stop()
            sender.disconnect()
    assert got == list(range(n))
    assert pub.stats().inbound_dropped == 0
    assert 0 < reads < n / 4  # many packets per read (paho alone: more than 3 * n)


async def test_a_backlog_longer_than_a_subscription_reaches_a_reader_that_keeps_up(
    mosquitto: MosquittoBroker,
) -> None:
    """Messages already queued are routed in slices with a pass of the event loop between
    them, so a reader that keeps up receives a backlog 10x its subscription's queue."""
    import aiomqtt
    from spikecast.runtime.mqtt.publisher import Subscription

    pub = MqttPublisher(settings_for(mosquitto))
    sub = Subscription(pub, events_filter("cam0"), 0, 1, 100)
    pub._subs[sub.ident] = sub
    queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    n = 1000
    topic = events_topic("cam0", "s0")
    for i in range(n):
        queue.put_nowait(aiomqtt.Message(topic, i.to_bytes(2, "little"), 0, False, 0, None))

    class Messages:
        def __aiter__(self) -> Messages:
            return self

        async def __anext__(self) -> aiomqtt.Message:
            return await queue.get()

    class Client:
        messages = Messages()
        _queue = queue

    got: list[int] = []

    async def reader() -> None:
        async for message in sub:
            got.append(int.from_bytes(message.payload, "little"))

    reading = asyncio.create_task(reader())
    routing = asyncio.create_task(pub._read(Client()))  # type: ignore[arg-type]
    await wait_until(lambda: len(got) == n, 5, "the whole backlog")
    routing.cancel()
    reading.cancel()
    assert got == list(range(n))
    assert sub.dropped == 0


def _paho_sender(broker: MosquittoBroker) -> object:
    import paho.mqtt.client as paho

    sender = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    return sender


async def test_messages_of_both_receive_paths_keep_their_order(mosquitto: MosquittoBroker) -> None:
    """Plain QoS 0 messages take the fast path (paho_publish); those with a user property
    take paho's and aiomqtt's queue. Interleaved on one subscription (QoS 0 throughout,
    which the broker keeps in order), they still arrive in the order they were sent."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    tagged = Properties(PacketTypes.PUBLISH)
    tagged.UserProperty = ("via", "paho")
    async with MqttPublisher(settings_for(mosquitto)) as pub:
        await pub.wait_connected(5)
        sub = await pub.subscribe(events_filter("cam0"), qos=0, queue_size=10_000)
        client = pub._client
        assert client is not None
        assert client._client._handle_publish.__name__ == "handle_publish"  # installed
        sender = _paho_sender(mosquitto)
        try:
            n = 3000
            for i in range(n):
                props = tagged if i % 7 == 3 or 1000 < i < 1040 else None
                sender.publish(  # type: ignore[attr-defined]
                    events_topic("cam0", "s0"), i.to_bytes(4, "little"), qos=0, properties=props
                )
            got = [int.from_bytes((await asyncio.wait_for(sub.__anext__(), 10)).payload, "little")
                   for _ in range(n)]
        finally:
            sender.loop_stop()  # type: ignore[attr-defined]
            sender.disconnect()  # type: ignore[attr-defined]
    assert got == list(range(n))
    assert pub.stats().inbound_dropped == 0


async def test_a_qos0_burst_longer_than_a_small_subscription_reaches_a_reader_that_keeps_up(
    mosquitto: MosquittoBroker,
) -> None:
    """The fast path declines a message for a half-full subscription, so a burst that one
    socket read brings goes through aiomqtt's queue and reaches the reader in slices."""
    async with MqttPublisher(settings_for(mosquitto)) as pub:
        await pub.wait_connected(5)
        sub = await pub.subscribe(events_filter("cam0"), qos=0, queue_size=8)
        got: list[int] = []

        async def reader() -> None:
            async for message in sub:
                got.append(int.from_bytes(message.payload, "little"))

        reading = asyncio.create_task(reader())
        sender = _paho_sender(mosquitto)
        try:
            n = 2000
            for i in range(n):
                sender.publish(events_topic("cam0", f"s{i % 4}"), i.to_bytes(4, "little"), qos=0)  # type: ignore[attr-defined]
            await wait_until(lambda: len(got) == n, 10, "the whole burst")
        finally:
            reading.cancel()
            sender.loop_stop()  # type: ignore[attr-defined]
            sender.disconnect()  # type: ignore[attr-defined]
    assert got == list(range(n))
    assert sub.dropped == 0 and pub.stats().inbound_dropped == 0


class _AckClient:
    """Stands in for aiomqtt.Client in the drain: each publish waits for its ack, which
    the test releases (in order) or fails (the connection broke)."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.acks: dict[int, asyncio.Future[None]] = {}

    async def publish(self, topic: str, payload: bytes, **kw: object) -> None:
        seq = json.loads(payload)["seq"]
        self.sent.append(seq)
        self.acks[seq] = asyncio.get_running_loop().create_future()
        await self.acks[seq]


async def test_the_drain_keeps_order_and_resends_what_was_not_acknowledged() -> None:
    import aiomqtt
    from spikecast.runtime.mqtt import publisher as publisher_module
    from spikecast.runtime.mqtt.settings import MqttSettings

    pub = MqttPublisher(MqttSettings(device="cam0"))
    pub._state = "running"  # the drain alone, no broker: its client is the stand-in
    client = _AckClient()
    drain = asyncio.create_task(pub._drain(client))  # type: ignore[arg-type]
    for seq in range(40):
        await pub.publish(DECISIONS, make_decision(seq).to_dict())
    await asyncio.sleep(0.01)
    window = publisher_module._IN_FLIGHT
    assert client.sent == list(range(window))  # the window, in order, none acknowledged
    for seq in range(3):
        client.acks[seq].set_result(None)
    await asyncio.sleep(0.01)
    assert client.sent == list(range(window + 3)) and pub.stats().sent == 3
    client.acks[4].set_result(None)  # acknowledged, but after 3, which is not
    client.acks[3].set_exception(aiomqtt.MqttError("connection lost"))
    with pytest.raises(aiomqtt.MqttError):
        await asyncio.wait_for(drain, 1)
    # 3 and everything after it wait again, in order; nothing dropped or skipped.
    stats = pub.stats()
    assert (stats.sent, stats.pending, stats.dropped) == (3, 37, 0)
    assert pub._outbox.in_flight_count == 0 and pub._outbox.peek() is not None
    client2 = _AckClient()
    drain = asyncio.create_task(pub._drain(client2))  # type: ignore[arg-type]
    while pub.stats().sent < 40:
        await asyncio.sleep(0)
        for fut in client2.acks.values():
            if not fut.done():
                fut.set_result(None)
    drain.cancel()
    await asyncio.gather(drain, return_exceptions=True)
    assert client2.sent == list(range(3, 40))  # resent from the first unacknowledged
    assert (pub.stats().sent, pub.stats().pending) == (40, 0)
