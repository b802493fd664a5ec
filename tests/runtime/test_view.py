"""The live viewer (``--view``): its WebSocket and state pieces here, and the page itself
in headless Chromium against ``spikecast run --realtime`` (skipped without Chromium)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_kit import polarity_net, uniform_events
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.config import RunConfig, add_run_arguments, config_from_args
from spikecast.runtime.encode import SpatialMap
from spikecast.runtime.mqtt.stdout import StdoutPublisher
from spikecast.runtime.service import Service
from spikecast.runtime.view import TAU_US, LiveViewer, ViewState, parse_view, ws_accept, ws_frame

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nmnist" / "train"
BENCH_MODEL = Path(__file__).resolve().parents[2] / "bench" / "models" / "nmnist.scn"


# -- pieces ----------------------------------------------------------------------------

def test_websocket_accept_is_rfc6455s_example() -> None:
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(("n", "head"), [(5, b"\x81\x05"), (200, b"\x81\x7e\x00\xc8"),
                                         (70000, b"\x81\x7f" + (70000).to_bytes(8, "big"))])
def test_websocket_frame_lengths(n: int, head: bytes) -> None:
    frame = ws_frame(b"x" * n)
    assert frame.startswith(head) and len(frame) == len(head) + n


@pytest.mark.parametrize(("view", "want"), [
    (":8080", ("127.0.0.1", 8080)), ("8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:9000", ("0.0.0.0", 9000)), ("[::1]:0", ("::1", 0)),
])
def test_parse_view(view: str, want: tuple[str, int]) -> None:
    assert parse_view(view) == want


def test_view_from_flag_and_config_file(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    args = ["--model", "m.scn", "--source", "x"]
    assert config_from_args(p.parse_args([*args, "--view", ":8080"])).view == ":8080"
    assert config_from_args(p.parse_args(args)).view is None
    toml = tmp_path / "run.toml"
    toml.write_text('model = "m.scn"\nsource = "x"\nview = "0.0.0.0:9000"\n')
    assert config_from_args(p.parse_args(["--config", str(toml)])).view == "0.0.0.0:9000"


@pytest.mark.parametrize("view", ["", "host", ":99999", ":-1", "a:b"])
def test_bad_view_is_refused_by_the_config(tmp_path: Path, view: str) -> None:
    with pytest.raises(ParameterError, match="--view"):
        RunConfig(model=tmp_path / "m.scn", source="x", view=view)


def test_event_frame_counts_and_decays() -> None:
    state = ViewState((2, 34, 34))
    ev = uniform_events(1, 50, polarity=1)
    ev["x"], ev["y"] = 3, 4
    state.events("s", ev, 1000, SpatialMap())
    frame = state.streams["s"].frame
    assert frame[0].sum() == 0 and frame[1, 4, 3] == pytest.approx(
        np.exp((ev["t"] - 1000) / TAU_US).sum(), rel=1e-5)
    before = frame[1, 4, 3]
    state.events("s", ev[:0], 1000 + TAU_US, SpatialMap())  # a watermark alone decays it
    assert state.streams["s"].frame[1, 4, 3] == pytest.approx(before / np.e, rel=1e-5)
    img = state.snapshot("dev")["streams"][0]["frame"]
    on = np.frombuffer(base64.b64decode(img["planes"][1]), np.uint8).reshape(34, 34)
    assert on[4, 3] > 0 and on.sum() == on[4, 3]


def test_big_inputs_are_downsampled_and_streams_bounded() -> None:
    state = ViewState((2, 128, 200))
    ev = uniform_events(1, 10)
    ev["x"], ev["y"] = 199, 127
    for k in range(20):
        state.events(f"s{k}", ev, None, SpatialMap())
    snap = state.snapshot("dev")
    assert [s["name"] for s in snap["streams"]][:2] == ["s19", "s18"] and len(snap["streams"]) == 8
    assert (snap["streams"][0]["frame"]["w"], snap["streams"][0]["frame"]["h"]) == (50, 32)


# -- the server, in process -------------------------------------------------------------

def _ws_messages(port: int) -> list[dict[str, Any]]:
    """Open /ws with a plain socket and read text frames (the server's are unmasked)
    until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        s.sendall(bytes([0x89, 0x81, 1, 2, 3, 4, ord("x") ^ 1]))  # a masked ping
        f = s.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.read(1)
        assert head.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        out: list[dict[str, Any]] = []
        pongs = 0
        while True:
            b0, b1 = f.read(2)
            size = b1 & 0x7F
            if size == 126:
                size = int.from_bytes(f.read(2), "big")
            elif size == 127:
                size = int.from_bytes(f.read(8), "big")
            data = f.read(size)
            if b0 == 0x88:
                assert data == b"\x03\xe8" and pongs == 1
                return out
            if b0 == 0x8A:
                assert data == b"x"
                pongs += 1
                continue
            assert b0 == 0x81
            out.append(json.loads(data))


def test_service_serves_page_state_and_websocket(tmp_path: Path) -> None:
    model = polarity_net(lam=3.0).save(tmp_path / "net.scn")
    rec = tmp_path / "rec"
    rec.mkdir()
    for k in range(3):
        np.savez(rec / f"f{k}.npz", events=uniform_events(200, 20, polarity=k % 2, seed=k),
                 width=np.int64(34), height=np.int64(34))

    async def main() -> tuple[bytes, dict[str, Any], list[dict[str, Any]]]:
        # about 0.6 s of sensor time, replayed in real time: the test connects well before the end
        cfg = RunConfig(model=model, source=str(rec), realtime=True, one_per_file=False,
                        view="127.0.0.1:0")
        service = Service(cfg, StdoutPublisher())
        viewer = next(h for h in service.hooks if isinstance(h, LiveViewer))
        async with service.publisher:
            task = asyncio.create_task(service.run())
            while viewer.port is None:
                await asyncio.sleep(0.01)
            page = await asyncio.to_thread(_get, viewer.port, "/")
            msgs = await asyncio.to_thread(_ws_messages, viewer.port)
            await task
            state = json.loads(viewer.message())
            assert viewer.port is None  # stopped with the service
        return page, state, msgs

    page, state, msgs = asyncio.run(main())
    assert b"<canvas" in page and b"new WebSocket" in page
    assert re.search(rb"https?://", page) is None, "the page loads nothing from elsewhere"
    assert msgs[-1] == state  # the last push, as the service stopped, has every decision
    assert state["decisions"] >= 3 and len(state["latency_ms"]) == min(state["decisions"], 120)
    assert len(msgs) > 2  # pushed while the files played
    labels = {s["name"]: s["decision"]["label"] for s in state["streams"]}
    assert labels == {"f0": "off", "f1": "on", "f2": "off"}


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        assert resp.status == 200
        return bytes(resp.read())


# -- the page in headless Chromium ------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=800,600"]


def _chromium(url: str, *args: str) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--virtual-time-budget=2500", *args, url],
                              capture_output=True, text=True, timeout=30)
    return proc.stdout


