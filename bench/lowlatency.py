"""Low-latency conversion: which post-training option makes the SNN accurate after few steps.

    python bench/lowlatency.py --mnist 500 --cifar 100 --frame-steps 64   # all in one process
    # or one data set per process, in parallel (the committed results), then --assemble:
    python bench/lowlatency.py --part --only mnist --mnist 500 --frame-steps 64
    python bench/lowlatency.py --part --only cifar10 --cifar 100 --frame-steps 64
    python bench/lowlatency.py --part --only nmnist --max-pool count gated
    python bench/lowlatency.py --assemble
    python bench/lowlatency.py --quick         # smoke run, out to bench/.cache/

Each trained ANN of the bench (bench/models/*.pt) is converted with ``convert()`` at four
λ percentiles (99.9, the classic default; 100 = max-norm; 99.5 and 99, which clip more
and so fire faster) and each converted network is run with its spiking layers' membranes
starting at v_init·θ for v_init = 0 (Rueckauer et al. 2017) and 0.5 (Bu et al. 2022: with
reset by subtraction, v_init = θ/2 turns the rate code's floor quantisation into
round-to-nearest; Deng & Gu 2021's θ/2T bias shift
is its fixed-T form). v_init is a model-file field that the engine and the reference
simulator both implement (docs/step-semantics.md); the percentile is the λ of each layer.
``--burst B`` adds burst coding (convert(max_spikes=B)); ``--max-pool count gated`` runs
every option with both max-pool modes (Network.max_pool; count is convert()'s default,
gated the mode of every file made before it; option names end in ``_gated`` for it).
The SNN accuracy after T = 4, 8, 16, 32, 64 steps (1 ms each for N-MNIST) comes from one
``spikecast.ext.engine.trace`` per option, against the ANN on the same held-out data:

- MNIST (bench/models/mnist_maxpool.pt): λ from training images [55000, 57000) (never
  trained on, as bench/convert_mnist.py); test images 0..N-1.
- CIFAR-10 (bench/models/cifar10.pt): λ from 2000 fit images of bench/cifar10.py's seeded
  split, input mean/std from bench/models/cifar10.scn; the first N of default_rng(1)'s
  permutation of the test set.
- N-MNIST (bench/models/nmnist.pt, event input): λ from whole-recording and prefix frames
  of the 500 real training recordings of bench/nmnist.py's seeded split; the real test
  recordings of that split (never used for training or calibration). The ANN is scored on
  each whole recording's rate frame (as bench/nmnist.py does) and on the prefix [0, T).

Accuracy at the longest traced step is reported as ``plateau``. Writes
bench/results/lowlatency.json and bench/results/lowlatency.png. One thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DATA, MODELS, RESULTS, ROOT, load_mnist, machine, require
from spikecast.ext.core.network import MAX_POOL_MODES

STEPS = (4, 8, 16, 32, 64)
PERCENTILES = (99.0, 99.5, 99.9, 100.0)
V_INITS = (0.0, 0.5)
BURSTS = [1]  # max_spikes; --burst adds more (burst coding: convert(max_spikes=B))
POOLS = ["count"]  # max-pool modes (Network.max_pool); --max-pool picks them
CACHE = ROOT / "bench" / ".cache"


def ann_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.inference_mode():
        pred = np.concatenate(
            [model(torch.from_numpy(x[i : i + 500])).argmax(1).numpy() for i in range(0, len(x), 500)]
        )
    return float((pred == y).mean())


def option_name(percentile: float, v_init: float, max_spikes: int = 1, max_pool: str = "count") -> str:
    return (
        f"p{percentile:g}_v{v_init:g}"
        + (f"_b{max_spikes}" if max_spikes > 1 else "")
        + ("_gated" if max_pool == "gated" else "")
    )


def ablate(
    model: torch.nn.Module,
    calib: np.ndarray,
    inputs: Any,
    y: np.ndarray,
    t_max: int,
    convert_kw: dict[str, Any],
) -> dict[str, Any]:
    """Every option's accuracy by step: one conversion per percentile (and burst size), one
    trace per option."""
    from spikecast.converters import convert
    from spikecast.ext.engine import trace

    out: dict[str, Any] = {}
    for pct, b in ((p, b) for p in PERCENTILES for b in BURSTS):
        base = convert(model, calib, percentile=pct, v_init=0.0, max_spikes=b, progress=False, **convert_kw)
        for v, pool in ((v, pool) for v in V_INITS for pool in POOLS):
            t0 = time.time()
            tr = trace(base.with_(v_init=v, max_pool=pool), inputs, t_max, n_threads=1)
            acc = tr.correct(y).mean(axis=1)
            out[option_name(pct, v, b, pool)] = {
                "percentile": pct,
                "v_init": v,
                "max_spikes": b,
                "max_pool": pool,
                "accuracy": {str(t): float(acc[t - 1]) for t in STEPS if t <= t_max},
                "plateau": float(acc[-1]),
                "curve": [round(float(a), 5) for a in acc],
                "mean_synops_at_64": float(tr.synops[min(64, t_max) - 1].mean()),
                "seconds": round(time.time() - t0, 1),
            }
            by_t = " ".join(f"T{t}={acc[t - 1]:.4f}" for t in STEPS if t <= t_max)
            print(f"  {option_name(pct, v, b, pool):>20}: {by_t}  T{t_max}={acc[-1]:.4f}", flush=True)
    return out


def run_mnist(n: int, t_max: int) -> dict[str, Any]:
    import convert_mnist as cm

    xtr, _, xte, yte = load_mnist()
    model = cm.make_model()
    model.load_state_dict(torch.load(MODELS / "mnist_maxpool.pt", weights_only=True))
    model.eval()
    x, y = xte[:n], yte[:n]
    ann = ann_accuracy(model, x, y)
    print(f"MNIST: {n} test images, ANN {ann:.4f}")
    res = ablate(model, xtr[55_000:57_000], x, y, t_max, {"input_scale": 1 / 255})
    return {"test": f"MNIST test images 0..{n - 1}", "ann_accuracy": ann, "t_max": t_max, "options": res}


def run_cifar(n: int, t_max: int) -> dict[str, Any]:
    import cifar10 as cf
    from spikecast.ext.core.network import Network
    from vs_ann import cifar_test_u8

    spec = Network.load(MODELS / "cifar10.scn").input
    model = cf.make_model()
    model.load_state_dict(torch.load(MODELS / "cifar10.pt", weights_only=True))
    model.eval()
    with np.load(require(DATA / "cifar10" / "cifar10_jpeg.npz", "CIFAR-10 JPEGs"), allow_pickle=False) as d:
        buf, off, ytr = d["train_jpeg"], d["train_offsets"], d["y_train"]
        fit, _ = cf.split(len(ytr), 0)
        pick = fit[:2000]
        sub_off = np.concatenate([[0], np.cumsum(off[pick + 1] - off[pick])])
        sub_buf = np.concatenate([buf[off[i] : off[i + 1]] for i in pick])
    calib = spec.normalize(cf.decode_jpegs(sub_buf, sub_off, "calibration"))
    raw, y, _ = cifar_test_u8(n)
    x = spec.normalize(raw)
    ann = ann_accuracy(model, x, y)
    print(f"CIFAR-10: {n} test images, ANN {ann:.4f}")
    kw = {"input_scale": spec.scale, "input_mean": spec.mean, "input_std": spec.std}
    res = ablate(model, calib, x, y, t_max, kw)
    what = f"CIFAR-10 test images: the first {n} of default_rng(1).permutation(10000)"
    return {"test": what, "ann_accuracy": ann, "t_max": t_max, "options": res}


def run_nmnist(n: int, t_max: int) -> dict[str, Any]:
    import nmnist as nm
    from spikecast.ext.engine import EventSteps

    paths, labels = nm.real_recordings()
    perm = np.random.default_rng(0).permutation(nm.N_REAL)
    test_i = np.sort(perm[:300])[:n]
    train_i = np.sort(perm[500:])  # bench/nmnist.py: 300 test, 200 calibration holdout, 500 train
    model = nm.make_model()
    model.load_state_dict(torch.load(MODELS / "nmnist.pt", weights_only=True))
    model.eval()
    train_recs = nm.read_all([paths[i] for i in train_i])
    calib = nm.real_frames(train_recs, labels[train_i], n_prefix=9, seed=1).rates()
    recs = nm.read_all([paths[i] for i in test_i])
    y = labels[test_i]
    shape = (2, nm.SIZE, nm.SIZE)
    steps = [EventSteps.from_arrays(e["x"], e["y"], e["p"], nm.event_steps(e), shape) for e in recs]
    ann = ann_accuracy(model, nm.Frames(*nm.count_frames(recs, None), y).rates(), y)
    ann_by_t = {
        str(t): ann_accuracy(model, nm.Frames(*nm.count_frames(recs, np.full(len(recs), t)), y).rates(), y)
        for t in STEPS
    }
    print(f"N-MNIST: {n} real test recordings, ANN {ann:.4f} (prefixes {ann_by_t})")
    kw = {"input_kind": "events", "dt_us": nm.DT_US, "max_calibration_samples": len(calib)}
    res = ablate(model, calib, steps, y, t_max, kw)
    return {
        "test": f"real N-MNIST test recordings of bench/nmnist.py's split (seed 0), {n} of 300",
        "ann_accuracy": ann,
        "ann_accuracy_on_prefix": ann_by_t,
        "t_max": t_max,
        "options": res,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per data set: λ percentile by colour, v_init by line style, burst size by
    line width (a legend of 24 curves would hide them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colour = {99.0: "C0", 99.5: "C1", 99.9: "C2", 100.0: "C3"}
    width = {1: 1.0, 2: 1.8, 4: 2.8}
    sets = result["datasets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.4), squeeze=False)
    for ax, (name, d) in zip(axes[0], sets.items(), strict=True):
        for o in d["options"].values():
            curve = np.asarray(o["curve"])
            ax.plot(np.arange(1, len(curve) + 1), 100 * curve, color=colour.get(o["percentile"], "C4"),
                    lw=width.get(o.get("max_spikes", 1), 3.5), ls="-" if o["v_init"] else "--",
                    alpha=0.85 if o.get("max_pool", "gated") == "count" else 0.3)  # fmt: skip
        ax.axhline(100 * d["ann_accuracy"], color="k", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlim(1, d["t_max"])
        lo = min(min(o["accuracy"].values()) for o in d["options"].values())
        ax.set_ylim(max(0, 100 * lo - 5), 100)
        ax.set_title(name)
        ax.set_xlabel("steps T" + (" (ms)" if name == "nmnist" else ""))
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, label=f"λ {p:g}") for p, c in colour.items()]
    handles += [Line2D([], [], color="grey", ls="--", label="v_init 0"),
                Line2D([], [], color="grey", ls="-", label="v_init 0.5")]  # fmt: skip
    handles += [Line2D([], [], color="grey", lw=w, label=f"burst {b}") for b, w in width.items()]
    handles.append(Line2D([], [], color="grey", alpha=0.3, label="gated max-pool"))
    handles.append(Line2D([], [], color="k", lw=0.8, ls=":", label="ANN"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def _part(name: str) -> dict[str, Any]:
    """One data set's part: from bench/.cache if it was run again, else as committed in
    bench/results/lowlatency.json (with the command that made it)."""
    path = CACHE / f"lowlatency.{name}.json"
    if path.exists():
        part: dict[str, Any] = json.loads(path.read_text())
        return part
    old = json.loads((RESULTS / "lowlatency.json").read_text())
    command = next(c for c in old["command"].split("; ") if f"--only {name}" in c)
    return {**old, "datasets": {name: old["datasets"][name]}, "command": command,
            "total_seconds": old["total_seconds"][name],
            "process_cpu_seconds": old["process_cpu_seconds"][name]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", type=int, default=2000, help="MNIST test images")
    ap.add_argument("--cifar", type=int, default=500, help="CIFAR-10 test images")
    ap.add_argument("--nmnist", type=int, default=300, help="N-MNIST real test recordings (<= 300)")
    ap.add_argument("--frame-steps", type=int, default=128, help="steps traced for frames (plateau)")
    ap.add_argument("--event-steps", type=int, default=300, help="steps traced for N-MNIST (plateau)")
    ap.add_argument("--only", nargs="+", choices=["mnist", "cifar10", "nmnist"])
    ap.add_argument("--burst", type=int, nargs="*", default=[],
                    help="also burst coding with these max_spikes (e.g. 4): convert(max_spikes=B)")
    ap.add_argument("--max-pool", nargs="+", choices=MAX_POOL_MODES, default=["count"],
                    help="max-pool modes to run every option with (Network.max_pool); default count")
    ap.add_argument("--quick", action="store_true", help="smoke run; writes to bench/.cache/")
    ap.add_argument(
        "--part", action="store_true",
        help="write each data set of --only to bench/.cache/lowlatency.<name>.json (runs in parallel)",
    )  # fmt: skip
    ap.add_argument("--assemble", action="store_true", help="join the three parts into the results file")
    args = ap.parse_args()
    if args.assemble:
        names = ("mnist", "cifar10", "nmnist")
        parts = {n: _part(n) for n in names}
        result = {
            **parts["mnist"],
            "datasets": {n: p["datasets"][n] for n, p in parts.items()},
            "total_seconds": {n: p["total_seconds"] for n, p in parts.items()},
            "process_cpu_seconds": {n: p["process_cpu_seconds"] for n, p in parts.items()},
            "command": "; ".join(
                [*(p["command"] for p in parts.values()), "python bench/lowlatency.py --assemble"]
            ),
        }
        (RESULTS / "lowlatency.json").write_text(json.dumps(result, indent=1) + "\n")
        plot(result, RESULTS / "lowlatency.png")
        return
    if args.quick:
        args.mnist, args.cifar, args.nmnist, args.frame_steps, args.event_steps = 200, 50, 30, 64, 64
    torch.set_num_threads(1)
    BURSTS.extend(b for b in args.burst if b > 1)
    POOLS[:] = args.max_pool
    t0, c0 = time.time(), time.process_time()
    which = args.only or ["mnist", "cifar10", "nmnist"]
    runs = {
        "mnist": lambda: run_mnist(args.mnist, args.frame_steps),
        "cifar10": lambda: run_cifar(args.cifar, args.frame_steps),
        "nmnist": lambda: run_nmnist(args.nmnist, args.event_steps),
    }
    datasets = {name: runs[name]() for name in which}
    result = {
        "what": "SNN accuracy after T steps per conversion option (λ percentile x initial membrane "
        "v_init as a fraction of θ, x max_spikes with --burst, x max-pool mode with --max-pool), against "
        "the ANN on the same held-out data",
        "steps": list(STEPS),
        "datasets": datasets,
        "total_seconds": round(time.time() - t0, 1),
        "process_cpu_seconds": round(time.process_time() - c0, 1),
        "command": "python bench/lowlatency.py"
        + (
            " --quick"
            if args.quick
            else f" --mnist {args.mnist} --cifar {args.cifar} --nmnist {args.nmnist}"
            f" --frame-steps {args.frame_steps} --event-steps {args.event_steps}"
        )
        + (f" --only {' '.join(args.only)}" if args.only else "")
        + (f" --burst {' '.join(str(b) for b in args.burst)}" if args.burst else "")
        + (f" --max-pool {' '.join(args.max_pool)}" if args.max_pool != ["count"] else "")
        + (" --part" if args.part else ""),
        "machine": machine(),
    }
    out = CACHE if args.quick or args.part else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = f"lowlatency.{'.'.join(which)}" if args.part else "lowlatency"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / f'{stem}.json'}")
    plot(result, out / f"{stem}.png")


if __name__ == "__main__":
    main()
