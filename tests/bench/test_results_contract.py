"""The committed bench results keep their contracts, and bench/mnist.py runs end to end."""

from __future__ import annotations

import json
import math
import statistics
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
    stream = r.get("stream")  # real N-MNIST streams (absent in runs made without the data)
    if stream is not None:
        for key in ("stream_gsops", "us_per_step", "us_per_empty_step", "snn_over_ann_cpu_default"):
            assert is_number(stream[key]) and stream[key] > 0, key
        assert all(is_number(p["cpu_ms"]) and p["cpu_ms"] > 0 for p in stream["cpu_ms_per_decision"].values())
        assert is_number(stream["ann_cpu_ms_per_decision"]["cpu_ms"])


def test_ab_engine_contract() -> None:
    r = load("ab_engine.json")
    assert r["baseline"] and len(r["baseline_sha"]) == 40 and r["rounds"]
    for name, job in r["jobs"].items():
        ratios = job["speedup_by_round"]
        assert len(ratios) == len(r["rounds"]) and all(is_number(x) and x > 0 for x in ratios), name
        assert job["speedup_median"] == statistics.median(ratios), name
        for who in ("baseline", "candidate"):
            assert is_number(job[who]["cpu_ms_median"]) and job[who]["mean_steps"] >= 1
        if name.startswith("base_"):
            # The same network at the same point: two spike-exact engines decide alike.
            assert job["same_decisions"], name


def test_latency_contract() -> None:
    r = load("latency.json")
    assert is_number(r["events_per_s_per_core"]) and r["events_per_s_per_core"] > 0
    head = r["headline"]
    for key in ("p50_ms", "p99_ms"):
        assert is_number(head[key]) and head[key] > 0, key
    assert head["p50_ms"] <= head["p99_ms"]
    assert r["model"], "latency.json names the model it used"
    assert "mosquitto" in str(r["broker"]).lower()
    for run in r["latency"]["runs"]:
        assert run["streams"] in (1, 16) and run["packet_ms"] in (1, 10), run["tag"]
        assert is_number(run["outside_service_p99_ms"]), run["tag"]
        assert run["outside_service_p50_ms"] <= run["outside_service_p99_ms"], run["tag"]
    assert all(isinstance(v, bool) for v in r["goals"].values())


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


def check_vs_ann_point(p: dict[str, Any], events: bool) -> None:
    assert is_fraction(p["accuracy"]), p
    assert is_number(p["cpu_ms_per_decision"]) and p["cpu_ms_per_decision"] > 0, p
    if events:
        assert is_fraction(p["tau"]) and isinstance(p["t_min"], int) and p["t_min"] >= 1, p
        assert is_number(p["mean_sensor_ms"]) and is_number(p["p95_sensor_ms"]), p
        assert 0 < p["mean_sensor_ms"] <= 400 and 0 < p["p95_sensor_ms"] <= 400, p
        # the timed run decided as the replay of the per-step tables (the ANN's batched and
        # batch-1 onnxruntime logits may differ in the last bits, so allow a rare tie)
        assert p["run_agrees_with_replay"] >= 0.99, p
        assert abs(p["run_accuracy"] - p["accuracy"]) <= 0.01, p
    else:
        assert p["mean_sensor_ms"] is None and p["p95_sensor_ms"] is None


def check_ratio(v: object) -> None:
    assert v is None or (is_number(v) and v > 0), v


