"""Where event-driven inference wins: CPU cost of spikecast against the frame ANN across
sensor sizes and background event rates (issue 14).

    python bench/crossover.py            # full run (about 15-20 min of one core; training is cached)
    python bench/crossover.py --quick    # smoke run (two small canvases, seconds), out to bench/.cache

The network runs at any input size: bias-free convolutions, stride 2, then global
average pooling and a bias-free classifier (:func:`make_model`). It is trained once
(seeded, CPU, a few minutes) on event-rate frames of the real N-MNIST recordings that
bench/nmnist.py's seeded split does *not* keep for testing (its 500 train + 200
calibration recordings), as bench/nmnist.py builds them (counts per polarity / steps
spanned, whole recordings and random prefixes, random shifts and event-rate factors).
Weights: bench/models/crossover.pt, training figures: bench/results/crossover.train.json
(delete the .pt to retrain).

For each canvas (34x34, 128x128, 346x260, 640x480, 1280x720) the same trained module
is converted for that input shape (``convert(input_kind="events")``; λ from training
frames tiled over the canvas, so every canvas gets the same digit activity to
calibrate on) and exported to ONNX. Each cell adds background events at a rate per
pixel per second (0, 0.1, 1, 10; uniform in space and time, random polarity) to a
real N-MNIST *test* recording placed at a random spot (numpy Generator seeded per
cell). A decision covers at most ``T`` = the mean decision sensor time of the small
model's operating point (bench/results/nmnist.json), with that point's (τ, t_min).

Per cell and recording, one thread, side by side (interleaved), median thread CPU
time (``time.thread_time``) over repeats:
- spikecast: ``Engine.run(EventSteps, T, tau, t_min)`` (early exit inside the engine);
- frame ANN in onnxruntime (``intra_op_num_threads = 1``): every 10 ms of sensor time
  the accumulated counts (clipped 255) / steps go through the network; it decides at
  the first check with t >= t_min and max softmax >= τ, else at ``T``. The event
  accumulation is timed with it (it is part of a frame pipeline);
- the frame ANN once per decision (one pass at ``T``): the cheapest way to use a frame
  ANN for this decision, reported beside it as a lower bound.
Both start from the same pre-binned EventSteps (binning not timed).

Reported per cell: CPU ms per sensor second (CPU / sensor time the decisions consumed),
CPU ms per decision, MACs (``Network.ann_macs`` x passes) and engine SynOps per sensor
second, accuracy of both. ``crossover``: for each background rate, the smallest canvas
where spikecast needs less CPU per sensor second than the frame ANN (null if none).

Writes bench/results/crossover.json and bench/results/crossover.png (ratio SNN / ANN
CPU per sensor second, log colour scale). Rerun after engine changes with the same
command: the cached weights are reused, everything else is measured again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, RESULTS, ROOT, machine, seed_everything

CANVASES: tuple[tuple[int, int], ...] = ((34, 34), (128, 128), (346, 260), (640, 480), (1280, 720))
BACKGROUND_HZ: tuple[float, ...] = (0.0, 0.1, 1.0, 10.0)
#: Recordings per cell and timing repeats per recording, by canvas: big canvases are
#: expensive for the frame ANN (and for the engine's per-step sweep), so fewer there.
RECORDINGS = {34: 150, 128: 60, 346: 24, 640: 12, 1280: 8}
REPEATS = {34: 5, 128: 5, 346: 3, 640: 3, 1280: 3}
PERIOD_MS = 10
DIGIT = 34  # N-MNIST sensor side
DT_US = 1000
CALIB_DIGITS = 512  # training frames that calibrate λ, tiled over each canvas
CALIB_GAP = 16  # pixels between tiled digits (> the network's receptive field radius)
WEIGHTS = MODELS / "crossover.pt"
CACHE = ROOT / "bench" / ".cache" / "crossover"


# ----------------------------------------------------------------------------------
# Network and training
# ----------------------------------------------------------------------------------


def make_model() -> Any:
    """2xHxW -> Conv16(5, s2) -> ReLU -> Conv32(3, s2) -> ReLU -> Conv32(3, s2) -> ReLU
    -> global average pool -> Linear(32 -> 10); no biases anywhere (quiet input, zero drive)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(2, 16, 5, stride=2, padding=2, bias=False), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10, bias=False),
    )  # fmt: skip