def _sources(tmp_path: Path) -> tuple[Path, Path, str]:
    """Model, recordings and class names: 16 N-MNIST recordings (about 5 s) when the
    shared data is there, else synthetic ON/OFF streams for the tiny polarity network."""
    files = sorted(DATA.glob("*.bin"))[:16] if DATA.is_dir() and BENCH_MODEL.exists() else []
    rec = tmp_path / "rec"
    rec.mkdir()
    if len(files) == 16:
        for f in files:
            (rec / f.name).symlink_to(f)
        return BENCH_MODEL, rec, "0123456789"
    for k in range(16):
        np.savez(rec / f"s{k:02d}.npz", events=uniform_events(300, 20, polarity=k % 2, seed=k),
                 width=np.int64(34), height=np.int64(34))
    return polarity_net(lam=3.0).save(tmp_path / "net.scn"), rec, "on off"


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium "
                    "(.ci/run installs it) to test the live viewer in a browser")
def test_viewer_in_headless_chromium(tmp_path: Path) -> None:
    model, rec, _ = _sources(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikecast.runtime.cli", "run", "--model", str(model), "--source",
         str(rec), "--realtime", "--all-decisions", "--view", ":0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        url = _viewer_url(proc)
        dom = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            dom = _chromium(url, "--dump-dom")
            if re.search(r'class="label">[^-<][^<]*<', dom):
                break
        assert 'id="status" class="live"' in dom, dom[-2000:]
        names = re.findall(r'class="stream-name"[^>]*>([^<]+)<', dom)
        assert names and all((rec / f"{n}.bin").exists() or (rec / f"{n}.npz").exists()
                             for n in names), names
        assert re.search(r'class="label">[^-<][^<]*<', dom), dom[-2000:]
        assert re.search(r'class="confidence">\d+\.\d%<', dom), dom[-2000:]
        assert re.search(r'class="expected">\d+\.\d%<', dom), dom[-2000:]
        shot = tmp_path / "view.png"
        # A fresh browser draws the frames once the WebSocket's first push arrives, which
        # can come after its virtual-time budget (1 screenshot in about 20 was blank):
        # up to three tries, each a new page load.
        for _ in range(3):
            _chromium(url, f"--screenshot={shot}")
            if sum(_drawn_pixels(shot)) > 500:
                break
        assert proc.poll() is None, "the service ended before the screenshot"
        _check_frames_drawn(shot)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if os.environ.get("SPIKECAST_VIEW_PNG"):  # keep the screenshot to look at
        shutil.copy(shot, os.environ["SPIKECAST_VIEW_PNG"])


def _viewer_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        m = re.search(r"live viewer on (http://\S+)", line)
        if m:  # keep reading stderr, so that the service never blocks on a full pipe
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return m.group(1)
    raise AssertionError("no 'live viewer on' line: " + "".join(seen))


def _drawn_pixels(png: Path) -> tuple[int, int]:
    """Pure green (ON) and magenta (OFF) pixels of a screenshot: only the event canvases
    have them."""
    image = pytest.importorskip("PIL.Image")
    if not png.exists():
        return 0, 0
    px = np.asarray(image.open(png).convert("RGB")).astype(int)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    on = (g > 80) & (r < 40) & (b < 40)
    off = (r > 80) & (b > 80) & (g < 40)
    return int(on.sum()), int(off.sum())


def _check_frames_drawn(png: Path) -> None:
    """The event canvases are drawn: many ON or OFF pixels."""
    assert png.stat().st_size > 5000, "blank screenshot"
    on, off = _drawn_pixels(png)
    assert on + off > 500, (on, off)
