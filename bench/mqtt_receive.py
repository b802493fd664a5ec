"""CPU that the service's MQTT client spends per received live packet, with and without
the QoS 0 PUBLISH fast path (spikecast.runtime.mqtt.paho_publish).

    python bench/mqtt_receive.py                 # 3 repeats x 20,000 packets per mode
    python bench/mqtt_receive.py --packets 5000 --repeats 1

A Mosquitto broker on a free port (bench/latency.py's), an ``MqttPublisher`` subscribed
to ``spikecast/cam0/+/events`` as the service subscribes (QoS 0, subscription
identifier), and a paho sender in another process publishing ``--packets`` messages of
``--payload-bytes`` (1,000: a 10 ms N-MNIST packet is about that) over 16 stream topics,
in bursts of 16 (one per stream, as 16 real-time streams send). The receiving process's
CPU time (``time.process_time``) from the first message to the last, per message:
receive, parse, route and hand to the subscription's reader, with nothing else running
in that process. Each mode runs in a fresh process ("paho": the fast path not installed,
every packet through paho's handler and aiomqtt's queue as before); modes alternate,
and the medians over repeats are reported.

Writes bench/results/mqtt_receive.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_json

SENDER = """
import sys, time
import paho.mqtt.client as paho
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
c.connect("127.0.0.1", port)
c.loop_start()
time.sleep(0.5)
payload = bytes(size)
for i in range(n):
    c.publish("spikecast/cam0/s%d/events" % (i % 16), payload, qos=0)
    if i % 16 == 15:
        time.sleep(0.0005)
time.sleep(1.0)
c.loop_stop()
c.disconnect()
"""


async def receive(port: int, n: int, size: int) -> dict[str, float]:
    """One measurement in this process (run by --child)."""
    from spikecast.runtime.mqtt import MqttPublisher
    from spikecast.runtime.mqtt.settings import MqttSettings
    from spikecast.runtime.mqtt.topics import events_filter

    async with MqttPublisher(MqttSettings(host="127.0.0.1", port=port, device="cam0")) as pub:
        await pub.wait_connected(10)
        sub = await pub.subscribe(events_filter("cam0"), qos=0, queue_size=n + 16)
        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(port), str(n), str(size)])
        await asyncio.wait_for(sub.__anext__(), 30)
        c0, t0 = time.process_time(), time.perf_counter()

        async def rest() -> None:
            for _ in range(n - 1):
                await sub.__anext__()

        await asyncio.wait_for(rest(), 120)  # one timer for all: no task per message
        c1, t1 = time.process_time(), time.perf_counter()
        sender.wait(60)
        return {"cpu_us_per_message": (c1 - c0) / (n - 1) * 1e6, "wall_s": t1 - t0,
                "dropped": pub.stats().inbound_dropped + sub.dropped}


def child(args: argparse.Namespace) -> None:
    if args.child == "paho":
        from spikecast.runtime.mqtt import paho_publish

        paho_publish.install = lambda *a, **k: False  # type: ignore[assignment]
    print(json.dumps(asyncio.run(receive(args.port, args.packets, args.payload_bytes))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=20_000)
    ap.add_argument("--payload-bytes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=("fast", "paho"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from latency import Broker, broker_version

    runs: dict[str, list[dict[str, float]]] = {"fast": [], "paho": []}
    with tempfile.TemporaryDirectory() as work:
        broker = Broker(Path(work))
        try:
            for k in range(args.repeats):
                for mode in runs:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", mode, "--port", str(broker.port),
                         "--packets", str(args.packets), "--payload-bytes", str(args.payload_bytes)],
                        capture_output=True, text=True, timeout=600, check=True,
                    )
                    runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    us = runs[mode][-1]["cpu_us_per_message"]
                    print(f"repeat {k + 1}, {mode}: {us:.1f} us CPU per message")
        finally:
            broker.stop()
        version = broker_version(broker.binary)
    med = {m: statistics.median(r["cpu_us_per_message"] for r in rs) for m, rs in runs.items()}
    result = {
        "what": "CPU of the receiving process per live packet (QoS 0, subscription identifier), "
                "from the first message to the last: read, parse, route, hand to the reader",
        "packets": args.packets,
        "payload_bytes": args.payload_bytes,
        "repeats": args.repeats,
        "cpu_us_per_message": med,
        "fast_path_speedup": med["paho"] / med["fast"],
        "runs": runs,
        "dropped": sum(r["dropped"] for rs in runs.values() for r in rs),
        "broker": version,
        "command": "python bench/mqtt_receive.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "machine": machine(),
    }
    path = write_json("mqtt_receive.json", result)
    print(f"fast path {med['fast']:.1f} us, paho's {med['paho']:.1f} us per message "
          f"({result['fast_path_speedup']:.2f}x) -> {path}")


if __name__ == "__main__":
    main()
