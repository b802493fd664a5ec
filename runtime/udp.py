"""Live UDP sources: ``--source udp://HOST:PORT`` (docs/sources.md).

Three datagram formats (``--udp-format``), none with a header or sequence numbers:

- ``faery`` (default): faery's ``t64_x16_y16_on8`` records, 13 bytes each, packed,
  little-endian: ``t`` u64 (us), ``x`` u16, ``y`` u16, ``on`` u8. What
  ``faery ... output udp HOST:PORT`` sends by default (100 events a datagram).
- ``faery-compact``: faery's ``t32_x16_y15_on1`` records, 8 bytes: ``t`` u32 (us,
  wraps every 71.6 min; unwrapped here as faery's own decoder does), ``x`` u16, then
  u16 ``y << 1 | on``.
- ``spif``: SPIF/aestream 32-bit little-endian words, bit 31 = 1 (no timestamp),
  x in bits 30..16, polarity in bit 15, y in bits 14..0; the event time is the
  datagram's arrival time. Words with bit 31 = 0 carry a timestamp: each is followed
  by a u32 word of microseconds (aestream's ``include_timestamp``), unwrapped.

One UDP source is one stream (``--stream``). Its datagrams are read in bulk from a
non-blocking socket with a large receive buffer, decoded with numpy, and put on the
same queue as live MQTT packets (events + a watermark = their newest time): shed
with counters when the queue is full, checked against the live limits, closed after
``idle_timeout_s`` without datagrams. UDP loses datagrams in silence when the receive
buffer overflows; the kernel counts them per socket and this source reports them as
``datagrams_dropped_kernel`` (SO_RXQ_OVFL ancillary data, and the drops column of
/proc/net/udp at exit), a loss in the summary line and exit status 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from spikecast.ext.core.errors import ParameterError, StreamError
from spikecast.ext.core.events import EVENT_DTYPE, merge_events
from spikecast.runtime.encode import check_geometry
from spikecast.runtime.limits import LimitError
from spikecast.runtime.sources import HostPort

if TYPE_CHECKING:
    from spikecast.runtime.service import Service

log = logging.getLogger("spikecast.udp")

FORMATS = ("faery", "faery-compact", "spif")
#: faery's t64_x16_y16_on8 record (faery.EVENTS_DTYPE as bytes on a little-endian host).
FAERY_DTYPE = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "u1")])
#: faery's t32_x16_y15_on1 record.
FAERY_COMPACT_DTYPE = np.dtype([("t", "<u4"), ("x", "<u2"), ("y_on", "<u2")])
#: The receive buffer asked for by default (the kernel may grant less: it is read back).
DEFAULT_RCVBUF = 8 << 20
#: Datagrams read per wake-up before the event loop gets a turn.
_BULK = 1024
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux, needs CAP_NET_ADMIN
_MAX_DATAGRAM = 65536


class UdpAddress(HostPort):
    """``udp://HOST:PORT`` (``udp://[::1]:PORT`` for IPv6): the address to bind (port 0: any)."""

    scheme = "udp"
    label = "a UDP source"
    min_port = 0


def is_udp(source: str) -> bool:
    return UdpAddress.matches(source)


def parse_udp(source: str) -> UdpAddress:
    return UdpAddress.parse(source)  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height)."""
    w, sep, h = str(text).lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or not (0 < int(w) <= 65536 and 0 < int(h) <= 65536):
        raise ParameterError(f"a sensor size is WIDTHxHEIGHT (such as 640x480), not {text!r}")
    return int(w), int(h)


class Decoder:
    """Datagram bytes -> EVENT_DTYPE events, for one format; keeps the 32-bit unwrap."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ParameterError(f"udp format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.fmt = fmt
        self._offset = 0  # added to 32-bit timestamps after a wrap
        self._last = 0  # the newest 32-bit-derived time, to see a wrap

    def decode(self, data: bytes, arrival_us: int) -> np.ndarray:
        """The events of one datagram; StreamError if it is not whole records."""
        if self.fmt == "faery":
            rec = np.frombuffer(self._whole(data, 13), FAERY_DTYPE)
            return _events(rec["x"], rec["y"], rec["t"].astype(np.int64, copy=False), rec["on"] & 1)
        if self.fmt == "faery-compact":
            rec = np.frombuffer(self._whole(data, 8), FAERY_COMPACT_DTYPE)
            return _events(rec["x"], rec["y_on"] >> 1, self._unwrap(rec["t"]), rec["y_on"] & 1)
        return self._spif(np.frombuffer(self._whole(data, 4), "<u4"), arrival_us)

    @staticmethod
    def _whole(data: bytes, size: int) -> bytes:
        if not data or len(data) % size:
            raise StreamError(f"a {len(data)}-byte datagram is not whole {size}-byte records")
        return data

    def _spif(self, words: np.ndarray, arrival_us: int) -> np.ndarray:
        if words[0] & 0x8000_0000:
            if not np.all(words & 0x8000_0000):
                raise StreamError("SPIF datagram mixes words with and without timestamps")
            t = np.full(len(words), arrival_us, np.int64)
        else:
            if len(words) % 2 or np.any(words[0::2] & 0x8000_0000):
                raise StreamError("SPIF datagram with timestamps is not (event, time) word pairs")
            t = self._unwrap(words[1::2])
            words = words[0::2]
        return _events((words >> 16) & 0x7FFF, words & 0x7FFF, t, (words >> 15) & 1)

    def _unwrap(self, t32: np.ndarray) -> np.ndarray:
        """32-bit microseconds -> 64-bit, assuming a step back of more than 2**31 us
        (within or across datagrams) is a wrap, as faery's own decoder does."""
        t = t32.astype(np.int64)
        back = np.diff(t, prepend=self._last & 0xFFFF_FFFF) < -(1 << 31)
        t += self._offset + (np.cumsum(back, dtype=np.int64) << 32)
        self._offset += int(back.sum()) << 32
        self._last = int(t[-1]) if len(t) else self._last
        return t


