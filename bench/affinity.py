"""What a worker pays for the packets of streams it does not own (docs/mqtt.md "Scaling out").

    python bench/affinity.py            # about a minute
    python bench/affinity.py --quick    # fewer packets

Every worker of a device receives every packet of the device and drops those of streams
it does not own before decoding them. Two figures:

- ``check``: the ownership check alone (``Membership.owns_topic``, a cached dict lookup
  by topic), in thread CPU time per call, beside ``decode_packet`` of the same packets
  (what an owned packet costs before any compute). Medians of 5 repeats.
- ``workers``: two real worker processes (``spikecast run --source mqtt --worker``) on a
  Mosquitto broker this script starts; six streams of N-MNIST packets (10 ms each) that
  all belong to ``w0``, sent at a fixed pace. The CPU time (user + system, from
  /proc/PID/stat) each process spends while they arrive, minus what it spends idle over
  the same wall time, per packet: ``w1`` only receives and drops (MQTT receive, routing,
  the check), ``w0`` receives, decodes and decides.

Writes bench/results/affinity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import DEVICE, PACKET_US, RECONNECT, Broker, paho  # bench/ scripts import each other
from latency import builtin_network, continuous, load_recordings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def cut_packets(events: np.ndarray) -> list[bytes]:
    from spikecast.runtime.packets import encode_packet

    span = (int(events["t"][-1]) // PACKET_US + 1) * PACKET_US
    edges = np.arange(0, span + 1, PACKET_US)
    cut = np.searchsorted(events["t"], edges)
    return [bytes(encode_packet(events[cut[k]: cut[k + 1]], 34, 34, t0_us=int(edges[k])))
            for k in range(len(edges) - 1)]


def check_cost(packets: list[bytes]) -> dict[str, Any]:
    from spikecast.runtime.affinity import Membership, owner
    from spikecast.runtime.packets import decode_packet

    m = Membership("w1")
    m.apply("w1", b"online")
    m.apply("w0", b"online")
    streams = [s for s in (f"s{i}" for i in range(200)) if owner(s, ("w0", "w1")) == "w0"][:30]
    topics = [f"spikecast/{DEVICE}/{s}/events" for s in streams]
    calls = 300_000

    def owns() -> float:
        t0 = time.thread_time_ns()
        for i in range(calls):
            m.owns_topic(topics[i % len(topics)])
        return (time.thread_time_ns() - t0) / calls

    def decode() -> float:
        t0 = time.thread_time_ns()
        for p in packets:
            decode_packet(p)
        return (time.thread_time_ns() - t0) / len(packets)

    owns()  # fills the cache
    return {"owns_topic_ns": round(statistics.median(owns() for _ in range(5)), 1),
            "decode_packet_ns": round(statistics.median(decode() for _ in range(5)), 1),
            "mean_packet_bytes": round(float(np.mean([len(p) for p in packets])), 1),
            "mean_packet_events": round(float(np.mean([(len(p) - 32) / 9 for p in packets])), 1),
            "repeats": 5, "clock": "time.thread_time_ns"}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cost(work: Path, packets: list[bytes], n_packets: int) -> dict[str, Any]:
    from spikecast.runtime.affinity import owner

    broker = Broker(work)
    model = builtin_network().save(work / "net.scn")
    procs = {}
    for w in ("w0", "w1"):
        log = (work / f"{w}.log").open("wb")
        procs[w] = subprocess.Popen(
            [sys.executable, "-m", "spikecast.runtime.cli", "run", "--model", str(model),
             "--source", "mqtt", "--mqtt", f"mqtt://127.0.0.1:{broker.port}{RECONNECT}",
             "--device", DEVICE, "--worker", w, "--tau", "0.9", "--t-min", "5", "--t-max", "200",
             "--metrics-interval-s", "1"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        streams = [s for s in (f"s{i}" for i in range(200)) if owner(s, ("w0", "w1")) == "w0"][:6]
        time.sleep(8.0)  # both up and seeing each other (the metrics say so; see the logs)
        client = paho(broker.port, "affinity-send")
        client.loop_start()
        rate = 600  # packets per second, all streams together
        seconds = n_packets / rate
        idle0 = {w: cpu_s(p.pid) for w, p in procs.items()}
        time.sleep(seconds)
        idle = {w: cpu_s(p.pid) - idle0[w] for w, p in procs.items()}
        busy0 = {w: cpu_s(p.pid) for w, p in procs.items()}
        t0 = time.monotonic()
        for k in range(n_packets):
            s = streams[k % len(streams)]
            packet = packets[(k // len(streams)) % len(packets)]
            client.publish(f"spikecast/{DEVICE}/{s}/events", packet, qos=0)
            delay = t0 + (k + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(2.0)  # the workers catch up
        busy = {w: cpu_s(p.pid) - busy0[w] for w, p in procs.items()}
        wall = time.monotonic() - t0
        client.loop_stop()
        client.disconnect()
        scale = wall / seconds  # idle measured over `seconds`, busy over `wall`
        per = {w: round((busy[w] - idle[w] * scale) / n_packets * 1e6, 1) for w in procs}
        return {"packets": n_packets, "streams": len(streams), "rate_per_s": rate,
                "cpu_us_per_packet_owner_w0": per["w0"],
                "cpu_us_per_packet_dropping_w1": per["w1"],
                "cpu_s_busy": {w: round(v, 3) for w, v in busy.items()},
                "cpu_s_idle_same_wall": {w: round(v * scale, 3) for w, v in idle.items()},
                "note": "process CPU (user+system) while the packets arrive, minus idle CPU over "
                        "the same wall time, per packet; w0 owns every stream, w1 none"}
    finally:
        for p in procs.values():
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "affinity.json")
    args = ap.parse_args()
    events = continuous(load_recordings(4 if args.quick else 20))
    packets = cut_packets(events)
    result: dict[str, Any] = {"check": check_cost(packets)}
    print(json.dumps(result["check"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="spikecast-affinity-") as tmp:
        result["workers"] = workers_cost(Path(tmp), packets, 1200 if args.quick else 6000)
    print(json.dumps(result["workers"]), flush=True)
    result["_meta"] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                       "load_avg_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
