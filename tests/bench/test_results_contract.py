"""The committed bench results keep their contracts, and bench/mnist.py runs end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.exists():
        pytest.skip(f"{path} not present; run the bench script that writes it")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def is_fraction(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_by_t(by_t: object) -> None:
    assert isinstance(by_t, dict) and by_t
    for t, acc in by_t.items():
        assert int(t) >= 1 and is_fraction(acc), (t, acc)


def check_early_exit(rows: object) -> None:
    assert isinstance(rows, list) and rows
    for row in rows:
        for key in ("tau", "accuracy", "mean_steps", "p95_steps", "ms_per_decision"):
            assert is_number(row[key]), (key, row)
        assert is_fraction(row["tau"]) and is_fraction(row["accuracy"])
        assert row["mean_steps"] >= 1 and row["p95_steps"] >= 1 and row["ms_per_decision"] >= 0
    # With one t_min, a higher τ never decides earlier on average (same inputs, same rule).
    sweep = [r for r in rows if r.get("target_accuracy") is None]
    for t_min in {r.get("t_min") for r in sweep}:
        same = sorted((r for r in sweep if r.get("t_min") == t_min), key=lambda r: r["tau"])
        steps = [r["mean_steps"] for r in same]
        assert steps == sorted(steps)


def check_cost(r: dict[str, Any]) -> None:
    assert is_number(r["synops_per_decision"]) and r["synops_per_decision"] > 0
    assert isinstance(r["ann_macs_per_image"], int) and r["ann_macs_per_image"] > 0


def test_convert_mnist_contract() -> None:
    r = load("convert_mnist.json")
    assert is_fraction(r["ann_accuracy"])
    check_by_t(r["snn_accuracy_by_T"])
    assert set(r["ablations"]) >= {"max_norm", "reset_to_zero", "poisson_input"}
    for curve in r["ablations"].values():
        check_by_t(curve)


def test_engine_contract() -> None:
    r = load("engine.json")
    assert r["kernel_gsops"] and all(is_number(v) and float(d) > 0 for d, v in r["kernel_gsops"].items())
    for key in ("roofline_gsops", "speedup_vs_dense_batch1", "speedup_vs_dense_batch64"):
        assert is_number(r[key]) and r[key] > 0, key
    assert r["speedup_vs_best_peer_batch1"] is None or is_number(r["speedup_vs_best_peer_batch1"])
    ms = r["ms_per_sample"]
    for key in ("engine_fixed_T", "engine_early_exit", "dense_batch1", "dense_batch64", "ann_batch1"):
        assert is_number(ms[key]) and ms[key] > 0, key
    assert all(int(n) >= 1 and is_number(v) for n, v in r["threads_scaling"].items())


def test_latency_contract() -> None:
    r = load("latency.json")
    for key in ("p50_ms", "p99_ms", "events_per_s_per_core"):
        assert is_number(r[key]) and r[key] > 0, key
    assert r["p50_ms"] <= r["p99_ms"]
    assert "mosquitto" in str(r["broker"]).lower()


def test_mnist_contract() -> None:
    r = load("mnist.json")
    check_by_t(r["snn_accuracy_by_T"])
    check_early_exit(r["early_exit"])
    check_cost(r)


def test_cifar10_contract() -> None:
    r = load("cifar10.json")
    assert is_fraction(r["ann_accuracy"])
    check_by_t(r["snn_accuracy_by_T"])
    assert set(r["snn_accuracy_by_T"]) >= {"25", "50", "100", "200", "400"}
    assert r["snn_accuracy_by_T"]["400"] > 0.5  # far above chance once it has run long enough
    check_early_exit(r["early_exit"])
    check_cost(r)
    assert set(r["ablations"]) >= {"max_norm", "reset_to_zero", "poisson_input"}
    for curve in r["ablations"].values():
        check_by_t(curve)
    for key in ("test_samples", "ablation_samples"):
        assert isinstance(r[key], int) and 0 < r[key] <= 10_000


def test_nmnist_contract() -> None:
    r = load("nmnist.json")
    assert is_fraction(r["ann_accuracy"])
    check_by_t(r["snn_accuracy_by_T"])
    assert set(r["snn_accuracy_by_T"]) >= {"50", "100", "200", "300"}
    check_early_exit(r["early_exit"])
    check_cost(r)
    assert is_number(r["mean_recording_ms"]) and r["mean_recording_ms"] > 0
    assert 0 < r["mean_decision_sensor_ms"] <= r["mean_recording_ms"] + 20


def test_mnist_script_runs_on_a_200_image_subset(tmp_path: Path) -> None:
    if not (DATA / "mnist" / "mnist.npz").exists():
        pytest.skip(f"{DATA / 'mnist'} not found: the MNIST data is not next to this checkout")
    if not (ROOT / "bench" / "models" / "mnist_maxpool.scn").exists():
        pytest.skip("bench/models/mnist_maxpool.scn not present")
    pytest.importorskip("matplotlib", reason="the bench extra is not installed")
    out = subprocess.run(
        [sys.executable, "bench/mnist.py", "--samples", "200", "--threads", "1",
         "--results-dir", str(tmp_path), "--out", "mnist_ci.json"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "mnist_ci.json").read_text())
    assert r["samples"] == 200
    check_by_t(r["snn_accuracy_by_T"])
    check_early_exit(r["early_exit"])
    assert r["snn_accuracy_by_T"]["100"] >= 0.97
    assert (tmp_path / "mnist_ci.png").stat().st_size > 10_000


def test_defaults_contract() -> None:
    """bench/defaults.py: every model at its default point against its own plateau on held-out data."""
    r = load("defaults.json")
    assert {"mnist", "cifar10", "nmnist", "mnist_smalllogit"} <= set(r)
    for name in ("mnist", "cifar10", "nmnist", "mnist_smalllogit"):
        d = r[name]
        p = d["default_point"]
        assert is_fraction(p["tau"]) and 1 <= p["t_min"] <= p["t_max"], (name, p)
        assert d["point_source"] == "model", name  # the model's own point, not the generic default
        assert is_fraction(d["accuracy"]) and is_fraction(d["plateau_accuracy"]), name
        assert 1 <= d["mean_steps"] <= p["t_max"], name
        assert 1 <= d["p95_steps"] <= p["t_max"], name
        assert isinstance(d["n_samples"], int) and d["n_samples"] > 0, name
        assert isinstance(d["table_samples"], int) and d["table_samples"] > 0, name
        assert d["goal_met"] == (d["accuracy"] >= d["plateau_accuracy"] - 0.01), name
    models = ("mnist", "cifar10", "nmnist", "mnist_smalllogit")
    assert r["all_goals_met"] == all(r[k]["goal_met"] for k in models)
    for name in ("mnist", "cifar10", "mnist_smalllogit"):  # run_batch equals the rule replayed on the trace
        assert r[name]["replay_agreement"]["class"] == 1.0, name
    cli = r["nmnist"]["cli_check"]
    # `spikecast run` with no flags decides as the runtime API does: the same class for every
    # recording, the same step for every confident decision (an end-of-stream one may count a
    # few trailing empty steps more: a file replay steps to the end of its last chunk).
    assert cli["files"] > 0 and cli["same_class"] == cli["files"]
    assert cli["confident_same_steps"] == cli["confident"]
    small = r["mnist_smalllogit"]["small_logits"]
    assert small["table_median_max_softmax_at_T200"] < 0.99  # small logits indeed
    assert not small["target_accuracy_0.99"]["runs_to_t_max"]
    assert not small["target_accuracy_0.995"]["runs_to_t_max"]
    assert "command" in r and "machine" in r
