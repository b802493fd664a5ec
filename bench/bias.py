"""Bias calibration, ablated: each default frame model with and without its calibrated biases.

    python bench/bias.py                  # ~4 min on 2 shared cores
    python bench/bias.py --only cifar10

``convert()`` calibrates the biases of analog frame networks converted with a holdout set
(``spikecast.converters.bias``, Li et al. 2021). This script takes each committed default
frame model (bench/models/mnist_maxpool.scn, cifar10.scn, mnist_smalllogit.scn) and the
same network with the shifts undone (``uncalibrated``: what ``convert(bias_steps=0)``
makes at the same λ percentile, exit signal and burst size), and on the same held-out
test images reports:

- accuracy at fixed T (1 to 128 steps) beside the ANN's (``ann_logits``, which is the
  same for both);
- the early exit under the model's own exit signal, swept over τ × t_min on these images
  (an oracle for both alike, as bench/vs_ann.py): the fewest mean steps that reach the
  ANN's accuracy less 0.5 pt and less 1 pt, the mean SynOps per decision there, and the
  best accuracy of the sweep.

Writes bench/results/bias.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from common import MODELS, load_mnist, machine, require, write_json

FIXED_T = (1, 2, 4, 8, 16, 32, 64, 128)
TAUS = np.concatenate([np.linspace(0.05, 0.99, 95), 1 - np.logspace(-2.2, -6, 20)])
T_MINS = (1, 2, 5, 10, 20, 40, 80)


def early_exit(tr: Any, y: np.ndarray, targets: dict[str, float], t_rows: int) -> dict[str, Any]:
    """Per target: the fewest mean steps of the τ × t_min sweep reaching it, with its point."""
    from spikecast.ext.core.calibration import decision_steps

    cols = np.arange(len(y))
    best: dict[str, Any] = {k: None for k in targets}
    top = 0.0
    for tau in TAUS:
        for t_min in T_MINS:
            steps = decision_steps(tr.confidence, float(tau), t_min, t_rows)
            acc = float((tr.class_index[steps - 1, cols] == y).mean())
            top = max(top, acc)
            for key, target in targets.items():
                if acc >= target - 1e-12 and (best[key] is None or steps.mean() < best[key]["mean_steps"]):
                    best[key] = {
                        "tau": round(float(tau), 6), "t_min": t_min, "accuracy": acc,
                        "mean_steps": float(steps.mean()),
                        "mean_synops": float(tr.synops[steps - 1, cols].mean()),
                    }  # fmt: skip
    return {"best_accuracy_of_sweep": top, **best}


def ablate(name: str, path: str, x: np.ndarray, y: np.ndarray, images: str) -> dict[str, Any]:
    from spikecast.converters.bias import META_KEY, uncalibrated
    from spikecast.converters.conversion import ann_logits
    from spikecast.ext.core.network import Network
    from spikecast.ext.engine import trace

    t0 = time.time()
    net = Network.load(require(MODELS / path, f"the default {name} model"))
    if META_KEY not in net.meta:
        raise SystemExit(f"{path} has no calibrated biases: re-convert it (bench/reconvert.py)")
    ann = float((ann_logits(net, x).argmax(axis=1) == y).mean())
    targets = {"ann_less_0.5pt": ann - 0.005, "ann_less_1pt": ann - 0.01}
    t_rows = max(FIXED_T) if name != "cifar10" else 400
    record = {k: v for k, v in net.meta[META_KEY].items() if k != "shift"}
    out: dict[str, Any] = {"model": f"bench/models/{path}", "images": images, "n_images": len(y),
                           "ann_accuracy": ann, "exit_signal": net.exit_signal,
                           "percentile": net.meta.get("percentile"), "max_spikes": net.max_spikes,
                           "bias_calibration": record}  # fmt: skip
    for label, variant in (("calibrated", net), ("uncalibrated", uncalibrated(net))):
        tr = trace(variant, x, t_rows, n_threads=2)
        ok = tr.class_index == y[None, :]
        out[label] = {
            "fixed_T": {str(t): float(ok[t - 1].mean()) for t in FIXED_T if t <= t_rows},
            "early_exit": early_exit(tr, y, targets, t_rows),
        }
        ee = out[label]["early_exit"]
        steps = {k: round(ee[k]["mean_steps"], 2) if ee[k] else None for k in targets}
        print(f"{name} {label:>12}: fixed T {[round(v * 100, 2) for v in out[label]['fixed_T'].values()]}, "
              f"mean steps {steps}, best {ee['best_accuracy_of_sweep']:.4f}", flush=True)  # fmt: skip
    out["seconds"] = time.time() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=["mnist", "cifar10", "smalllogit"],
                    default=["mnist", "cifar10", "smalllogit"])  # fmt: skip
    ap.add_argument("--mnist-images", type=int, default=10_000)
    ap.add_argument("--cifar-images", type=int, default=1_000)
    args = ap.parse_args()
    from defaults import load_cifar_test
    from spikecast.ext.core.network import Network

    t0 = time.time()
    results: dict[str, Any] = {}
    if {"mnist", "smalllogit"} & set(args.only):
        _, _, xte, yte = load_mnist()
        x, y = xte[: args.mnist_images], yte[: args.mnist_images]
        what = f"MNIST test images 0..{len(y) - 1}"
        if "mnist" in args.only:
            results["mnist"] = ablate("mnist", "mnist_maxpool.scn", x, y, what)
        if "smalllogit" in args.only:
            results["mnist_smalllogit"] = ablate("smalllogit", "mnist_smalllogit.scn", x, y, what)
    if "cifar10" in args.only:
        spec = Network.load(require(MODELS / "cifar10.scn", "the default CIFAR-10 model")).input
        x, y, what = load_cifar_test(args.cifar_images, 1, spec)
        results["cifar10"] = ablate("cifar10", "cifar10.scn", x, y, "CIFAR-10 test images: " + what)
    cmd = "python bench/bias.py" + (f" --only {' '.join(args.only)}" if len(args.only) < 3 else "")
    write_json("bias.json", {**results, "command": cmd, "machine": machine(), "seconds": time.time() - t0})


if __name__ == "__main__":
    main()
