"""bench/results/cifar10.json (when present) holds the results contract with sane values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

RESULT = Path(__file__).resolve().parents[2] / "bench" / "results" / "cifar10.json"
STEPS = {"25", "50", "100", "200", "400"}
ABLATIONS = {"max_norm", "reset_to_zero", "poisson_input"}


@pytest.fixture(scope="module")
def result() -> dict:
    if not RESULT.exists():
        pytest.skip(f"{RESULT} not present; run python bench/cifar10.py")
    return json.loads(RESULT.read_text())


def _fraction(v: object) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def _positive(v: object) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _curve(by_t: object) -> None:
    assert isinstance(by_t, dict)
    assert set(by_t) >= STEPS
    for t, acc in by_t.items():
        assert isinstance(t, str) and int(t) > 0
        assert _fraction(acc), (t, acc)


def test_top_level_keys(result: dict) -> None:
    for key in (
        "ann_accuracy", "snn_accuracy_by_T", "early_exit", "synops_per_decision",
        "ann_macs_per_image", "ablations", "test_samples", "ablation_samples",
    ):  # fmt: skip
        assert key in result, key
    assert _fraction(result["ann_accuracy"])
    assert _positive(result["synops_per_decision"])
    assert isinstance(result["ann_macs_per_image"], int) and result["ann_macs_per_image"] > 0
    for key in ("test_samples", "ablation_samples"):
        assert isinstance(result[key], int) and 0 < result[key] <= 10_000


def test_accuracy_by_t(result: dict) -> None:
    _curve(result["snn_accuracy_by_T"])
    # A converted network that works is far above chance (10%) once it has run long enough.
    assert result["snn_accuracy_by_T"]["400"] > 0.5


def test_early_exit_entries(result: dict) -> None:
    entries = result["early_exit"]
    assert isinstance(entries, list) and entries
    for e in entries:
        assert _fraction(e["tau"])
        assert _fraction(e["accuracy"])
        assert _positive(e["mean_steps"])
        assert _positive(e["p95_steps"]) and e["p95_steps"] >= 1
        assert isinstance(e["ms_per_decision"], float | int) and e["ms_per_decision"] >= 0
    # A higher τ never decides earlier on average (same images, same rule).
    steps = [e["mean_steps"] for e in sorted(entries, key=lambda e: e["tau"])]
    assert steps == sorted(steps)


def test_ablations(result: dict) -> None:
    ablations = result["ablations"]
    assert isinstance(ablations, dict)
    assert set(ablations) >= ABLATIONS
    for curve in ablations.values():
        _curve(curve)
