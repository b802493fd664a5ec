"""MNIST on the Cython engine: accuracy against fixed T, and what early exit buys.

    python bench/mnist.py                      # all 10,000 test images
    python bench/mnist.py --samples 200        # the CI smoke version

Needs bench/models/mnist_maxpool.scn (made by bench/convert_mnist.py). Writes
bench/results/mnist.json and bench/results/mnist.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import MODELS, RESULTS, ROOT, load_mnist, machine, trace_with_progress

FIXED_T = (5, 10, 15, 25, 50, 75, 100, 150, 200, 300, 400)
TAUS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995)
TARGETS = (0.98, 0.99, 0.995)


def run_sweep(plan, x, y, *, t_max, tau, t_min, threads):
    from spikecast.ext.engine import run_batch

    t0 = time.perf_counter()
    res = run_batch(plan, x, t_max, tau=tau, t_min=t_min, n_threads=threads)
    wall = time.perf_counter() - t0
    acc = float((res.class_index == y).mean())
    return res, acc, wall


def trace_every_step(plan, x, t_max):
    """One pass per image to t_max: class, confidence and SynOps after every step (T, N)."""
    tr = trace_with_progress(plan, x, t_max, desc="every step (engine trace)", exact_confidence=True)
    return tr.class_index.astype(np.int16), tr.confidence, tr.synops.astype(np.float64)


def time_fixed_t(plan, xt, yt, fixed_steps, pred, threads) -> dict[str, float]:
    """ms per decision, per core, at each fixed T (run_batch, checked against the trace)."""
    from tqdm.auto import tqdm

    fixed_ms: dict[str, float] = {}
    for t in tqdm(fixed_steps, desc="fixed T timing (run_batch)"):
        res, _, wall = run_sweep(plan, xt, yt, t_max=t, tau=None, t_min=1, threads=threads)
        if not np.array_equal(res.class_index, pred[t - 1, : len(xt)]):
            raise SystemExit(f"run_batch and stepping disagree at T={t}")
        fixed_ms[str(t)] = wall * 1000 / len(xt) * threads  # per decision, per core
    return fixed_ms


def sweep_early_exit(plan, xt, yt, conf, correct, synops, args) -> list[dict]:
    """Each τ: the rule replayed on the trace (accuracy, steps, SynOps) and timed in the engine."""
    from spikecast.runtime.decision import decision_steps
    from tqdm.auto import tqdm

    t_max = args.t_max
    cols = np.arange(conf.shape[1])
    early = []
    for tau in tqdm(TAUS, desc="early-exit sweep"):
        steps = decision_steps(conf, tau, args.t_min, t_max)
        res, _, wall = run_sweep(plan, xt, yt, t_max=t_max, tau=tau, t_min=args.t_min, threads=args.threads)
        if not np.array_equal(res.steps, steps[: len(xt)]):
            raise SystemExit(f"engine early exit and the replayed rule disagree at tau={tau}")
        early.append({
            "tau": tau,
            "accuracy": float(correct[steps - 1, cols].mean()),
            "mean_steps": float(steps.mean()),
            "p95_steps": float(np.percentile(steps, 95)),
            "ms_per_decision": wall * 1000 / len(xt) * args.threads,
            "synops_per_decision": float(synops[steps - 1, cols].mean()),
            "confident_fraction": float((conf[steps - 1, cols] >= tau).mean()),
        })
    return early


def early_exit_by_target(net, conf, correct, args) -> list[dict]:
    """The τ the network's calibration table picks for each target accuracy, replayed."""
    from spikecast.runtime.decision import Calibration, decision_steps

    if net.calibration is None:
        return []
    cal = Calibration(net.calibration)
    cols = np.arange(conf.shape[1])
    by_target = []
    for target in TARGETS:
        tau = cal.tau_for_target(target, args.t_min, args.t_max)
        tau = 1.0 if tau is None else tau  # unreachable: run to t_max
        steps = decision_steps(conf, tau, args.t_min, args.t_max)
        by_target.append({"target_accuracy": target, "tau": tau,
                          "accuracy": float(correct[steps - 1, cols].mean()),
                          "mean_steps": float(steps.mean()),
                          "p95_steps": float(np.percentile(steps, 95))})
    return by_target


