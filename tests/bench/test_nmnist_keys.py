"""bench/results/nmnist.json (when present) holds the results contract with sane values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

RESULT = Path(__file__).resolve().parents[2] / "bench" / "results" / "nmnist.json"


@pytest.fixture(scope="module")
def result() -> dict:
    if not RESULT.exists():
        pytest.skip(f"{RESULT} not present; run python bench/nmnist.py")
    return json.loads(RESULT.read_text())


def _fraction(v: object) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def _positive(v: object) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def test_top_level_keys(result: dict) -> None:
    for key in (
        "ann_accuracy", "snn_accuracy_by_T", "early_exit", "synops_per_decision",
        "ann_macs_per_image", "mean_decision_sensor_ms", "mean_recording_ms",
    ):  # fmt: skip
        assert key in result, key
    assert _fraction(result["ann_accuracy"])
    assert _positive(result["synops_per_decision"])
    assert isinstance(result["ann_macs_per_image"], int) and result["ann_macs_per_image"] > 0
    assert _positive(result["mean_recording_ms"])
    assert 0 < result["mean_decision_sensor_ms"] <= result["mean_recording_ms"] + 20


def test_accuracy_by_t(result: dict) -> None:
    by_t = result["snn_accuracy_by_T"]
    assert isinstance(by_t, dict) and by_t
    for t, acc in by_t.items():
        assert isinstance(t, str) and int(t) > 0
        assert _fraction(acc)
    assert {"50", "100", "200", "300"} <= set(by_t)


def test_early_exit_entries(result: dict) -> None:
    entries = result["early_exit"]
    assert isinstance(entries, list) and entries
    for e in entries:
        assert _fraction(e["tau"])
        assert _fraction(e["accuracy"])
        assert _positive(e["mean_steps"])
        assert _positive(e["p95_steps"]) and e["p95_steps"] >= 1
        assert isinstance(e["ms_per_decision"], float | int) and e["ms_per_decision"] >= 0
    # At one t_min, a higher τ never decides earlier on average (same recordings, same rule).
    sweep = [e for e in entries if e.get("target_accuracy") is None]
    for t_min in {e.get("t_min") for e in sweep}:
        same = sorted((e for e in sweep if e.get("t_min") == t_min), key=lambda e: e["tau"])
        steps = [e["mean_steps"] for e in same]
        assert steps == sorted(steps)
