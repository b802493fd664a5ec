"""MqttPublisher: a reconnecting MQTT 5 client that never loses an accepted message.

One background task owns the connection. It connects (TLS and username/password
optional) with a Last Will of ``offline`` (retained, QoS 1) on the status topic,
publishes ``online`` (retained) on every connect, resubscribes every open
subscription, then runs two loops until the connection breaks:

* the reader routes incoming messages to the subscriptions' bounded queues;
* the drainer sends the outbox in order, up to ``_IN_FLIGHT`` messages before the
  oldest is acknowledged (PUBACK for QoS 1), and removes each once acknowledged;
  acknowledgements come in order, so order is kept across reconnects: if the
  connection breaks first, every unacknowledged message is sent again, in order,
  on the next connection (at-least-once: a message the broker got but could not
  acknowledge is repeated, never skipped).

After a break it waits ``reconnect_min_s`` doubling up to ``reconnect_max_s``,
with jitter from an explicit :class:`random.Random`, so a fleet of devices does
not reconnect in lockstep after a broker restart. ``publish()`` only enqueues (and
lets the loop run twice, so that, connected and with room in flight, the message is on
the socket when it returns).
On clean exit it flushes the outbox (bounded by ``flush_timeout_s``), publishes
``offline`` (retained) and disconnects, so the Will is not needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import ssl
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from spikecast.ext.core.checks import check_int
from spikecast.ext.core.errors import ParameterError, PublishError
from spikecast.runtime.mqtt import paho_props, paho_publish, paho_read, paho_write
from spikecast.runtime.mqtt.base import (
    InboundMessage,
    PayloadLike,
    PublisherStats,
    check_qos,
    encode_payload,
)
from spikecast.runtime.mqtt.outbox import Outbox, OutboxItem
from spikecast.runtime.mqtt.settings import MqttSettings
from spikecast.runtime.mqtt.topics import (
    status_topic,
    validate_publish_topic,
    validate_topic_filter,
    worker_status_topic,
)

log = logging.getLogger(__name__)
# paho logs every packet at DEBUG; keep it under our name so users can silence it.
_PAHO_LOG = logging.getLogger(__name__ + ".paho")
# Messages read from the socket but not yet routed. aiomqtt's queue is unbounded by
# default: under sustained overload it grew by hundreds of MB (a 16-stream soak), holding
# a minute of stale input. Beyond this many, a message is dropped and counted
# (``inbound_dropped``, the metrics' ``inbound_shed``).
INBOUND_QUEUE_MESSAGES = 10_000


class _InboundQueue(asyncio.Queue):  # type: ignore[type-arg]
    """aiomqtt's queue of received messages: bounded, and counting what it drops."""

    #: Messages that aiomqtt's iterator took with get() and MqttPublisher._read has not
    #: routed yet: paho_publish's fast path waits for them too (their order).
    unrouted = 0

    def on_drop(self) -> None:
        raise NotImplementedError

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if self.full():
            self.on_drop()
            return
        super().put_nowait(item)

    async def get(self) -> aiomqtt.Message:
        item = await super().get()
        self.unrouted += 1
        return item  # type: ignore[no-any-return]