def batch1_median_ms(plan, x, tau, args) -> float:
    """Median wall time of one early-exit decision at batch 1 over the frames x."""
    from spikecast.ext.engine import Engine

    eng = Engine(plan)
    lat = []
    for frame in x:
        t0 = time.perf_counter()
        eng.run(frame, args.t_max, tau=tau, t_min=args.t_min)
        lat.append(time.perf_counter() - t0)
    return float(np.median(lat) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--t-min", type=int, default=1,
                    help="earliest decision step (1, the model's recommended t_min)")
    ap.add_argument("--t-max", type=int, default=400)
    ap.add_argument("--timing-samples", type=int, default=500, help="images timed per operating point")
    ap.add_argument("--out", default="mnist.json")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where the JSON and PNG go")
    args = ap.parse_args()

    from spikecast.ext.core.network import load_network
    from spikecast.ext.engine import CompiledNetwork

    path = MODELS / "mnist_maxpool.scn"
    if not path.exists():
        raise SystemExit(f"{path} not found: run python bench/convert_mnist.py first")
    net = load_network(path)
    plan = CompiledNetwork(net)
    _, _, xte, yte = load_mnist()
    x = net.input.normalize(xte[: args.samples] * 255.0)  # raw pixels -> the network's input
    y = yte[: args.samples]
    t_max = args.t_max
    fixed_steps = [t for t in FIXED_T if t <= t_max]

    # One pass per image to t_max, reading class and confidence after every step: accuracy
    # at every T, and the early-exit rule replayed exactly (it is what run(tau=...) does).
    pred, conf, synops = trace_every_step(plan, x, t_max)
    correct = pred == y[None, :]
    acc_by_t = correct.mean(axis=1)
    fixed = {str(t): float(acc_by_t[t - 1]) for t in fixed_steps}
    synops_fixed = {str(t): float(synops[t - 1].mean()) for t in fixed_steps}
    plateau = float(acc_by_t[-1])  # the long-run accuracy at t_max

    # Wall clock per decision on a subset, engine batch API, checked against the replay.
    xt, yt = x[: args.timing_samples], y[: args.timing_samples]
    fixed_ms = time_fixed_t(plan, xt, yt, fixed_steps, pred, args.threads)
    early = sweep_early_exit(plan, xt, yt, conf, correct, synops, args)
    by_target = early_exit_by_target(net, conf, correct, args)

    # Latency of one decision at batch 1 (median over samples), at the operating point chosen below.
    within = [e for e in early if e["accuracy"] >= plateau - 0.0005]
    best = min(within, key=lambda e: e["mean_steps"]) if within else max(early, key=lambda e: e["accuracy"])
    best["batch1_median_ms"] = batch1_median_ms(plan, x[: len(xt)], best["tau"], args)

    smallest_fixed = int(np.argmax(acc_by_t >= plateau - 0.0005)) + 1
    speedup = smallest_fixed / best["mean_steps"]
    result = {
        "dataset": "MNIST",
        "model": str(path.relative_to(ROOT)),
        "samples": len(x),
        "timing_samples": len(xt),
        "ann_accuracy": float(net.meta.get("ann_accuracy", np.nan)) if "ann_accuracy" in net.meta else None,
        "snn_accuracy_by_T": fixed,
        "snn_accuracy_every_T": [float(a) for a in acc_by_t],
        "ms_per_decision_by_T": fixed_ms,
        "synops_by_T": synops_fixed,
        "early_exit": early,
        "early_exit_by_target": by_target,
        "operating_point": best,
        "plateau_accuracy": plateau,
        "smallest_fixed_T_at_plateau": smallest_fixed,
        "step_reduction_vs_fixed_T": speedup,
        "synops_per_decision": best["synops_per_decision"],
        "ann_macs_per_image": net.ann_macs,
        "t_min": args.t_min,
        "threads": args.threads,
        "command": f"python bench/mnist.py --samples {args.samples} --t-max {t_max}",
        "machine": machine(),
    }
    conv = RESULTS / "convert_mnist.json"
    if conv.exists():
        result["ann_accuracy"] = json.loads(conv.read_text())["ann_accuracy"]
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_dir / args.out}")
    plot(result, out_dir / args.out.replace(".json", ".png"))
    print_summary(result)


