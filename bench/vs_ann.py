"""Against the frame ANN: the same trained network run by onnxruntime, side by side with the SNN.

    python bench/vs_ann.py            # full run (about 10 min on 2 shared cores)
    python bench/vs_ann.py --quick    # smoke run (~1 min): fewer recordings and images, out to bench/.cache

The yardstick is what a user would run instead of the SNN: the same trained ANN, exported
with torch.onnx and run by onnxruntime (one thread), on event frames accumulated from the
same stream and re-checked every few milliseconds with the same softmax early exit.

N-MNIST (the 300 real test recordings of bench/nmnist.py's seeded split: never used for
training or calibration). The ANN sees the frame it was trained on: at check time t (ms)
the event counts per (polarity, y, x) of the prefix [0, t), clipped at 255, divided by the
t/dt steps they span. It is checked every 1 ms or every 10 ms from t_min on; it decides at
the first check whose max softmax is >= τ, else at the end of the recording (its whole
span); sensor ms = t of the deciding check. The SNN (bench/models/nmnist.scn) decides at
the first step t >= t_min with c(t) >= τ, else at the end of the stream; sensor ms = t.
Both are swept over τ x t_min (the grids of spikecast.ext.core.calibration, τ extended
towards 1 for the ANN's peaked softmax): accuracy and decision times come from one pass
each (the ANN on every prefix, batched in onnxruntime; the SNN with
``spikecast.ext.engine.trace``), the rule replayed per point. The Pareto-optimal points
(accuracy against mean sensor ms), thinned to --max-points, are then run for real, one
recording at a time, for the CPU time per decision (thread CPU time, median of --repeats):
the ANN's early-exit loop (incremental counts per check, rate frame, onnxruntime, softmax)
and the SNN's ``Engine(plan).run(EventSteps, t_max, tau, t_min)``. Both start from the
same pre-binned events (EventSteps, one CSR per recording); the binning is not timed on
either side. The model's recommended point (``initial_point``, what ``spikecast run``
uses without flags) is added to the SNN list with ``"default": true``. Each timed point
records ``run_agrees_with_replay``: the fraction of recordings where the real run decided at
the replayed time (the SNN's c(t) is recomputed in double from the trace's logits, as the
engine compares it, so that a float32-rounded c(t) cannot move a decision at a tie with τ).

Equal accuracy: A = the ANN's best accuracy over its sweep; each side's point is its
earliest (lowest mean sensor ms) point with accuracy >= A - 0.5 pt;
sensor_time_ratio_at_equal_accuracy = SNN / ANN mean sensor ms, cpu_ratio_at_equal_accuracy
= SNN / ANN CPU ms per decision at those points (null where the SNN never gets there).
Both sweeps pick points on the test recordings themselves (an oracle for both sides alike);
the SNN's default point is chosen on its calibration table only.

Frames (MNIST: test images 0..N-1; CIFAR-10: the first N of a seeded permutation of the
test set, which is stored grouped by class; both models' calibration tables came from
held-out *training* images, so no test image was used): onnxruntime batch-1 thread CPU ms
per image (mean and median over N >= 1000 images) and its accuracy, against the engine's
early exit (``run_batch(..., n_threads=1)``, thread CPU ms per image) at the model's
recommended point and at the earliest point of a τ x t_min sweep (replayed from one
``trace``) that reaches the ANN's accuracy within 0.5 pt (if none does, its best point);
the frame points' accuracy is that of the timed run. cpu_ratio_at_equal_accuracy compares
means (the engine's run_batch gives a mean per image). There is no sensor time for frames.

Writes bench/results/vs_ann.json and bench/results/vs_ann.png. One thread everywhere
(torch, onnxruntime intra- and inter-op, the engine).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DATA, MODELS, RESULTS, ROOT, load_mnist, machine, require

CACHE = ROOT / "bench" / ".cache"
DT_MS = 1.0
EQUAL_TOL = 0.005  # "equal accuracy": within 0.5 percentage points
EXTRA_TAUS = (0.9995, 0.9999, 0.99995, 0.99999, 0.999999)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


# ----------------------------------------------------------------------------------
# onnxruntime
# ----------------------------------------------------------------------------------


def export_onnx(model: torch.nn.Module, shape: Sequence[int], path: Path) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # bench/.cache is never committed
    dummy = torch.zeros(1, *shape)
    torch.onnx.export(
        model.eval(),
        (dummy,),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def ort_logits(sess: Any, x: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([sess.run(None, {"x": x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def check_export(model: torch.nn.Module, sess: Any, x: np.ndarray) -> float:
    """Largest |logit difference| between torch and onnxruntime on ``x``."""
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    return float(np.abs(ort_logits(sess, x) - ref).max())


# ----------------------------------------------------------------------------------
# Decision rules, replayed from per-step tables
# ----------------------------------------------------------------------------------


def replay(conf: np.ndarray, span: np.ndarray, period: int, tau: float, t_min: int) -> np.ndarray:
    """(N,) deciding time t (ms) for a (T, N) table of confidences after t = 1..T ms:
    the first check t (a multiple of ``period``, t < span, t >= t_min) with conf >= τ,
    else the end of the recording (t = span)."""
    t = np.arange(1, conf.shape[0] + 1)[:, None]
    check = (t % period == 0) & (t < span[None, :]) & (t >= t_min)
    hit = check & (conf >= tau)
    return np.where(hit.any(axis=0), np.argmax(hit, axis=0) + 1, span)


def point_stats(t_dec: np.ndarray, cls: np.ndarray, y: np.ndarray) -> dict[str, float]:
    cols = np.arange(len(y))
    pred = cls[t_dec - 1, cols]
    return {
        "accuracy": float((pred == y).mean()),
        "mean_sensor_ms": float(t_dec.mean() * DT_MS),
        "p95_sensor_ms": float(np.percentile(t_dec, 95) * DT_MS),
    }


def sweep(
    decide: Callable[[float, int], np.ndarray],
    cls: np.ndarray,
    y: np.ndarray,
    taus: Sequence[float],
    t_mins: Sequence[int],
) -> list[dict[str, Any]]:
    out = []
    for t_min in t_mins:
        for tau in taus:
            d = decide(tau, t_min)
            out.append({"tau": float(tau), "t_min": int(t_min), **point_stats(d, cls, y)})
    return out


def pareto(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both accuracy (higher) and mean sensor ms (lower);
    among equal ones the smallest τ and t_min."""
    order = sorted(points, key=lambda p: (p["mean_sensor_ms"], -p["accuracy"], p["t_min"], p["tau"]))
    front: list[dict[str, Any]] = []
    best = -1.0
    for p in order:
        if p["accuracy"] > best + 1e-12:
            front.append(p)
            best = p["accuracy"]
    return front


