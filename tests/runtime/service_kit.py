"""Small event networks and event generators for the service and stream tests (no torch).

``polarity_net()`` takes N-MNIST-sized input (2, 34, 34):

- conv0: Conv(2 -> 4, k5, stride 2), 34x34 -> 15x15; channels 0-1 see only OFF events,
  channels 2-3 only ON events; every tap weighs 1/4, so a neuron spikes once four
  events have fallen into its window (θ = 1, at most one spike per step);
- out: Linear(900 -> 10), non-spiking: class "off" (0) sums the OFF channels, class
  "on" (1) the ON channels, the other eight classes see nothing.

A stream of ON events therefore starts at c(t) = 1/10 and its confidence in "on"
rises step by step as the rate estimate z(t) = λ V / t builds up; the step at which
it crosses τ grows with τ. Weights are multiples of 2^-8, so sums are exact.
"""

from __future__ import annotations

import numpy as np
from spikecast.ext.core.events import EVENT_DTYPE
from spikecast.ext.core.network import CalibrationTable, InputSpec, Layer, Network

SIZE = 34
CLASSES = ("off", "on", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9")


def polarity_net(*, dt_us: int = 1000, lam: float = 0.0625, calibration: bool = True) -> Network:
    w0 = np.zeros((4, 2, 5, 5), np.float32)
    w0[0:2, 0] = 0.25  # OFF polarity -> channels 0, 1
    w0[2:4, 1] = 0.25  # ON polarity -> channels 2, 3
    conv = Layer(
        "conv",
        "conv0",
        (2, SIZE, SIZE),
        (4, 15, 15),
        w0,
        np.zeros(4, np.float32),
        kernel=(5, 5),
        stride=(2, 2),
        padding=(0, 0),
    )
    w1 = np.zeros((10, 4, 15, 15), np.float32)
    w1[0, 0:2] = 1.0 / 16
    w1[1, 2:4] = 1.0 / 16
    out = Layer(
        "linear",
        "out",
        (4, 15, 15),
        (10,),
        w1.reshape(10, 900),
        np.zeros(10, np.float32),
        spiking=False,
        lam=lam,
    )
    table = None
    if calibration:
        # 50 held-out samples: confidence rises over 60 steps, accuracy follows it.
        t = np.arange(1, 61, dtype=np.float32)[:, None]
        conf = np.clip(0.1 + 0.9 * (1 - np.exp(-t / np.linspace(5, 30, 50)[None])), 0, 1)
        correct = conf > np.linspace(0.3, 0.95, 50)[None]
        table = CalibrationTable(conf.astype(np.float32), correct)
    return Network(
        InputSpec("events", (2, SIZE, SIZE), dt_us=dt_us),
        (conv, out),
        CLASSES,
        reset="subtract",
        calibration=table,
    )


def brightness_net() -> Network:
    """Frames (1, 4, 4), raw 0..255 scaled by 1/255: class "dark" (0) integrates a
    constant 0.5 per step, class "bright" (1) the frame's mean brightness; with a
    calibration table, so the model recommends a point."""
    out = Layer(
        "linear", "out", (1, 4, 4), (2,), np.stack([np.zeros(16), np.full(16, 1.0 / 16)]).astype(np.float32),
        np.float32([0.5, 0.0]), spiking=False, lam=1.0,
    )  # fmt: skip
    t = np.arange(1, 21, dtype=np.float32)[:, None]
    conf = np.clip(0.5 + 0.5 * (1 - np.exp(-t / np.linspace(2, 10, 40)[None])), 0, 1)
    table = CalibrationTable(conf.astype(np.float32), conf > np.linspace(0.5, 0.99, 40)[None])
    spec = InputSpec("frame", (1, 4, 4), scale=1 / 255)
    return Network(spec, (out,), ("dark", "bright"), calibration=table)


def uniform_events(
    n_steps: int,
    per_step: int,
    *,
    polarity: int = 1,
    t0_us: int = 0,
    dt_us: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """``per_step`` events per step at random pixels, one polarity, sorted by time."""
    rng = np.random.default_rng(seed)
    n = n_steps * per_step
    ev = np.empty(n, EVENT_DTYPE)
    ev["x"] = rng.integers(0, SIZE, n)
    ev["y"] = rng.integers(0, SIZE, n)
    step = np.repeat(np.arange(n_steps), per_step)
    ev["t"] = (
        t0_us
        + step * dt_us
        + np.sort(rng.integers(0, dt_us, n).reshape(n_steps, per_step), 1).ravel()
    )
    ev["p"] = polarity
    return ev


def split_steps(events: np.ndarray, t0_us: int, dt_us: int, n_steps: int) -> list[np.ndarray]:
    """Events cut into ``n_steps`` consecutive steps of ``dt_us`` from ``t0_us``."""
    edges = t0_us + dt_us * np.arange(n_steps + 1)
    cut = np.searchsorted(events["t"], edges)
    return [events[cut[k] : cut[k + 1]] for k in range(n_steps)]
