"""Fault injection against ``spikecast run`` over a real Mosquitto broker.

    python bench/faults.py              # every scenario (about 1-2 min)
    python bench/faults.py --quick      # shorter runs (the CI test, < 60 s)
    python bench/faults.py --scenarios worker_failover,worker_hang   # updates those entries

Set-up, one machine, loopback: a Mosquitto broker this script starts (persistent, so
that a subscriber's session survives a broker restart), the service as users run it
(``python -m spikecast.runtime.cli run``, one process), a paho sender of SCEV packets
(N-MNIST recordings from ../shared/data, back to back, one packet per 10 ms of sensor
time) and a paho MQTT 5 subscriber with a persistent session (QoS 1) that counts
decisions by (stream, seq): a repeat of a (stream, seq) already seen is a duplicate,
the rest are delivered.

``decisions_expected`` is what the service says it made: the count in its exit line
(``spikecast: N decisions ...``), or, for the worker that is killed, the ``decisions``
of the last metrics message it published before the kill. ``counted_drops`` are the
losses it counted itself (the metrics ``dropped`` causes, packets the publisher could
not deliver); ``lost = decisions_expected - delivered - counted undelivered
decisions``, which must be 0.

Scenarios:

- ``broker_restart``: a recording replayed in real time (``--realtime
  --all-decisions``) keeps deciding while the broker is stopped for a few seconds and
  started again; every decision made while it was away must come from the service's
  outbox.
- ``far_future_t0``: stream ``a`` sends live packets; stream ``b`` sends a packet at
  ``t0_us = 2**53 - 1`` (accepted: a time jump, a fresh segment far in the future)
  and one at ``2**62`` (over the limit: dropped and counted as ``packets_bad_time``).
  Stream ``a`` must go on deciding (``decisions_after_far_future`` of ``a``).
- ``command_flood``: while ``a`` sends, ``--flood`` bad commands (not JSON, too large,
  too deep, not an object, out of range, wrong types) at QoS 1, then one good
  ``{"tau": 0.5}``; it must be applied (the retained config says so) and every bad one
  counted (``bad_commands``).
- ``worker_kill``: while ``a`` sends, the service gets SIGKILL. Decisions already
  published are delivered once; the broker publishes the Last Will (``offline``). Lost
  by design: decisions still in the in-memory outbox and packets not yet decided
  when the process dies (there is no on-disk outbox); the sender's packets after the
  kill reach no one. ``decisions_expected`` is a lower bound here (the last metrics
  before the kill).

- ``worker_failover``: three workers (``--worker w0/w1/w2``, keepalive 2 s) share six
  live streams by rendezvous hashing; the worker that owns most of them gets SIGKILL.
  The broker sends its Will at once (the kernel closes its socket); the survivors take
  its streams over. ``will_after_s``: kill -> the Will at the subscriber;
  ``first_decision_of_new_owner_after_s``: kill -> the first decision of each moved
  stream from its new owner (a decision needs ``--t-min 5`` steps of new packets);
  ``failover_s``: the largest of those. Decisions are attributed to workers by the
  MQTT 5 user property ``spikecast-worker``: a survivor's delivered decisions must
  equal those it made (exit line); the victim's at least those of its last metrics.
- ``worker_hang``: the same with SIGSTOP instead: the process hangs with its socket
  open, so the Will comes only when the broker's keepalive runs out (1.5 x 2 s).

Writes bench/results/faults.json (``--quick``: bench/results/faults-quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import (  # bench/ is not a package: its scripts import each other
    builtin_network,
    continuous,
    free_port,
    load_recordings,
    mosquitto_binary,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEVICE = "faults"
PACKET_US = 10_000
RECONNECT = "?reconnect_min_s=0.05&reconnect_max_s=0.3&timeout_s=3&keepalive_s=5"
WORKERS = ("w0", "w1", "w2")
KEEPALIVE_S = 2  # of the workers: a hung one's Will comes after 1.5 x this


class Broker:
    """Mosquitto on a fixed loopback port; stop() and start() keep port and persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {workdir}/", "autosave_interval 1",
                 "max_queued_messages 100000", "max_inflight_messages 0", "set_tcp_nodelay true"]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import socket

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"mosquitto did not start:\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def paho(port: int, name: str, *, persistent: bool = False) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"faults-{name}-{os.getpid()}",
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(0.05, 0.3)
    props = None
    if persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
    c.connect("127.0.0.1", port, keepalive=10, clean_start=not persistent, properties=props)
    return c


