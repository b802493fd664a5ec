"""The ``udp://`` live source: faery itself sending N-MNIST, SPIF datagrams built to
the spec, and the kernel's drops counted. No broker: decisions go to stdout."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spikecast.ext.core.errors import ParameterError, StreamError
from spikecast.ext.core.events import EVENT_DTYPE
from spikecast.runtime.config import RunConfig
from spikecast.runtime.decision import OperatingPoint
from spikecast.runtime.limits import LiveLimits
from spikecast.runtime.mqtt.stdout import StdoutPublisher
from spikecast.runtime.readers import read_events
from spikecast.runtime.service import Service, serve
from spikecast.runtime.udp import (
    Decoder,
    UdpAddress,
    UdpReceiver,
    encode_datagrams,
    parse_size,
    parse_udp,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "bench" / "models" / "nmnist.scn"
NMNIST = ROOT.parent / "shared" / "data" / "nmnist" / "train"
POINT = OperatingPoint(tau=0.9, t_min=5, t_max=200)


def nmnist_files(n: int) -> list[Path]:
    files = sorted(NMNIST.glob("*.bin"))[:n]
    if not files or not MODEL.exists():
        pytest.skip("no N-MNIST recordings or model (shared data not present)")
    return files


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def udp_service(port: int, **kw: Any) -> AsyncIterator[Service]:
    """An in-process service listening on udp://127.0.0.1:port once this yields."""
    kw.setdefault("point", POINT)
    cfg = RunConfig(model=MODEL, source=f"udp://127.0.0.1:{port}",
                    limits=LiveLimits(idle_timeout_s=0.5), **kw)
    pub = StdoutPublisher()
    svc = Service(cfg, pub)
    async with pub:
        task = asyncio.create_task(svc.run())
        try:
            deadline = time.monotonic() + 10
            while svc.udp is None:
                assert not task.done(), task
                assert time.monotonic() < deadline, "the UDP source never bound"
                await asyncio.sleep(0.01)
            yield svc
        finally:
            svc.stop()
            await asyncio.wait_for(task, 20)


