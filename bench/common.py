"""Helpers shared by the bench scripts: data paths, models, result files, plots."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPIKECAST_DATA", ROOT.parent / "shared" / "data"))
MODELS = ROOT / "bench" / "models"
RESULTS = ROOT / "bench" / "results"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        sys.exit(f"{what} not found at {path}; set SPIKECAST_DATA to the folder holding shared/data")
    return path


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST as float32 (N, 1, 28, 28) in [0, 1] and int64 labels."""
    with np.load(require(DATA / "mnist" / "mnist.npz", "MNIST"), allow_pickle=False) as d:
        xtr, ytr, xte, yte = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    f = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return f(xtr), ytr.astype(np.int64), f(xte), yte.astype(np.int64)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def host_speed_mops() -> float:
    """Millions of simple Python loop iterations per second, best of 25 short runs.

    The bench machines are shared virtual machines whose hosts differ from session to
    session (the same code has run 1.6-2x slower on one than another); this puts a number
    on the host next to every result, so figures from different sessions can be told apart.
    """
    best = math.inf
    for _ in range(25):  # best of many: the first runs catch a core still clocking up
        t0 = time.perf_counter()
        x = 0
        for i in range(200_000):
            x += i & 7
        best = min(best, time.perf_counter() - t0)
    return 0.2 / best


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "host_speed_python_mops": round(host_speed_mops(), 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_classifier(  # noqa: PLR0913  (keyword-only training hyperparameters)
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    augment_shift: int = 0,
    seed: int = 0,
    desc: str = "train",
    device: str = "cpu",
) -> Any:
    """Adam + one-cycle schedule, optional random integer shifts; seeded."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    seed_everything(seed)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen).to(device)
        bar = tqdm(range(0, len(xt), batch_size), desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False)
        for i in bar:
            idx = order[i : i + batch_size]
            xb = xt[idx]
            if augment_shift:
                dy, dx = (
                    int(v) for v in torch.randint(-augment_shift, augment_shift + 1, (2,), generator=gen)
                )
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
        bar.close()
    return model.eval().cpu()


def accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    import torch

    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            correct += int(
                (
                    model(torch.from_numpy(x[i : i + batch_size])).argmax(1).numpy() == y[i : i + batch_size]
                ).sum()
            )
    return correct / len(x)


def trace_with_progress(
    plan: Any, inputs: Any, n_steps: int, *, desc: str, n_threads: int = 2, chunk: int = 256,
    exact_confidence: bool = False,
) -> Any:
    """:func:`spikecast.ext.engine.trace` over ``inputs`` in chunks, with a progress bar.

    Returns one ``Trace`` whose (T, N) arrays hold every sample, in order.
    ``exact_confidence``: c(t) in double from the logits, in the engine's order
    (``Network.confidence``), so a replay of the rule decides exactly where the engine
    does; the trace's own float32 c(t) can round across a τ (frames: t_eff = t).
    """
    from spikecast.ext.engine import Trace, trace
    from tqdm.auto import tqdm

    n = len(inputs)
    parts = []
    steps = np.arange(1, n_steps + 1, dtype=np.float64)[:, None]
    with tqdm(total=n, desc=desc, unit="sample", mininterval=2.0) as bar:
        for a in range(0, n, chunk):
            part = trace(plan, inputs[a : a + chunk], n_steps, n_threads=n_threads, logits=exact_confidence)
            if exact_confidence:
                part = Trace(part.class_index, plan.network.confidence(part.logits, steps), part.synops,
                             part.n_steps, None)  # fmt: skip
            parts.append(part)
            bar.update(min(chunk, n - a))
    return Trace(
        class_index=np.concatenate([p.class_index for p in parts], axis=1),
        confidence=np.concatenate([p.confidence for p in parts], axis=1),
        synops=np.concatenate([p.synops for p in parts], axis=1),
        n_steps=np.concatenate([p.n_steps for p in parts]),
        logits=None,
    )