def _events(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    ev = np.empty(len(t), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def _proc_drops(inode: int) -> int | None:
    """The drops column of /proc/net/udp{,6} for the socket with ``inode``."""
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            with open(name) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == str(inode):
                        return int(cols[12])
    return None


class UdpReceiver:
    """A bound, non-blocking UDP socket read in bulk, with the kernel's drop count."""

    def __init__(self, address: UdpAddress, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._size_buffer(rcvbuf)
            self.overflow_ancillary = False
            if sys.platform.startswith("linux"):
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
                    self.overflow_ancillary = True
            self.sock.bind((address.host, address.port))
            self.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise ParameterError(f"cannot listen on {address}: {exc}") from exc
        self.address = UdpAddress(address.host, self.sock.getsockname()[1])
        #: The receive buffer the kernel granted (Linux reports twice what it reserves
        #: for data: the rest is its bookkeeping).
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.drops = 0  # datagrams the kernel dropped on this socket (cumulative)
        self.datagrams = 0
        self._inode = os.fstat(self.sock.fileno()).st_ino
        self._cmsg = socket.CMSG_SPACE(4)

    def _size_buffer(self, size: int) -> None:
        # SO_RCVBUFFORCE passes net.core.rmem_max where allowed; else SO_RCVBUF is capped.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def read(self, limit: int = _BULK) -> list[bytes]:
        """Up to ``limit`` datagrams waiting now (none if none is)."""
        out: list[bytes] = []
        for _ in range(limit):
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(_MAX_DATAGRAM, self._cmsg)
            except (BlockingIOError, InterruptedError):
                break
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(value) >= 4:
                    self.drops = max(self.drops, struct.unpack("=I", value[:4])[0])
            out.append(data)
        self.datagrams += len(out)
        return out

    async def wait(self) -> None:
        """Until a datagram is waiting."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self.sock.fileno(), wake)
        try:
            await ready
        finally:
            loop.remove_reader(self.sock.fileno())

    def final_drops(self) -> int:
        """The kernel's drop count now, including drops after the last datagram read."""
        proc = _proc_drops(self._inode)
        self.drops = max(self.drops, proc or 0)
        return self.drops

    def close(self) -> None:
        self.sock.close()


async def udp_feed(service: Service) -> None:
    """The service's feeder for ``udp://``: read, decode, check, enqueue until stopped."""
    from spikecast.runtime.service import _Item

    cfg = service.cfg
    address = parse_udp(cfg.source)
    spec = service.network.input
    sensor = _sensor(service, address)
    service.mapping, warning = check_geometry(str(address), sensor, spec, service.mapping, fit=cfg.fit)
    if warning is not None:
        log.warning("%s", warning)
    decoder = Decoder(cfg.udp_format)
    rx = UdpReceiver(address, cfg.udp_rcvbuf)
    service.udp = rx
    log.info("listening on %s (%s, sensor %dx%d, receive buffer %d bytes%s)", rx.address,
             cfg.udp_format, *sensor, rx.rcvbuf,
             "" if rx.overflow_ancillary else "; kernel drops read from /proc/net/udp at exit")
    stream, counted, t0 = cfg.stream, 0, time.monotonic_ns()
    try:
        while True:
            await rx.wait()
            datagrams = rx.read()
            arrival = time.perf_counter()
            counted = _count_kernel(service, rx.drops, counted)
            events = _decode_all(service, decoder, datagrams, (time.monotonic_ns() - t0) // 1000)
            service._active[stream] = time.monotonic()
            if len(events):
                await service._enqueue(_Item(stream, arrival, events=events,
                                             watermark_us=int(events["t"][-1]),
                                             n_events=len(events)), shed=True)
    finally:
        _count_kernel(service, rx.final_drops(), counted)
        rx.close()


def _sensor(service: Service, address: UdpAddress) -> tuple[int, int]:
    if service.cfg.sensor_size is not None:
        return service.cfg.sensor_size
    _, h, w = service.network.input.shape
    log.warning("%s: UDP does not state the sensor size; taking the network input's %dx%d "
                "(give --sensor-size WxH for a bigger camera, with --fit or --crop/--downsample)",
                address, w, h)
    return w, h


def _count_kernel(service: Service, drops: int, counted: int) -> int:
    if drops > counted:
        service.state.metrics.count_drop("datagrams_dropped_kernel", drops - counted)
        log.warning("the kernel dropped %d datagrams so far (receive buffer full)", drops)
    return max(drops, counted)


def _decode_all(service: Service, decoder: Decoder, datagrams: Iterable[bytes],
                arrival_us: int) -> np.ndarray:
    """The datagrams' events, in time order; a bad datagram or one over a live limit
    is dropped and counted."""
    parts: list[np.ndarray] = []
    dt = service.network.input.dt_us
    m = service.state.metrics
    for data in datagrams:
        try:
            ev = decoder.decode(data, arrival_us)
            service.limits.check_packet(int(ev["t"].min()), int(ev["t"].max()), dt)
        except LimitError as exc:
            m.count_drop(exc.cause)
            if _rare(m.dropped[exc.cause]):
                log.warning("dropped a datagram (%s, %d so far): %s", exc.cause, m.dropped[exc.cause], exc)
            continue
        except StreamError as exc:
            m.count_bad_packet()
            if _rare(m.dropped.get("bad_packets", 0)):
                log.warning("dropped a bad datagram (%d so far): %s", m.dropped.get("bad_packets", 0), exc)
            continue
        parts.append(ev)
    return merge_events(parts)


def _rare(n: int) -> bool:
    return n > 0 and 10 ** (len(str(n)) - 1) == n


# -- the sending side: recorded files replayed into a udp:// source (tests, demos) ------


def encode_datagrams(events: np.ndarray, fmt: str = "faery", per_datagram: int = 100) -> list[bytes]:
    """EVENT_DTYPE events as datagrams of ``fmt``, ``per_datagram`` events each (faery's
    default); SPIF words carry no timestamp (the receiver stamps arrival time)."""
    Decoder(fmt)  # checks the name
    out = []
    for i in range(0, len(events), per_datagram):
        ev = events[i:i + per_datagram]
        if fmt == "faery":
            rec = np.empty(len(ev), FAERY_DTYPE)
            rec["t"], rec["x"], rec["y"], rec["on"] = ev["t"], ev["x"], ev["y"], ev["p"] & 1
        elif fmt == "faery-compact":
            rec = np.empty(len(ev), FAERY_COMPACT_DTYPE)
            rec["t"] = ev["t"] & 0xFFFF_FFFF
            rec["x"], rec["y_on"] = ev["x"], ((ev["y"] << 1) & 0x7FFF) | (ev["p"] & 1)
        else:
            rec = ((1 << 31) | ((ev["x"].astype(np.uint32) & 0x7FFF) << 16)
                   | ((ev["p"].astype(np.uint32) & 1) << 15) | (ev["y"].astype(np.uint32) & 0x7FFF)
                   ).astype("<u4")
        out.append(rec.tobytes())
    return out


def send_recording(events: np.ndarray, address: UdpAddress, *, fmt: str = "faery",
                   realtime: bool = True, speed: float = 1.0) -> int:
    """Send a recording's events to ``address``, 1 ms of sensor time at a time, paced by
    sensor time (``realtime``, sped up ``speed`` times) or as fast as the socket takes
    them (which a receiver may not keep up with: UDP drops in silence); the datagrams sent."""
    from spikecast.runtime.replay import replay_sync

    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    n = 0
    with socket.socket(family, socket.SOCK_DGRAM) as tx:
        for chunk in replay_sync(events, chunk_us=1000, realtime=realtime, speed=speed):
            for data in encode_datagrams(chunk.events, fmt):
                tx.sendto(data, (address.host, address.port))
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    """``python -m spikecast.runtime.udp REC udp://HOST:PORT``: replay a recorded file
    into a udp:// source at real time (a demo or a test without a camera)."""
    import argparse

    from spikecast.runtime.readers import read_events

    ap = argparse.ArgumentParser(prog="python -m spikecast.runtime.udp", description=main.__doc__)
    ap.add_argument("recording", help="an event file spikecast reads (.bin .aedat4 .raw .dat .npz ...)")
    ap.add_argument("address", help="udp://HOST:PORT of the spikecast source")
    ap.add_argument("--udp-format", choices=FORMATS, default="faery")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed factor")
    ap.add_argument("--as-fast-as-possible", dest="realtime", action="store_false",
                    help="no pacing (a slow receiver loses datagrams)")
    args = ap.parse_args(argv)
    rec = read_events(args.recording)
    n = send_recording(rec.events, parse_udp(args.address), fmt=args.udp_format,
                       realtime=args.realtime, speed=args.speed)
    print(f"sent {len(rec.events)} events of a {rec.width}x{rec.height} sensor in {n} datagrams "
          f"to {args.address}", file=sys.stderr)
    return 0


__all__ = ["DEFAULT_RCVBUF", "FORMATS", "Decoder", "UdpAddress", "UdpReceiver", "encode_datagrams",
           "is_udp", "parse_size", "parse_udp", "send_recording", "udp_feed"]


if __name__ == "__main__":
    sys.exit(main())
