"""The ``dv://`` live source, fed by dv-processing's own ``dv.io.NetworkWriter`` on
loopback (``python -m spikecast.runtime.dv``, a separate process). No broker:
decisions go to stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.config import RunConfig
from spikecast.runtime.decision import OperatingPoint
from spikecast.runtime.dv import DvAddress, event_store, parse_dv, store_events
from spikecast.runtime.limits import LiveLimits
from spikecast.runtime.mqtt.stdout import StdoutPublisher
from spikecast.runtime.readers import read_events
from spikecast.runtime.service import Service, serve

pytest.importorskip("dv_processing", reason="dv-processing is not installed (pip install 'spikecast[dv]')")

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "bench" / "models" / "nmnist.scn"
NMNIST = ROOT.parent / "shared" / "data" / "nmnist" / "train"
POINT = OperatingPoint(tau=0.9, t_min=5, t_max=200)


def nmnist_file(index: int = 0) -> Path:
    files = sorted(NMNIST.glob("*.bin"))
    if len(files) <= index or not MODEL.exists():
        pytest.skip("no N-MNIST recordings or model (shared data not present)")
    return files[index]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def same_decision(a: Any, b: Any) -> tuple[Any, ...]:
    return (a.label, a.class_index, a.steps, a.exit, a.synops, round(a.confidence, 9))


@contextlib.asynccontextmanager
async def dv_writer(path: Path, port: int, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """dv-processing's NetworkWriter serving ``path`` on 127.0.0.1:port, once listening."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spikecast.runtime.dv", str(path), f"dv://127.0.0.1:{port}", *args,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"serving" in line, line
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()


async def run_service(cfg: RunConfig, timeout_s: float = 60) -> Service:
    """An in-process service on ``cfg``, run until its source ends."""
    pub = StdoutPublisher()
    svc = Service(cfg, pub)
    async with pub:
        await asyncio.wait_for(svc.run(), timeout_s)
    return svc


def test_addresses() -> None:
    assert parse_dv("dv://127.0.0.1:7777") == DvAddress("127.0.0.1", 7777)
    assert parse_dv("dv://[::1]:9") == DvAddress("::1", 9)
    for bad in ("dv://:1", "dv://h", "dv://h:x", "udp://h:1", "dv://h:70000", "dv://h:0"):
        with pytest.raises(ParameterError):
            parse_dv(bad)
    with pytest.raises(ParameterError):
        RunConfig(model=MODEL, source="dv://h")


def test_event_stores_convert_both_ways() -> None:
    ev = read_events(nmnist_file()).events[:300]
    back = store_events(event_store(ev))
    assert back.dtype == ev.dtype
    for f in ("x", "y", "t", "p"):
        assert back[f].tolist() == ev[f].tolist(), f


async def test_nothing_listening_is_a_parameter_error() -> None:
    nmnist_file()
    with pytest.raises(ParameterError, match="cannot connect"):
        await asyncio.wait_for(serve(RunConfig(model=MODEL, source=f"dv://127.0.0.1:{free_port()}")), 20)


@pytest.mark.parametrize(("index", "point"), [(0, POINT), (1, POINT), (0, None)])
async def test_the_dv_writer_replays_nmnist_at_real_time_and_the_decision_is_the_files(
    index: int, point: OperatingPoint | None
) -> None:
    """The writer states the sensor size (34x34: no --sensor-size), paces 1 ms packets
    by sensor time and closes the connection at the end, which ends the run."""
    path = nmnist_file(index)
    rec = read_events(path)
    (made,) = await serve(RunConfig(model=MODEL, source=str(path), point=point))
    port = free_port()
    async with dv_writer(path, port) as writer:
        t0 = time.monotonic()
        # Ends when the writer closes the connection (long before the idle timeout).
        svc = await run_service(RunConfig(model=MODEL, source=f"dv://127.0.0.1:{port}", stream="nmnist",
                                          point=point, limits=LiveLimits(idle_timeout_s=30)))
        took = time.monotonic() - t0
        assert await asyncio.wait_for(writer.wait(), 10) == 0
    assert took >= (int(rec.events["t"][-1]) - int(rec.events["t"][0])) / 1e6  # real time
    assert svc.dv is not None and svc.dv.sensor == (34, 34) and svc.dv.packets > 0
    assert svc.state.metrics.events_in == len(rec.events)
    line, status = svc.report()
    assert status == 0 and "dropped: none" in line, line
    first = svc.decisions[0]  # a live stream goes on deciding after its first decision
    assert first.stream == "nmnist"
    if made.exit == "end_of_stream":
        # Undecided when the recording ends: the file source completes the steps up to
        # the end of its last 10 ms replay chunk, the DV stream ends at its last event's
        # step. The same label, a few steps fewer.
        assert (first.exit, first.label) == (made.exit, made.label)
        assert made.steps - 10 < first.steps <= made.steps
        return
    assert same_decision(first, made) == same_decision(made, made)
    assert (first.sensor_t0_us, first.sensor_t1_us) == (made.sensor_t0_us, made.sensor_t1_us)


async def test_cli_run_on_a_dv_source(tmp_path: Path) -> None:
    path = nmnist_file()
    (made,) = await serve(RunConfig(model=MODEL, source=str(path), point=POINT))
    port = free_port()
    async with dv_writer(path, port, "--speed", "4"):
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spikecast.runtime.cli", "run", "--model", str(MODEL),
            "--source", f"dv://127.0.0.1:{port}", "--stream", "cam", "--tau", "0.9",
            "--t-min", "5", "--t-max", "200",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()
    line = json.loads(out.decode().splitlines()[0])
    assert (line["stream"], line["label"], line["steps"]) == ("cam", made.label, made.steps)


async def test_a_full_queue_sheds_whole_packets_with_counters() -> None:
    path = nmnist_file()
    port = free_port()
    # Paced (4x real time): dv-processing's own writer and reader drop packets silently when
    # an as-fast-as-possible sender outruns them (docs/sources.md); this test is about
    # spikecast's queue.
    async with dv_writer(path, port, "--speed", "4"):
        svc = await run_service(RunConfig(model=MODEL, source=f"dv://127.0.0.1:{port}", point=POINT,
                                          queue_events=1))
    m = svc.state.metrics
    assert m.dropped.get("packets_shed", 0) > 0
    assert m.events_in + m.dropped["events_shed"] == len(read_events(path).events)
    line, status = svc.report()
    assert status == 3 and "shed (queue full)" in line, line