def test_vs_ann_contract() -> None:
    r = load("vs_ann.json")
    ds = r["datasets"]
    assert set(ds) >= {"nmnist", "nmnist_check_1ms", "mnist", "cifar10"}
    for name, d in ds.items():
        events = d["kind"] == "events"
        for side in ("ann", "snn"):
            assert isinstance(d[side], list) and d[side], (name, side)
            for p in d[side]:
                check_vs_ann_point(p, events)
        check_ratio(d["sensor_time_ratio_at_equal_accuracy"])
        check_ratio(d["cpu_ratio_at_equal_accuracy"])
        assert sum(bool(p.get("default")) for p in d["snn"]) == 1, name
    for name, period in (("nmnist", 10), ("nmnist_check_1ms", 1)):
        d = ds[name]
        assert d["ann_check_ms"] == period
        assert all(p["check_ms"] == period and p["mean_sensor_ms"] >= period for p in d["ann"])
        # Pareto lists: accuracy rises with mean sensor time (the default point aside)
        for side in ("ann", "snn"):
            pts = sorted((p for p in d[side] if not p.get("default")), key=lambda p: p["mean_sensor_ms"])
            acc = [p["accuracy"] for p in pts]
            assert acc == sorted(acc) and len(set(acc)) == len(acc), (name, side)
        eq = d["equal_accuracy"]
        assert math.isclose(eq["target_accuracy"], max(p["accuracy"] for p in d["ann"]) - 0.005)
        if d["sensor_time_ratio_at_equal_accuracy"] is not None:
            s, a = eq["snn_point"], eq["ann_point"]
            assert min(s["accuracy"], a["accuracy"]) >= eq["target_accuracy"] - 1e-9
            assert math.isclose(
                d["sensor_time_ratio_at_equal_accuracy"], s["mean_sensor_ms"] / a["mean_sensor_ms"]
            )
        else:
            assert max(p["accuracy"] for p in d["snn"]) < eq["target_accuracy"]
        check_ratio(eq["at_common_accuracy"]["sensor_time_ratio"])
    info = ds["nmnist"]["info"]
    assert info["test_recordings"] >= 300 or "--quick" in r["command"]
    assert info["onnx_vs_torch_max_abs_logit_diff"] < 1e-3
    for name in ("mnist", "cifar10"):
        assert ds[name]["info"]["n_images"] >= 1000 or "--quick" in r["command"]
        assert ds[name]["info"]["onnx_vs_torch_max_abs_logit_diff"] < 1e-3
    assert r["threads"]["onnxruntime_intra_op"] == 1 and r["threads"]["engine"] == 1
    assert isinstance(r["machine"], dict) and isinstance(r["load_average_start"], list)
    assert (RESULTS / "vs_ann.png").exists()


def test_readout_contract() -> None:
    r = load("readout.json")
    ds = r["datasets"]
    assert set(ds) == {"nmnist_real", "nmnist_saccade", "mnist_maxpool", "cifar10"}
    for name, d in ds.items():
        assert d["samples"] >= 300 or "--quick" in r["command"], name
        for readout in ("spikes", "membrane"):
            res = d[readout]
            check_by_t(res["fixed"])
            assert is_fraction(res["plateau_accuracy"])
            for target, p in res["earliest"].items():
                if p is not None:  # the earliest point reaches its target, after >= 1 step
                    assert p["accuracy"] >= float(target) - 1e-9 and p["mean_steps"] >= 1, (name, readout)
            if "model_point" in res:
                assert is_fraction(res["model_point"]["accuracy"]) and res["model_point"]["mean_steps"] >= 1
    assert isinstance(r["machine"], dict) and r["command"].startswith("python bench/readout.py")


def check_fixed_t(ft: dict[str, Any], name: str) -> None:
    """The default model at fixed T beside its ANN on the same images: T = 1..64, and
    each loss is the ANN's accuracy less the SNN's, in points."""
    assert is_fraction(ft["ann_accuracy"]), name
    acc, loss = ft["snn_accuracy"], ft["loss_points"]
    assert {"1", "2", "4", "8", "16", "32", "64"} <= set(acc) and set(loss) == set(acc), name
    check_by_t(acc)
    for t, a in acc.items():
        assert loss[t] == pytest.approx((ft["ann_accuracy"] - a) * 100, abs=1e-9), (name, t)
    assert isinstance(ft["max_spikes"], int) and ft["max_spikes"] >= 1, name


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
        check_fixed_t(r[name]["fixed_T"], name)
    # issue 9's fixed-T goals: each flag says what its figures say
    for name, t, tol, key in (("mnist", 4, 0.005, "goal_T4_within_half_pt_met"),
                              ("cifar10", 32, 0.01, "goal_T32_within_1pt_met")):  # fmt: skip
        ft = r[name]["fixed_T"]
        assert ft[key] == (ft["snn_accuracy"][str(t)] >= ft["ann_accuracy"] - tol - 1e-12), name
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