class Subscriber:
    """Decisions by (stream, seq), the metrics, status and config messages of DEVICE."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.decisions: list[tuple[str, int, float]] = []
        #: (stream, seq) -> the worker that published it (MQTT 5 user property), first time
        self.by_worker: dict[tuple[str, int], str | None] = {}
        self.worker_status: list[tuple[str, bytes, float]] = []  # (worker, payload, time)
        self.worker_metrics: dict[str, list[dict[str, Any]]] = {}
        self.first_decision: dict[tuple[str, str | None], float] = {}  # (stream, worker) -> t
        self.metrics: list[dict[str, Any]] = []
        self.status: list[bytes] = []
        self.config: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.client = paho(port, "sub", persistent=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.loop_start()
        if not self.connected.wait(10):
            raise SystemExit("subscriber did not connect")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(f"spikecast/{DEVICE}/+/decision", 1), (f"spikecast/{DEVICE}/metrics", 1),
                          (f"spikecast/{DEVICE}/status", 1), (f"spikecast/{DEVICE}/config", 1),
                          (f"spikecast/{DEVICE}/workers/+/status", 1),
                          (f"spikecast/{DEVICE}/workers/+/metrics", 1)])
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if "/workers/" in msg.topic:
                worker = msg.topic.split("/")[3]
                if msg.topic.endswith("/status"):
                    self.worker_status.append((worker, bytes(msg.payload), now))
                else:
                    self.worker_metrics.setdefault(worker, []).append(json.loads(msg.payload))
            elif msg.topic.endswith("/decision"):
                d = json.loads(msg.payload)
                self.decisions.append((d["stream"], d["seq"], now))
                props = getattr(msg.properties, "UserProperty", None) or []
                who = next((v for k, v in props if k == "spikecast-worker"), None)
                self.by_worker.setdefault((d["stream"], d["seq"]), who)
                self.first_decision.setdefault((d["stream"], who), now)
            elif msg.topic.endswith("/metrics"):
                self.metrics.append(json.loads(msg.payload))
            elif msg.topic.endswith("/status"):
                self.status.append(msg.payload)
            elif msg.topic.endswith("/config"):
                self.config.append(json.loads(msg.payload))

    def unique(self, stream: str | None = None) -> int:
        with self.lock:
            return len({(s, q) for s, q, _ in self.decisions if stream is None or s == stream})

    def total(self) -> int:
        with self.lock:
            return len(self.decisions)

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Service:
    """``spikecast run`` in a subprocess; its stderr in a file."""

    def __init__(
        self, workdir: Path, model: Path, port: int, *source: str, model_point: bool = False
    ) -> None:
        """``model_point``: run at the model's recommended operating point (no flags),
        else at the fixed τ 0.9 / t_min 5 / t_max 200 the fault scenarios count on."""
        self.log = workdir / f"service-{time.monotonic_ns()}.log"
        point = [] if model_point else ["--tau", "0.9", "--t-min", "5", "--t-max", "200"]
        self.started = time.monotonic()
        cmd = [sys.executable, "-m", "spikecast.runtime.cli", "run", "--model", str(model),
               "--mqtt", f"mqtt://127.0.0.1:{port}{RECONNECT}", "--device", DEVICE,
               *point, "--metrics-interval-s", "0.2", *source]
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)

    def summary(self) -> tuple[int | None, str]:
        text = self.log.read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith("spikecast: ")]
        if not lines:
            return None, text[-1500:]
        m = re.match(r"spikecast: ([\d,]+) decisions?", lines[-1])  # "6,004 decisions"
        return (int(m.group(1).replace(",", "")) if m else None), lines[-1]

    def stop(self, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class Sender:
    """Live SCEV packets of one stream on a thread, paced at ``speed`` x sensor time."""

    def __init__(self, port: int, stream: str, events: np.ndarray, speed: float) -> None:
        from spikecast.runtime.packets import encode_packet

        span = (int(events["t"][-1]) // PACKET_US + 1) * PACKET_US
        edges = np.arange(0, span + 1, PACKET_US)
        cut = np.searchsorted(events["t"], edges)
        self.packets = [bytes(encode_packet(events[cut[k]: cut[k + 1]], 34, 34, t0_us=int(edges[k])))
                        for k in range(len(edges) - 1)]
        self.packets.append(bytes(encode_packet(events[:0], 34, 34, t0_us=span)))  # watermark
        self.topic = f"spikecast/{DEVICE}/{stream}/events"
        self.client = paho(port, f"send-{stream}")
        self.client.loop_start()
        self.interval = PACKET_US / 1e6 / speed
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sender:
        self.thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        for k, p in enumerate(self.packets):
            if self._stop.is_set():
                return
            self.client.publish(self.topic, p, qos=1)
            self.sent += 1
            delay = t0 + (k + 1) * self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def join(self, timeout_s: float) -> None:
        self.thread.join(timeout_s)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def publish(port: int, topic: str, payloads: list[bytes], qos: int = 1) -> None:
    c = paho(port, "pub")
    c.loop_start()
    infos = [c.publish(topic, p, qos=qos) for p in payloads]
    for info in infos:
        info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def counted(metrics: dict[str, Any]) -> dict[str, int]:
    out = {k: int(v) for k, v in metrics.get("dropped", {}).items() if v}
    pub = metrics.get("publisher") or {}
    for key in ("dropped", "inbound_dropped"):  # pending at exit: the exit line counts it
        if pub.get(key):
            out[f"publisher_{key}"] = int(pub[key])
    return out


def undelivered(summary: str, metrics: dict[str, Any]) -> int:
    """Decisions the service itself counted as never delivered (exit line, else metrics)."""
    m = re.search(r"([\d,]+) messages? not delivered to the broker", summary)
    if m:
        return int(m.group(1).replace(",", ""))
    pub = metrics.get("publisher") or {}
    return int(pub.get("dropped", 0))


def result(expected: int, sub: Subscriber, drops: dict[str, int], lost_counted: int,
           **extra: Any) -> dict[str, Any]:
    delivered = sub.unique()
    return {"decisions_expected": expected, "delivered": delivered,
            "duplicates": sub.total() - delivered,
            "lost": max(0, expected - delivered - lost_counted), "counted_drops": drops, **extra}


# -- scenarios ----------------------------------------------------------------------------


def broker_restart(work: Path, model: Path, events: np.ndarray, quick: bool) -> dict[str, Any]:
    broker = Broker(work)
    npz = work / "long.npz"
    np.savez(npz, events=events, width=np.int64(34), height=np.int64(34))
    sub = Subscriber(broker.port)
    svc = Service(work, model, broker.port, "--source", str(npz), "--realtime", "--all-decisions")
    try:
        if not sub.wait(lambda: sub.unique() >= 5, 30):
            raise SystemExit(f"broker_restart: no decisions:\n{svc.summary()[1]}")
        outage_s = 1.0 if quick else 3.0
        before = sub.unique()
        broker.stop()
        time.sleep(outage_s)
        broker.start()
        code = svc.proc.wait(120)
        made, line = svc.summary()
        if made is None:
            raise SystemExit(f"broker_restart: no summary line:\n{line}")
        sub.wait(lambda: sub.unique() >= made, 15)
        last = sub.metrics[-1] if sub.metrics else {}
        with sub.lock:  # metrics taken while the broker was away wait in the outbox too
            waited = max(((m.get("publisher") or {}).get("pending", 0) for m in sub.metrics), default=0)
        return result(made, sub, counted(last), undelivered(line, last), outage_s=outage_s,
                      delivered_before_outage=before, max_outbox_pending_seen=waited,
                      exit_status=code, summary=line)
    finally:
        svc.stop()
        sub.close()
        broker.stop()


def _live(work: Path, model: Path) -> tuple[Broker, Subscriber, Service]:
    broker = Broker(work)
    sub = Subscriber(broker.port)
    svc = Service(work, model, broker.port, "--source", "mqtt")
    if not sub.wait(lambda: bool(sub.status) and sub.status[-1] == b"online", 30):
        svc.stop()
        raise SystemExit(f"the service never went online:\n{svc.summary()[1]}")
    return broker, sub, svc


def _finish(svc: Service, sub: Subscriber) -> tuple[int, str, dict[str, Any]]:
    code = svc.stop()
    made, line = svc.summary()
    if made is None:
        raise SystemExit(f"no summary line:\n{line}")
    sub.wait(lambda: sub.unique() >= made, 10)
    time.sleep(0.3)  # the final metrics message
    return made, line, (sub.metrics[-1] if sub.metrics else {}) | {"exit_status": code}


def far_future_t0(work: Path, model: Path, events: np.ndarray, quick: bool) -> dict[str, Any]:
    from spikecast.runtime.packets import encode_packet

    broker, sub, svc = _live(work, model)
    try:
        started = time.monotonic()
        a = Sender(broker.port, "a", events, speed=1.0).start()
        sub.wait(lambda: sub.unique("a") >= 3, 30)
        some = events[:10].copy()
        near_max = 2**53 - 1
        some["t"] = near_max
        publish(broker.port, f"spikecast/{DEVICE}/b/events",
                [bytes(encode_packet(some, 34, 34, t0_us=near_max)),
                 bytes(encode_packet(events[:0], 34, 34, t0_us=2**62))])
        at = time.monotonic()
        a.join(120)
        a.close()
        made, line, last = _finish(svc, sub)
        with sub.lock:
            after = len({(s, q) for s, q, t in sub.decisions if s == "a" and t > at})
            by_stream = {s: len({q for s2, q, _ in sub.decisions if s2 == s})
                         for s in {s for s, _, _ in sub.decisions}}
        return result(made, sub, counted(last), undelivered(line, last),
                      decisions_after_far_future=after, decisions_by_stream=by_stream,
                      far_future_sent_after_s=round(at - started, 2), packets_sent_a=a.sent,
                      bad_time_dropped=counted(last).get("packets_bad_time", 0),
                      exit_status=last["exit_status"], summary=line)
    finally:
        svc.stop()
        sub.close()
        broker.stop()


def bad_commands(n: int) -> list[bytes]:
    kinds = [b"not json", b"x" * 5000, b"[" * 10_000, b"[1, 2]", b'{"tau": 7}', b'{"t_max": 1e9}',
             b'{"tau": "high"}', b'{"t_min": -3}', b"\xff\xfe", b'{"tau": NaN}']
    return [kinds[i % len(kinds)] for i in range(n)]


def command_flood(work: Path, model: Path, events: np.ndarray, quick: bool) -> dict[str, Any]:
    broker, sub, svc = _live(work, model)
    n = 300 if quick else 5000
    try:
        a = Sender(broker.port, "a", events, speed=1.0).start()
        sub.wait(lambda: sub.unique("a") >= 3, 30)
        t0 = time.monotonic()
        publish(broker.port, f"spikecast/{DEVICE}/cmd/set", [*bad_commands(n), b'{"tau": 0.5}'])
        applied = sub.wait(lambda: any(c.get("tau") == 0.5 for c in sub.config), 30)
        applied_s = time.monotonic() - t0
        sub.wait(lambda: bool(sub.metrics) and sub.metrics[-1].get("bad_commands", 0) >= n, 10)
        a.join(120)
        a.close()
        made, line, last = _finish(svc, sub)
        return result(made, sub, counted(last), undelivered(line, last), bad_commands_sent=n,
                      bad_commands_counted=last.get("bad_commands"),
                      bad_commands_by_cause=last.get("bad_commands_by_cause"),
                      good_command_applied=applied, seconds_to_apply=round(applied_s, 2),
                      exit_status=last["exit_status"], summary=line)
    finally:
        svc.stop()
        sub.close()
        broker.stop()


def worker_kill(work: Path, model: Path, events: np.ndarray, quick: bool) -> dict[str, Any]:
    broker, sub, svc = _live(work, model)
    try:
        a = Sender(broker.port, "a", events, speed=1.0).start()
        sub.wait(lambda: sub.unique("a") >= (5 if quick else 20), 60)
        time.sleep(0.5)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait(10)
        killed_at = time.monotonic()
        offline = sub.wait(lambda: bool(sub.status) and sub.status[-1] == b"offline", 20)
        a.close()
        time.sleep(1.0)
        with sub.lock:
            expected = max((m.get("decisions", 0) for m in sub.metrics), default=0)
            late = len([1 for *_, t in sub.decisions if t > killed_at + 0.5])
        last = sub.metrics[-1] if sub.metrics else {}
        return result(expected, sub, counted(last), 0, last_will_offline=offline,
                      delivered_after_kill=late, packets_sent_a=a.sent,
                      decisions_expected_is="decisions in the last metrics before SIGKILL: a lower "
                      "bound; decisions made after it and not yet published died with the process")
    finally:
        svc.stop()
        sub.close()
        broker.stop()


# -- several workers (docs/mqtt.md "Scaling out") ------------------------------------------


def _workers(work: Path, model: Path, port: int, keepalive_s: int) -> dict[str, Service]:
    return {w: Service(work, model, port, "--source", "mqtt", "--worker", w,
                       "--keepalive-s", str(keepalive_s)) for w in WORKERS}


def _failover(work: Path, model: Path, events: np.ndarray, quick: bool, *, hang: bool) -> dict[str, Any]:
    """3 workers, 6 live N-MNIST streams in real time; the worker that owns most of them is
    killed (SIGKILL) or hung (SIGSTOP, then killed once its Will is out)."""
    from spikecast.runtime.affinity import owner

    broker = Broker(work)
    sub = Subscriber(broker.port)
    procs = _workers(work, model, broker.port, KEEPALIVE_S)
    streams = [f"s{i}" for i in range(6)]
    counts = {w: sum(owner(s, WORKERS) == w for s in streams) for w in WORKERS}
    victim = max(WORKERS, key=lambda w: counts[w])
    survivors = tuple(w for w in WORKERS if w != victim)
    moved = [s for s in streams if owner(s, WORKERS) == victim]
    senders: list[Sender] = []
    try:
        ready = sub.wait(lambda: all(any(len(m["worker"]["workers"]) == 3 for m in
                                         sub.worker_metrics.get(w, [])) for w in WORKERS), 60)
        if not ready:
            raise SystemExit(f"workers never saw each other:\n{procs[victim].summary()[1]}")
        # The recordings over and over, at least 20 s of sensor time at real time, so the
        # streams go on well past the kill (and a hung worker's keepalive).
        span = (int(events["t"][-1]) // 1000 + 10) * 1000
        parts = [events.copy() for _ in range(max(3, -(-20_000_000 // span)))]
        for j, part in enumerate(parts):
            part["t"] += j * span
        long = np.concatenate(parts)
        senders = [Sender(broker.port, s, long, speed=1.0).start() for s in streams]
        sub.wait(lambda: all(sub.first_decision.get((s, victim)) for s in moved), 30)
        time.sleep(1.0)
        before_kill = sub.unique()
        procs[victim].proc.send_signal(signal.SIGSTOP if hang else signal.SIGKILL)
        killed_at = time.monotonic()

        def will() -> float | None:
            with sub.lock:
                return next((t for w, p, t in sub.worker_status
                             if w == victim and p == b"offline" and t > killed_at), None)

        sub.wait(lambda: will() is not None, 30)
        will_at = will()
        if hang:
            procs[victim].proc.send_signal(signal.SIGKILL)
        sub.wait(lambda: all(sub.first_decision.get((s, owner(s, survivors))) for s in moved), 30)
        time.sleep(1.0 if quick else 2.0)
        for x in senders:
            x.close()
        made = {}
        for w in survivors:
            procs[w].stop()
            made[w] = procs[w].summary()[0] or 0
        sub.wait(lambda: all(sum(1 for who in sub.by_worker.values() if who == w) >= made[w]
                             for w in survivors), 15)
        time.sleep(0.5)
        return _failover_result(sub, victim, streams, made, killed_at, will_at, before_kill, hang)
    finally:
        for x in senders:
            x.close()
        for p in procs.values():
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(5)
        sub.close()
        broker.stop()


def _failover_result(sub: Subscriber, victim: str, streams: list[str], made: dict[str, int],
                     killed_at: float, will_at: float | None, before_kill: int,
                     hang: bool) -> dict[str, Any]:
    from spikecast.runtime.affinity import owner

    survivors = tuple(w for w in WORKERS if w != victim)
    moved = [s for s in streams if owner(s, WORKERS) == victim]
    with sub.lock:
        victim_last = max((m.get("decisions", 0) for m in sub.worker_metrics.get(victim, [])),
                          default=0)
        delivered_by = {w: sum(1 for who in sub.by_worker.values() if who == w) for w in WORKERS}
        first_new = {s: round(sub.first_decision[(s, owner(s, survivors))] - killed_at, 3)
                     for s in moved if (s, owner(s, survivors)) in sub.first_decision}
        taken = {w: (sub.worker_metrics.get(w) or [{}])[-1].get("worker", {}) for w in survivors}
        not_owned = {w: (sub.worker_metrics.get(w) or [{}])[-1].get("worker", {})
                     .get("packets_not_owned") for w in WORKERS}
    expected = sum(made.values()) + victim_last
    r = result(expected, sub, {}, 0,
               workers=len(WORKERS), streams=len(streams), moved_streams=len(moved),
               keepalive_s=KEEPALIVE_S, kill_signal="SIGSTOP, then SIGKILL" if hang else "SIGKILL",
               will_after_s=None if will_at is None else round(will_at - killed_at, 3),
               first_decision_of_new_owner_after_s=first_new,
               failover_s=max(first_new.values()) if len(first_new) == len(moved) else None,
               streams_taken_over={w: taken[w].get("streams_taken_over") for w in survivors},
               packets_not_owned=not_owned,
               decisions_by_worker_made={**made, victim: f">= {victim_last} (last metrics)"},
               decisions_by_worker_delivered=delivered_by,
               delivered_before_kill=before_kill)
    # Survivors: made == delivered exactly; the victim: at least its last metrics count.
    r["lost"] = sum(max(0, made[w] - delivered_by[w]) for w in survivors) + max(
        0, victim_last - delivered_by[victim])
    return r


def worker_failover(work: Path, model: Path, events: np.ndarray, quick: bool) -> dict[str, Any]:
    return _failover(work, model, events, quick, hang=False)


def worker_hang(work: Path, model: Path, events: np.ndarray, quick: bool) -> dict[str, Any]:
    return _failover(work, model, events, quick, hang=True)


SCENARIOS: dict[str, Callable[[Path, Path, np.ndarray, bool], dict[str, Any]]] = {
    "broker_restart": broker_restart,
    "far_future_t0": far_future_t0,
    "command_flood": command_flood,
    "worker_kill": worker_kill,
    "worker_failover": worker_failover,
    "worker_hang": worker_hang,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    recs = load_recordings(8 if args.quick else 20)
    events = continuous(recs)
    out = args.out or RESULTS / ("faults-quick.json" if args.quick else "faults.json")
    names = args.scenarios.split(",")
    # A subset of the scenarios updates their entries and keeps the others'.
    results: dict[str, Any] = {}
    if out.exists() and set(names) != set(SCENARIOS):
        results = {k: v for k, v in json.loads(out.read_text()).items() if k != "_meta"}
    with tempfile.TemporaryDirectory(prefix="spikecast-faults-") as tmp:
        model = builtin_network().save(Path(tmp) / "net.scn")
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            t0 = time.monotonic()
            r = SCENARIOS[name](work, model, events, args.quick)
            r["seconds"] = round(time.monotonic() - t0, 1)
            results[name] = r
            print(f"{name:15s} expected {r['decisions_expected']:4d}  delivered {r['delivered']:4d}  "
                  f"duplicates {r['duplicates']:3d}  lost {r['lost']}  drops {r['counted_drops']}  "
                  f"{r['seconds']} s", flush=True)
    results["_meta"] = {
        "sensor_ms_of_input": round(float(events["t"][-1]) / 1000, 1),
        "packet_us": PACKET_US,
        "mosquitto": subprocess.run([mosquitto_binary(), "-h"], capture_output=True,
                                    text=True).stdout.splitlines()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "scenarios_run": names,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