def print_summary(result) -> None:
    fixed, early, best = result["snn_accuracy_by_T"], result["early_exit"], result["operating_point"]
    plateau, smallest_fixed = result["plateau_accuracy"], result["smallest_fixed_T_at_plateau"]
    speedup = result["step_reduction_vs_fixed_T"]
    print(f"\nMNIST on the engine, {result['samples']} test images")
    print("fixed T   " + "  ".join(f"{t:>6}" for t in fixed))
    print("accuracy  " + "  ".join(f"{a * 100:6.2f}" for a in fixed.values()))
    print(f"\n{'tau':>7} {'acc %':>7} {'mean T':>7} {'p95 T':>6} {'ms/dec':>7} {'SynOps':>9}")
    for e in early:
        print(
            f"{e['tau']:>7} {e['accuracy'] * 100:7.2f} {e['mean_steps']:7.1f} {e['p95_steps']:6.0f} "
            f"{e['ms_per_decision']:7.3f} {e['synops_per_decision']:9.0f}"
        )
    print(
        f"\nplateau {plateau * 100:.2f}% first reached at fixed T={smallest_fixed}; "
        f"early exit tau={best['tau']} "
        f"reaches {best['accuracy'] * 100:.2f}% with {best['mean_steps']:.1f} mean steps "
        f"({speedup:.1f}x fewer), {best['batch1_median_ms']:.3f} ms per decision at batch 1"
    )
    print(
        f"SynOps per decision {best['synops_per_decision']:.3g} "
        f"vs ANN MACs {result['ann_macs_per_image']:.3g}"
    )


def plot(result, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ts = [int(t) for t in result["snn_accuracy_by_T"]]
    acc = [v * 100 for v in result["snn_accuracy_by_T"].values()]
    a1.plot(ts, acc, "o-", label="fixed T")
    ee = result["early_exit"]
    a1.plot(
        [e["mean_steps"] for e in ee],
        [e["accuracy"] * 100 for e in ee],
        "s-",
        label="early exit (mean steps)",
    )
    if result.get("ann_accuracy"):
        a1.axhline(result["ann_accuracy"] * 100, color="k", ls="--", lw=1, label="ANN")
    a1.set_xscale("log")
    a1.set_xlabel("steps per decision")
    a1.set_ylabel("accuracy (%)")
    a1.set_ylim(max(min(acc) - 1, 90), 100)
    a1.grid(alpha=0.3, which="both")
    a1.legend()
    a1.set_title("accuracy against latency in steps")
    a2.plot([e["ms_per_decision"] for e in ee], [e["accuracy"] * 100 for e in ee], "s-", label="early exit")
    a2.plot(list(result["ms_per_decision_by_T"].values()), acc, "o-", label="fixed T")
    a2.set_xscale("log")
    a2.set_xlabel("wall-clock ms per decision (per core)")
    a2.set_ylabel("accuracy (%)")
    a2.set_ylim(max(min(acc) - 1, 90), 100)
    a2.grid(alpha=0.3, which="both")
    a2.legend()
    a2.set_title("accuracy against wall-clock time")
    fig.suptitle(f"MNIST, Cython engine, {result['samples']} test images")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