@dataclass
class Split:
    """bench/nmnist.py's seeded split of the 1000 real recordings."""

    train: list[np.ndarray]
    y_train: np.ndarray
    test: list[np.ndarray]
    y_test: np.ndarray


def load_split(seed: int = 0, n_test: int = 300) -> Split:
    import nmnist as nm

    paths, labels = nm.real_recordings()
    perm = np.random.default_rng(seed).permutation(nm.N_REAL)
    test_i, train_i = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    recs = nm.read_all(paths)
    return Split(
        train=[recs[i] for i in train_i],
        y_train=labels[train_i],
        test=[recs[i] for i in test_i],
        y_test=labels[test_i],
    )


def train_frames(split: Split, seed: int) -> Any:
    """Whole recordings + 9 random prefixes each (15..310 ms) + 4 prefixes around the
    decision time (30..90 ms): rate frames as the converted network integrates them."""
    import nmnist as nm

    rng = np.random.default_rng(seed + 7)
    near = [nm.Frames(*nm.count_frames(split.train, rng.integers(30, 90, len(split.train))), split.y_train)
            for _ in range(4)]  # fmt: skip
    return nm.Frames.cat([nm.real_frames(split.train, split.y_train, n_prefix=9, seed=seed + 1), *near])


def train(model: Any, data: Any, *, epochs: int, lr: float, seed: int, batch_size: int = 128) -> Any:
    """bench/nmnist.py's recipe (Adam + one-cycle, random shifts of up to 2 pixels and
    lognormal event-rate factors), plus background noise: half the samples get Poisson
    background events at a log-uniform 0.1..20 events per pixel per second over the
    steps the frame spans. No rest penalty: without biases an empty input is silent."""
    import nmnist as nm
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    seed_everything(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    n_batches = (len(data) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * n_batches)
    gen = torch.Generator().manual_seed(seed)
    yt, div = torch.from_numpy(data.y), torch.from_numpy(data.div)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(data), generator=gen).numpy()
        total, right = 0.0, 0
        for i in tqdm(range(0, len(data), batch_size), desc=f"epoch {epoch + 1}/{epochs}", leave=False):
            idx = np.sort(order[i : i + batch_size])
            xb = nm.augment(torch.from_numpy(data.rates(idx)), gen, 2, 0.25)
            b = len(idx)
            hz = torch.exp(torch.empty(b).uniform_(math.log(0.1), math.log(20.0), generator=gen))
            hz = hz * (torch.rand(b, generator=gen) < 0.5)
            steps = div[idx]
            lam = (hz * steps * DT_US / 1e6 / 2)[:, None, None, None].expand_as(xb).contiguous()
            xb = xb + torch.poisson(lam, generator=gen) / steps[:, None, None, None]
            out = model(xb)
            loss = F.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * b
            right += int((out.argmax(1) == yt[idx]).sum())
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / len(data):.4f}, "
            f"train accuracy {right / len(data):.4f}"
        )
    return model.eval()


