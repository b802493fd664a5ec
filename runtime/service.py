"""The async service: sources in, engine off the event loop, decisions out.

- File sources (event recordings, images, .npy frame stacks; a file, a glob or a
  directory) are replayed as fast as the engine takes them, or paced by sensor time;
  each file is one stream and, by default, one decision. They are never shed: the
  replay waits for room in the queue. A file whose sensor is bigger than the network
  input is refused with the --crop/--downsample that fits it (``--fit`` applies it);
  a file whose events fall mostly outside the input is reported and not decided.
- ``source = "mqtt"`` takes live event packets from ``spikecast/<device>/+/events``.
  With ``worker`` set, it is one of several workers of the device and decides only the
  streams it owns (:mod:`spikecast.runtime.affinity`); the packets of the others are
  dropped before decoding. (``--shared-group``, a ``$share/<group>/...`` subscription,
  is deprecated for events: only right on a broker that dispatches by topic hash.)
  A malformed packet is dropped and counted; the service keeps running. Its geometry
  is not refused, but while most of a stream's events fall outside the network input
  (after --crop/--downsample) its decisions are withheld, reported and counted.
- Large batches of input run in a worker thread (the engine releases the GIL), so
  network I/O never waits on compute; a few small packets run on the loop, where a
  thread hand-over would cost more than the work. The input queue is bounded in
  events: under overload whole live packets are shed and counted, and latency stays
  bounded.
- Every drop is counted by cause (:data:`~spikecast.runtime.mqtt.metrics.CAUSES`):
  on the metrics topic, and in the line and exit status that ``spikecast run``
  ends with (see :meth:`Service.report`).
- ``spikecast/<device>/cmd/set`` takes a JSON object with any of ``tau``, ``t_min``,
  ``t_max`` and ``target_accuracy``; the operating point in force is published,
  retained, on ``spikecast/<device>/config``.
- Live input is bounded (:class:`~spikecast.runtime.limits.LiveLimits`, docs/mqtt.md
  "Limits"): a packet or command over a limit is dropped and counted by cause, a time
  jump starts a fresh segment of its stream, a stream idle past the timeout is closed
  and freed, and :attr:`Service.decisions` keeps only the newest decisions. Nothing
  a sender publishes ends the service or its command loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import math
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spikecast.ext.core.checks import is_finite_number
from spikecast.ext.core.errors import ParameterError, SpikecastError, StreamError
from spikecast.ext.core.network import Network, load_network
from spikecast.ext.engine import CompiledNetwork, Engine
from spikecast.runtime.affinity import ONLINE, Membership
from spikecast.runtime.config import RunConfig, config_from_args
from spikecast.runtime.decision import (
    Calibration,
    OperatingPoint,
    PointChoice,
    initial_point,
    point_line,
    resolve,
)
from spikecast.runtime.dv import DvReceiver, is_dv
from spikecast.runtime.encode import GeometryError, SpatialMap, check_geometry, load_frames
from spikecast.runtime.hooks import EventWatcher, ServiceHook, service_hooks
from spikecast.runtime.limits import LimitError
from spikecast.runtime.mqtt import topics
from spikecast.runtime.mqtt.base import Publisher, Subscriber, Subscription, publish_decision
from spikecast.runtime.mqtt.metrics import (
    RuntimeMetrics,
    exit_status,
    losses,
    summary_line,
)
from spikecast.runtime.packets import Packet
from spikecast.runtime.payload import Decision
from spikecast.runtime.replay import Chunk
from spikecast.runtime.sources import FRAME_SUFFIXES, list_sources, stream_name
from spikecast.runtime.stream import DecisionContext, EventStreamDecider, decide_frame
from spikecast.runtime.udp import UdpReceiver, is_udp

log = logging.getLogger("spikecast.service")

# The compute side takes up to _BATCH_ITEMS queued items at once. A batch of at most
# _INLINE_EVENTS events runs on the event loop, item by item, each decision published
# when it is made: a hand-over to a worker thread costs more CPU (0.1-0.13 ms, about the
# engine's work for a 10 ms N-MNIST packet), wakes a thread that then waits for the GIL,
# and holds the batch's decisions until its end. Bigger batches go to a worker thread,
# where the engine releases the GIL and the loop keeps reading (and shedding) meanwhile.
# So do small ones once compute has taken more than _INLINE_BUSY of the recent wall time
# (a decaying sum, time constant _BUSY_WINDOW_S): under that load, reading the next
# packets while the engine runs is worth the hand-over. (16 streams x 10 ms packets on
# 2 cores, two runs each: 256 events and 0.25 sent most batches to the thread, 5.7% of
# a core per stream, p99 4.0-4.8 ms staggered and 7.6-9.3 aligned; these, 3.6%, 2.4-2.7
# and 6.5-6.9 ms; docs/architecture.md.)
# Without live sources (files, which wait for room instead of being shed) every batch
# runs on the loop: there is nothing to keep reading, so a hand-over (0.13 ms per batch,
# an eighth of the engine's time on an N-MNIST file) is pure cost.
_BATCH_ITEMS = 64
_INLINE_EVENTS = 4096
_INLINE_BUSY = 0.5
_BUSY_WINDOW_S = 0.1
_FAST_CHUNK_STEPS = 1000  # per chunk of a file replayed as fast as possible
_SPARE_ENGINES = 8  # engines of ended streams kept for new ones
_INLINE_READ_BYTES = 1 << 20  # files up to this size are read on the event loop

# A stream whose events fall outside the network input more often than this (after
# --crop/--downsample) is not decided on: a file is skipped, a live stream's
# decisions are withheld. Both are reported and counted.
_MAX_OUTSIDE = 0.5


@dataclass
class _Item:
    """Work for the compute side: events of one stream, a frame, or an end marker."""

    stream: str
    arrival_s: float
    events: np.ndarray | None = None
    watermark_us: int | None = None
    frame: np.ndarray | None = None
    end: bool = False
    n_events: int = 0
    end_us: int | None = None  # a live packet's t1_us (its own watermark), if it has one


@dataclass
class ServiceState:
    point: OperatingPoint
    calibration: Calibration | None
    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    queued_events: int = 0
    bad_commands: int = 0
    #: bad_commands by cause: too_large, not_json, too_deep, not_object, bad_value,
    #: out_of_range, unknown_topic, failed
    command_errors: dict[str, int] = field(default_factory=dict)


class CommandRefused(ParameterError):
    """A command that is not applied; ``cause`` says why (ServiceState.command_errors)."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def _rare(n: int) -> bool:
    """Log the 1st, 10th, 100th... of a kind: a flood of bad input cannot flood the log."""
    return n > 0 and 10 ** (len(str(n)) - 1) == n


