"""Immediate writes: a published message is on the socket before publish() returns,
whatever the caller does next on the event loop; the deferred path is kept wherever
writing at once is not safe."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from mqtt_testkit import make_decision, settings_for
from spikecast.runtime.mqtt import MqttPublisher, paho_write
from spikecast.runtime.mqtt.topics import decision_topic

if TYPE_CHECKING:
    from conftest import MosquittoBroker

DECISIONS = decision_topic("cam0", "s0")


class FakePaho:
    """What install() touches on a paho client; loop_write records and may fail."""

    def __init__(self, *, leaves_behind: bool = False, fails: bool = False) -> None:
        self._in_callback_mutex = threading.Lock()
        self.writes = 0
        self.deferred: list[Any] = []
        self.leaves_behind = leaves_behind
        self.fails = fails
        self.on_socket_register_write = lambda c, u, s: self.deferred.append(s)

    def loop_write(self) -> int:
        self.writes += 1
        if self.fails:
            raise OSError("broken pipe")
        return 0

    def want_write(self) -> bool:
        return self.leaves_behind


def test_writes_at_once_on_the_installing_thread() -> None:
    c = FakePaho()
    assert paho_write.install(c)
    c.on_socket_register_write(c, None, "sock")
    assert (c.writes, c.deferred) == (1, [])


def test_what_the_socket_does_not_take_is_left_to_the_deferred_writer() -> None:
    c = FakePaho(leaves_behind=True)
    paho_write.install(c)
    c.on_socket_register_write(c, None, "sock")
    assert (c.writes, c.deferred) == (1, ["sock"])


def test_a_failed_write_goes_to_the_deferred_writer_which_reports_it() -> None:
    c = FakePaho(fails=True)
    paho_write.install(c)
    c.on_socket_register_write(c, None, "sock")
    assert (c.writes, c.deferred) == (1, ["sock"])


def test_inside_a_paho_callback_or_on_another_thread_the_write_is_deferred() -> None:
    c = FakePaho()
    paho_write.install(c)
    with c._in_callback_mutex:
        c.on_socket_register_write(c, None, "in-callback")
    other = threading.Thread(target=c.on_socket_register_write, args=(c, None, "thread"))
    other.start()
    other.join()
    assert (c.writes, c.deferred) == (0, ["in-callback", "thread"])


def test_a_client_without_the_hooks_is_left_alone() -> None:
    assert not paho_write.install(object())
    c = FakePaho()
    c.on_socket_register_write = None  # type: ignore[assignment]
    assert not paho_write.install(c)


async def test_a_decision_leaves_before_the_caller_computes_on_the_loop(
    mosquitto: MosquittoBroker,
) -> None:
    """The service computes on the event loop; a decision published just before a
    long computation reaches a subscriber during it, not after it."""
    arrivals: list[float] = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pw-sub", protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: arrivals.append(time.monotonic())
    sub.connect(mosquitto.host, mosquitto.port)
    sock = sub.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.loop_start()
    try:
        sub.subscribe(DECISIONS, qos=1)
        assert subscribed.wait(5)
        async with MqttPublisher(settings_for(mosquitto), rng=random.Random(1)) as pub:
            await pub.wait_connected(5)
            for seq in range(5):
                await pub.publish(DECISIONS, make_decision(seq).to_dict())
                published = time.monotonic()
                time.sleep(0.5)  # "compute": the event loop does nothing else meanwhile
                deadline = time.monotonic() + 5
                while len(arrivals) <= seq and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert len(arrivals) == seq + 1
                assert arrivals[seq] - published < 0.4, "the decision waited for the loop"
    finally:
        sub.loop_stop()
        sub.disconnect()