def train_or_load(split: Split, *, epochs: int, seed: int, weights: Path, decision_steps: int) -> Any:
    import nmnist as nm
    import torch

    model = make_model()
    if weights.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
        print(f"loaded {weights.relative_to(ROOT)} (delete it to retrain)")
        return model.eval()
    data = train_frames(split, seed)
    t0, c0 = time.time(), time.process_time()
    model = train(model, data, epochs=epochs, lr=3e-3, seed=seed)
    wall_s, cpu_s = time.time() - t0, time.process_time() - c0
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    whole = nm.Frames(*nm.count_frames(split.test, None), split.y_test)
    at_t = nm.Frames(*nm.count_frames(split.test, np.full(len(split.test), decision_steps)), split.y_test)
    info = {
        "network": "Conv16(5,s2)-ReLU-Conv32(3,s2)-ReLU-Conv32(3,s2)-ReLU-GAP-Linear(32,10), no biases",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "train_recordings": len(split.train),
        "train_frames": len(data),
        "test_recordings": len(split.test),
        "split": "bench/nmnist.py's seeded permutation (seed 0): first 300 test, the rest train",
        "epochs": epochs,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "train_wall_s": wall_s,
        "train_process_cpu_s": cpu_s,
        "ann_accuracy_whole_recording": float((nm.predict(model, whole.rates()) == whole.y).mean()),
        f"ann_accuracy_prefix_{decision_steps}ms": float((nm.predict(model, at_t.rates()) == at_t.y).mean()),
        "weights": str(weights.relative_to(ROOT)),
        "weights_bytes": weights.stat().st_size,
        "command": "python bench/crossover.py (trains when the weights file is missing)",
        "machine": machine(),
    }
    out = RESULTS / "crossover.train.json" if weights == WEIGHTS else weights.with_suffix(".train.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(f"trained in {wall_s:.0f} s: {info} -> {out}")
    return model.eval()


# ----------------------------------------------------------------------------------
# Streams
# ----------------------------------------------------------------------------------


def place_stream(
    ev: np.ndarray,
    width: int,
    height: int,
    background_hz: float,
    n_steps: int,
    rng: np.random.Generator,
) -> Any:
    """The first ``n_steps`` steps of an N-MNIST recording at a random spot of a
    ``width`` x ``height`` canvas, plus Poisson background events at ``background_hz``
    per pixel per second (uniform position, step and polarity); EventSteps (2, H, W)."""
    import nmnist as nm
    from spikecast.ext.engine import EventSteps

    st = nm.event_steps(ev)
    keep = st < n_steps
    ox = int(rng.integers(0, width - DIGIT + 1))
    oy = int(rng.integers(0, height - DIGIT + 1))
    n_bg = int(rng.poisson(background_hz * width * height * n_steps * DT_US / 1e6))
    x = np.concatenate([ev["x"][keep].astype(np.int64) + ox, rng.integers(0, width, n_bg)])
    y = np.concatenate([ev["y"][keep].astype(np.int64) + oy, rng.integers(0, height, n_bg)])
    p = np.concatenate([ev["p"][keep].astype(np.int64), rng.integers(0, 2, n_bg)])
    s = np.concatenate([st[keep], rng.integers(0, n_steps, n_bg)])
    return EventSteps.from_arrays(x, y, p, s, (2, height, width), n_steps=n_steps)


class TiledCalibration:
    """Calibration input for a canvas: the training rate frames tiled over it (as many
    per canvas as fit, ``CALIB_GAP`` apart), so that every canvas size is calibrated on
    the same digit activity. Iterable (re-iterable) of (B, 2, H, W) float32 batches."""

    def __init__(self, frames: np.ndarray, width: int, height: int, batch: int = 4) -> None:
        self.frames, self.width, self.height, self.batch = frames, width, height, batch
        cell = DIGIT + CALIB_GAP
        self.spots = [(y, x) for y in range(0, height - DIGIT + 1, cell)
                      for x in range(0, width - DIGIT + 1, cell)]  # fmt: skip

    def __iter__(self) -> Iterator[np.ndarray]:
        per = len(self.spots)
        n_canvas = math.ceil(len(self.frames) / per)
        for b0 in range(0, n_canvas, self.batch):
            nb = min(self.batch, n_canvas - b0)
            out = np.zeros((nb, 2, self.height, self.width), np.float32)
            for j in range(nb):
                chunk = self.frames[(b0 + j) * per : (b0 + j + 1) * per]
                for f, (y, x) in zip(chunk, self.spots, strict=False):
                    out[j, :, y : y + DIGIT, x : x + DIGIT] = f
            yield out


# ----------------------------------------------------------------------------------
# The two decision loops
# ----------------------------------------------------------------------------------


def ann_decide(sess: Any, ev: Any, period: int, tau: float, t_min: int) -> tuple[int, int, int]:
    """The frame ANN on one stream: at t = period, 2*period, ... (and at the end) add the
    new events to the counts, run the rate frame (counts clipped at 255 / t) through
    onnxruntime, softmax; decide at the first check with t >= t_min and max softmax >= τ,
    else at the end. Returns (class, t of the decision, passes)."""
    span = ev.n_steps
    idx, off = ev.indices, ev.offsets
    n_in = int(np.prod(ev.shape))
    shape = (1, *ev.shape)
    counts = np.zeros(n_in, np.int32)
    prev, passes = 0, 0
    t = min(period, span)
    while True:
        a, b = int(off[prev]), int(off[t])
        # numpy's cheaper way to add the new events (measured crossing near n_in / 200).
        if b - a > n_in // 200:
            counts += np.bincount(idx[a:b], minlength=n_in).astype(np.int32)
        elif b > a:
            np.add.at(counts, idx[a:b], 1)
        prev = t
        x = (np.minimum(counts, 255).astype(np.float32) / np.float32(t)).reshape(shape)
        z = sess.run(None, {"x": x})[0][0].astype(np.float64)
        passes += 1
        e = np.exp(z - z.max())
        p = e / e.sum()
        k = int(p.argmax())
        if (t >= t_min and p[k] >= tau) or t >= span:
            return k, t, passes
        t = min(t + period, span)


@dataclass
class Point:
    """The small model's operating point: decision window T (steps of 1 ms), τ, t_min."""

    t_max: int
    tau: float
    t_min: int
    source: str


def operating_point() -> Point:
    path = RESULTS / "nmnist.json"
    if path.exists():
        op = json.loads(path.read_text())["operating_point"]
        return Point(
            t_max=round(op["mean_sensor_ms"]),
            tau=float(op["tau"]),
            t_min=int(op["t_min"]),
            source="bench/results/nmnist.json operating_point (mean decision sensor time, tau, t_min)",
        )
    return Point(56, 0.67, 50, "default (bench/results/nmnist.json absent)")


def measured_backgrounds() -> dict[str, Any]:
    """Context for the background rows, from the real recordings in DATA/dvs: each file's
    mean event rate per pixel per second, and -ln(fraction of pixels without any event) /
    span, the rate at which uniform Poisson background alone would leave that many pixels
    silent (an upper bound on the background of that scene)."""
    from common import DATA
    from spikecast.runtime.readers import read_events

    out: dict[str, Any] = {}
    for name, w, h in (("gen3_640x480_evt2.raw", 640, 480), ("gen41_1280x720_evt3.raw", 1280, 720)):
        path = DATA / "dvs" / name
        if not path.exists():
            continue
        ev = read_events(path).events
        span_s = (int(ev["t"][-1]) - int(ev["t"][0])) / 1e6
        silent = 1.0 - np.unique(ev["y"].astype(np.int64) * w + ev["x"]).size / (w * h)
        out[name] = {
            "span_ms": span_s * 1e3,
            "mean_events_per_pixel_per_s": len(ev) / (w * h) / span_s,
            "silent_pixel_fraction": silent,
            "background_upper_bound_hz_per_pixel": -math.log(silent) / span_s,
        }
    return out


# ----------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------


def build_canvas(
    model: Any, frames: np.ndarray, width: int, height: int
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Convert, compile and export the network for one canvas; return (net, plan, session, timings)."""
    import vs_ann
    from spikecast.converters import convert
    from spikecast.ext.engine import CompiledNetwork

    t0 = time.process_time()
    net = convert(
        model,
        TiledCalibration(frames, width, height),
        percentile=99.9,
        input_kind="events",
        dt_us=DT_US,
        class_names=[str(i) for i in range(10)],
        progress=False,
    )
    t1 = time.process_time()
    plan = CompiledNetwork(net)
    t2 = time.process_time()
    onnx_path = vs_ann.export_onnx(model, (2, height, width), CACHE / f"fcn_{width}x{height}.onnx")
    sess = vs_ann.ort_session(onnx_path)
    neurons = int(sum(ly.n_neurons for ly in net.layers))
    return (
        net,
        plan,
        sess,
        {
            "convert_cpu_s": t1 - t0,
            "compile_cpu_s": t2 - t1,
            "neurons": neurons,
            "lambdas": [float(ly.lam) for ly in net.layers],
            "ann_macs_per_pass": int(net.ann_macs),
        },
    )


def empty_cpu_ms_per_s(plan: Any, n_steps: int, repeats: int) -> float:
    """Thread CPU ms per sensor second of the engine on a stream without any event: the
    per-step floor that the rest of a cell's SNN cost is added to (median of repeats)."""
    from spikecast.ext.engine import Engine

    eng = Engine(plan)
    eng.step(2)
    times = []
    for _ in range(repeats):
        eng.reset()
        c0 = time.thread_time()
        eng.step(n_steps)
        times.append(time.thread_time() - c0)
    return statistics.median(times) * 1e3 / (n_steps * DT_US / 1e6)


def measure_cell(  # noqa: PLR0913  (one cell of the map)
    plan: Any,
    sess: Any,
    macs_per_pass: int,
    recs: Sequence[np.ndarray],
    labels: np.ndarray,
    width: int,
    height: int,
    background_hz: float,
    point: Point,
    repeats: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    from spikecast.ext.engine import Engine

    eng = Engine(plan)
    streams = [place_stream(ev, width, height, background_hz, point.t_max, rng) for ev in recs]
    # Warm-up: first engine run after compile, first onnxruntime pass at this shape.
    eng.run(streams[0], point.t_max, tau=point.tau, t_min=point.t_min)
    ann_decide(sess, streams[0], point.t_max, point.tau, point.t_min)
    snn_cpu, ann_cpu, one_cpu = [], [], []
    snn_steps, ann_steps, ann_passes, synops = [], [], [], []
    snn_ok, ann_ok, one_ok = [], [], []
    for ev, label in zip(streams, labels, strict=True):
        ts, ta, t1 = [], [], []
        for r in range(repeats):
            c0 = time.thread_time()
            res = eng.run(ev, point.t_max, tau=point.tau, t_min=point.t_min)
            c1 = time.thread_time()
            k_ann, t_ann, n_pass = ann_decide(sess, ev, PERIOD_MS, point.tau, point.t_min)
            c2 = time.thread_time()
            k_one, _, _ = ann_decide(sess, ev, point.t_max, point.tau, point.t_min)
            c3 = time.thread_time()
            ts.append(c1 - c0)
            ta.append(c2 - c1)
            t1.append(c3 - c2)
            if r == 0:
                snn_steps.append(res.steps)
                synops.append(res.total_synops)
                snn_ok.append(res.class_index == label)
                ann_steps.append(t_ann)
                ann_passes.append(n_pass)
                ann_ok.append(k_ann == label)
                one_ok.append(k_one == label)
        snn_cpu.append(statistics.median(ts))
        ann_cpu.append(statistics.median(ta))
        one_cpu.append(statistics.median(t1))
    n = len(streams)
    snn_s, ann_s = sum(snn_steps) * DT_US / 1e6, sum(ann_steps) * DT_US / 1e6
    one_s = n * point.t_max * DT_US / 1e6
    n_events = sum(s.n_events for s in streams)
    return {
        "width": width,
        "height": height,
        "background_hz_per_pixel": background_hz,
        "recordings": n,
        "repeats": repeats,
        "ann_cpu_ms_per_s": sum(ann_cpu) * 1e3 / ann_s,
        "snn_cpu_ms_per_s": sum(snn_cpu) * 1e3 / snn_s,
        "ann_single_pass_cpu_ms_per_s": sum(one_cpu) * 1e3 / one_s,
        "ann_cpu_ms_per_decision": float(np.mean(ann_cpu)) * 1e3,
        "snn_cpu_ms_per_decision": float(np.mean(snn_cpu)) * 1e3,
        "ann_single_pass_cpu_ms_per_decision": float(np.mean(one_cpu)) * 1e3,
        "ann_macs_per_s": macs_per_pass * sum(ann_passes) / ann_s,
        "snn_synops_per_s": sum(synops) / snn_s,
        "ann_macs_per_decision": macs_per_pass * float(np.mean(ann_passes)),
        "snn_synops_per_decision": float(np.mean(synops)),
        "ann_accuracy": float(np.mean(ann_ok)),
        "snn_accuracy": float(np.mean(snn_ok)),
        "ann_single_pass_accuracy": float(np.mean(one_ok)),
        "ann_mean_sensor_ms": float(np.mean(ann_steps)) * DT_US / 1e3,
        "snn_mean_sensor_ms": float(np.mean(snn_steps)) * DT_US / 1e3,
        "input_events_per_s": n_events / one_s,
    }


def crossover(cells: Sequence[dict[str, Any]], ann_key: str) -> dict[str, Any]:
    """For each background rate: the smallest canvas (by pixels) where SNN CPU < ANN CPU."""
    out: dict[str, Any] = {}
    for bg in sorted({c["background_hz_per_pixel"] for c in cells}):
        row = sorted((c for c in cells if c["background_hz_per_pixel"] == bg),
                     key=lambda c: c["width"] * c["height"])  # fmt: skip
        win = next((c for c in row if c["snn_cpu_ms_per_s"] < c[ann_key]), None)
        out[f"{bg:g}"] = None if win is None else f"{win['width']}x{win['height']}"
    return out


def plot(cells: Sequence[dict[str, Any]], path: Path, window_ms: int) -> None:
    """Heat maps of spikecast CPU / frame-ANN CPU per sensor second (log colour scale):
    against the ANN run every 10 ms, and against one ANN pass per decision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    def num(v: float) -> str:
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"

    sizes = sorted({(c["width"], c["height"]) for c in cells}, key=lambda s: s[0] * s[1])
    bgs = sorted({c["background_hz_per_pixel"] for c in cells})
    panels = (
        ("ann_cpu_ms_per_s", f"frame ANN re-run every {PERIOD_MS} ms"),
        ("ann_single_pass_cpu_ms_per_s", "frame ANN, one pass per decision (lower bound)"),
    )
    ratios = []
    for key, _ in panels:
        r = np.full((len(bgs), len(sizes)), np.nan)
        for c in cells:
            i, j = bgs.index(c["background_hz_per_pixel"]), sizes.index((c["width"], c["height"]))
            r[i, j] = c["snn_cpu_ms_per_s"] / c[key]
        ratios.append(r)
    widest = max(float(np.nanmax(np.abs(np.log10(r)))) for r in ratios)
    lim = 10.0 ** max(1, math.ceil(widest))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5))
    for ax, (key, name), r in zip(axes, panels, ratios, strict=True):
        im = ax.imshow(r, cmap="RdBu_r", norm=LogNorm(vmin=1 / lim, vmax=lim), aspect="auto")
        for c in cells:
            i, j = bgs.index(c["background_hz_per_pixel"]), sizes.index((c["width"], c["height"]))
            ax.text(j, i, f"{r[i, j]:.2g}x\n{num(c['snn_cpu_ms_per_s'])} / {num(c[key])}",
                    ha="center", va="center", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(sizes)), [f"{w}x{h}" for w, h in sizes])
        ax.set_yticks(range(len(bgs)), [f"{b:g}" for b in bgs])
        ax.set_xlabel("canvas (pixels)")
        ax.set_ylabel("background events / pixel / s")
        ax.set_title(f"spikecast ÷ {name}\ncell: ratio, spikecast / ANN CPU ms per sensor second", fontsize=9)
        fig.colorbar(im, ax=ax, label="ratio (blue: spikecast cheaper)")
    fig.suptitle(f"CPU per sensor second, one thread each; decision window {window_ms} ms", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------


def parse_size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(w), int(h)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:  # noqa: PLR0915  (a linear bench pipeline)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 34x34 and 64x48, 2 rates, 2 recordings")
    ap.add_argument("--canvases", nargs="*", type=parse_size, default=None, help="e.g. 34x34 640x480")
    ap.add_argument("--background", nargs="*", type=float, default=None, help="events / pixel / s")
    ap.add_argument("--recordings-scale", type=float, default=1.0, help="scale the recordings per cell")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    canvases = args.canvases or (((34, 34), (64, 48)) if args.quick else CANVASES)
    backgrounds = args.background or ((0.0, 10.0) if args.quick else BACKGROUND_HZ)
    out_dir = CACHE if args.quick else RESULTS
    weights = WEIGHTS if (WEIGHTS.exists() or not args.quick) else CACHE / "crossover-quick.pt"
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE.parent / ".gitignore").write_text("*\n")
    t_start = time.time()
    seed_everything(args.seed)

    point = operating_point()
    split = load_split(args.seed)
    if args.quick and not weights.exists():
        split_small = Split(split.train[:100], split.y_train[:100], split.test, split.y_test)
        model = train_or_load(
            split_small, epochs=1, seed=args.seed, weights=weights, decision_steps=point.t_max
        )
    else:
        model = train_or_load(split, epochs=args.epochs, seed=args.seed, weights=weights,
                              decision_steps=point.t_max)  # fmt: skip
    import nmnist as nm

    calib_rng = np.random.default_rng(args.seed + 11)
    pick = np.sort(calib_rng.choice(len(split.train), min(CALIB_DIGITS, len(split.train)), replace=False))
    cal_recs = [split.train[i] for i in pick]
    calib = nm.Frames(*nm.count_frames(cal_recs, calib_rng.integers(15, 310, len(cal_recs))),
                      split.y_train[pick]).rates()  # fmt: skip

    cells, canvas_info = [], []
    jobs = [(w, h, bg) for (w, h) in canvases for bg in backgrounds]
    done = 0
    try:
        from tqdm.auto import tqdm

        bar: Any = tqdm(total=len(jobs), desc="crossover cells", unit="cell")
    except ImportError:
        bar = None
    for w, h in canvases:
        net, plan, sess, info = build_canvas(model, calib, w, h)
        info["snn_cpu_ms_per_s_no_events"] = empty_cpu_ms_per_s(plan, 20 if args.quick else 200, 3)
        canvas_info.append({"width": w, "height": h, **info})
        side = max(w, h)
        key = min(RECORDINGS, key=lambda s: abs(s - side))
        n_rec = 2 if args.quick else max(2, round(RECORDINGS[key] * args.recordings_scale))
        repeats = 1 if args.quick else REPEATS[key]
        for bg in backgrounds:
            # A Generator per cell, seeded by the cell: a rerun places the same streams.
            rng = np.random.default_rng([args.seed, w, h, int(bg * 1000)])
            recs, labels = split.test[:n_rec], split.y_test[:n_rec]
            cell = measure_cell(
                plan, sess, info["ann_macs_per_pass"], recs, labels, w, h, bg, point, repeats, rng
            )
            cells.append(cell)
            done += 1
            msg = (f"{w}x{h} bg {bg:g}: SNN {cell['snn_cpu_ms_per_s']:.1f} ms/s, "
                   f"ANN {cell['ann_cpu_ms_per_s']:.1f} ms/s "
                   f"(single pass {cell['ann_single_pass_cpu_ms_per_s']:.1f}), ratio "
                   f"{cell['snn_cpu_ms_per_s'] / cell['ann_cpu_ms_per_s']:.3g}")  # fmt: skip
            if bar is not None:
                bar.update(1)
                bar.write(msg)
            else:
                print(f"[{done}/{len(jobs)}] {msg}", file=sys.stderr)
        del net, plan, sess
    if bar is not None:
        bar.close()

    command = "python bench/crossover.py" + (" --quick" if args.quick else "")
    if argv is not None or len(sys.argv) > 1:
        command = "python bench/crossover.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "cells": cells,
        "crossover": crossover(cells, "ann_cpu_ms_per_s"),
        "crossover_vs_single_pass_ann": crossover(cells, "ann_single_pass_cpu_ms_per_s"),
        "canvases": canvas_info,
        "real_recordings_background": measured_backgrounds(),
        "decision": {
            "t_max_ms": point.t_max * DT_US / 1e3,
            "tau": point.tau,
            "t_min_ms": point.t_min * DT_US / 1e3,
            "source": point.source,
            "ann_period_ms": PERIOD_MS,
        },
        "network": "Conv16(5,s2)-ReLU-Conv32(3,s2)-ReLU-Conv32(3,s2)-ReLU-GAP-Linear(32,10), no biases",
        "weights": str(weights.relative_to(ROOT)),
        "streams": "real N-MNIST test recordings (bench/nmnist.py's split) at a random spot + "
        "uniform Poisson background, polarity random; one numpy Generator per cell",
        "timing": "thread CPU time, one thread each (onnxruntime intra/inter-op 1, torch 1); per "
        "recording the median over repeats; per second = sum of CPU / sum of sensor time decided",
        "total_seconds": time.time() - t_start,
        "command": command,
        "machine": machine(),
    }
    name = "crossover-quick.json" if args.quick else "crossover.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_dir / name}")
    plot(cells, out_dir / name.replace(".json", ".png"), point.t_max)
    print("crossover (smallest canvas where spikecast is cheaper):", result["crossover"])
    return result


if __name__ == "__main__":
    main()