class Service:
    """Runs one configuration until its sources end (files) or it is stopped (live)."""

    def __init__(
        self, cfg: RunConfig, publisher: Publisher, network: Network | None = None
    ) -> None:
        self.cfg = cfg
        self.limits = cfg.limits
        self.publisher = publisher
        self.network = network if network is not None else load_network(cfg.model)
        self.plan = CompiledNetwork(self.network)
        table = self.network.calibration
        calib = Calibration(table) if table is not None else None
        self.choice = initial_point(self.network, calib, cfg.point, cfg.point_changes)
        if self.choice.warning is not None:
            log.warning("%s", self.choice.warning)
        log.info("%s", point_line(self.choice, self.network.exit_signal, calib))
        self.state = ServiceState(point=self.choice.point, calibration=calib)
        self.ctx = DecisionContext(self.network, cfg.device, calib, self.network.sha256)
        self.mapping = SpatialMap(cfg.crop, cfg.downsample)
        self.maps: dict[str, SpatialMap] = {}  # per file stream, when --fit chose one
        self.live = cfg.source == "mqtt" or is_udp(cfg.source) or is_dv(cfg.source)
        self.udp: UdpReceiver | None = None  # the bound socket of a udp:// source
        self.dv: DvReceiver | None = None  # the connected reader of a dv:// source
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._room = asyncio.Event()  # set whenever compute takes events off the queue
        self._compute_busy_s = 0.0  # compute time, decaying with _BUSY_WINDOW_S
        self._compute_busy_at = time.perf_counter()
        self._seen: dict[str, list[int]] = {}  # live stream -> [events, outside the input]
        self._active: dict[str, float] = {}  # live stream -> monotonic time of its last packet
        self._warned: set[object] = set()
        self.deciders: dict[str, EventStreamDecider] = {}
        # Engines of ended streams, reused by new ones (compute thread only; bounded).
        self._spare_engines: list[Engine] = []
        self.frame_engine = Engine(self.plan)
        self.frame_seq: dict[str, int] = {}
        #: The newest decisions (``limits.decision_history`` of them), oldest first.
        self.decisions: deque[Decision] = deque(maxlen=self.limits.decision_history)
        self._stop = asyncio.Event()
        #: With ``cfg.worker``: the live worker set and which streams this worker owns.
        self.membership = Membership(cfg.worker) if cfg.worker is not None else None
        #: Worker counters (metrics ``worker``): packets_not_owned, packets_unassigned,
        #: streams_handed_over, streams_taken_over.
        self.affinity: dict[str, int] = dict.fromkeys(
            ("packets_not_owned", "packets_unassigned", "streams_handed_over",
             "streams_taken_over"), 0)
        # --metrics-port, --ha-discovery, --view (runtime/hooks.py)
        self.hooks: list[ServiceHook] = service_hooks(self)
        self._watchers = [h for h in self.hooks if isinstance(h, EventWatcher)]

    # -- operating point ----------------------------------------------------------
    def point(self) -> OperatingPoint:
        return self.state.point

    async def set_point(self, changes: dict[str, Any]) -> OperatingPoint:
        t_max = changes.get("t_max")
        if is_finite_number(t_max) and t_max > self.limits.max_t_max:
            raise CommandRefused("out_of_range", f"t_max {t_max!r} is above the service limit "
                                 f"of {self.limits.max_t_max} steps")
        if "tau" in changes and "target_accuracy" not in changes:
            # An explicit tau replaces a target accuracy; else resolve() would derive tau
            # from the target again and silently ignore the command.
            changes = {**changes, "target_accuracy": None}
        new, warning = resolve(self.state.point.updated(changes), self.state.calibration)
        if warning is not None:
            log.warning("%s", warning)
        self.choice = PointChoice(new, "command", warning, self.choice.recommendation)
        self.state.point = new
        await self.publish_config()
        return new

    async def publish_config(self) -> None:
        p = self.state.point
        payload: dict[str, Any] = {
            **self.choice.as_dict(), "exit_signal": self.network.exit_signal, "policy": self.cfg.policy,
            "model_sha256": self.ctx.sha256,
        }
        if self.choice.recommendation is not None:
            payload["recommended"] = self.choice.recommendation.as_dict()
        if self.state.calibration is not None:
            s = self.state.calibration.stats(p.tau, p.t_min, p.t_max)
            payload["expected"] = {
                "accuracy": s.accuracy, "mean_steps": s.mean_steps, "p95_steps": s.p95_steps
            }
        await self.publisher.publish(topics.config_topic(self.cfg.device), payload, retain=True)

    def stop(self) -> None:
        self._stop.set()

    # -- main ---------------------------------------------------------------------
    async def run(self) -> list[Decision]:
        """Until the sources end or :meth:`stop`; the newest decisions made."""
        started: list[ServiceHook] = []
        try:
            for hook in self.hooks:
                await hook.start()
                started.append(hook)
            return await self._run()
        finally:
            for hook in reversed(started):
                try:
                    await hook.stop()
                except (SpikecastError, OSError, RuntimeError) as exc:  # must not hide the run's error
                    log.warning("stopping %s failed: %r", type(hook).__name__, exc)

    async def _run(self) -> list[Decision]:
        await self.publish_config()
        compute = asyncio.create_task(self._compute())
        aux = [asyncio.create_task(self._metrics_loop(), name="metrics")]
        subscriber = self.publisher if isinstance(self.publisher, Subscriber) else None
        if subscriber is not None:
            aux.append(asyncio.create_task(self._commands(subscriber), name="commands"))
        if self.live:
            aux.append(asyncio.create_task(self._close_idle(), name="idle streams"))
        for t in aux:
            t.add_done_callback(_report_ended)
        try:
            await self._feed(subscriber, compute)
            await self.queue.put(_Item("", 0.0, end=True))
            await compute
        finally:
            compute.cancel()
            for t in aux:
                t.cancel()
            for t in (compute, *aux):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self._publish_metrics()
        return list(self.decisions)

    async def _feed(self, subscriber: Subscriber | None, compute: asyncio.Task[None]) -> None:
        """Read the source until it ends, the service is stopped, or compute fails."""
        if is_udp(self.cfg.source):
            from spikecast.runtime.udp import udp_feed

            feeder = asyncio.create_task(udp_feed(self))
        elif is_dv(self.cfg.source):
            from spikecast.runtime.dv import dv_feed

            feeder = asyncio.create_task(dv_feed(self))
        elif self.live:
            if subscriber is None:
                raise ParameterError("source 'mqtt' needs --mqtt URL")
            feeder = asyncio.create_task(self._live_events(subscriber))
        else:
            feeder = asyncio.create_task(self._replay_files())
        stopper = asyncio.create_task(self._stop.wait())
        # Also wake up if compute fails: the error must end the service rather than leave
        # it running deaf (or a file replay waiting for room forever).
        await asyncio.wait({stopper, feeder, compute}, return_when=asyncio.FIRST_COMPLETED)
        for t in (stopper, feeder):
            if not t.done():
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for t in (feeder, compute):
            if t.done() and not t.cancelled():
                t.result()  # raises the feeder's or compute's error

    def report(self) -> tuple[str, int]:
        """The summary line and exit status; after the publisher has closed, so that
        messages it never delivered are counted."""
        dropped = losses(self.state.metrics, self.publisher.stats())
        return summary_line(self.state.metrics, dropped, files=not self.live), exit_status(dropped)

    # -- sources ------------------------------------------------------------------
    async def _enqueue(self, item: _Item, *, shed: bool) -> None:
        """Bounded in events. A live packet that would overflow the queue is shed and
        counted (``shed``); a file's chunk waits for room instead."""
        n = item.n_events
        if shed and n and self.state.queued_events + n > self.cfg.queue_events:
            self.state.metrics.count_dropped_events(n, "events_shed")
            self.state.metrics.count_drop("packets_shed")
            return
        while self.state.queued_events and self.state.queued_events + n > self.cfg.queue_events:
            self._room.clear()
            await self._room.wait()
        self.state.queued_events += n
        if n:
            self.state.metrics.count_events(n)
        await self.queue.put(item)

    async def _replay_files(self) -> None:
        sources = list_sources(self.cfg.source, self.network.input.kind)
        if sources.skipped:
            names = ", ".join(p.name for p in sources.skipped[:5])
            kind = "event" if self.network.input.kind == "events" else "frame"
            n = len(sources.skipped)
            log.warning("skipped %d %s that %s not %s files: %s%s", n,
                        "entry" if n == 1 else "entries", "is" if n == 1 else "are", kind, names,
                        " ..." if n > 5 else "")
        for path in sources.paths:
            stream = stream_name(path.stem, self.cfg.stream)
            if not stream.endswith(path.stem):  # characters replaced, cut, or '_' added
                log.warning("%s: its decisions carry stream %r (a file name with '/', '+', '#' or "
                            "NUL, or a reserved one, is not a topic level)", path, stream)
            try:
                await self._replay_file(path, stream)
            except GeometryError as exc:
                if sources.single:
                    raise
                # Among several files, one odd recording is skipped and counted, not the
                # end of the run; once per sensor size on stderr.
                self.state.metrics.count_drop("files_misfit")
                if ("misfit", exc.sensor) not in self._warned:
                    self._warned.add(("misfit", exc.sensor))
                    log.warning("skipped a file of another sensor size (and any more of %dx%d): %s",
                                *exc.sensor, exc)
            except (StreamError, OSError) as exc:
                if sources.single:
                    raise StreamError(str(exc)) from exc
                self.state.metrics.count_drop("files_failed")
                log.warning("skipped an unreadable file: %s", exc)

    async def _replay_file(self, path: Path, stream: str) -> None:
        from spikecast.runtime.readers import read_events
        from spikecast.runtime.replay import replay

        if self.network.input.kind == "frame":
            frames = await asyncio.to_thread(load_frames, path, self.network.input)
            self.state.metrics.count_file(0, len(frames))
            for frame in frames:
                await self._enqueue(_Item(stream, time.perf_counter(), frame=frame), shed=False)
            return
        if path.suffix.lower() in FRAME_SUFFIXES:
            raise StreamError(f"{path}: the network takes events, not images")
        if path.stat().st_size <= _INLINE_READ_BYTES:  # less than a thread hand-over costs
            rec = read_events(path, fmt=self.cfg.fmt)
        else:
            rec = await asyncio.to_thread(read_events, path, fmt=self.cfg.fmt)
        self.state.metrics.count_file(len(rec))
        if not self._admit(path, rec.events, (rec.width, rec.height), stream):
            return
        # Paced: 10 steps per chunk, like a live sender. As fast as possible: one chunk of
        # up to _FAST_CHUNK_STEPS steps, so Python and the hand-over to the compute thread
        # run once per file (or per second of a long one), not once per 10 ms; the engine
        # advances through the chunk and checks the exit rule in compiled code. The last
        # chunk travels with the file's end marker (one item, one hand-over).
        steps = 10 if self.cfg.realtime else _FAST_CHUNK_STEPS
        chunk_us = self.network.input.dt_us * steps
        held: Chunk | None = None
        async for chunk in replay(rec.events, chunk_us=chunk_us, realtime=self.cfg.realtime,
                                  speed=self.cfg.speed):
            if held is not None:
                await self._enqueue(_Item(stream, time.perf_counter(), events=held.events,
                                          watermark_us=held.t1_us, n_events=len(held.events)),
                                    shed=False)
            held = chunk
            if self._decided(stream):
                held = None
                break  # one decision per file: the rest of the recording is not needed
        end = int(rec.events["t"][-1]) + 1 if len(rec.events) else None
        await self._enqueue(_Item(stream, time.perf_counter(), end=True, watermark_us=end,
                                  events=held.events if held is not None else None,
                                  n_events=len(held.events) if held is not None else 0),
                            shed=False)

    def _admit(self, path: Path, events: np.ndarray, sensor: tuple[int, int], stream: str) -> bool:
        """Check a file's geometry (refuse with GeometryError, or fit with --fit) and how
        many of its events fall inside the input; False when they mostly do not (reported,
        not decided)."""
        mapping, warning = check_geometry(str(path), sensor, self.network.input, self.mapping,
                                          fit=self.cfg.fit)
        if warning is not None and sensor not in self._warned:
            self._warned.add(sensor)
            log.warning("%s", warning)
        _, h, w = self.network.input.shape
        outside = mapping.count_outside(events, w, h)
        if outside:
            self.state.metrics.count_dropped_events(outside, "events_outside")
        if len(events) and outside > _MAX_OUTSIDE * len(events):
            self.state.metrics.count_drop("files_outside")
            log.warning("%s: %d of %d events (%.0f%%) fall outside the %dx%d network input%s; "
                        "not decided", path, outside, len(events), 100 * outside / len(events),
                        w, h, f" after {mapping.flags()}" if mapping.flags() else "")
            return False
        self.maps[stream] = mapping
        return True

    async def _live_events(self, subscriber: Subscriber) -> None:
        if self.cfg.shared_group:
            log.warning("--shared-group is deprecated for event streams: Mosquitto hands one "
                        "stream's packets to the group's members in turn; use --worker "
                        "(docs/mqtt.md, 'Scaling out')")
            filt = topics.shared_events_filter(self.cfg.shared_group, self.cfg.device)
        else:
            filt = topics.events_filter(self.cfg.device)
        presence: Subscription | None = None
        if self.membership is not None:
            # Presence first: its retained messages come before any packet is judged.
            presence = await subscriber.subscribe(topics.workers_filter(self.cfg.device),
                                                  qos=1, queue_size=4096)
            on_connect = getattr(subscriber, "add_connect_callback", None)
            if on_connect is not None:
                on_connect(functools.partial(self._reconnected, presence))
            watcher = asyncio.create_task(self._presence_loop(presence), name="presence")
            watcher.add_done_callback(_report_ended)
        sub = await subscriber.subscribe(filt, qos=0, queue_size=4096)
        try:
            await self._take_packets(sub, presence)
        finally:
            if presence is not None:
                watcher.cancel()

    async def _take_packets(self, sub: Subscription, presence: Subscription | None) -> None:
        from spikecast.runtime.packets import decode_packet

        async for msg in sub:
            arrival = time.perf_counter()
            if presence is not None and not await self._mine(msg.topic, presence):
                continue
            try:
                stream, packet = self._accept(msg.topic, msg.payload, decode_packet)
            except LimitError as exc:
                m = self.state.metrics
                m.count_drop(exc.cause)
                if _rare(m.dropped[exc.cause]):
                    log.warning("dropped a packet on %s (%s, %d so far): %s", msg.topic,
                                exc.cause, m.dropped[exc.cause], exc)
                continue
            except (StreamError, ParameterError) as exc:
                self.state.metrics.count_bad_packet()
                log.warning("dropped a bad packet on %s: %s", msg.topic, exc)
                continue
            ev = packet.events
            await self._enqueue(
                _Item(stream, arrival, events=ev, watermark_us=packet.t0_us, n_events=len(ev),
                      end_us=packet.t1_us),
                shed=True,
            )

    # -- workers (docs/mqtt.md, "Scaling out") ------------------------------------------
    async def _mine(self, topic: str, presence: Subscription) -> bool:
        """Whether this worker owns the packet's stream; cheap for the others (no decode).
        Presence messages that came before the packet are applied first."""
        m = self.membership
        if m is None:
            return True
        while (msg := presence.get_nowait()) is not None:
            await self._presence(msg)
        if not m.ready:
            self.affinity["packets_unassigned"] += 1
            return False
        if m.owns_topic(topic):
            return True
        self.affinity["packets_not_owned"] += 1
        return False

    def _reconnected(self, presence: Subscription) -> None:
        """On every connect, before its messages: the broker sends the presence again,
        so forget the old view (and stale presence messages not yet read)."""
        if self.membership is not None:
            while presence.get_nowait() is not None:
                pass
            self.membership.reset()

    async def _presence_loop(self, presence: Subscription) -> None:
        async for msg in presence:
            await self._presence(msg)

    async def _presence(self, msg: Any) -> None:
        m = self.membership
        if m is None:
            return
        try:
            worker = topics.parse_worker_topic(msg.topic)
        except ParameterError:
            return
        if worker == m.me and msg.payload != ONLINE and m.ready:
            # A stale Will of this worker (or someone else's message): it is alive.
            announce = getattr(self.publisher, "announce", None)
            if announce is not None:
                await announce()
            return
        if not m.apply(worker, msg.payload):
            return
        moved = [s for s in self._active if not m.owns(s)]
        log.info("workers now %s (%s %s); %d of this worker's streams move to others",
                 sorted(m.workers()), worker, "joined" if msg.payload == ONLINE else "left",
                 len(moved))
        for stream in moved:
            # Handed over: the segment in progress is decided now (exit end_of_stream)
            # and freed; the new owner starts a fresh one from its next packet. (Closed
            # meanwhile by the idle timeout or another hand-over: nothing left to do.)
            if self._active.pop(stream, None) is None:
                continue
            self.affinity["streams_handed_over"] += 1
            await self._enqueue(_Item(stream, time.perf_counter(), end=True), shed=False)

    def _accept(self, topic: str, payload: bytes, decode: Any) -> tuple[str, Packet]:
        """The stream and packet of a live message, checked against the limits before
        it touches any state; raises LimitError, StreamError or ParameterError."""
        stream = topics.parse_stream_topic(topic).stream
        self.limits.check_size(payload)
        packet: Packet = decode(payload)
        ev = packet.events
        last = int(ev["t"][-1]) if len(ev) else None
        if packet.t1_us is not None:  # the packet's span reaches its end
            last = max(last if last is not None else packet.t0_us, packet.t1_us - 1)
        self.limits.check_packet(packet.t0_us, last, self.network.input.dt_us)
        if stream not in self._active and len(self._active) >= self.limits.max_streams:
            raise LimitError("packets_over_streams", f"stream {stream!r} would be one more than "
                             f"the limit of {self.limits.max_streams} live streams")
        if stream not in self._active and self.membership is not None and \
                self.membership.taken_over(stream):
            self.affinity["streams_taken_over"] += 1
            log.info("stream %s: taken over from a worker that left", stream)
        self._active[stream] = time.monotonic()
        return stream, packet

    async def _close_idle(self) -> None:
        """Close live streams without packets for ``idle_timeout_s``: the compute side
        makes their pending decision and frees them (an end item, in order)."""
        idle = self.limits.idle_timeout_s
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            now = time.monotonic()
            for stream in [s for s, t in self._active.items() if now - t > idle]:
                del self._active[stream]
                self.state.metrics.streams_closed += 1
                log.info("stream %s: no packet for %.0f s, closed", stream, idle)
                await self._enqueue(_Item(stream, time.perf_counter(), end=True), shed=False)

    def _decided(self, stream: str) -> bool:
        d = self.deciders.get(stream)
        return d is not None and d.finished

    # -- commands and metrics -------------------------------------------------------
    async def _commands(self, subscriber: Subscriber) -> None:
        sub = await subscriber.subscribe(topics.cmd_filter(self.cfg.device), qos=1)
        async for msg in sub:
            try:
                point = await self._command(msg.topic, msg.payload)
                log.info("operating point now %s", point.as_dict())
            except CommandRefused as exc:
                self._refused(msg.topic, exc.cause, exc)
            except ParameterError as exc:
                self._refused(msg.topic, "bad_value", exc)
            except (SpikecastError, ValueError, TypeError, OverflowError) as exc:
                self._refused(msg.topic, "failed", exc)

    async def _command(self, topic: str, payload: bytes) -> OperatingPoint:
        """Apply one command; raises CommandRefused (or ParameterError) if it is not."""
        if not topic.endswith("/cmd/set"):
            raise CommandRefused("unknown_topic", f"unknown command topic {topic}")
        if len(payload) > self.limits.max_command_bytes:
            raise CommandRefused("too_large", f"{len(payload)} bytes, more than the limit of "
                                 f"{self.limits.max_command_bytes}")
        try:
            body = json.loads(payload)
        except RecursionError as exc:
            raise CommandRefused("too_deep", "JSON nested too deep") from exc
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise CommandRefused("not_json", f"not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise CommandRefused("not_object", "a command must be a JSON object")
        return await self.set_point(body)

    def _refused(self, topic: str, cause: str, exc: Exception) -> None:
        st = self.state
        st.bad_commands += 1
        st.command_errors[cause] = st.command_errors.get(cause, 0) + 1
        if _rare(st.command_errors[cause]):
            log.warning("rejected command on %s (%s, %d so far): %s", topic, cause,
                        st.command_errors[cause], exc)

    async def _publish_metrics(self) -> None:
        snap = self.state.metrics.snapshot(self.publisher.stats())
        snap["bad_commands"] = self.state.bad_commands
        snap["bad_commands_by_cause"] = dict(sorted(self.state.command_errors.items()))
        snap["live_streams"] = len(self._active)
        snap["queued_events"] = self.state.queued_events
        topic = topics.metrics_topic(self.cfg.device)
        if self.membership is not None:
            m = self.membership
            snap["worker"] = {"name": m.me, "workers": sorted(m.workers()), "ready": m.ready,
                              "membership_changes": m.changes, **self.affinity}
            topic = topics.worker_metrics_topic(self.cfg.device, m.me)
        with contextlib.suppress(SpikecastError):
            await self.publisher.publish(topic, snap)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.metrics_interval_s)
            await self._publish_metrics()

    # -- compute ------------------------------------------------------------------
    def _decider(self, stream: str) -> EventStreamDecider:
        d = self.deciders.get(stream)
        if d is None:
            d = EventStreamDecider(
                self.plan, self.ctx, stream, self.point, policy=self.cfg.policy,
                window_ms=self.cfg.window_ms, decay=self.cfg.decay,
                one_decision=self.cfg.one_per_file and not self.live,
                mapping=self.maps.get(stream, self.mapping),
                max_jump_us=self.limits.max_jump_us if self.live else None,
                seq_clock=_unix_us if self.membership is not None else None,
                engine=self._spare_engines.pop() if self._spare_engines else None,
            )
            self.deciders[stream] = d
        return d

    def _work(self, item: _Item) -> tuple[list[Decision], dict[str, int]]:
        """Decisions from one item, and what was dropped on the way, by cause."""
        if item.frame is not None:
            seq = self.frame_seq.get(item.stream, 0)
            self.frame_seq[item.stream] = seq + 1
            return [decide_frame(self.frame_engine, self.ctx, item.stream, seq, item.frame,
                                 self.state.point, item.arrival_s)], {}
        if item.end:
            out = []
            if item.events is not None and not self._decided(item.stream):  # a file's last chunk
                out = self._decider(item.stream).push(item.events, item.watermark_us, item.arrival_s)
            return out + self._end(item), {}
        d = self._decider(item.stream)
        if d.finished:
            return [], {}  # decided once: the rest of the file is not needed
        events = item.events if item.events is not None else np.zeros(0)
        before, before_outside, restarts = d.dropped_events, d.dropped_outside, d.restarts
        out = d.push(events, item.watermark_us, item.arrival_s, item.end_us)
        if not self.live:
            return out, {}  # a file's events outside the input were counted when it was read
        outside = d.dropped_outside - before_outside
        drops = {"events_outside": outside, "events_late": d.dropped_events - before - outside}
        if d.restarts > restarts:
            drops["stream_restarts"] = d.restarts - restarts
            log.info("stream %s: sensor time jumped to %d us, more than %d us from the stream; "
                     "a fresh segment starts there", item.stream, item.watermark_us or 0,
                     self.limits.max_jump_us)
        return self._vet(item.stream, out, len(events), outside, drops), drops

    def _end(self, item: _Item) -> list[Decision]:
        """The end of a stream (a file's, or an idle live stream's): its pending
        decision, and everything kept for it is freed."""
        d = self.deciders.pop(item.stream, None)
        self.maps.pop(item.stream, None)
        self._seen.pop(item.stream, None)
        self._warned.discard(("withheld", item.stream))
        if d is None:
            return []
        out = d.finish(item.watermark_us, item.arrival_s)
        if len(self._spare_engines) < _SPARE_ENGINES:
            self._spare_engines.append(d.engine)
        return out

    def _vet(self, stream: str, out: list[Decision], n: int, outside: int,
             drops: dict[str, int]) -> list[Decision]:
        """Withhold a live stream's decisions while its events fall mostly outside the input."""
        seen = self._seen.setdefault(stream, [0, 0])
        seen[0] += n
        seen[1] += outside
        if not out or seen[1] <= _MAX_OUTSIDE * seen[0]:
            return out
        drops["decisions_withheld"] = len(out)
        if ("withheld", stream) not in self._warned:
            self._warned.add(("withheld", stream))
            log.warning("stream %s: %d of %d events fall outside the network input; its "
                        "decisions are withheld", stream, seen[1], seen[0])
        return []

    def _work_batch(self, items: list[_Item]) -> tuple[list[Decision], dict[str, int], list[str]]:
        """Every item in order; a bad one is reported and skipped, not fatal."""
        decisions: list[Decision] = []
        dropped: dict[str, int] = {}
        errors: list[str] = []
        for item in items:
            try:
                out, drops = self._work(item)
            except SpikecastError as exc:
                errors.append(f"dropped input of stream {item.stream}: {exc}")
                continue
            decisions += out
            for cause, n in drops.items():
                dropped[cause] = dropped.get(cause, 0) + n
        return decisions, dropped, errors

    def _count(self, dropped: dict[str, int], errors: list[str]) -> None:
        m = self.state.metrics
        for msg in errors:
            m.count_bad_packet()
            log.warning("%s", msg)
        m.stream_restarts += dropped.pop("stream_restarts", 0)
        for cause, n in dropped.items():
            if n and cause.startswith("events_"):
                m.count_dropped_events(n, cause)
            elif n:
                m.count_drop(cause, n)

    def _inline(self, items: list[_Item]) -> bool:
        """Whether this batch is computed on the event loop (see _INLINE_BUSY)."""
        if not self.live:  # files: nothing to keep reading (see _INLINE_BUSY)
            return True
        if sum(it.n_events for it in items) > _INLINE_EVENTS or any(
            it.frame is not None or it.end for it in items
        ):
            return False
        self._add_busy(0.0)
        return self._compute_busy_s < _INLINE_BUSY * _BUSY_WINDOW_S

    def _add_busy(self, busy_s: float) -> None:
        """Decay the compute-time sum to now, then add ``busy_s``."""
        now = time.perf_counter()
        self._compute_busy_s *= math.exp(-(now - self._compute_busy_at) / _BUSY_WINDOW_S)
        self._compute_busy_s += busy_s
        self._compute_busy_at = now

    def _timed_batch(self, items: list[_Item]) -> tuple[list[Decision], dict[str, int], list[str], float]:
        """_work_batch (on the loop or a worker thread), and how long it took."""
        t0 = time.perf_counter()
        out = self._work_batch(items)
        return (*out, time.perf_counter() - t0)

    async def _compute(self) -> None:
        while True:
            batch = [await self.queue.get()]
            # Take what else is waiting: one hand-over for many small packets.
            while len(batch) < _BATCH_ITEMS and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            stop = batch[-1].end and batch[-1].stream == ""  # the end marker comes last
            items = batch[:-1] if stop else batch
            self.state.queued_events -= sum(it.n_events for it in items)
            self._room.set()
            for w in self._watchers:
                for it in items:
                    if it.events is not None:
                        w.events(it.stream, it.events, it.watermark_us)
            inline = self._inline(items)
            if inline and not self.live:
                await self._publish(*self._timed_batch(items))  # files: no one waits in between
            elif inline:
                # On the event loop, one item at a time: each decision is published (and,
                # over MQTT, written to the socket) as soon as it is made, not after the
                # rest of the batch; no hand-over to a thread, no wait for the GIL.
                for it in items:
                    await self._publish(*self._timed_batch([it]))
            else:
                # Off the event loop, so it keeps reading packets meanwhile (and sheds them
                # when the queue is full); one hand-over for the whole batch.
                await self._publish(*await asyncio.to_thread(self._timed_batch, items))
            if stop:
                return

    async def _publish(self, decisions: list[Decision], dropped: dict[str, int],
                       errors: list[str], busy_s: float) -> None:
        """Count what a batch dropped; record, hand to the hooks and publish its decisions."""
        self._add_busy(busy_s)
        self._count(dropped, errors)
        for d in decisions:
            self.state.metrics.record_decision(d.latency_ms, d.synops)
            self.decisions.append(d)
            for hook in self.hooks:
                await hook.decision(d)
            await publish_decision(self.publisher, d)


