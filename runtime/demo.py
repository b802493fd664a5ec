"""``spikecast demo``: the bundled N-MNIST network on bundled event streams, no broker.

The package carries (in ``spikecast/runtime/data``) a small event-input network
converted from a CNN trained on N-MNIST, and ten event streams of MNIST *test* digits
(one per digit, never trained on) made by the saccade generator, with polarities in
the real N-MNIST convention: ``bench/nmnist.py`` writes them to bench/models/demo/,
and a maintainer copies them here by hand (see that script).
Each stream is replayed in 1 ms chunks (paced by its sensor time with ``--realtime``)
through an :class:`~spikecast.runtime.stream.EventStreamDecider` with early exit,
and each decision is printed to stdout as one JSON line; a short summary goes to
stderr. Needs numpy and the compiled engine only: no torch, no
tonic, no MQTT broker.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from spikecast.ext.core.errors import ModelFileError
from spikecast.ext.core.network import Network, load_network
from spikecast.runtime.decision import Calibration, OperatingPoint, initial_point

MODEL_NAME = "nmnist.scn"
STREAM_GLOB = "digit*.npz"
_DIGIT = re.compile(r"digit(\d)")


@contextmanager
def bundled_data() -> Iterator[Path]:
    """The folder of bundled demo files, as a real path for as long as it is needed."""
    with resources.as_file(resources.files("spikecast.runtime") / "data") as folder:
        yield Path(folder)


def load_bundle(folder: Path) -> tuple[Network, list[Path]]:
    """The bundled network and stream files (sorted); clear errors when absent."""
    model = folder / MODEL_NAME
    if not model.is_file():
        raise ModelFileError(
            f"{model}: the bundled demo network is missing; reinstall spikecast, or run "
            "python bench/nmnist.py from a source checkout to rebuild it"
        )
    streams = sorted(folder.glob(STREAM_GLOB))
    if not streams:
        raise ModelFileError(f"{folder}: no bundled demo streams ({STREAM_GLOB})")
    return load_network(model), streams


def true_digit(path: Path) -> int | None:
    m = _DIGIT.match(path.name)
    return int(m.group(1)) if m else None


def run_demo(
    *,
    realtime: bool = False,
    tau: float | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Run every bundled stream; print and return one record per decision."""
    from spikecast.ext.engine import CompiledNetwork
    from spikecast.runtime.readers import read_events
    from spikecast.runtime.stream import DecisionContext, EventStreamDecider, decide_recording

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    with bundled_data() as folder:
        net, streams = load_bundle(folder)
        recordings = [(p.name, true_digit(p), read_events(p).events) for p in streams]
    cal = Calibration(net.calibration) if net.calibration is not None else None
    # The model's recommended point; an explicit --tau keeps its t_min and t_max.
    point = initial_point(net, cal).point
    if tau is not None:
        point = OperatingPoint(tau=float(tau), t_min=point.t_min, t_max=point.t_max)
    plan = CompiledNetwork(net)
    ctx = DecisionContext(network=net, device="demo", calibration=cal, sha256=net.sha256)
    dt_us = net.input.dt_us
    print(
        f"spikecast demo: {len(recordings)} streams, {net.exit_signal} rule, tau={point.tau:.3f}, "
        f"t_min={point.t_min}, t_max={point.t_max} steps of {dt_us / 1000:g} ms"
        + (", paced by sensor time" if realtime else ", as fast as possible"),
        file=err,
    )
    records: list[dict[str, Any]] = []
    for name, digit, events in recordings:
        decider = EventStreamDecider(plan, ctx, name, lambda: point, one_decision=True)
        began = time.perf_counter()
        decisions = decide_recording(decider, events, chunk_us=dt_us, realtime=realtime)
        wall_ms = (time.perf_counter() - began) * 1000.0
        for d in decisions:
            rec = {
                "stream": name,
                "label": d.label,
                "true": None if digit is None else str(digit),
                "correct": None if digit is None else d.label == str(digit),
                "confidence": round(d.confidence, 4),
                "expected_accuracy": None if d.expected_accuracy is None else round(d.expected_accuracy, 4),
                "steps": d.steps,
                "exit": d.exit,
                "sensor_ms": (d.sensor_t1_us - d.sensor_t0_us) / 1000.0,
                "stream_ms": round((int(events["t"][-1]) - int(events["t"][0])) / 1000.0, 3),
                "latency_ms": round(d.latency_ms, 3),
                "wall_ms": round(wall_ms, 3),
                "synops": d.synops,
            }
            records.append(rec)
            print(json.dumps(rec), file=out, flush=True)
    _summary(records, err)
    return records


def _summary(records: list[dict[str, Any]], err: TextIO) -> None:
    if not records:
        print("no decisions", file=err)
        return
    known = [r for r in records if r["correct"] is not None]
    right = sum(bool(r["correct"]) for r in known)
    sensor = np.array([r["sensor_ms"] for r in records])
    length = np.array([r["stream_ms"] for r in records])
    print(
        f"{right}/{len(known)} correct; decided after {sensor.mean():.1f} ms of sensor time "
        f"on average ({100 * sensor.mean() / length.mean():.0f}% of the "
        f"{length.mean():.0f} ms streams); "
        f"median latency {np.median([r['latency_ms'] for r in records]):.2f} ms; "
        f"median {np.median([r['synops'] for r in records]):,.0f} SynOps per decision",
        file=err,
    )


def demo(args: argparse.Namespace) -> int:
    """Entry point of ``spikecast demo`` (``args.realtime``, ``args.tau``)."""
    run_demo(realtime=bool(getattr(args, "realtime", False)), tau=getattr(args, "tau", None))
    return 0


__all__ = ["bundled_data", "demo", "load_bundle", "run_demo"]