def earliest_reaching(points: Sequence[dict[str, Any]], target: float, key: str) -> dict[str, Any] | None:
    ok = [p for p in points if p["accuracy"] >= target - 1e-12]
    return min(ok, key=lambda p: (p[key], p["t_min"], p["tau"])) if ok else None


def thin(front: list[dict[str, Any]], keep: Sequence[dict[str, Any] | None], k: int) -> list[dict[str, Any]]:
    """At most ~k points of a front, evenly spread along it, always with ``keep``."""
    if len(front) <= k:
        chosen = list(front)
    else:
        idx = sorted(set(np.round(np.linspace(0, len(front) - 1, k)).astype(int).tolist()))
        chosen = [front[i] for i in idx]
    for p in keep:
        if p is not None and not any(p is q for q in chosen):
            chosen.append(p)
    return sorted(chosen, key=lambda p: p["mean_sensor_ms"])


# ----------------------------------------------------------------------------------
# N-MNIST
# ----------------------------------------------------------------------------------


def ann_prefix_tables(sess: Any, steps: Sequence[Any], t_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Max softmax and argmax of the ANN on the rate frame of every prefix [0, t), t = 1..span,
    (T, N), the last state carried forward past each recording's end."""
    n = len(steps)
    conf = np.zeros((t_rows, n), np.float32)
    cls = np.zeros((t_rows, n), np.int64)
    for j, ev in enumerate(steps):
        span = ev.n_steps
        n_in = int(np.prod(ev.shape))
        step_of = np.repeat(np.arange(span), np.diff(ev.offsets))
        per_step = np.zeros((span, n_in), np.int32)
        np.add.at(per_step, (step_of, ev.indices), 1)
        cum = np.minimum(np.cumsum(per_step, axis=0), 255).astype(np.float32)
        rates = (cum / np.arange(1, span + 1, dtype=np.float32)[:, None]).reshape(span, *ev.shape)
        p = softmax(ort_logits(sess, rates))
        m = min(span, t_rows)
        conf[:m, j], cls[:m, j] = p.max(1)[:m], p.argmax(1)[:m]
        conf[m:, j], cls[m:, j] = conf[m - 1, j], cls[m - 1, j]
    return conf, cls


def ann_early_exit(sess: Any, ev: Any, period: int, tau: float, t_min: int) -> tuple[int, int]:
    """The frame ANN's streaming loop on one recording: accumulate counts up to each check,
    build the rate frame, run onnxruntime, softmax; stop at the first max softmax >= τ or at
    the end. Returns (class, t of the deciding check)."""
    span = ev.n_steps
    idx, off = ev.indices, ev.offsets
    n_in = int(np.prod(ev.shape))
    shape = (1, *ev.shape)
    counts = np.zeros(n_in, np.int64)
    prev = 0
    first = max(period, -(-t_min // period) * period)
    t = min(first, span)
    while True:
        a, b = off[prev], off[t]
        if b > a:
            counts += np.bincount(idx[a:b], minlength=n_in)
        prev = t
        x = (np.minimum(counts, 255).astype(np.float32) / np.float32(t)).reshape(shape)
        z = sess.run(None, {"x": x})[0][0].astype(np.float64)
        e = np.exp(z - z.max())
        p = e / e.sum()
        k = int(p.argmax())
        if p[k] >= tau or t >= span:
            return k, t
        t = min(t + period, span)


def time_points(
    points: Sequence[dict[str, Any]],
    run_one: Callable[[int, float, int], tuple[int, int]],
    replayed: Callable[[float, int], np.ndarray],
    n: int,
    y: np.ndarray,
    repeats: int,
    desc: str,
) -> None:
    """Run each point for real on every sample; add CPU ms per decision (thread time; per
    sample the median of ``repeats``) and how often the run decided at the replay's time."""
    from tqdm.auto import tqdm

    for p in tqdm(points, desc=desc, unit="point"):
        cpu = np.zeros((repeats, n))
        cls = np.zeros(n, np.int64)
        t_dec = np.zeros(n, np.int64)
        for r in range(repeats):
            for i in range(n):
                c0 = time.thread_time_ns()
                cls[i], t_dec[i] = run_one(i, p["tau"], p["t_min"])
                cpu[r, i] = (time.thread_time_ns() - c0) / 1e6
        per = np.median(cpu, axis=0)
        p["cpu_ms_per_decision"] = float(per.mean())
        p["cpu_ms_per_decision_median"] = float(np.median(per))
        p["run_accuracy"] = float((cls == y).mean())
        p["run_mean_sensor_ms"] = float(t_dec.mean() * DT_MS)
        p["run_agrees_with_replay"] = float(np.mean(t_dec == replayed(p["tau"], p["t_min"])))


def equal_accuracy(ann: list[dict[str, Any]], snn: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(p["accuracy"] for p in ann)
    target = best - EQUAL_TOL
    a = earliest_reaching(ann, target, "mean_sensor_ms")
    s = earliest_reaching(snn, target, "mean_sensor_ms")
    out: dict[str, Any] = {
        "ann_best_accuracy": best,
        "target_accuracy": target,
        "ann_point": a,
        "snn_point": s,
        "snn_best_accuracy": max(p["accuracy"] for p in snn),
        "sensor_time_ratio_at_equal_accuracy": None,
        "cpu_ratio_at_equal_accuracy": None,
    }
    if a is not None and s is not None:
        out["sensor_time_ratio_at_equal_accuracy"] = s["mean_sensor_ms"] / a["mean_sensor_ms"]
        if s.get("cpu_ms_per_decision") and a.get("cpu_ms_per_decision"):
            out["cpu_ratio_at_equal_accuracy"] = s["cpu_ms_per_decision"] / a["cpu_ms_per_decision"]
    # Where the SNN never gets within 0.5 pt of the ANN's best: the same comparison at the
    # best accuracy both reach (the lower of the two bests, less 0.5 pt).
    common = min(best, out["snn_best_accuracy"]) - EQUAL_TOL
    a2 = earliest_reaching(ann, common, "mean_sensor_ms")
    s2 = earliest_reaching(snn, common, "mean_sensor_ms")
    assert a2 is not None and s2 is not None
    out["at_common_accuracy"] = {
        "target_accuracy": common,
        "ann_point": a2,
        "snn_point": s2,
        "sensor_time_ratio": s2["mean_sensor_ms"] / a2["mean_sensor_ms"],
        "cpu_ratio": (s2["cpu_ms_per_decision"] / a2["cpu_ms_per_decision"])
        if s2.get("cpu_ms_per_decision") and a2.get("cpu_ms_per_decision")
        else None,
    }
    return out


def run_nmnist(args: argparse.Namespace, taus: Sequence[float], t_mins: Sequence[int]) -> dict[str, Any]:  # noqa: PLR0915  (linear: export, sweep, time, summarise)
    import nmnist as nm
    from spikecast.ext.core.calibration import Calibration, decision_steps
    from spikecast.ext.core.network import Network
    from spikecast.ext.engine import CompiledNetwork, Engine, EventSteps, trace
    from spikecast.runtime.decision import initial_point

    t0 = time.time()
    paths, labels = nm.real_recordings()
    perm = np.random.default_rng(0).permutation(nm.N_REAL)
    test_i = np.sort(perm[:300])[: args.n_test]
    recs = nm.read_all([paths[i] for i in test_i])
    y = labels[test_i]
    net = Network.load(args.nmnist_model)
    plan = CompiledNetwork(net)
    shape = plan.input_shape
    steps = [EventSteps.from_arrays(e["x"], e["y"], e["p"], nm.event_steps(e), shape) for e in recs]
    span = np.array([s.n_steps for s in steps], np.int64)
    choice = initial_point(net, Calibration(net.calibration))
    t_max = choice.point.t_max
    if span.max() > t_max:
        raise SystemExit(f"a recording spans {span.max()} steps > t_max {t_max}")
    print(f"N-MNIST: {len(y)} real test recordings, {span.min()}..{span.max()} ms")

    model = nm.make_model()
    model.load_state_dict(torch.load(MODELS / "nmnist.pt", weights_only=True))
    model.eval()
    sess = ort_session(export_onnx(model, shape, CACHE / "vs_ann" / "nmnist.onnx"))

    # One pass each: the ANN on every prefix, the SNN's per-step state.
    ta = time.time()
    a_conf, a_cls = ann_prefix_tables(sess, steps, t_max)
    ann_table_s = time.time() - ta
    full = nm.Frames(*nm.count_frames(recs, None), y).rates()
    export_err = check_export(model, sess, full)
    ta = time.time()
    tr = trace(plan, steps, t_max, logits=True, n_threads=1)
    snn_trace_s = time.time() - ta
    # c(t) in double from the float32 logits, as the engine compares it (the trace stores it
    # rounded to float32, which can move a decision at an exact tie with τ), under the
    # model's own exit signal (the rate or the evidence rule).
    s_conf, s_cls = net.confidence(tr.logits, tr.steps_run), tr.class_index.astype(np.int64)
    if float(np.abs(s_conf - tr.confidence).max()) > 1e-6:  # float32 rounding, exp()'s last bit
        raise RuntimeError("c(t) recomputed from the trace's logits differs from the trace's")

    def snn_decide(tau: float, t_min: int) -> np.ndarray:
        return np.minimum(decision_steps(s_conf, tau, t_min, t_max), tr.n_steps)

    snn_all = sweep(snn_decide, s_cls, y, taus, t_mins)
    dp = choice.point
    default = {"tau": dp.tau, "t_min": dp.t_min, **point_stats(snn_decide(dp.tau, dp.t_min), s_cls, y)}
    default["default"] = True
    snn_front = pareto(snn_all)

    def ann_all(period: int) -> list[dict[str, Any]]:
        mins = sorted({max(period, -(-m // period) * period) for m in t_mins})
        pts = sweep(lambda tau, m: replay(a_conf, span, period, tau, m), a_cls, y, taus, mins)
        for p in pts:
            p["check_ms"] = period
        return pts

    engine = Engine(plan)

    def snn_run(i: int, tau: float, t_min: int) -> tuple[int, int]:
        r = engine.run(steps[i], t_max, tau=tau, t_min=t_min)
        return r.class_index, r.steps

    results: dict[str, Any] = {}
    snn_keep: list[dict[str, Any]] = [default]
    ann_lists = {}
    for period in (10, 1):
        pts = ann_all(period)
        front = pareto(pts)
        eq = equal_accuracy(front, snn_front)
        common = eq["at_common_accuracy"]
        lst = thin(front, [eq["ann_point"], common["ann_point"]], args.max_points)
        ann_lists[period] = (lst, eq)
        snn_keep += [eq["snn_point"], common["snn_point"]]
    snn_list = thin(snn_front, snn_keep, args.max_points)
    if not any(p is default for p in snn_list):
        snn_list.append(default)
    n = len(y)
    time_points(snn_list, snn_run, snn_decide, n, y, args.repeats, "SNN CPU per decision")
    for period, (lst, _) in ann_lists.items():
        time_points(
            lst,
            lambda i, tau, t_min, period=period: ann_early_exit(sess, steps[i], period, tau, t_min),
            lambda tau, t_min, period=period: replay(a_conf, span, period, tau, t_min),
            n,
            y,
            args.repeats,
            f"ANN ({period} ms checks) CPU per decision",
        )
    for period, (lst, _) in ann_lists.items():
        eq = equal_accuracy(lst, snn_list)  # the same points, now with CPU times
        key = "nmnist" if period == 10 else "nmnist_check_1ms"
        results[key] = {
            "kind": "events",
            "ann_check_ms": period,
            "ann": lst,
            "snn": snn_list,
            "sensor_time_ratio_at_equal_accuracy": eq["sensor_time_ratio_at_equal_accuracy"],
            "cpu_ratio_at_equal_accuracy": eq["cpu_ratio_at_equal_accuracy"],
            "equal_accuracy": eq,
        }
    info = {
        "test_recordings": n,
        "test_split": "bench/nmnist.py: sorted(default_rng(0).permutation(1000)[:300]), never used "
        "for training or calibration",
        "mean_recording_ms": float(span.mean() * DT_MS),
        "t_max": t_max,
        "default_point": choice.as_dict(),
        "snn_model": {"file": _rel(args.nmnist_model), "sha256": net.sha256, "exit_signal": net.exit_signal,
                      "percentile": net.meta.get("percentile"), "max_spikes": net.max_spikes},
        "ann_accuracy_whole_recording": float((softmax(ort_logits(sess, full)).argmax(1) == y).mean()),
        "onnx_vs_torch_max_abs_logit_diff": export_err,
        "ann_prefix_table_seconds": ann_table_s,
        "snn_trace_seconds": snn_trace_s,
        "sweep_points": {"snn": len(snn_all), "ann_pareto_10ms": len(ann_lists[10][0])},
        "seconds": time.time() - t0,
    }
    results["nmnist"]["info"] = info
    results["nmnist_check_1ms"]["info"] = {"see": "nmnist.info"}
    return results


# ----------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------


def cifar_test_u8(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first n of a seeded permutation (seed 1) of the CIFAR-10 test set, uint8 (n, 3, 32, 32)."""
    from PIL import Image

    with np.load(require(DATA / "cifar10" / "cifar10_jpeg.npz", "CIFAR-10 JPEGs"), allow_pickle=False) as d:
        buf, off, yte = d["test_jpeg"], d["test_offsets"], d["y_test"].astype(np.int64)
    idx = np.random.default_rng(1).permutation(len(yte))[:n]
    out = np.empty((n, 32, 32, 3), np.uint8)
    for k, i in enumerate(idx):
        with Image.open(io.BytesIO(buf[off[i] : off[i + 1]].tobytes())) as im:
            out[k] = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), yte[idx], idx


def run_frames(  # noqa: PLR0913, PLR0915  (one frame data set end to end; every argument names its own input)
    name: str,
    model: torch.nn.Module,
    scn: Path,
    raw: np.ndarray,
    y: np.ndarray,
    images: str,
    args: argparse.Namespace,
    taus: Sequence[float],
    t_mins: Sequence[int],
    trace_steps: int,
) -> dict[str, Any]:
    from spikecast.ext.core.calibration import Calibration, decision_steps
    from spikecast.ext.core.network import Network
    from spikecast.ext.engine import CompiledNetwork, run_batch, trace
    from spikecast.runtime.decision import initial_point

    t0 = time.time()
    net = Network.load(scn)
    plan = CompiledNetwork(net)
    x = net.input.normalize(raw)  # the ANN's input too (same normalisation)
    model.eval()
    sess = ort_session(export_onnx(model, x.shape[1:], CACHE / "vs_ann" / f"{name}.onnx"))
    export_err = check_export(model, sess, x[:256])

    # onnxruntime, batch 1, one image at a time.
    n = len(x)
    cpu = np.zeros(n)
    pred = np.zeros(n, np.int64)
    for _ in range(2):  # warm-up
        sess.run(None, {"x": x[:1]})
    for i in range(n):
        c0 = time.thread_time_ns()
        z = sess.run(None, {"x": x[i : i + 1]})[0][0]
        pred[i] = int(z.argmax())
        cpu[i] = (time.thread_time_ns() - c0) / 1e6
    ann_acc = float((pred == y).mean())
    ann_point = {
        "tau": None,
        "t_min": None,
        "accuracy": ann_acc,
        "mean_sensor_ms": None,
        "p95_sensor_ms": None,
        "cpu_ms_per_decision": float(cpu.mean()),  # the engine's figure is a mean too
        "cpu_ms_per_decision_median": float(np.median(cpu)),
        "cpu_ms_per_decision_p95": float(np.percentile(cpu, 95)),
    }

    choice = initial_point(net, Calibration(net.calibration))
    t_max = choice.point.t_max
    ta = time.time()
    tr = trace(plan, x, min(trace_steps or t_max, t_max), n_threads=1)
    trace_s = time.time() - ta
    t_rows = tr.confidence.shape[0]
    cls = tr.class_index.astype(np.int64)
    cols = np.arange(n)

    def stats(tau: float, t_min: int) -> dict[str, Any]:
        d = decision_steps(tr.confidence, tau, t_min, t_rows)
        return {
            "tau": float(tau),
            "t_min": int(t_min),
            "accuracy": float((cls[d - 1, cols] == y).mean()),
            "mean_steps": float(d.mean()),
            "p95_steps": float(np.percentile(d, 95)),
        }

    allp = [stats(tau, m) for m in t_mins if m <= t_rows for tau in taus]
    target = ann_acc - EQUAL_TOL
    eq = earliest_reaching(allp, target, "mean_steps")
    best = max(allp, key=lambda p: (p["accuracy"], -p["mean_steps"]))
    dp = choice.point
    points: list[dict[str, Any]] = [{"tau": dp.tau, "t_min": dp.t_min, "t_max": t_max, "default": True}]
    if eq is not None:
        points.append({**eq, "t_max": t_rows, "equal_accuracy": True})
    else:  # the SNN does not get within 0.5 pt: time its best point of the sweep instead
        points.append({**best, "t_max": t_rows, "best_of_sweep": True})
    for p in points:
        if "accuracy" in p:
            p["replay_accuracy"], p["replay_mean_steps"] = p.pop("accuracy"), p.pop("mean_steps")
            p.pop("p95_steps")
        c0 = time.thread_time_ns()
        res = run_batch(plan, x, p["t_max"], tau=p["tau"], t_min=p["t_min"], n_threads=1)
        p["cpu_ms_per_decision"] = (time.thread_time_ns() - c0) / 1e6 / n
        p["accuracy"] = float((res.class_index == y).mean())
        p["mean_steps"] = float(res.steps.mean())
        p["p95_steps"] = float(np.percentile(res.steps, 95))
        p["mean_sensor_ms"] = None
        p["p95_sensor_ms"] = None
    cpu_eq = points[-1]["cpu_ms_per_decision"] / ann_point["cpu_ms_per_decision"] if eq is not None else None
    return {
        "kind": "frames",
        "ann": [ann_point],
        "snn": points,
        "sensor_time_ratio_at_equal_accuracy": None,
        "cpu_ratio_at_equal_accuracy": cpu_eq,
        "cpu_ratio_at_default_point": points[0]["cpu_ms_per_decision"] / ann_point["cpu_ms_per_decision"],
        "equal_accuracy": {
            "ann_accuracy": ann_acc,
            "target_accuracy": target,
            "snn_best_accuracy_in_sweep": max(p["accuracy"] for p in allp),
            "snn_point": points[-1] if eq is not None else None,
            "snn_best_point_of_sweep": best,
        },
        "info": {
            "images": images,
            "n_images": n,
            "snn_model": {"file": _rel(scn), "sha256": net.sha256, "exit_signal": net.exit_signal,
                          "percentile": net.meta.get("percentile"), "max_spikes": net.max_spikes},
            "default_point": choice.as_dict(),
            "trace_steps": t_rows,
            "trace_seconds": trace_s,
            "onnx_vs_torch_max_abs_logit_diff": export_err,
            "ann_timing": "onnxruntime batch 1, thread CPU ms per image, mean (and median) over the images",
            "snn_timing": "run_batch(n_threads=1) thread CPU ms / images",
            "seconds": time.time() - t0,
        },
    }


# ----------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "nmnist" not in res["datasets"]:
        print("no N-MNIST results: no plot")
        return
    ev = res["datasets"]["nmnist"]
    ev1 = res["datasets"]["nmnist_check_1ms"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    curves = [
        ("frame ANN (onnxruntime), checked every 10 ms", ev["ann"], "C0", "o"),
        ("frame ANN (onnxruntime), checked every 1 ms", ev1["ann"], "C2", "s"),
        ("SNN (spikecast engine)", [p for p in ev["snn"] if not p.get("default")], "C3", "^"),
    ]
    for ax, key, xlabel in (
        (axes[0], "mean_sensor_ms", "mean sensor time to decision (ms)"),
        (axes[1], "cpu_ms_per_decision", "CPU ms per decision (one thread)"),
    ):
        for label, pts, color, marker in curves:
            pts = sorted(pts, key=lambda p: p["mean_sensor_ms"])
            xs, ys = [p[key] for p in pts], [100 * p["accuracy"] for p in pts]
            if key == "mean_sensor_ms":  # a Pareto front: this accuracy from this time on
                ax.plot(xs, ys, marker=marker, color=color, label=label, drawstyle="steps-post")
            else:
                ax.plot(xs, ys, marker, color=color, label=label)
        d = next(p for p in ev["snn"] if p.get("default"))
        ax.plot([d[key]], [100 * d["accuracy"]], "*", ms=16, color="k",
                label=f"SNN default point (τ={d['tau']:g}, t_min={d['t_min']})")  # fmt: skip
        tgt = ev["equal_accuracy"]["target_accuracy"]
        ax.axhline(100 * tgt, ls=":", color="grey", label="ANN best accuracy − 0.5 pt")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(max(0, 100 * tgt - 25), 100)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[1].set_title("the same points: CPU per decision", fontsize=10)
    axes[0].set_title("accuracy against sensor time", fontsize=10)
    axes[0].legend(fontsize=8, loc="lower right")
    n = ev["info"]["test_recordings"]
    fig.suptitle(f"N-MNIST, {n} real held-out recordings: Pareto points of the τ × t_min sweeps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=300, help="N-MNIST test recordings (<= 300)")
    ap.add_argument("--images", type=int, default=1000, help="MNIST / CIFAR-10 test images")
    ap.add_argument("--repeats", type=int, default=3, help="CPU timing repeats per recording")
    ap.add_argument("--max-points", type=int, default=14, help="Pareto points run for CPU time, per list")
    ap.add_argument(
        "--frame-trace-steps",
        type=int,
        default=0,
        help="steps of the frame sweeps' trace (0: MNIST 100, CIFAR-10 the default point's t_max, 400)",
    )
    ap.add_argument("--skip-frames", action="store_true", help="N-MNIST only (as --only nmnist)")
    ap.add_argument("--only", nargs="+", choices=["nmnist", "mnist", "cifar10"],
                    help="these data sets only (default: all three)")
    ap.add_argument("--nmnist-model", type=Path, default=MODELS / "nmnist.scn",
                    help="the N-MNIST SNN (e.g. bench/models/nmnist_burst4.scn)")
    ap.add_argument("--cifar-model", type=Path, default=MODELS / "cifar10.scn",
                    help="the CIFAR-10 SNN (e.g. bench/models/cifar10_burst4.scn)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/vs_ann.json)")
    ap.add_argument("--quick", action="store_true", help="smoke run; writes to bench/.cache/")
    ap.add_argument("--replot", metavar="JSON", help="only redraw the PNG next to a results file")
    args = ap.parse_args()
    if args.replot:
        path = Path(args.replot)
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        return
    if args.quick:
        args.n_test, args.images, args.repeats, args.max_points = 60, 200, 1, 5
        args.frame_trace_steps = args.frame_trace_steps or 100
    torch.set_num_threads(1)
    import onnxruntime as ort
    from spikecast.ext.core.calibration import T_MIN_GRID, TAU_GRID

    taus = tuple(TAU_GRID) + EXTRA_TAUS
    t_mins = tuple(T_MIN_GRID)
    t_start, c_start = time.time(), time.process_time()
    load_start = loadavg()
    which = set(args.only or (["nmnist"] if args.skip_frames else ["nmnist", "mnist", "cifar10"]))
    datasets = run_nmnist(args, taus, t_mins) if "nmnist" in which else {}
    if "mnist" in which:
        import convert_mnist as cm

        _, _, xte, yte = load_mnist()
        m = cm.make_model()
        m.load_state_dict(torch.load(MODELS / "mnist_maxpool.pt", weights_only=True))
        n = min(args.images, len(yte))
        datasets["mnist"] = run_frames(
            "mnist", m, MODELS / "mnist_maxpool.scn", xte[:n] * 255.0, yte[:n],
            f"MNIST test images 0..{n - 1}", args, taus, t_mins, args.frame_trace_steps or 100,
        )  # fmt: skip
    if "cifar10" in which:
        import cifar10 as cf

        c = cf.make_model()
        c.load_state_dict(torch.load(MODELS / "cifar10.pt", weights_only=True))
        raw, yc, _ = cifar_test_u8(args.images)
        what = f"CIFAR-10 test images: the first {len(yc)} of default_rng(1).permutation(10000)"
        datasets["cifar10"] = run_frames(
            "cifar10", c, args.cifar_model, raw, yc, what, args, taus, t_mins, args.frame_trace_steps
        )
    result = {
        "what": "the same trained ANN on onnxruntime (frames; event-rate frames checked every 10 / 1 ms) "
        "against the converted SNN on the engine, same inputs, one thread each",
        "equal_accuracy_rule": "ANN best accuracy - 0.5 pt; each side's earliest point reaching it; "
        "ratios SNN / ANN",
        "point_fields": "tau, t_min, accuracy, mean_sensor_ms, p95_sensor_ms (ms of sensor time: t of the "
        "deciding check / step), cpu_ms_per_decision (thread CPU, one thread)",
        "datasets": datasets,
        "onnxruntime": ort.__version__,
        "threads": {
            "torch": torch.get_num_threads(),
            "onnxruntime_intra_op": 1,
            "onnxruntime_inter_op": 1,
            "engine": 1,
        },
        "load_average_start": load_start,
        "load_average_end": loadavg(),
        "total_seconds": time.time() - t_start,
        "process_cpu_seconds": time.process_time() - c_start,
        "command": " ".join(["python bench/vs_ann.py", *sys.argv[1:]]),
        "machine": machine(),
    }
    out = args.out or (CACHE if args.quick else RESULTS) / "vs_ann.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    plot(result, out.with_suffix(".png"))
    for key, d in datasets.items():
        print(
            key,
            "sensor ratio",
            d["sensor_time_ratio_at_equal_accuracy"],
            "cpu ratio",
            d["cpu_ratio_at_equal_accuracy"],
        )


if __name__ == "__main__":
    main()
