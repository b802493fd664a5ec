"""Live DV sources: ``--source dv://HOST:PORT`` (docs/sources.md), the ``dv`` extra.

A TCP client of an AEDAT4 network stream, as DV (iniVation's software) and
dv-processing's ``dv.io.NetworkWriter`` serve it: ``dv.io.NetworkReader(HOST, PORT)``.
The stream states its sensor size (its event stream's resolution), so no
``--sensor-size`` is needed; it goes through the same geometry check as a file's
(``--fit``, ``--crop``, ``--downsample``).

One DV source is one stream (``--stream``). The reader is polled without blocking
(dv-processing receives on its own thread and queues whole packets); each packet's
events become EVENT_DTYPE (``t`` is dv's microseconds) and go on the same queue as
live MQTT packets and UDP datagrams (events + a watermark = their newest time): shed
with counters when the queue is full, checked against the live limits, closed after
``idle_timeout_s`` without events. TCP loses nothing in silence: when the server
closes the connection, the stream ends and so does the run (its pending decision is
made, as at the end of a file).

dv_processing is imported only here, and this module only when a dv:// source runs
(or its replay tool).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.events import EVENT_DTYPE, merge_events
from spikecast.runtime.encode import check_geometry
from spikecast.runtime.limits import LimitError
from spikecast.runtime.sources import HostPort

if TYPE_CHECKING:
    from spikecast.runtime.service import Service

log = logging.getLogger("spikecast.dv")

#: Seconds between polls of the reader when it had nothing (the latency it adds).
POLL_S = 0.002
#: Packets taken per wake-up before the event loop gets a turn.
_BULK = 256
#: Packets the replay tool lets wait in its writer's queue.
_MAX_QUEUED = 32
#: Seconds the replay tool waits for its writer to flush before it exits.
_FLUSH_S = 0.5
#: Seconds to connect and read the stream's description.
CONNECT_TIMEOUT_S = 10.0


class DvAddress(HostPort):
    """``dv://HOST:PORT``: the DV server to connect to."""

    scheme = "dv"
    label = "a DV source"


def is_dv(source: str) -> bool:
    return DvAddress.matches(source)


def parse_dv(source: str) -> DvAddress:
    return DvAddress.parse(source)  # type: ignore[return-value]


def _dv() -> Any:
    try:
        import dv_processing
    except ImportError as exc:
        raise ParameterError(
            "a dv:// source needs dv-processing: pip install 'spikecast[dv]'"
        ) from exc
    return dv_processing


