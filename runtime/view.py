"""The live viewer: ``spikecast run ... --view [HOST]:PORT`` serves a page to watch the service.

The page (``runtime/data/view.html``: inline CSS and JS, no build step, nothing from
a CDN) shows, per stream, the decayed event frame and the newest decision (label,
confidence, expected accuracy, steps, exit, latency), and a sparkline of the latency
of the last decisions. Its data comes over a WebSocket (``/ws``, RFC 6455 text frames
carrying JSON), pushed at most :data:`PUSH_HZ` times a second while anything changes;
``/state`` answers the same JSON to a plain GET (curl, tests).

The server is the standard library's asyncio streams on the service's own event
loop. It binds 127.0.0.1 unless told otherwise and has no authentication: what it
serves is read-only, but expose it (``--view 0.0.0.0:8080``) only on a network you
trust.

The event frame: the events the service feeds each stream, after its
``--crop``/``--downsample``, counted per pixel and polarity and decayed exponentially
in sensor time (time constant :data:`TAU_US`), downsampled to at most
:data:`MAX_SIDE` pixels a side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
from spikecast.ext.core.errors import ParameterError

if TYPE_CHECKING:
    from spikecast.runtime.encode import SpatialMap
    from spikecast.runtime.payload import Decision
    from spikecast.runtime.service import Service

log = logging.getLogger(__name__)

#: Decay time constant of the event frame, sensor microseconds.
TAU_US = 50_000
#: Largest side of the event frame sent to the page, pixels.
MAX_SIDE = 64
#: Pushes per second at most.
PUSH_HZ = 20
#: Streams kept (the most recently active); the page shows them newest first.
MAX_STREAMS = 8
#: Latencies in the sparkline.
SPARK_N = 120
#: A client whose unsent data exceeds this skips pushes until it catches up.
_MAX_BACKLOG = 1 << 20
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_REQUEST = 8192


@dataclass
class StreamView:
    """One stream's decayed event frame (polarity, y, x) and newest decision."""

    frame: np.ndarray
    factor: int
    t_us: int | None = None
    events: int = 0
    decision: dict[str, Any] | None = None

    def add(self, x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, t_end: int) -> None:
        """Decay to ``t_end``, then add the events, each weighed by its own decay."""
        if self.t_us is not None and t_end > self.t_us:
            self.frame *= math.exp(-(t_end - self.t_us) / TAU_US)
        self.t_us = t_end if self.t_us is None else max(self.t_us, t_end)
        if not len(x):
            return
        c, h, w = self.frame.shape
        keep = (x >= 0) & (y >= 0) & (x < w * self.factor) & (y < h * self.factor)
        pol = np.minimum(p[keep].astype(np.int64), c - 1)
        idx = (pol * h + y[keep] // self.factor) * w + x[keep] // self.factor
        weight = np.exp(np.minimum(0, t[keep] - self.t_us) / TAU_US)
        self.frame += np.bincount(idx, weight, c * h * w).reshape(c, h, w).astype(np.float32)
        self.events += int(keep.sum())

    def image(self) -> dict[str, Any]:
        """The frame as base64 uint8 planes (OFF, ON), saturating at a few events."""
        c, h, w = self.frame.shape
        u8 = (255 * (1 - np.exp(-self.frame / 2))).astype(np.uint8)
        planes = [base64.b64encode(u8[i].tobytes()).decode() for i in range(c)]
        return {"w": w, "h": h, "planes": planes}


@dataclass
class ViewState:
    """What the page shows; updated from the service, read by the pusher."""

    shape: tuple[int, int, int]  # network input (channels, height, width)
    streams: OrderedDict[str, StreamView] = field(default_factory=OrderedDict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_N))
    decisions: int = 0
    version: int = 0

    def stream(self, name: str) -> StreamView:
        sv = self.streams.get(name)
        if sv is None:
            c, h, w = self.shape
            factor = max(1, -(-max(h, w) // MAX_SIDE))
            sv = StreamView(np.zeros((c, -(-h // factor), -(-w // factor)), np.float32), factor)
            self.streams[name] = sv
            while len(self.streams) > MAX_STREAMS:
                self.streams.popitem(last=False)
        self.streams.move_to_end(name)
        self.version += 1
        return sv

    def events(self, name: str, events: np.ndarray, t_us: int | None, mapping: SpatialMap) -> None:
        if not len(events) and t_us is None:
            return
        xs, ys, keep = mapping.apply(events["x"], events["y"])
        t = events["t"].astype(np.int64)
        t_end = max(int(t[-1]) if len(t) else -(1 << 62), t_us if t_us is not None else -(1 << 62))
        self.stream(name).add(xs[keep], ys[keep], events["p"][keep], t[keep], t_end)

    def decision(self, d: Decision) -> None:
        self.stream(d.stream).decision = {
            "label": d.label, "confidence": d.confidence,
            "expected_accuracy": d.expected_accuracy, "steps": d.steps, "exit": d.exit,
            "latency_ms": d.latency_ms, "seq": d.seq, "sensor_t1_us": d.sensor_t1_us,
            "topk": [t.to_dict() for t in d.topk],
        }
        self.latencies.append(d.latency_ms)
        self.decisions += 1

    def snapshot(self, device: str) -> dict[str, Any]:
        return {
            "device": device,
            "decisions": self.decisions,
            "latency_ms": list(self.latencies),
            "streams": [
                {"name": name, "events": sv.events, "sensor_t_us": sv.t_us,
                 "frame": sv.image(), "decision": sv.decision}
                for name, sv in reversed(self.streams.items())
            ],
        }


def parse_view(view: str) -> tuple[str, int]:
    """``[HOST]:PORT`` (or a bare PORT) -> (host, port); no host means 127.0.0.1."""
    if not isinstance(view, str):
        raise ParameterError(f"view must be [HOST]:PORT, not {view!r}")
    host, sep, port = view.rpartition(":")
    host = host.strip("[]") if sep else ""
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ParameterError(f"--view takes [HOST]:PORT (e.g. :8080 or 0.0.0.0:8080), not {view!r}")
    return host or "127.0.0.1", number


def ws_accept(key: str) -> str:
    """The Sec-WebSocket-Accept answer to a Sec-WebSocket-Key (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, final server frame (text by default)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


async def ws_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One client frame: (opcode, unmasked payload). Clients send little; more than
    64 KiB in one frame is refused (ValueError)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    if n > 1 << 16:
        raise ValueError("client frame too large")
    mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(c ^ mask[i % 4] for i, c in enumerate(data))


def _page() -> bytes:
    return resources.files("spikecast.runtime").joinpath("data/view.html").read_bytes()


def _response(status: str, body: bytes, ctype: str) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class LiveViewer:
    """A service hook (and event watcher): serves the page from start to stop."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.host, self._port = parse_view(service.cfg.view or ":0")
        c, h, w = service.network.input.shape
        self.state = ViewState((c, h, w))
        self.page = _page()
        self.clients: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int | None:
        """The port served (the one chosen when asked for 0); None when not serving."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # -- hook -----------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self._port)
        except OSError as exc:
            raise ParameterError(
                f"cannot serve the live viewer on {self.host}:{self._port}: {exc.strerror or exc}"
            ) from exc
        self._pusher = asyncio.create_task(self._push_loop(), name="live viewer")
        log.info("live viewer on %s", self.url)

    def events(self, stream: str, events: np.ndarray, t_us: int | None) -> None:
        svc = self.service
        self.state.events(stream, events, t_us, svc.maps.get(stream, svc.mapping))

    async def decision(self, decision: Decision) -> None:
        self.state.decision(decision)

    async def stop(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        await self._push()  # the last decisions
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self.clients):
            with contextlib.suppress(OSError, RuntimeError):
                w.write(ws_frame(b"\x03\xe8", 0x8))  # close, 1000
        for w in list(self._writers):
            w.close()  # each connection's reader sees the end and its task returns
        if self._conns:
            _, late = await asyncio.wait(self._conns, timeout=2.0)
            for t in late:
                t.cancel()
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    # -- pushing --------------------------------------------------------------------
    def message(self) -> bytes:
        return json.dumps(self.state.snapshot(self.service.cfg.device)).encode()

    async def _push_loop(self) -> None:
        sent = -1
        while True:
            await asyncio.sleep(1.0 / PUSH_HZ)
            version = self.state.version
            if version != sent and self.clients:
                sent = version
                await self._push()

    async def _push(self) -> None:
        if not self.clients:
            return
        frame = ws_frame(self.message())
        for w in list(self.clients):
            if w.transport.get_write_buffer_size() > _MAX_BACKLOG:
                continue  # a slow client skips frames rather than piling them up
            try:
                w.write(frame)
            except (OSError, RuntimeError):
                self.clients.discard(w)

    # -- HTTP -----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        self._writers.add(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            if len(head) > _MAX_REQUEST:
                raise ValueError("request too large")
            await self._route(head.decode("latin-1"), reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError, ValueError):
            pass
        finally:
            self.clients.discard(writer)
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def _route(self, head: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        line, *rest = head.split("\r\n")
        parts = line.split()
        if len(parts) != 3 or parts[0] != "GET":
            writer.write(_response("405 Method Not Allowed", b"GET only\n", "text/plain"))
            return
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)}
        path = parts[1].split("?", 1)[0]
        if path in ("/", "/index.html"):
            writer.write(_response("200 OK", self.page, "text/html; charset=utf-8"))
        elif path == "/state":
            writer.write(_response("200 OK", self.message(), "application/json"))
        elif path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
            await self._websocket(headers, reader, writer)
        else:
            writer.write(_response("404 Not Found", b"not found\n", "text/plain"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _websocket(self, headers: dict[str, str], reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        key = headers.get("sec-websocket-key", "")
        if not key:
            writer.write(_response("400 Bad Request", b"no Sec-WebSocket-Key\n", "text/plain"))
            return
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {ws_accept(key)}\r\n\r\n").encode())
        writer.write(ws_frame(self.message()))  # what there is now, at once
        self.clients.add(writer)
        while True:
            opcode, data = await ws_read(reader)
            if opcode == 0x8:  # close: answer it and end
                writer.write(ws_frame(data[:2], 0x8))
                return
            if opcode == 0x9:  # ping
                writer.write(ws_frame(data, 0xA))


__all__ = ["MAX_SIDE", "PUSH_HZ", "TAU_US", "LiveViewer", "StreamView", "ViewState", "parse_view",
           "ws_accept", "ws_frame"]
