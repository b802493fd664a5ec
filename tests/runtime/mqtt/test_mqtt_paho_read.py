"""The buffered reader hands paho the same packets, in the same order, as paho's own
reads do, whatever way the bytes are split on the wire; and it never leaves a byte in
user space when loop_read returns."""

from __future__ import annotations

import random
from collections.abc import Iterable

import paho.mqtt.client as paho
import pytest
from mqtt_testkit import varint
from paho.mqtt.enums import MQTTErrorCode
from spikecast.runtime.mqtt import paho_read
from spikecast.runtime.mqtt.paho_read import BufferedReader


def _publish(topic: str, payload: bytes, sub_id: int | None) -> bytes:
    """An MQTT 5 QoS 0 PUBLISH, with a subscription identifier when given."""
    props = b"" if sub_id is None else b"\x0b" + varint(sub_id)
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + varint(len(props)) + props + payload
    return b"\x30" + varint(len(body)) + body


class FakeSocket:
    """A non-blocking socket whose recv returns the given chunks, then EAGAIN."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.recv_calls = 0

    def recv(self, bufsize: int) -> bytes:
        self.recv_calls += 1
        if not self.chunks:
            raise BlockingIOError
        head = self.chunks[0]
        out, rest = head[:bufsize], head[bufsize:]
        if rest:
            self.chunks[0] = rest
        else:
            self.chunks.pop(0)
        return out

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.chunks = []


Received = list[tuple[str, bytes | bytearray, object]]  # topic, payload, subscription id


def _client(sock: FakeSocket, patched: bool) -> tuple[paho.Client, Received]:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    got: Received = []

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        got.append((m.topic, m.payload, getattr(m.properties, "SubscriptionIdentifier", None)))

    c.on_message = on_message
    c._sock = sock  # type: ignore[assignment]
    if patched:
        assert paho_read.install(c)
    return c, got


def _drain(c: paho.Client, sock: FakeSocket, max_calls: int = 100_000) -> int:
    """loop_read until the socket has nothing more (as the event loop would call it
    while the socket is readable); the number of calls."""
    calls = 0
    while sock.chunks or (calls == 0):
        assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        calls += 1
        assert calls < max_calls
    return calls


def _split(data: bytes, rng: random.Random, n_cuts: int) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(n_cuts, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _stream(rng: random.Random, n: int) -> bytes:
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 5, 127, 128, 300, 16_383, 16_384, 70_000])
        out.append(_publish(f"spikecast/s{i % 7}/events", rng.randbytes(size), rng.choice([None, 1, 200])))
    return b"".join(out)


@pytest.mark.parametrize("seed", range(12))
def test_same_messages_as_paho_for_any_split_of_the_bytes(seed: int) -> None:
    rng = random.Random(seed)
    data = _stream(rng, 40)
    chunks = _split(data, rng, rng.choice([0, 3, 40, 400]))
    ref_sock, new_sock = FakeSocket(chunks), FakeSocket(chunks)
    ref, want = _client(ref_sock, patched=False)
    new, got = _client(new_sock, patched=True)
    _drain(ref, ref_sock)
    _drain(new, new_sock)
    assert len(want) == 40
    assert got == want


def test_one_read_hands_over_every_packet_it_completed() -> None:
    data = b"".join(_publish("spikecast/s/events", bytes(100), 1) for _ in range(16))
    sock = FakeSocket([data])
    c, got = _client(sock, patched=True)
    assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert len(got) == 16
    # One system call took the burst (paho alone makes three or four per packet); the
    # socket's readiness, level-triggered, brings the loop back if more has come.
    assert sock.recv_calls == 1


def test_a_packet_cut_in_its_length_bytes_completes_on_the_next_wake_up() -> None:
    pkt = _publish("t", bytes(300), None)  # two length bytes
    sock = FakeSocket([pkt[:2], pkt[2:]])
    c, got = _client(sock, patched=True)
    c.loop_read()
    assert got == []
    c.loop_read()
    assert [len(p) for _, p, _ in got] == [300]


def test_nothing_stays_buffered_when_loop_read_returns() -> None:
    rng = random.Random(5)
    data = _stream(rng, 30)
    sock = FakeSocket(_split(data, rng, 25))
    c, _ = _client(sock, patched=True)
    reader = c._sock_recv.__self__  # type: ignore[attr-defined]
    while sock.chunks:
        c.loop_read()
        assert reader.buffered() == 0


def test_end_of_stream_is_a_lost_connection_as_in_paho() -> None:
    class Closed(FakeSocket):
        def recv(self, bufsize: int) -> bytes:
            return b""

    for patched in (False, True):
        c, _ = _client(Closed([]), patched=patched)
        assert c.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST


def test_no_socket_is_no_connection() -> None:
    c, _ = _client(FakeSocket([]), patched=True)
    c._sock = None
    assert c.loop_read() == MQTTErrorCode.MQTT_ERR_NO_CONN


def test_reader_serves_small_reads_from_one_real_read() -> None:
    reads: list[int] = []

    def read(n: int) -> bytes:
        reads.append(n)
        return b"abcdef"

    r = BufferedReader(read)
    sock = object()
    r.allow_read(sock)
    assert [r.recv(1), r.recv(2), r.recv(10)] == [b"a", b"bc", b"def"]
    assert reads == [paho_read.CHUNK_BYTES]
    with pytest.raises(BlockingIOError):
        r.recv(1)  # one real read per allowance
    r.allow_read(sock)
    assert r.recv(3) == b"abc"
    r.allow_read(object())  # a new socket: what the old one left is gone
    assert r.buffered() == 0


def test_reader_passes_the_reads_errors_through() -> None:
    def read(n: int) -> bytes:
        raise ConnectionResetError("gone")

    r = BufferedReader(read)
    r.allow_read(object())
    with pytest.raises(ConnectionResetError):
        r.recv(1)


def test_install_leaves_an_unexpected_client_alone() -> None:
    class NotPaho:
        pass

    assert paho_read.install(NotPaho()) is False