def store_events(store: Any) -> np.ndarray:
    """A dv EventStore (timestamp i8 us, x i2, y i2, polarity i1) -> EVENT_DTYPE."""
    rec = store.numpy()
    ev = np.empty(len(rec), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = rec["x"], rec["y"], rec["timestamp"], rec["polarity"] != 0
    return ev


class DvReceiver:
    """A connected ``dv.io.NetworkReader``, polled without blocking."""

    def __init__(self, address: DvAddress) -> None:
        dv = _dv()
        try:
            self.reader = dv.io.NetworkReader(address.host, address.port)
        except RuntimeError as exc:
            raise ParameterError(f"cannot connect to {address}: {exc}") from exc
        self.address = address
        self.camera = str(self.reader.getCameraName())
        resolution = self.reader.getEventResolution() if self.reader.isEventStreamAvailable() else None
        if resolution is None:
            raise ParameterError(f"{address} ({self.camera}) sends no event stream")
        #: The sensor size the stream states (width, height).
        self.sensor = (int(resolution[0]), int(resolution[1]))
        self.packets = 0

    def read(self, limit: int = _BULK) -> list[np.ndarray]:
        """Up to ``limit`` packets' events waiting now (none if none is)."""
        out = []
        for _ in range(limit):
            store = self.reader.getNextEventBatch()
            if store is None:
                break
            out.append(store_events(store))
        self.packets += len(out)
        return out

    @property
    def running(self) -> bool:
        """False once the server has closed the connection."""
        return bool(self.reader.isRunning())

    def close(self) -> None:
        self.reader = None


async def connect(address: DvAddress, timeout_s: float = CONNECT_TIMEOUT_S) -> DvReceiver:
    """Connect on a worker thread (the reader waits for the stream's description)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(DvReceiver, address), timeout_s)
    except asyncio.TimeoutError as exc:
        raise ParameterError(f"{address} did not describe its stream within {timeout_s:.0f} s") from exc


async def dv_feed(service: Service) -> None:
    """The service's feeder for ``dv://``: poll, convert, check, enqueue until the server
    closes the connection or the service is stopped."""
    from spikecast.runtime.service import _Item

    cfg = service.cfg
    rx = await connect(parse_dv(cfg.source))
    try:
        if cfg.sensor_size is not None and tuple(cfg.sensor_size) != rx.sensor:
            raise ParameterError(f"{rx.address} states its sensor size {rx.sensor[0]}x{rx.sensor[1]}; "
                                 f"--sensor-size says {cfg.sensor_size[0]}x{cfg.sensor_size[1]}")
        service.mapping, warning = check_geometry(str(rx.address), rx.sensor, service.network.input,
                                                  service.mapping, fit=cfg.fit)
        if warning is not None:
            log.warning("%s", warning)
        service.dv = rx
        log.info("connected to %s (%s, sensor %dx%d)", rx.address, rx.camera, *rx.sensor)
        stream = cfg.stream
        while True:
            # Asked before reading: a read after "closed" has drained what came with the close.
            running = rx.running
            packets = rx.read()
            if not packets:
                if not running:
                    await _closed(service, rx, stream)
                    return
                await asyncio.sleep(POLL_S)
                continue
            arrival = time.perf_counter()
            events = _checked(service, packets)
            service._active[stream] = time.monotonic()
            if len(events):
                await service._enqueue(_Item(stream, arrival, events=events,
                                             watermark_us=int(events["t"][-1]),
                                             n_events=len(events)), shed=True)
    finally:
        rx.close()


async def _closed(service: Service, rx: DvReceiver, stream: str) -> None:
    """The server closed the connection: the stream ends (its pending decision is made,
    as for an idle live stream), then the run."""
    from spikecast.runtime.service import _Item

    log.info("%s closed the stream after %d packets", rx.address, rx.packets)
    if service._active.pop(stream, None) is not None:
        service.state.metrics.streams_closed += 1
        await service._enqueue(_Item(stream, time.perf_counter(), end=True), shed=False)


def _checked(service: Service, packets: list[np.ndarray]) -> np.ndarray:
    """The packets' events in time order; a packet over a live limit is dropped and counted."""
    dt = service.network.input.dt_us
    m = service.state.metrics
    parts = []
    for ev in packets:
        if not len(ev):
            continue
        try:
            service.limits.check_packet(int(ev["t"].min()), int(ev["t"].max()), dt)
        except LimitError as exc:
            m.count_drop(exc.cause)
            n = m.dropped[exc.cause]
            if 10 ** (len(str(n)) - 1) == n:
                log.warning("dropped a packet (%s, %d so far): %s", exc.cause, n, exc)
            continue
        parts.append(ev)
    return merge_events(parts)


# -- the sending side: recorded files served to dv:// sources (tests, demos) ------------


def event_store(events: np.ndarray) -> Any:
    """EVENT_DTYPE events -> a dv EventStore."""
    store = _dv().EventStore()
    for t, x, y, p in zip(events["t"].tolist(), events["x"].tolist(), events["y"].tolist(),
                          events["p"].tolist(), strict=True):
        store.push_back(t, x, y, bool(p))
    return store


def serve_recording(writer: Any, events: np.ndarray, *, realtime: bool = True,
                    speed: float = 1.0) -> int:
    """Write a recording's events to a ``dv.io.NetworkWriter``, 1 ms of sensor time a
    packet, paced by sensor time (``realtime``, sped up ``speed`` times); the packets
    written. Returns once the writer has sent them all."""
    from spikecast.runtime.replay import replay_sync

    n = 0
    for chunk in replay_sync(events, chunk_us=1000, realtime=realtime, speed=speed):
        if len(chunk.events):
            # The writer drops packets when its queue overflows (the reader never learns of
            # it): wait for room, so a replay loses nothing before it reaches spikecast.
            while writer.getQueuedPacketCount() >= _MAX_QUEUED and writer.getClientCount():
                time.sleep(0.001)
            writer.writeEvents(event_store(chunk.events))
            n += 1
    while writer.getQueuedPacketCount() and writer.getClientCount():
        time.sleep(0.005)
    # An empty queue means handed to the writer's I/O thread, not yet on the socket: give
    # it time to flush before the process ends (os._exit in main), or the last packet is lost.
    time.sleep(_FLUSH_S)
    return n


def main(argv: list[str] | None = None) -> int:
    """``python -m spikecast.runtime.dv REC dv://HOST:PORT``: serve a recorded file as a
    DV network stream (dv-processing's NetworkWriter) at real time, to the first
    dv:// source that connects (a demo or a test without a camera)."""
    import argparse
    import os

    from spikecast.runtime.readers import read_events

    ap = argparse.ArgumentParser(prog="python -m spikecast.runtime.dv", description=main.__doc__)
    ap.add_argument("recording", help="an event file spikecast reads (.bin .aedat4 .raw .dat .npz ...)")
    ap.add_argument("address", help="dv://HOST:PORT to serve on")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed factor")
    ap.add_argument("--as-fast-as-possible", dest="realtime", action="store_false", help="no pacing")
    ap.add_argument("--wait", type=float, default=30.0, metavar="S",
                    help="seconds to wait for a client (default 30)")
    args = ap.parse_args(argv)
    rec = read_events(args.recording)
    address = parse_dv(args.address)
    dv = _dv()
    stream = dv.io.Stream.EventStream(0, "events", "spikecast-replay", (rec.width, rec.height))
    writer = dv.io.NetworkWriter(address.host, address.port, stream)
    print(f"serving {args.recording} ({rec.width}x{rec.height}) on {address}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.wait
    while not writer.getClientCount():
        if time.monotonic() > deadline:
            print(f"no client connected to {address} within {args.wait:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.01)
    n = serve_recording(writer, rec.events, realtime=args.realtime, speed=args.speed)
    print(f"sent {len(rec.events)} events in {n} packets to {address}", file=sys.stderr, flush=True)
    # dv-processing 2.0.4's NetworkWriter hangs when destroyed while a client is still
    # connected; the process ends without destroying it (the OS closes the connection,
    # which ends the client's stream).
    sys.stdout.flush()
    os._exit(0)


__all__ = ["DvAddress", "DvReceiver", "connect", "dv_feed", "event_store", "is_dv", "parse_dv",
           "serve_recording", "store_events"]


if __name__ == "__main__":
    sys.exit(main())
