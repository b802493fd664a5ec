"""Spike read-out against membrane read-out, on the same spikes (docs/step-semantics.md,
"Read-out").

    python bench/readout.py            # full run (~2 min on 2 shared cores)
    python bench/readout.py --quick    # smoke run on small subsets, written to bench/.cache/

Each bench model is run once per read-out (``net.with_(readout=...)``: same weights, λ,
exit signal, same spikes) with ``trace`` on data neither its training nor its table saw:

- N-MNIST (bench/models/nmnist.scn): the 300 real test recordings of bench/nmnist.py's
  split (seed 0), and saccade streams of MNIST *test* digits made by bench/saccade.py
  (seeded; the demo's kind of stream). Per read-out: accuracy at fixed sensor times, the
  earliest point of a τ × t_min sweep reaching each target accuracy (mean sensor ms), and
  each read-out's recommended point (``meta["readout_choice"]``: what convert() found for
  it on the model's table) replayed on the trace.
- MNIST (mnist_maxpool.scn) and CIFAR-10 (cifar10.scn) test images: accuracy at fixed T
  and the earliest point reaching each target, in mean steps (their files recommend one
  point, for the spike read-out, replayed for both).

The sweeps pick points on the evaluated data itself (an oracle for both read-outs alike),
as bench/vs_ann.py does; the recommended point is the model's own, from its table.
Writes bench/results/readout.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
from common import MODELS, RESULTS, ROOT, load_mnist, machine

READOUTS = ("spikes", "membrane")
CACHE = ROOT / "bench" / ".cache"


def earliest(conf: np.ndarray, cls: np.ndarray, y: np.ndarray, span: np.ndarray, t_max: int,
             targets: tuple[float, ...]) -> dict[str, Any]:  # fmt: skip
    """For each target accuracy, the τ × t_min point (calibration grids) with the fewest
    mean steps reaching it: {target: {tau, t_min, accuracy, mean_steps} or None}."""
    from spikecast.ext.core.calibration import T_MIN_GRID, TAU_GRID, decision_steps

    cols = np.arange(len(y))
    pts = []
    for t_min in T_MIN_GRID:
        if t_min > t_max:
            continue
        for tau in TAU_GRID:
            d = np.minimum(decision_steps(conf, tau, t_min, t_max), span)
            pts.append((float(d.mean()), float((cls[d - 1, cols] == y).mean()), float(tau), int(t_min)))
    out: dict[str, Any] = {}
    for target in targets:
        ok = [p for p in pts if p[1] >= target - 1e-9]
        best = min(ok) if ok else None
        out[f"{target:g}"] = None if best is None else dict(zip(("mean_steps", "accuracy", "tau", "t_min"),
                                                                best, strict=True))  # fmt: skip
    return out


def compare(net: Any, inputs: Any, y: np.ndarray, t_max: int, fixed: tuple[int, ...],
            targets: tuple[float, ...], span: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    from spikecast.ext.core.calibration import decision_steps
    from spikecast.ext.core.network import META_OPERATING_POINT
    from spikecast.ext.engine import trace

    out: dict[str, Any] = {}
    for r in READOUTS:
        t0 = time.process_time()
        tr = trace(net.with_(readout=r), inputs, t_max, n_threads=2)
        n = np.full(len(y), t_max) if span is None else np.minimum(span, t_max)
        cols = np.arange(len(y))
        correct = tr.class_index == y[None]
        res: dict[str, Any] = {
            "fixed": {str(t): float(correct[t - 1].mean()) for t in fixed if t <= t_max},
            "plateau_accuracy": float(correct[n - 1, cols].mean()),
            "earliest": earliest(tr.confidence, tr.class_index, y, n, t_max, targets),
        }
        # Each read-out's own recommended point where convert() weighed both (its table's),
        # else the model's.
        own = net.meta.get("readout_choice", {}).get("candidates", {}).get(r)
        p = own or net.meta.get(META_OPERATING_POINT)
        if isinstance(p, dict):
            d = np.minimum(decision_steps(tr.confidence, p["tau"], p["t_min"], t_max), n)
            res["model_point"] = {"tau": p["tau"], "t_min": p["t_min"], "mean_steps": float(d.mean()),
                                  "accuracy": float(correct[d - 1, cols].mean())}  # fmt: skip
        res["cpu_seconds"] = time.process_time() - t0
        out[r] = res
    return out


def nmnist_sets(n_test: int, n_saccade: int) -> dict[str, tuple[list[Any], np.ndarray]]:
    import nmnist as nm
    from saccade import saccade_events_batch
    from spikecast.ext.engine import EventSteps

    def steps(recs: list[np.ndarray]) -> list[Any]:
        return [EventSteps.from_arrays(e["x"], e["y"], e["p"], nm.event_steps(e), (2, nm.SIZE, nm.SIZE))
                for e in recs]  # fmt: skip

    paths, labels = nm.real_recordings()
    perm = np.random.default_rng(0).permutation(nm.N_REAL)
    test_i = np.sort(perm[:300])[:n_test]
    real = steps(nm.read_all([paths[i] for i in test_i]))
    _, _, xte, yte = load_mnist()
    pick = np.random.default_rng(123).choice(len(yte), n_saccade, replace=False)
    recs: list[np.ndarray] = []
    for k in range(0, n_saccade, 100):
        batch = xte[pick[k : k + 100], 0]
        recs += nm.as_real_polarity(saccade_events_batch(batch, rng=np.random.default_rng(1000 + k)))
    return {"real": (real, labels[test_i]), "saccade": (steps(recs), yte[pick])}


def frames(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from spikecast.ext.core.network import load_network

    net = load_network(MODELS / f"{name}.scn")
    if name == "cifar10":
        from vs_ann import cifar_test_u8

        raw, y, _ = cifar_test_u8(n)
    else:
        _, _, xte, y = load_mnist()
        raw, y = xte[:n] * 255.0, y[:n]
    spec = net.input
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    return ((raw.astype(np.float32) * np.float32(spec.scale) - mean) / std).astype(np.float32), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run on small subsets")
    args = ap.parse_args()
    from spikecast.ext.core.network import load_network

    t0 = time.time()
    n_test, n_sacc, n_img = (60, 100, 200) if args.quick else (300, 400, 1000)
    result: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "datasets": {}}
    net = load_network(MODELS / "nmnist.scn")
    for key, (inputs, y) in nmnist_sets(n_test, n_sacc).items():
        span = np.array([s.n_steps for s in inputs])
        result["datasets"][f"nmnist_{key}"] = {
            "model": "bench/models/nmnist.scn", "samples": len(y), "unit": "steps of 1 ms (sensor ms)",
            **compare(net, inputs, y, 320, (16, 24, 32, 48, 64, 128), (0.9, 0.95, 0.97, 0.9717, 0.98), span),
        }  # fmt: skip
    for name, t_max, targets in (("mnist_maxpool", 16, (0.98, 0.99, 0.992)),
                                 ("cifar10", 128, (0.85, 0.86, 0.865, 0.87))):  # fmt: skip
        x, y = frames(name, n_img)
        fnet = load_network(MODELS / f"{name}.scn")
        result["datasets"][name] = {
            "model": f"bench/models/{name}.scn", "samples": len(y), "unit": "steps",
            **compare(fnet, x, y, t_max, (1, 2, 3, 4, 8, 16, 32, 64, 128), targets),
        }  # fmt: skip
    result["total_seconds"] = time.time() - t0
    result["command"] = " ".join(["python bench/readout.py", *sys.argv[1:]])
    result["machine"] = machine()
    out = (CACHE if args.quick else RESULTS) / "readout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, d in result["datasets"].items():
        for r in READOUTS:
            e = {k: (None if v is None else round(v["mean_steps"], 1)) for k, v in d[r]["earliest"].items()}
            print(f"{name:<16} {r:<9} plateau {d[r]['plateau_accuracy']:.4f}  earliest mean steps {e}  "
                  f"point {d[r].get('model_point')}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
