"""bench/crossover.py: its core on a tiny configuration (no data needed), and the contract
of the committed bench/results/crossover.json."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
sys.path.insert(0, str(ROOT / "bench"))
import crossover as xo  # noqa: E402

CELL_KEYS = (
    "width", "height", "background_hz_per_pixel", "ann_cpu_ms_per_s", "snn_cpu_ms_per_s",
    "ann_cpu_ms_per_decision", "snn_cpu_ms_per_decision", "ann_macs_per_s", "snn_synops_per_s",
    "ann_accuracy", "snn_accuracy",
)  # fmt: skip


def fake_recording(rng: np.random.Generator, n: int = 400, span_us: int = 30_000) -> np.ndarray:
    ev = np.zeros(n, dtype=[("x", "u1"), ("y", "u1"), ("t", "<u8"), ("p", "u1")])
    ev["x"] = rng.integers(8, 26, n)
    ev["y"] = rng.integers(8, 26, n)
    ev["t"] = np.sort(rng.integers(0, span_us, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


def test_place_stream_puts_the_digit_inside_and_adds_background() -> None:
    rng = np.random.default_rng(0)
    ev = fake_recording(rng)
    quiet = xo.place_stream(ev, 50, 40, 0.0, 20, np.random.default_rng(1))
    assert quiet.shape == (2, 40, 50) and quiet.n_steps == 20
    assert quiet.n_events == int(((ev["t"] - ev["t"][0]) // 1000 < 20).sum())
    busy = xo.place_stream(ev, 50, 40, 1000.0, 20, np.random.default_rng(1))
    # 1000 events / pixel / s over 2000 pixels and 20 ms: about 40,000 more events.
    assert 38_000 < busy.n_events - quiet.n_events < 42_000
    again = xo.place_stream(ev, 50, 40, 1000.0, 20, np.random.default_rng(1))
    assert np.array_equal(busy.indices, again.indices)  # the Generator passed in decides


def test_tiled_calibration_places_every_frame_once() -> None:
    frames = np.random.default_rng(0).random((7, 2, 34, 34)).astype(np.float32)
    tiles = xo.TiledCalibration(frames, 120, 40, batch=1)
    batches = list(tiles)
    assert sum(float(b.sum()) for b in batches) == pytest.approx(float(frames.sum()), rel=1e-5)
    assert all(b.shape[1:] == (2, 40, 120) for b in batches)
    assert len(list(tiles)) == len(batches)  # re-iterable: convert() reads it twice


def test_measure_cell_on_a_tiny_canvas() -> None:
    import torch

    torch.manual_seed(0)
    model = xo.make_model().eval()
    rng = np.random.default_rng(0)
    recs = [fake_recording(rng) for _ in range(2)]
    calib = np.random.default_rng(1).random((4, 2, 34, 34)).astype(np.float32) * 0.05
    net, plan, sess, info = xo.build_canvas(model, calib, 48, 40)
    assert info["ann_macs_per_pass"] == net.ann_macs > 0
    assert all(ly.bias is None or not np.any(ly.bias) for ly in net.layers)
    point = xo.Point(t_max=20, tau=0.99, t_min=15, source="test")
    labels = np.array([1, 2])
    macs = info["ann_macs_per_pass"]
    cell = xo.measure_cell(plan, sess, macs, recs, labels, 48, 40, 100.0, point, 1, np.random.default_rng(2))
    for key in CELL_KEYS:
        assert math.isfinite(cell[key]), key
    assert cell["snn_cpu_ms_per_s"] > 0 and cell["ann_cpu_ms_per_s"] > 0
    assert 15 <= cell["snn_mean_sensor_ms"] <= 20 and 15 <= cell["ann_mean_sensor_ms"] <= 20
    assert xo.crossover([cell], "ann_cpu_ms_per_s")["100"] in (None, "48x40")


def test_crossover_picks_the_smallest_cheaper_canvas() -> None:
    def c(w: int, h: int, bg: float, snn: float, ann: float) -> dict[str, Any]:
        return {"width": w, "height": h, "background_hz_per_pixel": bg, "snn_cpu_ms_per_s": snn,
                "ann_cpu_ms_per_s": ann}  # fmt: skip

    cells = [c(640, 480, 0.0, 1, 2), c(128, 128, 0.0, 1, 3), c(34, 34, 0.0, 5, 1), c(34, 34, 1.0, 5, 1)]
    assert xo.crossover(cells, "ann_cpu_ms_per_s") == {"0": "128x128", "1": None}


def test_crossover_results_contract() -> None:
    path = RESULTS / "crossover.json"
    if not path.exists():
        pytest.skip(f"{path} not present; run python bench/crossover.py")
    r = json.loads(path.read_text())
    assert r["cells"] and r["command"].startswith("python bench/crossover.py")
    for cell in r["cells"]:
        for key in CELL_KEYS:
            assert isinstance(cell[key], (int, float)) and math.isfinite(cell[key]), key
        assert 0 <= cell["ann_accuracy"] <= 1 and 0 <= cell["snn_accuracy"] <= 1
    bgs = {f"{c['background_hz_per_pixel']:g}" for c in r["cells"]}
    assert set(r["crossover"]) == bgs
    assert (RESULTS / "crossover.png").exists()