def _unix_us() -> int:
    """Wall-clock microseconds: a worker's seq (unique across owners of a stream)."""
    return time.time_ns() // 1000


def _report_ended(task: asyncio.Task[None]) -> None:
    """A helper task (metrics, commands, idle streams) must run until the service
    stops: say so if one ends early."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the %s task ended: %r", task.get_name(), task.exception())


def make_publisher(cfg: RunConfig) -> Publisher:
    if cfg.mqtt is None:
        from spikecast.runtime.mqtt.stdout import StdoutPublisher

        return StdoutPublisher()
    from spikecast.runtime.mqtt.publisher import MqttPublisher

    return MqttPublisher(cfg.mqtt)


async def run_service(
    cfg: RunConfig, publisher: Publisher | None = None, *, freeze_gc: bool = False
) -> Service:
    """Run until the sources end or SIGINT/SIGTERM; the publisher says offline on exit.

    Returns the service once its publisher has closed: ``service.report()`` then
    counts the messages it never delivered too. ``freeze_gc`` (the CLI's choice: it
    owns the process) moves every object made so far, the modules and the model
    among them, out of the garbage collector's reach, so that a full collection
    scans only what serving made: its pauses, which stall every stream at once,
    fell from 8-19 ms to 2-7 ms on the bench host (docs/mqtt.md)."""
    pub = publisher or make_publisher(cfg)
    service = Service(cfg, pub)  # a bad model fails here, before the device goes online
    if freeze_gc:
        gc.freeze()
    async with pub:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, service.stop)
        try:
            await service.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
    return service


async def serve(cfg: RunConfig, publisher: Publisher | None = None) -> list[Decision]:
    """Run until the sources end or SIGINT/SIGTERM; the decisions made (the newest
    ``cfg.limits.decision_history`` of them, 10,000 by default)."""
    return list((await run_service(cfg, publisher)).decisions)


def run_from_args(args: argparse.Namespace) -> int:
    """``spikecast run``: the summary line on stderr; 0, or EXIT_LOSS when input or
    decisions were lost (errors raise, and the CLI exits 2)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = config_from_args(args)
    service = asyncio.run(run_service(cfg, freeze_gc=True))
    line, status = service.report()
    print(line, file=sys.stderr, flush=True)
    return status


__all__ = ["Service", "make_publisher", "run_from_args", "run_service", "serve"]