async def until(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def same_decision(a: Any, b: Any) -> tuple[Any, ...]:
    return (a.label, a.class_index, a.steps, a.exit, a.synops, round(a.confidence, 9))


# -- formats ---------------------------------------------------------------------------


def test_addresses_and_sizes() -> None:
    assert parse_udp("udp://127.0.0.1:7777") == UdpAddress("127.0.0.1", 7777)
    assert parse_udp("udp://[::1]:9") == UdpAddress("::1", 9)
    assert parse_size("640x480") == (640, 480)
    for bad in ("udp://:1", "udp://h", "udp://h:x", "tcp://h:1", "udp://h:70000"):
        with pytest.raises(ParameterError):
            parse_udp(bad)
    for bad in ("640", "0x480", "ax4"):
        with pytest.raises(ParameterError):
            parse_size(bad)
    with pytest.raises(ParameterError):
        RunConfig(model=MODEL, source="udp://127.0.0.1:1", udp_format="evt3")
    assert RunConfig(model=MODEL, source="udp://h:1", sensor_size="34x34").sensor_size == (34, 34)


def test_faery_records_decode() -> None:
    faery = pytest.importorskip("faery")
    ev = np.zeros(3, faery.EVENTS_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["on"] = [5, 6, 2**40], [1, 2, 33], [3, 4, 0], [True, False, True]
    assert faery.EVENTS_DTYPE.itemsize == 13
    got = Decoder("faery").decode(ev.tobytes(), 0)
    assert got.dtype == EVENT_DTYPE
    assert got["t"].tolist() == [5, 6, 2**40] and got["x"].tolist() == [1, 2, 33]
    assert got["y"].tolist() == [3, 4, 0] and got["p"].tolist() == [1, 0, 1]
    with pytest.raises(StreamError):
        Decoder("faery").decode(ev.tobytes()[:-1], 0)


def test_faery_compact_records_unwrap_32_bit_time() -> None:
    raw = np.zeros(3, [("t", "<u4"), ("x", "<u2"), ("y+on", "<u2")])
    raw["t"] = [2**32 - 10, 2**32 - 1, 5]  # a wrap between the second and the third
    raw["x"], raw["y+on"] = [7, 8, 9], [(3 << 1) | 1, 4 << 1, (33 << 1) | 1]
    got = Decoder("faery-compact").decode(raw.tobytes(), 0)
    assert got["t"].tolist() == [2**32 - 10, 2**32 - 1, 2**32 + 5]
    assert got["y"].tolist() == [3, 4, 33] and got["p"].tolist() == [1, 0, 1]


def spif_words(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """SPIF events without timestamps, built to the spec: bit 31 = 1 (no timestamp),
    bits 30..16 x, bit 15 polarity, bits 14..0 y; little-endian u32."""
    return ((1 << 31) | (x.astype(np.uint32) << 16) | (p.astype(np.uint32) << 15)
            | y.astype(np.uint32)).astype("<u4")


def test_spif_words_decode_with_arrival_time_or_their_timestamps() -> None:
    x, y, p = np.array([0, 33, 639]), np.array([0, 12, 479]), np.array([1, 0, 1])
    got = Decoder("spif").decode(spif_words(x, y, p).tobytes(), 1234)
    assert got["x"].tolist() == [0, 33, 639] and got["y"].tolist() == [0, 12, 479]
    assert got["p"].tolist() == [1, 0, 1] and got["t"].tolist() == [1234] * 3
    # aestream's include_timestamp: bit 31 = 0, then a u32 word of microseconds.
    pairs = np.zeros(6, "<u4")
    pairs[0::2] = spif_words(x, y, p) & 0x7FFF_FFFF
    pairs[1::2] = [100, 200, 300]
    got = Decoder("spif").decode(pairs.tobytes(), 1234)
    assert got["t"].tolist() == [100, 200, 300] and got["x"].tolist() == [0, 33, 639]
    mixed = pairs.copy()
    mixed[0] |= 1 << 31
    with pytest.raises(StreamError):
        Decoder("spif").decode(mixed.tobytes(), 0)


# -- faery itself, end to end ----------------------------------------------------------


def faery_send(path: Path, ev: np.ndarray, port: int) -> None:
    """faery's own CLI: ``faery input file REC.es output udp 127.0.0.1:PORT``."""
    sent = subprocess.run([sys.executable, "-m", "faery", "input", "file", str(path), "output",
                           "udp", f"127.0.0.1:{port}", "--no-progress"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stderr


@pytest.mark.parametrize(("how", "index", "point"), [
    ("cli", 0, POINT), ("api", 0, POINT), ("api", 1, POINT), ("api", 2, POINT),
    ("api", 0, None),  # the model's point: undecided at the end of the recording
])
async def test_faery_sends_nmnist_and_the_decision_is_the_file_sources(
    tmp_path: Path, how: str, index: int, point: OperatingPoint | None
) -> None:
    """faery sends an N-MNIST recording as fast as the socket takes it (it has no
    real-time pacing); a few thousand events fit the receive buffer, so nothing is lost.
    ``cli``: the recording as an .es file through ``faery input file ... output udp``;
    ``api``: faery's ``EventsStream.to_udp`` straight from the events (recordings 1-3)."""
    faery = pytest.importorskip("faery")
    path = nmnist_files(3)[index]
    rec = read_events(path)
    (made,) = await serve(RunConfig(model=MODEL, source=str(path), point=point))
    ev = np.zeros(len(rec.events), faery.EVENTS_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["on"] = rec.events["t"], rec.events["x"], rec.events["y"], rec.events["p"]
    stream = faery.events_stream_from_array(ev, dimensions=(rec.width, rec.height))
    port = free_port()
    async with udp_service(port, stream="nmnist", sensor_size=(34, 34), point=point) as svc:
        if how == "cli":
            es = tmp_path / "rec.es"
            stream.to_file(es)
            await asyncio.to_thread(faery_send, es, ev, port)
        else:
            await asyncio.to_thread(stream.to_udp, ("127.0.0.1", port))
        await until(lambda: svc.state.metrics.streams_closed == 1, 20, "the stream to go idle")
        await until(lambda: svc.queue.empty() and len(svc.decisions) > 0, 10, "decisions")
        rx = svc.udp
    assert rx is not None and rx.datagrams == -(-len(ev) // 100)  # 100 events a datagram
    assert rx.drops == 0 and svc.state.metrics.events_in == len(rec.events)
    line, status = svc.report()
    assert status == 0 and "dropped: none" in line, line
    first = svc.decisions[0]
    assert first.stream == "nmnist"
    if made.exit == "end_of_stream":
        # Undecided when the recording ends: the file source completes the steps up to
        # the end marker the replay sends after the file's last event, the UDP stream ends at its last event's
        # step (closed when idle). The same label, a few steps fewer.
        assert (first.exit, first.label) == (made.exit, made.label)
        assert made.steps - 10 < first.steps <= made.steps
        return
    # Event times, not arrival times, set the step grid: the same steps, the same decision.
    assert same_decision(first, made) == same_decision(made, made)
    if how == "api":
        assert (first.sensor_t0_us, first.sensor_t1_us) == (made.sensor_t0_us, made.sensor_t1_us)
    else:  # faery's .es writer counts time from the first event: the same span, shifted
        assert first.sensor_t1_us - first.sensor_t0_us == made.sensor_t1_us - made.sensor_t0_us


async def test_spif_datagrams_are_decided_on_with_arrival_times() -> None:
    rec = read_events(nmnist_files(1)[0])
    ev = rec.events
    words = spif_words(ev["x"], ev["y"], ev["p"])
    port = free_port()
    async with udp_service(port, udp_format="spif", sensor_size=(34, 34), stream="spif") as svc:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            # Paced by sensor time, 1 ms of events a datagram: arrival time stands in for it.
            steps = ev["t"] // 1000
            for k in np.unique(steps):
                tx.sendto(words[steps == k].tobytes(), ("127.0.0.1", port))
                await asyncio.sleep(0.001)
            tx.sendto(b"\x01\x02\x03", ("127.0.0.1", port))  # not whole words: a bad datagram
        await until(lambda: svc.state.metrics.streams_closed == 1, 20, "the stream to go idle")
        await until(lambda: svc.queue.empty(), 10, "the queue to drain")
    assert svc.state.metrics.events_in == len(ev)
    assert svc.decisions and all(d.stream == "spif" for d in svc.decisions)
    assert svc.state.metrics.dropped.get("bad_packets") == 1


# -- loss accounting -------------------------------------------------------------------


def test_a_full_receive_buffer_drops_and_the_kernel_count_says_how_many() -> None:
    rx = UdpReceiver(UdpAddress("127.0.0.1", 0), rcvbuf=1024)
    try:
        n = 200
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(n):
                tx.sendto(bytes(1300), ("127.0.0.1", rx.address.port))
        got = 0
        while batch := rx.read():
            got += len(batch)
        final = rx.final_drops()
    finally:
        rx.close()
    assert 0 < got < n
    assert final == n - got  # every datagram is either read or counted: none lost in silence


async def test_a_flooded_cli_run_exits_3_and_counts_kernel_drops(tmp_path: Path) -> None:
    nmnist_files(1)
    port = free_port()
    log = tmp_path / "svc.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spikecast.runtime.cli", "run", "--model", str(MODEL),
            "--source", f"udp://127.0.0.1:{port}", "--sensor-size", "34x34",
            "--udp-rcvbuf", "1024", stdout=asyncio.subprocess.DEVNULL, stderr=err)
    try:
        await until(lambda: b"listening on udp://" in log.read_bytes() or proc.returncode is not None,
                    30, "the CLI to listen")
        record = np.zeros(100, [("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "u1")])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for k in range(3000):
                record["t"] = 1000 * k + np.arange(100)
                tx.sendto(record.tobytes(), ("127.0.0.1", port))
        await asyncio.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    line = text.strip().splitlines()[-1]
    assert rc == 3, text[-3000:]
    assert "dropped by the kernel (receive buffer full)" in line, line
    assert "Traceback" not in text


@pytest.mark.parametrize("fmt", ["faery", "faery-compact"])
async def test_a_recording_replayed_at_real_time_decides_like_the_file(fmt: str) -> None:
    """``python -m spikecast.runtime.udp REC udp://...`` paces the recording by sensor time."""
    path = nmnist_files(1)[0]
    (made,) = await serve(RunConfig(model=MODEL, source=str(path), point=POINT))
    port = free_port()
    async with udp_service(port, udp_format=fmt, sensor_size=(34, 34)) as svc:
        t0 = time.monotonic()
        sent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spikecast.runtime.udp", str(path), f"udp://127.0.0.1:{port}",
            "--udp-format", fmt)
        assert await asyncio.wait_for(sent.wait(), 30) == 0
        took = time.monotonic() - t0
        await until(lambda: svc.state.metrics.streams_closed == 1, 20, "the stream to go idle")
        await until(lambda: svc.queue.empty() and len(svc.decisions) > 0, 10, "decisions")
    rec = read_events(path)
    assert took >= (int(rec.events["t"][-1]) - int(rec.events["t"][0])) / 1e6  # real time
    assert svc.state.metrics.events_in == len(rec.events) and svc.udp is not None and svc.udp.drops == 0
    first = svc.decisions[0]
    assert same_decision(first, made) == same_decision(made, made)
    assert (first.sensor_t0_us, first.sensor_t1_us) == (made.sensor_t0_us, made.sensor_t1_us)


def test_encoded_datagrams_decode_to_the_same_events() -> None:
    ev = read_events(nmnist_files(1)[0]).events[:250]
    for fmt in ("faery", "faery-compact", "spif"):
        dec = Decoder(fmt)
        back = np.concatenate([dec.decode(d, 7) for d in encode_datagrams(ev, fmt)])
        for f in ("x", "y", "p"):
            assert back[f].tolist() == ev[f].tolist(), (fmt, f)
        assert back["t"].tolist() == (ev["t"].tolist() if fmt != "spif" else [7] * len(ev))


async def test_a_full_queue_sheds_whole_datagram_batches_with_counters() -> None:
    nmnist_files(1)
    port = free_port()
    ev = np.zeros(100, EVENT_DTYPE)
    ev["t"] = np.arange(100)
    async with udp_service(port, queue_events=50, sensor_size=(34, 34)) as svc:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(encode_datagrams(ev)[0], ("127.0.0.1", port))
        await until(lambda: svc.state.metrics.dropped.get("packets_shed") == 1, 10, "a shed batch")
    assert svc.state.metrics.dropped["events_shed"] == 100 and svc.state.metrics.events_in == 0
    line, status = svc.report()
    assert status == 3 and "100 events shed (queue full) in 1 packet" in line, line


async def test_a_sensor_bigger_than_the_input_is_refused_or_fitted() -> None:
    nmnist_files(1)
    cfg = RunConfig(model=MODEL, source=f"udp://127.0.0.1:{free_port()}", sensor_size=(640, 480))
    with pytest.raises(ParameterError, match="--fit"):
        await asyncio.wait_for(serve(cfg), 10)
    async with udp_service(free_port(), sensor_size=(640, 480), fit=True) as svc:
        pass
    assert svc.mapping.flags()  # the crop/downsample that fits 640x480 into 34x34
