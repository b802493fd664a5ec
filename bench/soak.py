"""Soak: ``spikecast run --source mqtt`` fed live streams for minutes; memory and losses.

    python bench/soak.py                        # 12 minutes, 4 streams
    python bench/soak.py --minutes 60 --streams 16 --model bench/models/nmnist.scn
    python bench/soak.py --quick                # 20 s, 2 streams (the CI test)

Same set-up as bench/faults.py (a Mosquitto it starts, the service as a subprocess, a
seq-deduplicating MQTT 5 subscriber). Each stream replays N-MNIST recordings back to
back in sensor real time, lap after lap (the packets' ``t0_us`` advanced by one lap
each time), one packet per 10 ms. The service's resident set (``VmRSS`` of its
process) is sampled every few seconds; ``rss_slope_mb_per_min`` is the least-squares
slope over the samples after the first quarter of the run (start-up, first decisions
and allocator warm-up excluded); ``rss_slope_last_third_mb_per_min`` over the last
third. The service keeps its newest 10,000 decisions (``Service.decisions``,
``[limits] decision_history``), so its memory rises by design until that many are
held (8 minutes at 4 N-MNIST streams) and should be flat after. ``decisions`` is
what the service says it made (its exit line), ``delivered`` the distinct (stream,
seq) the subscriber got, ``lost`` = decisions - delivered - what the service counted
as undelivered.

Writes bench/results/soak.json (``--quick``: bench/results/soak-quick.json).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import PACKET_US, Broker, Service, Subscriber, counted, paho, undelivered
from latency import builtin_network, continuous, load_recordings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEVICE = "faults"  # the device faults.Subscriber listens to
_T0_OFFSET = 14  # byte offset of t0_us in the SCEV header (docs/packets.md)


class LapSender:
    """One stream: the packets of one lap, re-sent with t0 advanced lap after lap."""

    def __init__(self, port: int, stream: str, events: np.ndarray, stop: threading.Event) -> None:
        from spikecast.runtime.packets import encode_packet

        self.lap_us = (int(events["t"][-1]) // PACKET_US + 1) * PACKET_US
        edges = np.arange(0, self.lap_us + 1, PACKET_US)
        cut = np.searchsorted(events["t"], edges)
        self.packets = [bytearray(encode_packet(events[cut[k]: cut[k + 1]], 34, 34, t0_us=int(edges[k])))
                        for k in range(len(edges) - 1)]
        self.base = [int(edges[k]) for k in range(len(edges) - 1)]
        self.topic = f"spikecast/{DEVICE}/{stream}/events"
        self.client = paho(port, f"soak-{stream}")
        self.client.loop_start()
        self.stop = stop
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        lap = k = 0
        while not self.stop.is_set():
            p = self.packets[k]
            p[_T0_OFFSET:_T0_OFFSET + 8] = (self.base[k] + lap * self.lap_us).to_bytes(8, "little")
            self.client.publish(self.topic, bytes(p), qos=1)
            self.sent += 1
            k += 1
            if k == len(self.packets):
                k, lap = 0, lap + 1
            delay = t0 + self.sent * PACKET_US / 1e6 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def close(self) -> None:
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+)", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def slope(samples: list[tuple[float, float]], skip: float = 0.25) -> float:
    tail = samples[int(len(samples) * skip):]
    if len(tail) < 3:
        return float("nan")
    t = np.array([s[0] for s in tail]) / 60.0
    y = np.array([s[1] for s in tail])
    return float(np.polyfit(t, y, 1)[0])


def sample_rss(
    svc: Service, sub: Subscriber, args: argparse.Namespace, partial: Path
) -> list[tuple[float, float]]:
    """The service's RSS every ``sample_s`` for ``minutes``; the samples so far and the
    last metrics go to ``partial`` every minute, so a long run leaves data if it dies."""
    start = time.monotonic()
    samples = [(0.0, rss_mb(svc.proc.pid))]
    while (now := time.monotonic() - start) < args.minutes * 60:
        time.sleep(min(args.sample_s, args.minutes * 60 - now))
        samples.append((time.monotonic() - start, rss_mb(svc.proc.pid)))
        if len(samples) % max(1, int(60 / args.sample_s)) == 0:
            note = {"complete": False, "streams": args.streams, "rss_samples": samples,
                    "metrics": sub.metrics[-1] if sub.metrics else {}}
            partial.write_text(json.dumps(note) + "\n")
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="20 s, 2 streams, samples every 1 s")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--model", type=Path, default=None,
                    help="a .scn for 34x34 event input (default: the tiny built-in network)")
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.streams, args.sample_s = 20 / 60, 2, 1.0
    events = continuous(load_recordings(20))
    out = args.out or RESULTS / ("soak-quick.json" if args.quick else "soak.json")
    with tempfile.TemporaryDirectory(prefix="spikecast-soak-") as tmp:
        work = Path(tmp)
        model = args.model.resolve() if args.model else builtin_network().save(work / "net.scn")
        broker = Broker(work)
        sub = Subscriber(broker.port)
        # A real model runs at its own recommended point, as a user's service would.
        svc = Service(work, model, broker.port, "--source", "mqtt", model_point=args.model is not None)
        try:
            if not sub.wait(lambda: bool(sub.status) and sub.status[-1] == b"online", 30):
                raise SystemExit(f"the service never went online:\n{svc.summary()[1]}")
            stop = threading.Event()
            senders = [LapSender(broker.port, f"s{i}", events, stop) for i in range(args.streams)]
            samples = sample_rss(svc, sub, args, out.with_suffix(".partial.json"))
            stop.set()
            for s in senders:
                s.close()
            time.sleep(1.0)  # the last packets reach the service
            code = svc.stop(timeout_s=120)
            made, line = svc.summary()
            if made is None:
                print(f"no summary line from the service (exit status {code}):\n{line}", file=sys.stderr)
            sub.wait(lambda: made is not None and sub.unique() >= made, 15)
            time.sleep(0.3)
            last = sub.metrics[-1] if sub.metrics else {}
            delivered = sub.unique()
            result: dict[str, Any] = {
                "minutes": round(samples[-1][0] / 60, 2),
                "streams": args.streams,
                "model": str(args.model) if args.model else "built-in tiny network",
                "operating_point": "the model's own" if args.model else "tau 0.9, t_min 5, t_max 200",
                "events": int(last.get("events_in", 0)),  # the exit line rounds ("15M")
                "packets_sent": sum(s.sent for s in senders),
                "decisions": made,
                "delivered": delivered,
                "duplicates": sub.total() - delivered,
                "rss_mb_start": round(samples[0][1], 1),
                "rss_mb_end": round(samples[-1][1], 1),
                "rss_mb_max": round(max(s[1] for s in samples), 1),
                "rss_slope_mb_per_min": round(slope(samples), 3),
                "rss_slope_last_third_mb_per_min": round(slope(samples, 2 / 3), 3),
                # Service.decisions keeps the newest decision_history decisions: memory
                # that grows until that many are held, by design.
                "decision_history": 10_000,
                "decisions_per_min": None if made is None else round(made * 60 / samples[-1][0], 1),
                "lost": None if made is None else max(0, made - delivered - undelivered(line, last)),
                "counted_drops": counted(last),
                "exit_status": code,
                "summary": line,
                "rss_samples": [[round(t, 1), round(m, 1)] for t, m in samples],
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        finally:
            svc.stop()
            sub.close()
            broker.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    print({k: v for k, v in result.items() if k != "rss_samples"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