def test_lowlatency_contract() -> None:
    r = load("lowlatency.json")
    steps = r["steps"]
    assert steps == [4, 8, 16, 32, 64]
    assert set(r["datasets"]) == {"mnist", "cifar10", "nmnist"}
    for name, d in r["datasets"].items():
        assert is_fraction(d["ann_accuracy"]), name
        opts = d["options"]
        # every λ percentile with both membrane starts (and each burst size, where tried):
        # the ablation is a full grid
        assert {o["v_init"] for o in opts.values()} == {0.0, 0.5}, name
        bursts = {o.get("max_spikes", 1) for o in opts.values()}
        assert 1 in bursts, name
        # and both max-pools: count (convert()'s default) beside gated
        pools = {o.get("max_pool", "gated") for o in opts.values()}
        assert pools == {"count", "gated"}, name
        n_pct = len({o["percentile"] for o in opts.values()})
        assert len(opts) == 2 * len(bursts) * len(pools) * n_pct, name
        for key, o in opts.items():
            assert 0 < o["percentile"] <= 100 and 0 <= o["v_init"] < 1, (name, key)
            traced = [t for t in steps if t <= d["t_max"]]  # a part may trace fewer steps
            assert traced and sorted(int(t) for t in o["accuracy"]) == traced, (name, key)
            check_by_t(o["accuracy"])
            assert is_fraction(o["plateau"]) and len(o["curve"]) == d["t_max"], (name, key)
            for t, acc in o["accuracy"].items():
                assert math.isclose(o["curve"][int(t) - 1], acc, abs_tol=1e-5), (name, key, t)


def test_models_contract() -> None:
    r = load("models.json")
    resnets = [k for k in r if k.startswith("resnet") and k.endswith("_cifar10")]
    assert resnets, "no CIFAR-10 ResNet in models.json"
    for name in resnets:
        net = r[name]
        assert is_fraction(net["ann_accuracy"])
        check_by_t(net["snn_accuracy_by_T"])
        assert set(net["snn_accuracy_by_T"]) >= {"32", "64", "128", "256"}
        ee = net["early_exit"]
        assert is_fraction(ee["accuracy"]) and 1 <= ee["mean_steps"] <= ee["t_max"]
        assert is_number(net["synops_per_decision"]) and net["synops_per_decision"] > 0
    rows = {row["name"]: row for row in r["torchvision"]}
    assert set(rows) == {"resnet18", "vgg11_bn", "mobilenet_v2"}
    for row in rows.values():
        assert isinstance(row["converts"], bool)
        if row["converts"]:
            assert is_fraction(row["reference_agreement"]["class_agreement"])
            assert isinstance(row["reference_agreement"]["synops_equal"], bool)
            assert is_number(row["ms_per_step"]) and row["ms_per_step"] > 0
        else:
            assert row["error"]


def test_bias_contract() -> None:
    """bench/bias.py: each default frame model with and without its calibrated biases."""
    r = load("bias.json")
    assert {"mnist", "cifar10", "mnist_smalllogit"} <= set(r)
    for name in ("mnist", "cifar10", "mnist_smalllogit"):
        d = r[name]
        assert is_fraction(d["ann_accuracy"]) and d["bias_calibration"]["steps"] >= 1, name
        for variant in ("calibrated", "uncalibrated"):
            v = d[variant]
            check_by_t(v["fixed_T"])
            ee = v["early_exit"]
            assert is_fraction(ee["best_accuracy_of_sweep"]), (name, variant)
            for key, tol in (("ann_less_0.5pt", 0.005), ("ann_less_1pt", 0.01)):
                p, where = ee[key], (name, variant, key)
                if p is None:  # the sweep never reached it
                    assert ee["best_accuracy_of_sweep"] < d["ann_accuracy"] - tol + 1e-12, where
                    continue
                assert p["accuracy"] >= d["ann_accuracy"] - tol - 1e-12, where
                assert 1 <= p["mean_steps"] and is_number(p["mean_synops"]), where
    assert "command" in r and "machine" in r


def test_mqtt_receive_contract() -> None:
    """bench/mqtt_receive.py: CPU per received packet with and without the fast path."""
    r = load("mqtt_receive.json")
    cpu = r["cpu_us_per_message"]
    assert set(cpu) == {"fast", "paho"} and all(is_number(v) and v > 0 for v in cpu.values())
    assert r["fast_path_speedup"] == pytest.approx(cpu["paho"] / cpu["fast"])
    assert all(len(r["runs"][m]) == r["repeats"] for m in cpu)
    assert r["dropped"] == 0, "every packet sent was received"
    assert "command" in r and "machine" in r