def _counting_queue(on_drop: Callable[[], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """An asyncio.Queue class for aiomqtt's incoming messages that, when full, drops the
    newest message and calls ``on_drop`` instead of raising (which aiomqtt would only log)."""

    class CountingQueue(_InboundQueue):
        def on_drop(self) -> None:
            on_drop()

    return CountingQueue

#: Queued messages routed per event-loop pass (at most; see MqttPublisher._read): a
#: backlog reaches the subscriptions' readers in slices, so a burst longer than a
#: subscription's queue is not dropped while its reader keeps up.
_ROUTE_BATCH = 256
# Items sent before the oldest is acknowledged (paho's own limit is 20).
_IN_FLIGHT = 16
# Calls besides the drain's that may await the broker at once: status, subscriptions.
_PENDING_CALLS_MARGIN = 8

#: The MQTT 5 user property that names the worker on everything a worker publishes.
WORKER_PROPERTY = "spikecast-worker"
ONLINE = b"online"
OFFLINE = b"offline"
_MAX_SUBSCRIPTION_ID = 268_435_455  # MQTT 5 variable byte integer limit


def backoff_delay_s(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 for the first retry).

    The ceiling doubles from ``2 * min_s`` and is capped at ``max_s``; the delay
    is drawn uniformly from the upper half of it ("equal jitter"), and is always
    within ``[min_s, max_s]``.
    """
    ceiling_s = min(max_s, min_s * 2.0 ** min(attempt + 1, 60))
    return rng.uniform(max(min_s, ceiling_s / 2.0), ceiling_s)


def build_tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """An SSL context that verifies the broker (``ca_file`` or the system store)."""
    if not settings.tls:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
        if settings.cert_file is not None:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise PublishError(f"cannot set up TLS from the given CA/cert/key files: {exc}") from exc
    return context


def _reason_value(code: object) -> int:
    # MQTT 5 gives ReasonCode objects, MQTT 3 plain granted-QoS ints.
    value = getattr(code, "value", code)
    return value if isinstance(value, int) else 0x80


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode("utf-8")


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Subscription:
    """Messages for one topic filter; an async iterator and an async context manager.

    Survives reconnects (the publisher resubscribes). Holds at most
    ``queue_size`` unread messages; newer ones are dropped and counted in
    :attr:`dropped` when the reader falls behind. Iteration ends after
    :meth:`aclose` or when the publisher exits.
    """

    def __init__(
        self,
        publisher: MqttPublisher,
        topic_filter: str,
        qos: int,
        ident: int,
        queue_size: int,
    ) -> None:
        self._publisher = publisher
        self.topic_filter = topic_filter
        self.qos = qos
        self.ident = ident
        self._queue_size = queue_size
        # Unbounded underneath, bounded in _deliver: the end-of-stream marker must always fit.
        self._queue: asyncio.Queue[InboundMessage | None] = asyncio.Queue()
        self._dropped = 0
        self._closed = False

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"Subscription({self.topic_filter!r}, qos={self.qos}, dropped={self._dropped})"

    def _deliver(self, message: InboundMessage) -> bool:
        if self._closed:
            return True
        if self._queue.qsize() >= self._queue_size:
            self._dropped += 1
            return False
        self._queue.put_nowait(message)
        return True

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    def get_nowait(self) -> InboundMessage | None:
        """The next waiting message, or None when none waits (or iteration ended)."""
        if self._queue.empty():
            return None
        message = self._queue.get_nowait()
        if message is None:
            self._queue.put_nowait(None)
        return message

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> InboundMessage:
        message = await self._queue.get()
        if message is None:
            self._queue.put_nowait(None)  # later calls end too
            raise StopAsyncIteration
        return message

    async def aclose(self) -> None:
        """Unsubscribe and end iteration."""
        await self._publisher._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class MqttPublisher:
    """Publishes to an MQTT 5 broker through a bounded, ordered outbox.

    Use as ``async with MqttPublisher(settings) as pub:``. ``rng`` draws the
    reconnect jitter (pass a seeded one for reproducible timing);
    ``flush_timeout_s`` bounds how long a clean exit waits for the outbox.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        rng: random.Random | None = None,
        flush_timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(settings, MqttSettings):
            raise ParameterError(f"settings must be MqttSettings, got {type(settings).__name__}")
        if (
            not isinstance(flush_timeout_s, (int, float))
            or not math.isfinite(flush_timeout_s)
            or flush_timeout_s < 0
        ):
            raise ParameterError(f"flush_timeout_s must be finite and >= 0: {flush_timeout_s!r}")
        self._settings = settings
        self._rng = rng if rng is not None else random.Random()
        self._flush_timeout_s = float(flush_timeout_s)
        if settings.worker is not None:
            # Stable: a reconnect takes the old session over, and the broker sends the
            # old connection's Will before this one says online again.
            self._client_id = settings.client_id or f"spikecast-{settings.device}-{settings.worker}"
            self._status_topic = worker_status_topic(settings.device, settings.worker)
            self._properties: Properties | None = Properties(PacketTypes.PUBLISH)
            self._properties.UserProperty = [(WORKER_PROPERTY, settings.worker)]
        else:
            self._client_id = (
                settings.client_id or f"spikecast-{settings.device}-{uuid.uuid4().hex[:8]}"
            )
            self._status_topic = status_topic(settings.device)
            self._properties = None
        self._outbox = Outbox(settings.outbox_size)
        self._subs: dict[int, Subscription] = {}
        self._next_sub_id = 1
        self._inbound_dropped = 0
        self._connects = 0
        self._last_error: str | None = None
        self._tls: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None
        # The client on which subscribe() may act right away; None while reconnecting.
        self._client: aiomqtt.Client | None = None
        self._state = "new"  # new -> running -> closing -> closed
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        # Serialises subscription changes against the resubscribe pass of a new connection.
        self._sub_lock = asyncio.Lock()
        self._on_connect: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"MqttPublisher({self._settings.redacted_url}, device={self._settings.device!r})"

    @property
    def settings(self) -> MqttSettings:
        return self._settings

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def status_topic(self) -> str:
        return self._status_topic

    @property
    def connects(self) -> int:
        """Successful connections so far (the first one included)."""
        return self._connects

    def add_connect_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on every connect, before the subscriptions are renewed, so
        before any message of the new connection is routed."""
        self._on_connect.append(callback)

    async def announce(self) -> None:
        """Publish ``online`` (retained) on the status topic again, now, ahead of the
        outbox: a worker that sees its own presence cleared while it is connected
        (a stale Will) says it is alive."""
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self._status_topic, ONLINE, qos=1, retain=True)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> MqttPublisher:
        if self._state != "new":
            raise PublishError("an MqttPublisher can be entered only once")
        # Reads certificate files: off the event loop.
        self._tls = await asyncio.to_thread(build_tls_context, self._settings)
        self._state = "running"
        name = f"spikecast-mqtt-{self._settings.device}"
        self._task = asyncio.create_task(self._run(), name=name)
        self._task.add_done_callback(self._on_task_done)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != "running" or self._task is None:
            return
        self._state = "closing"
        task = self._task
        try:
            if not await self.flush(self._flush_timeout_s):
                log.warning(
                    "MQTT %s: %d message(s) still waiting after %.1f s flush",
                    self._settings.redacted_url,
                    self._outbox.pending,
                    self._flush_timeout_s,
                )
        finally:
            self._stop.set()
            # Offline publish and DISCONNECT each take at most timeout_s.
            await asyncio.wait({task}, timeout=2.0 * self._settings.timeout_s + 1.0)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            lost = self._outbox.discard_all()
            if lost:
                log.warning("MQTT: %d message(s) never delivered; counted as dropped", lost)
            for sub in list(self._subs.values()):
                sub._end()
            self._subs.clear()
            self._connected.clear()
            self._state = "closed"
        failure = None if task.cancelled() else task.exception()
        if failure is not None and exc is None:
            raise PublishError(f"MQTT connection task failed: {failure!r}") from failure

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._connected.clear()
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT connection task failed: %r", task.exception())

    # -- public API ------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: PayloadLike,
        *,
        qos: int | None = None,
        retain: bool = False,
    ) -> None:
        """Enqueue one message (mapping -> compact JSON); never waits for the network
        (it yields to the event loop twice: the drain's send writes the message then).

        ``qos`` defaults to ``settings.qos``. When the outbox is full the oldest
        waiting message is dropped and counted (see :mod:`.outbox`).
        """
        if self._state != "running":
            raise PublishError(f"MqttPublisher.publish() while {self._state}")
        validate_publish_topic(topic)
        level = self._settings.qos if qos is None else check_qos(qos)
        if not isinstance(retain, bool):
            raise ParameterError(f"retain must be a bool, got {retain!r}")
        item = OutboxItem(topic=topic, payload=encode_payload(payload), qos=level, retain=retain)
        victim = self._outbox.put(item)
        self._idle.clear()
        self._wake.set()
        if victim is not None and _is_power_of_two(self._outbox.dropped):
            # Logged at 1, 2, 4, 8... drops: visible without flooding the log.
            log.warning(
                "MQTT outbox full (%d): dropped the oldest message (on %s); %d dropped so far",
                self._outbox.capacity,
                victim.topic,
                self._outbox.dropped,
            )
        # Two passes of the event loop: the drain takes the item, then its send writes
        # it to the socket (paho_write), before a caller that computes on the loop
        # goes on; otherwise the message would wait for the caller's next yield.
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def subscribe(
        self,
        topic_filter: str,
        *,
        qos: int = 1,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribe now if connected, and again after every reconnect.

        One open subscription per filter (MQTT keys subscriptions by filter).
        Raises PublishError if the broker refuses the filter.
        """
        if self._state != "running":
            raise PublishError(f"MqttPublisher.subscribe() while {self._state}")
        validate_topic_filter(topic_filter)
        check_qos(qos)
        size = self._settings.inbox_size if queue_size is None else queue_size
        check_int("queue_size", size, 1)
        async with self._sub_lock:
            if any(s.topic_filter == topic_filter for s in self._subs.values()):
                raise PublishError(f"already subscribed to {topic_filter!r}")
            if self._next_sub_id > _MAX_SUBSCRIPTION_ID:
                raise PublishError("out of MQTT subscription identifiers")
            sub = Subscription(self, topic_filter, qos, self._next_sub_id, size)
            self._next_sub_id += 1
            self._subs[sub.ident] = sub
            client = self._client
            if client is not None:
                try:
                    await self._subscribe_on(client, sub)
                except PublishError:
                    del self._subs[sub.ident]
                    raise
                except aiomqtt.MqttError as exc:
                    # The connection is breaking; the reconnect will subscribe it.
                    log.info("MQTT subscribe to %s deferred to reconnect: %s", topic_filter, exc)
        return sub

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty; True if it emptied within ``timeout_s``."""
        if self._outbox.pending == 0:
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._outbox.pending == 0

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until connected, subscribed and ``online``; PublishError on timeout."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except asyncio.TimeoutError as exc:
            raise PublishError(
                f"not connected to {self._settings.redacted_url} within {timeout_s} s"
                f" (last error: {self._last_error})"
            ) from exc

    def stats(self) -> PublisherStats:
        return PublisherStats(
            connected=self._connected.is_set(),
            reconnects=max(0, self._connects - 1),
            enqueued=self._outbox.enqueued,
            sent=self._outbox.sent,
            dropped=self._outbox.dropped,
            pending=self._outbox.pending,
            inbound_dropped=self._inbound_dropped,
            last_error=self._last_error,
        )

    # -- connection task -------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        s = self._settings
        paho_props.install()  # every received packet's properties, without paho's table building
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._status_topic, OFFLINE, qos=1, retain=True),
            # The outbox, not the broker session, carries messages across reconnects.
            clean_start=True,
            keepalive=s.keepalive_s,
            timeout=s.timeout_s,
            tls_context=self._tls,
            logger=_PAHO_LOG,
            queue_type=_counting_queue(self._count_inbound_drop),
            max_queued_incoming_messages=INBOUND_QUEUE_MESSAGES,
            # Decisions are small and latency-bound: don't let Nagle hold them back.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # aiomqtt warns on stderr above 10 unacknowledged calls; the drain keeps up to
        # _IN_FLIGHT publishes out by design (plus status and subscriptions), so only more
        # than that is worth a warning.
        client.pending_calls_threshold = _IN_FLIGHT + _PENDING_CALLS_MARGIN
        paho_read.install(client._client)  # every packet a wake-up brings, in one read
        paho_write.install(client._client)  # a decision leaves when it is published
        # Live packets (QoS 0) go straight to the subscriptions, after any that took
        # paho's path and still wait in aiomqtt's queue.
        queue = client._queue
        if isinstance(queue, _InboundQueue):
            paho_publish.install(
                client._client, self._deliver, lambda: queue.unrouted > 0 or not queue.empty()
            )
        return client

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                async with self._make_client() as client:
                    attempt = 0
                    await self._serve(client)
            except (aiomqtt.MqttError, OSError) as exc:
                self._last_error = str(exc) or type(exc).__name__
                # Warn on failures 1, 2, 4, 8...: an outage stays visible, not a flood.
                level = logging.WARNING if _is_power_of_two(attempt + 1) else logging.DEBUG
                log.log(level, "MQTT %s: %s", self._settings.redacted_url, self._last_error)
            finally:
                self._client = None
                self._connected.clear()
            if self._stop.is_set():
                break
            delay_s = backoff_delay_s(
                attempt, self._settings.reconnect_min_s, self._settings.reconnect_max_s, self._rng
            )
            attempt += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        if not self._stop.is_set():
            await client.publish(self._status_topic, ONLINE, qos=1, retain=True)
            for callback in self._on_connect:
                callback()
            await self._resubscribe(client)
            self._connects += 1
            self._last_error = None
            self._connected.set()
            log.info("MQTT connected to %s as %s", self._settings.redacted_url, self._client_id)
            await self._run_loops(client)
        if self._stop.is_set():
            # Say goodbye explicitly; a clean DISCONNECT follows, so the Will is not sent.
            await client.publish(self._status_topic, OFFLINE, qos=1, retain=True)

    async def _run_loops(self, client: aiomqtt.Client) -> None:
        stopper = asyncio.create_task(self._stop.wait())
        loops = [asyncio.create_task(self._read(client)), asyncio.create_task(self._drain(client))]
        try:
            done, _ = await asyncio.wait([stopper, *loops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._client = None
            self._connected.clear()
            for task in (stopper, *loops):
                task.cancel()
            await asyncio.gather(stopper, *loops, return_exceptions=True)
        for task in loops:
            error = None if task not in done or task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _resubscribe(self, client: aiomqtt.Client) -> None:
        async with self._sub_lock:
            for sub in list(self._subs.values()):
                try:
                    await self._subscribe_on(client, sub)
                except PublishError as exc:
                    log.error("MQTT resubscribe: %s", exc)
            self._client = client

    async def _subscribe_on(self, client: aiomqtt.Client, sub: Subscription) -> None:
        # A subscription identifier tags each delivery with the subscription it matched,
        # so overlapping filters route exactly (the broker sends one copy per match).
        properties = Properties(PacketTypes.SUBSCRIBE)
        properties.SubscriptionIdentifier = sub.ident
        codes = await client.subscribe(sub.topic_filter, qos=sub.qos, properties=properties)
        refused = [code for code in codes if _reason_value(code) >= 0x80]
        if refused:
            raise PublishError(f"broker refused subscription to {sub.topic_filter!r}: {refused[0]}")

    async def _read(self, client: aiomqtt.Client) -> None:
        # aiomqtt's iterator creates a task and waits on it for every message: three
        # trips through the event loop each. Messages already queued (paho hands over
        # all that one socket read completed) are taken directly; the iterator only
        # waits for the next one, and reports a lost connection as before.
        messages = client.messages
        queue = getattr(client, "_queue", None)
        if not isinstance(queue, asyncio.Queue):  # an aiomqtt without it: the iterator alone
            async for message in messages:
                self._route(message)
            return
        while True:
            self._route(await anext(messages))
            if isinstance(queue, _InboundQueue) and queue.unrouted > 0:
                queue.unrouted -= 1
            if queue.empty():
                continue
            # At most half the smallest subscription queue per pass: readers that keep up
            # see the backlog in slices instead of losing what one pass would overflow.
            per_pass = min([_ROUTE_BATCH, *(s._queue_size // 2 for s in self._subs.values())])
            taken = 0
            while not queue.empty():
                self._route(queue.get_nowait())
                taken += 1
                if taken >= per_pass:
                    taken = 0
                    await asyncio.sleep(0)  # let the subscribers take some before routing more

    def _route(self, message: aiomqtt.Message) -> None:
        inbound = InboundMessage(
            topic=message.topic.value,
            payload=_payload_bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
        )
        idents = getattr(message.properties, "SubscriptionIdentifier", None) or ()
        self._dispatch(inbound, idents, message.topic)

    def _deliver(self, topic: str, payload: bytes, retain: bool, idents: tuple[int, ...]) -> bool:
        """Take a QoS 0 message from paho_publish's fast path (on the event loop), or
        leave it to paho's path (False): when it names no subscription, or one that is
        half full, whose reader gets a backlog in slices from _read instead."""
        targets = [self._subs[i] for i in idents if i in self._subs]
        if not targets or any(s._queue.qsize() * 2 >= s._queue_size for s in targets):
            return False
        self._hand_over(InboundMessage(topic=topic, payload=payload, qos=0, retain=retain), targets)
        return True

    def _dispatch(self, inbound: InboundMessage, idents: Sequence[int], topic: aiomqtt.Topic) -> None:
        """Hand one message to the subscriptions it matched: those its subscription
        identifiers name, else (none given) those whose filter ``topic`` matches."""
        if idents:
            targets = [self._subs[i] for i in idents if i in self._subs]
        else:
            targets = [s for s in self._subs.values() if topic.matches(s.topic_filter)]
        self._hand_over(inbound, targets)

    def _hand_over(self, inbound: InboundMessage, targets: list[Subscription]) -> None:
        for sub in targets:
            if not sub._deliver(inbound):
                self._count_inbound_drop(f"subscription {sub.topic_filter} is full")

    def _count_inbound_drop(self, why: str = "the receive queue is full (the service is behind)") -> None:
        self._inbound_dropped += 1
        if _is_power_of_two(self._inbound_dropped):
            log.warning("MQTT %s: dropped a message; %d dropped so far", why, self._inbound_dropped)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Send waiting items in order, up to _IN_FLIGHT before the oldest is
        acknowledged: a decision does not wait for the broker's PUBACK of the one
        before it, which the event loop can only read once the compute side yields.
        Acknowledgements come in order (the outbox's docstring), so items complete
        from the head; after a failure every unacknowledged item waits again.
        One event wakes it: a new item (publish) or a send that ended."""
        sent: deque[tuple[OutboxItem, asyncio.Task[None]]] = deque()
        try:
            while True:
                while sent and sent[0][1].done():
                    sent[0][1].result()  # the connection failed: raise (finally puts them back)
                    self._outbox.complete(sent.popleft()[0])
                while len(sent) < _IN_FLIGHT and (item := self._outbox.begin()) is not None:
                    task = asyncio.create_task(self._send(client, item))
                    task.add_done_callback(lambda _: self._wake.set())
                    sent.append((item, task))
                if not sent:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
        finally:
            # Acknowledged before the end: complete; the rest waits for the next connection.
            while sent and sent[0][1].done() and not sent[0][1].cancelled() \
                    and sent[0][1].exception() is None:
                self._outbox.complete(sent.popleft()[0])
            for _, task in sent:
                task.cancel()
            if sent:
                self._outbox.abort(sent[0][0])
            await asyncio.gather(*(task for _, task in sent), return_exceptions=True)

    async def _send(self, client: aiomqtt.Client, item: OutboxItem) -> None:
        await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain,
                             properties=self._properties)

    async def _unsubscribe(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub._end()
        async with self._sub_lock:
            self._subs.pop(sub.ident, None)
            client = self._client
            if client is not None:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.unsubscribe(sub.topic_filter)


__all__ = [
    "WORKER_PROPERTY",
    "MqttPublisher",
    "Subscription",
    "backoff_delay_s",
    "build_tls_context",
]
