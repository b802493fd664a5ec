"""Helpers for the MQTT tests: a recording subscriber, waits, sample decisions."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from spikecast.runtime.mqtt.settings import MqttSettings
from spikecast.runtime.payload import Decision, TopK

SHA = "ab" * 32


def varint(n: int) -> bytes:
    """An MQTT variable byte integer (remaining lengths, property lengths, identifiers)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def make_decision(seq: int, *, device: str = "cam0", stream: str = "s0") -> Decision:
    return Decision(
        device=device,
        stream=stream,
        seq=seq,
        label="seven",
        class_index=7,
        confidence=0.9,
        expected_accuracy=0.99,
        topk=(TopK("seven", 7, 0.9), TopK("one", 1, 0.05)),
        steps=12,
        exit="confident",
        sensor_t0_us=1000 * seq,
        sensor_t1_us=1000 * seq + 999,
        latency_ms=1.5,
        synops=12345,
        model_sha256=SHA,
    )


def settings_for(broker: Any, **overrides: Any) -> MqttSettings:
    """Fast-reconnecting settings for a test broker (``broker`` has host and port)."""
    fields: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "device": "cam0",
        "keepalive_s": 5,
        "timeout_s": 3.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
    }
    fields.update(overrides)
    return MqttSettings(**fields)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


class Recorder:
    """Messages seen by a test subscriber, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[aiomqtt.Message] = []
        self.arrivals: list[float] = []  # time.monotonic() of each message
        self.connects = 0

    @property
    def payloads(self) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages]  # type: ignore[arg-type]

    async def wait_for(
        self, predicate: Callable[[Recorder], bool], timeout_s: float, what: str
    ) -> None:
        await wait_until(lambda: predicate(self), timeout_s, what)

    async def wait_count(self, n: int, timeout_s: float) -> None:
        await self.wait_for(lambda r: len(r.messages) >= n, timeout_s, f"{n} messages")


@contextlib.asynccontextmanager
async def recording_subscriber(
    host: str,
    port: int,
    topic_filter: str,
    *,
    persistent: bool = False,
    username: str | None = None,
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Recorder]:
    """A real aiomqtt subscriber that records messages and reconnects when dropped.

    ``persistent`` asks for an MQTT 5 session that outlives disconnects (on a
    broker with persistence, also restarts), so QoS 1 messages published while
    this subscriber is away are queued for it rather than lost.
    """
    recorder = Recorder()
    subscribed = asyncio.Event()
    client_id = f"test-sub-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        while True:
            properties = None
            if persistent:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = 300
            try:
                async with aiomqtt.Client(
                    host,
                    port,
                    identifier=client_id,
                    username=username,
                    password=password,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=not persistent,
                    properties=properties,
                    tls_context=tls_context,
                    timeout=3,
                ) as client:
                    await client.subscribe(topic_filter, qos=1)
                    recorder.connects += 1
                    subscribed.set()
                    async for message in client.messages:
                        recorder.messages.append(message)
                        recorder.arrivals.append(time.monotonic())
            except aiomqtt.MqttError:
                await asyncio.sleep(0.02)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        yield recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def retained(
    host: str,
    port: int,
    topic: str,
    *,
    timeout_s: float = 5.0,
    **client_kwargs: Any,
) -> bytes | None:
    """The retained payload on ``topic`` as a fresh client sees it (None if none)."""
    async with aiomqtt.Client(
        host, port, protocol=aiomqtt.ProtocolVersion.V5, timeout=timeout_s, **client_kwargs
    ) as client:
        await client.subscribe(topic, qos=1)

        async def first_retained() -> bytes | None:
            async for message in client.messages:
                if message.retain:
                    return bytes(message.payload)  # type: ignore[arg-type]
            return None

        try:
            return await asyncio.wait_for(first_retained(), 0.5)
        except asyncio.TimeoutError:
            return None


async def send(
    host: str, port: int, topic: str, payloads: list[bytes], **client_kwargs: Any
) -> None:
    """Publish ``payloads`` at QoS 1 from a fresh client."""
    async with aiomqtt.Client(
        host, port, protocol=aiomqtt.ProtocolVersion.V5, timeout=5, **client_kwargs
    ) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)
