"""Results on networks people have: a trained CIFAR-10 ResNet, and torchvision's resnet18,
vgg11_bn and mobilenet_v2 with random weights.

    python bench/models.py                 # full run, writes bench/results/models.json + .png
    python bench/models.py --skip-torchvision --percentile 99.9   # the classic λ, as a second entry
    python bench/models.py --quick         # smoke run on small subsets -> bench/results/models-quick.json
    python bench/models.py --skip-torchvision   # one part only; the other is kept from models.json

**CIFAR-10 ResNet.** bench/resnet_cifar.py trains the network (seeded, on the CPU; its
recipe is bench/results/resnet20_cifar10.train.json). Here it is converted with
``convert()``'s defaults, plus the input normalisation, the class names and
``holdout=`` (the early-exit calibration table, from held-out *training* images, 256
steps, which also chooses λ's percentile), and saved as bench/models/resnet20_cifar10.scn;
``--percentile P`` forces a percentile instead (its own entry in the results, its model
file in bench/.cache). λ is measured on fit images. The
training set is stored grouped by class, so both sets are seeded random draws (the first
2000 fit images would all be airplanes).
The SNN runs on the compiled engine on a seeded subset of the CIFAR-10 *test* set:
``trace`` to T=256 gives the accuracy after every step (so every T of the curve from one
run), against the ANN's accuracy on the same images; early exit at the operating point
the model recommends from its table (what ``spikecast run`` uses with no flags) runs
with ``run_batch`` and is cross-checked against the trace. SynOps per decision are the
engine's own counts.

**torchvision.** torchvision 0.28.0 cannot load its compiled ops next to torch 2.13
(``operator torchvision::nms does not exist``, raised while it registers meta kernels);
its model definitions do not need them, so the module that registers them is stubbed
out while torchvision imports (:func:`import_torchvision`). If torchvision cannot be
imported at all, the hand-written builders of tests/ext/test_engine_graph.py are used
instead and the JSON says so. Each model is built with ``weights=None`` (torchvision's
seeded random initialisation), ``num_classes=10``, and random BatchNorm statistics and
affine parameters (seeded; at initialisation BN is the identity, which would leave
folding untested), then converted on 32x32 CIFAR-10 images (random frames without the
data). For each: whether it converts (else the error), the engine against the reference
simulator (converters/reference.py) on a few images for a few tens of steps, once on
the converted network as it is (class agreement at every step, SynOps per layer) and
once with weights rounded to multiples of 2^-8, where every sum is exact in float32 and
the engine must match spike for spike (every spike of every layer at every step, the
output potentials and the SynOps), and the engine's thread CPU time per step (median
over images, one thread), beside the ANN's forward time in torch (one thread).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10 import CLASSES, channel_stats, load_cifar10, normalise, split
from common import DATA, MODELS, RESULTS, ROOT, machine, seed_everything
from resnet_cifar import load as load_resnet
from resnet_cifar import name_of

CACHE = ROOT / "bench" / ".cache"
STEPS = (32, 64, 128, 256)
T_MAX = 256
TORCHVISION = ("resnet18", "vgg11_bn", "mobilenet_v2")
Q = 1.0 / 256.0


# ----------------------------------------------------------------------------------
# The CIFAR-10 ResNet
# ----------------------------------------------------------------------------------


def ann_predictions(model: nn.Module, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [
                model(torch.from_numpy(x[i : i + batch_size])).argmax(1).numpy()
                for i in range(0, len(x), batch_size)
            ]
        )


def resnet_results(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    from spikecast.converters import convert
    from spikecast.converters.conversion import ann_logits
    from spikecast.ext.core.calibration import decision_steps
    from spikecast.ext.engine import CompiledNetwork, run_batch, trace
    from spikecast.runtime.decision import Calibration, initial_point

    name = name_of(args.blocks)
    weights = Path(args.weights) if args.weights else MODELS / f"{name}.pt"
    model = load_resnet(args.blocks, weights)
    recipe_path = RESULTS / f"{name}.train.json"
    t0 = time.time()
    x_test, y_test = data["x_test"], data["y_test"]
    ann_pred_all = ann_predictions(model, x_test)
    ann_acc = float((ann_pred_all == y_test).mean())

    # Convert: the defaults, plus how raw frames map to the model's input and the table.
    calib = data["x_fit"][: args.calibration_samples]
    x_hold, y_hold = data["x_held"][: args.holdout_samples], data["y_held"][: args.holdout_samples]
    net = convert(
        model, calib, input_scale=1 / 255, input_mean=data["mean"], input_std=data["std"],
        class_names=CLASSES, holdout=(x_hold, y_hold), calibration_steps=T_MAX, progress=False,
        percentile=args.percentile,
        # A smoke run keeps one spike per step and the biases as normalised: weighing bursts
        # doubles the tables' work, and calibrating 19 layers' biases costs more than its tables.
        max_spikes=1 if args.quick else None,
        bias_steps=0 if args.quick else None,
    )  # fmt: skip
    convert_s = time.time() - t0
    scn = weights.with_suffix(".scn")
    if args.quick:
        scn = Path(args.out_dir) / f"{result_key(args)}-quick.scn"
    elif args.percentile is not None:  # the default conversion keeps the model file
        scn = CACHE / f"{result_key(args)}.scn"
    scn.parent.mkdir(parents=True, exist_ok=True)
    net.save(scn)
    plan = CompiledNetwork(net)

    # The test subset: the first n of a seeded permutation.
    perm = np.random.default_rng(args.seed + 1).permutation(len(x_test))[: args.test_samples]
    xs, ys = x_test[perm], y_test[perm]
    ann_sub = float((ann_pred_all[perm] == ys).mean())
    norm_ann = float((ann_logits(net, xs).argmax(1) == ys).mean())

    t1 = time.time()
    tr = trace(plan, xs, T_MAX, n_threads=args.threads)
    trace_s = time.time() - t1
    ok = tr.correct(ys)
    acc_t = ok.mean(axis=1)
    by_t = {str(t): float(acc_t[t - 1]) for t in STEPS}

    # Early exit at the model's own operating point (what `spikecast run` uses with no flags).
    choice = initial_point(net, Calibration(net.calibration) if net.calibration is not None else None)
    p = choice.point
    t1 = time.time()
    res = run_batch(plan, xs, p.t_max, tau=p.tau, t_min=p.t_min, n_threads=args.threads)
    ee_s = time.time() - t1
    steps = res.steps.astype(np.int64)
    replay = decision_steps(tr.confidence, p.tau, p.t_min, p.t_max) if p.t_max <= T_MAX else None
    cols = np.arange(len(ys))
    rec = choice.recommendation
    early_exit = {
        "tau": p.tau,
        "t_min": p.t_min,
        "t_max": p.t_max,
        "point_source": choice.source,
        "accuracy": float((res.class_index == ys).mean()),
        "plateau_accuracy": float(ok[min(p.t_max, T_MAX) - 1].mean()),
        "mean_steps": float(steps.mean()),
        "p95_steps": float(np.percentile(steps, 95)),
        "synops_per_decision": float(res.synops.sum(axis=1).mean()),
        "ms_per_decision_wall": ee_s * 1000 * args.threads / len(ys),
        "samples": len(ys),
        "table_prediction": None
        if rec is None
        else {
            "accuracy": rec.accuracy,
            "plateau_accuracy": rec.plateau_accuracy,
            "mean_steps": rec.mean_steps,
        },
        "replay_on_trace_agrees": None
        if replay is None
        else bool(
            np.array_equal(replay, steps)
            and np.array_equal(tr.class_index[replay - 1, cols], res.class_index)
        ),
    }
    synops_by_t = {str(t): float(tr.synops[t - 1].mean()) for t in STEPS}
    macs = int(net.ann_macs)
    recipe = _read_json(recipe_path)
    out = {
        "network": recipe.get("network", name),
        "weights": _shown(weights),
        "model_file": _shown(scn),
        "training": {
            k: recipe.get(k)
            for k in ("command", "epochs_done", "epochs_planned", "train_seconds", "parameters", "optimizer")
        },
        "conversion": (
            "convert() defaults (the percentile chosen on the holdout table, reset, v_init)"
            if args.percentile is None
            else f"convert() defaults but percentile={args.percentile:g}"
        )
        + ", input_scale=1/255, "
        f"input mean/std of the fit images, λ on {len(calib)} fit images, holdout table on "
        f"{len(x_hold)} held-out training images x {T_MAX} steps (both seeded random draws, all classes)",
        "percentile": net.meta.get("percentile"),
        "percentile_choice": net.meta.get("percentile_choice"),
        "reset": net.reset,
        "ann_accuracy": ann_sub,
        "ann_accuracy_full_test_set": ann_acc,
        "normalised_ann_accuracy": norm_ann,
        "snn_accuracy_by_T": by_t,
        "snn_minus_ann_points_by_T": {t: round((a - ann_sub) * 100, 2) for t, a in by_t.items()},
        "snn_ann_class_agreement_by_T": {
            str(t): float((tr.class_index[t - 1] == ann_pred_all[perm]).mean()) for t in STEPS
        },
        "within_1pt_at_T_le_256": bool(max(by_t.values()) >= ann_sub - 0.01),
        "early_exit": early_exit,
        "synops_per_decision": early_exit["synops_per_decision"],
        "synops_per_decision_by_T": synops_by_t,
        "ann_macs_per_image": macs,
        "test_samples": len(ys),
        "test_subset": f"first {len(ys)} of np.random.default_rng({args.seed + 1}).permutation(10000)",
        "seconds": {"convert_with_table": convert_s, "trace": trace_s, "early_exit": ee_s},
        "accuracy_curve": [float(a) for a in acc_t],
    }
    print(
        f"{name}: ANN {ann_sub:.4f} on the {len(ys)} images ({ann_acc:.4f} on all 10,000); SNN "
        + ", ".join(f"T={t} {a:.4f}" for t, a in by_t.items())
        + f"; early exit tau={p.tau} t_min={p.t_min}: {early_exit['accuracy']:.4f} after "
        f"{early_exit['mean_steps']:.1f} steps, {early_exit['synops_per_decision']:.3g} SynOps",
        flush=True,
    )
    return out


def result_key(args: argparse.Namespace) -> str:
    """The ResNet's entry in models.json: its name, plus the percentile if one was forced."""
    name = name_of(args.blocks)
    return name if args.percentile is None else f"{name}_percentile{args.percentile:g}"


