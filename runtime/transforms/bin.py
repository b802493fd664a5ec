"""Events to per-step count frames: the engine's input S_0(t) (see DESIGN "Step semantics")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from spikecast.converters.errors import ParameterError
from spikecast.runtime.transforms._check import require_events, require_int


def bin_events(
    events: np.ndarray,
    *,
    dt_us: int,
    t0_us: int,
    n_steps: int,
    channels: int,
    height: int,
    width: int,
) -> np.ndarray:
    """Count events per (step, channel, y, x) into a float32 (n_steps, C, H, W) array.

    Step k covers [t0_us + k*dt_us, t0_us + (k+1)*dt_us); events outside all steps
    are ignored. Each event counts once, so two events at one pixel in one step
    count 2. With ``channels == 2`` the channel is the polarity; with 1, both
    polarities share channel 0. Events outside width x height are an error: the
    stream does not fit the network.
    """
    require_events(events)
    dt_us = require_int("dt_us", dt_us, low=1)
    n_steps = require_int("n_steps", n_steps, low=1)
    channels = require_int("channels", channels, low=1, high=2)
    height = require_int("height", height, low=1)
    width = require_int("width", width, low=1)
    t0_us = require_int("t0_us", t0_us, low=-(2**62))
    t = events["t"].astype(np.int64, copy=False)
    keep = (t >= t0_us) & (t < t0_us + n_steps * dt_us)
    step = (t[keep] - t0_us) // dt_us
    x = events["x"][keep].astype(np.int64)
    y = events["y"][keep].astype(np.int64)
    if x.size and (int(x.max()) >= width or int(y.max()) >= height):
        i = int(np.argmax((x >= width) | (y >= height)))
        raise ParameterError(f"event at ({int(x[i])}, {int(y[i])}) outside {width}x{height}")
    if channels == 2:
        c = events["p"][keep].astype(np.int64)
        if c.size and int(c.max()) > 1:
            raise ParameterError("polarity must be 0 or 1 for two channels")
    else:
        c = np.zeros_like(x)
    flat = ((step * channels + c) * height + y) * width + x
    counts = np.bincount(flat, minlength=n_steps * channels * height * width)
    return counts.astype(np.float32).reshape(n_steps, channels, height, width)


@dataclass(frozen=True)
class Bin:
    """``bin_events`` with its geometry fixed; call with events and ``t0_us``."""

    dt_us: int
    n_steps: int
    channels: int
    height: int
    width: int

    def __post_init__(self) -> None:
        require_int("dt_us", self.dt_us, low=1)
        require_int("n_steps", self.n_steps, low=1)
        require_int("channels", self.channels, low=1, high=2)
        require_int("height", self.height, low=1)
        require_int("width", self.width, low=1)
        if self.n_steps * self.channels * self.height * self.width > 2**31:
            raise ParameterError("frame tensor would exceed 2**31 elements")

    def __call__(self, events: np.ndarray, *, t0_us: int) -> np.ndarray:
        return bin_events(
            events,
            dt_us=self.dt_us,
            t0_us=t0_us,
            n_steps=self.n_steps,
            channels=self.channels,
            height=self.height,
            width=self.width,
        )