def _shown(path: Path) -> str:
    """A path relative to the checkout where it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# ----------------------------------------------------------------------------------
# torchvision's networks with random weights
# ----------------------------------------------------------------------------------


def import_torchvision() -> tuple[Any, str | None]:
    """torchvision.models, or the hand-written builders of tests/ext/test_engine_graph.py;
    and a note on how it was imported."""
    stub = "torchvision._meta_registrations"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import torchvision.models as models

                return models, None
            except Exception:  # RuntimeError: 'operator torchvision::nms does not exist'
                for n in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                    del sys.modules[n]
            sys.modules[stub] = types.ModuleType(stub)
            import torchvision
            import torchvision.models as models

            note = (
                f"torchvision {torchvision.__version__}, imported with its meta-kernel registrations "
                "(torchvision._meta_registrations, which need its compiled ops) stubbed out"
            )
            return models, note
    except Exception as exc:  # any failure: fall back to the hand-written builders
        path = ROOT / "tests" / "ext" / "test_engine_graph.py"
        spec = importlib.util.spec_from_file_location("engine_graph_builders", path)
        if spec is None or spec.loader is None:
            raise
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        builders = types.SimpleNamespace(
            resnet18=lambda num_classes: mod.resnet18(div=1, num_classes=num_classes),
            vgg11_bn=lambda num_classes: mod.vgg11_bn(div=1, num_classes=num_classes),
            mobilenet_v2=lambda num_classes: mod.mobilenet_v2(div=1, num_classes=num_classes, n_stages=7),
        )
        return builders, f"torchvision unavailable ({exc!r}): torchvision's structure written out by hand"


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.8)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.3)
    return model.eval()


def _quantised(net: Any) -> Any:
    def rnd(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (np.round(np.asarray(a) / Q) * Q).astype(np.float32)

    def layer(ly: Any) -> Any:
        return replace(ly, weight=rnd(ly.weight), bias=rnd(ly.bias), extra=tuple(layer(e) for e in ly.extra))

    return net.with_(layers=tuple(layer(ly) for ly in net.layers))


def compare(net: Any, x: np.ndarray, n_steps: int, spikes: bool) -> dict[str, Any]:
    """The engine against the reference simulator on frames ``x`` for ``n_steps`` steps."""
    from spikecast.converters.reference import simulate
    from spikecast.ext.engine import Engine

    ref = simulate(net, x, n_steps, record_spikes=spikes)
    eng = Engine(net)
    spiking = [i for i, ly in enumerate(net.layers) if ly.spiking]
    same_class = same_spikes = same_logits = 0
    same_synops = synops_engine = 0
    classes = set()
    for b in range(len(x)):
        eng.reset()
        eng.set_frame(x[b])
        for t in range(n_steps):
            eng.step()
            classes.add(eng.class_index)
            same_class += int(eng.class_index == int(ref.logits[t, b].argmax()))
            if spikes and ref.spikes is not None:
                same_spikes += int(
                    all(np.array_equal(eng.layer_spikes(j), ref.spikes[j][t, b].reshape(-1)) for j in spiking)
                )
                same_logits += int(np.array_equal(eng.logits, ref.logits[t, b]))
        same_synops += int(np.array_equal(eng.synops, ref.synops[b].astype(np.int64)))
        synops_engine += int(eng.synops.sum())
    n = len(x) * n_steps
    out: dict[str, Any] = {
        "class_agreement": same_class / n,
        "distinct_classes": len(classes),
        "synops_equal": same_synops == len(x),
        "synops_engine": synops_engine,
        "synops_reference": int(ref.synops.sum()),
        "spike_rate_by_layer": [float(ref.spike_counts[j].mean()) / n_steps for j in spiking],
    }
    if spikes:
        out["steps_with_all_spikes_equal"] = same_spikes / n
        out["steps_with_output_potentials_equal"] = same_logits / n
        out["spike_exact"] = same_spikes == n and same_logits == n and same_synops == len(x)
    return out


def ms_per_step(net: Any, x: np.ndarray, n_steps: int, repeats: int) -> dict[str, Any]:
    """Engine thread CPU time per step: median over images (each the best of ``repeats``)."""
    from spikecast.ext.engine import Engine

    eng = Engine(net)
    per_image = []
    for b in range(len(x)):
        best = float("inf")
        for _ in range(repeats):
            eng.reset()
            eng.set_frame(x[b])
            t0 = time.thread_time()
            eng.step(n_steps)
            best = min(best, time.thread_time() - t0)
        per_image.append(best * 1000 / n_steps)
    return {"ms_per_step": float(np.median(per_image)), "synops_per_step": float(eng.synops.sum()) / n_steps}


def ann_ms(model: nn.Module, x: np.ndarray, repeats: int) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt = torch.from_numpy(x[:1])
        times = []
        with torch.inference_mode():
            model(xt)
            for _ in range(repeats):
                t0 = time.thread_time()
                model(xt)
                times.append(time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times) * 1000)


def torchvision_results(
    args: argparse.Namespace, x_images: np.ndarray
) -> tuple[list[dict[str, Any]], str | None]:
    from spikecast.converters import convert
    from spikecast.ext.core.errors import SpikecastError

    models, note = import_torchvision()
    rows = []
    for k, name in enumerate(args.tv_names):
        torch.manual_seed(args.seed + k)
        model = _randomise_bn(getattr(models, name)(num_classes=10), args.seed + k)
        row: dict[str, Any] = {"name": name, "parameters": sum(p.numel() for p in model.parameters())}
        t0 = time.time()
        try:
            net = convert(model, x_images[: args.tv_calibration], progress=False)
        except SpikecastError as exc:
            row.update(converts=False, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            print(f"{name}: does not convert: {exc}", flush=True)
            continue
        row.update(converts=True, convert_seconds=time.time() - t0, layers=len(net.layers),
                   ann_macs_per_image=int(net.ann_macs))  # fmt: skip
        x = x_images[: args.tv_samples]
        row["reference_agreement"] = compare(net, x, args.tv_steps, spikes=False)
        exact = _quantised(net)
        xq = (np.round(x / Q) * Q).astype(np.float32)
        row["reference_agreement_weights_on_2^-8_grid"] = compare(exact, xq, args.tv_steps, spikes=True)
        row.update(ms_per_step(net, x, args.tv_steps, args.repeats))
        row["ann_ms_per_image_torch_1_thread"] = ann_ms(model, x, 5 * args.repeats)
        row["inputs"] = f"{len(x)} images x {args.tv_steps} steps"
        rows.append(row)
        ra, rq = row["reference_agreement"], row["reference_agreement_weights_on_2^-8_grid"]
        print(
            f"{name}: converts, {row['layers']} layers; engine vs reference: class agreement "
            f"{ra['class_agreement']:.4f}, SynOps equal {ra['synops_equal']}; on the 2^-8 grid spike-exact "
            f"{rq['spike_exact']}; {row['ms_per_step']:.2f} ms per step",
            flush=True,
        )
    return rows, note


# ----------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in result.items():
        if not isinstance(r, dict) or "accuracy_curve" not in r:
            continue
        curve = np.asarray(r["accuracy_curve"]) * 100
        t = np.arange(1, len(curve) + 1)
        ax.plot(t, curve, label=f"{name} SNN (engine, {r['test_samples']} test images)")
        ax.axhline(
            r["ann_accuracy"] * 100, color="k", ls="--", lw=1, label=f"ANN {r['ann_accuracy'] * 100:.2f}%"
        )
        ax.axhspan(
            (r["ann_accuracy"] - 0.01) * 100, r["ann_accuracy"] * 100, color="0.9", label="within 1 pt"
        )
        ee = r["early_exit"]
        label = f"early exit τ={ee['tau']:g}, t_min={ee['t_min']}: {ee['mean_steps']:.0f} steps on average"
        ax.plot([ee["mean_steps"]], [ee["accuracy"] * 100], "o", color="C3", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("T (steps)")
    ax.set_ylabel("test accuracy (%)")
    lo = min(
        min(r["accuracy_curve"][15:])
        for r in result.values()
        if isinstance(r, dict) and "accuracy_curve" in r
    )
    ax.set_ylim(max(0.0, lo * 100 - 2), None)
    ax.set_xlim(16, T_MAX)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("CIFAR-10 ResNet converted: SNN accuracy by T against its ANN")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {_shown(path)}")


def synthetic_cifar(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random uint8 images and labels shaped like CIFAR-10 (2,600 train, 200 test), for
    exercising the script without the data set."""
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (2_600, 3, 32, 32), dtype=np.uint8)
    xte = rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8)
    return xtr, rng.integers(0, 10, 2_600), xte, rng.integers(0, 10, 200)


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    if args.synthetic:
        xtr, ytr, xte, yte = synthetic_cifar(args.seed)
    else:
        xtr, ytr, xte, yte = load_cifar10(Path(args.data))
    fit, held = split(len(xtr), args.seed)
    mean, std = channel_stats(xtr[fit])
    n_fit = min(max(args.calibration_samples, args.tv_calibration), len(fit))
    # The training set is stored grouped by class, and split() returns sorted indices:
    # the images for λ and for the table are seeded random draws, not the first ones.
    rng = np.random.default_rng(args.seed + 2)
    fit_pick, held_pick = rng.choice(fit, n_fit, replace=False), rng.permutation(held)
    return {
        "mean": mean,
        "std": std,
        "x_fit": normalise(xtr[fit_pick], mean, std),
        "x_held": normalise(xtr[held_pick], mean, std),
        "y_held": ytr[held_pick],
        "x_test": normalise(xte, mean, std),
        "y_test": yte,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subsets; writes models-quick.json")
    ap.add_argument("--blocks", type=int, default=3, help="the ResNet's blocks per stage (3: ResNet-20)")
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--holdout-samples", type=int, default=1000)
    ap.add_argument("--calibration-samples", type=int, default=2000, help="fit images for λ")
    ap.add_argument("--tv-names", nargs="+", default=list(TORCHVISION), choices=TORCHVISION)
    ap.add_argument("--tv-samples", type=int, default=3, help="images per torchvision net")
    ap.add_argument("--tv-steps", type=int, default=32)
    ap.add_argument("--tv-calibration", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--percentile", type=float, default=None,
                    help="λ percentile for the ResNet (default: convert()'s choice on the holdout "
                    "table); a forced one is its own entry, its .scn in bench/.cache")  # fmt: skip
    ap.add_argument("--skip-torchvision", action="store_true")
    ap.add_argument("--skip-resnet", action="store_true")
    ap.add_argument("--data", default=str(DATA / "cifar10" / "cifar10_jpeg.npz"))
    ap.add_argument("--weights", help="the ResNet's state dict (default bench/models/resnetN_cifar10.pt)")
    ap.add_argument("--out-dir", default=str(RESULTS), help="where models.json and models.png go")
    ap.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR-10 (tests)")
    args = ap.parse_args(argv)
    if args.quick:
        args.test_samples = min(args.test_samples, 100)
        args.holdout_samples = min(args.holdout_samples, 100)
        args.calibration_samples = min(args.calibration_samples, 200)
        args.tv_samples, args.tv_steps, args.repeats = 1, 8, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    t_start = time.time()
    suffix = "-quick" if args.quick else ""
    out_dir = Path(args.out_dir)
    path = out_dir / f"models{suffix}.json"
    # A run that skips a part keeps that part of an earlier run, with its command.
    result: dict[str, Any] = _read_json(path)
    command = " ".join(["python", "bench/models.py", *(sys.argv[1:] if argv is None else argv)])
    data = load_data(args)
    if not args.skip_resnet:
        name = result_key(args)
        result[name] = resnet_results(args, data)
        result[name]["command"] = command
        result[name]["machine"] = machine()
    if not args.skip_torchvision:
        t0 = time.time()
        rows, note = torchvision_results(args, data["x_test"][-64:])
        result["torchvision"] = rows
        result["torchvision_note"] = note or "torchvision imported as it is"
        result["torchvision_run"] = {"command": command, "machine": machine(), "seconds": time.time() - t0}
    result.pop("command", None)
    result["seconds_last_run"] = time.time() - t_start
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {_shown(path)}")
    if any(isinstance(r, dict) and "accuracy_curve" in r for r in result.values()):
        plot(result, out_dir / f"models{suffix}.png")


if __name__ == "__main__":
    main()
