"""Synthetic N-MNIST: event streams from still images by simulated saccades.

N-MNIST was recorded by an ATIS camera on a pan-tilt unit looking at MNIST digits
on a monitor: three saccades along a triangle, about 100 ms each, 34x34 pixels
so the 28x28 digit stays in view while it moves. This module replays that:

1. The image (uint8 0..255 or float 0..1) is padded to ``size`` x ``size``, and
   converted to luminance ``black_level + intensity`` (a monitor's black is not
   dark; the ratio sets the log contrast of a full stroke).
2. At every ``step_us`` the image is shifted by a subpixel offset along the
   triangle; each sensor pixel sees the area average of the shifted image,
   which for a pixel grid is exactly bilinear interpolation.
3. Each pixel is a DVS change detector: it remembers the log luminance at its
   last event and emits ON (OFF) events each time the log luminance rises (falls)
   by its contrast threshold, which varies from pixel to pixel. The event time
   is interpolated to where the threshold was crossed inside the step. After an
   event a pixel is blind for its refractory period (lognormal around
   ``refractory_us``); a change it missed then is reported when it recovers.
   A pixel's memorised level starts at a random point within half a threshold
   of the first image, as a real pixel's would.
4. Optional background noise: Poisson events at random pixels and times.

All randomness (threshold mismatch, noise) comes from the caller's
``np.random.Generator``. The simulation loops over time steps only; each step is
a handful of numpy operations over a whole batch of images, which is how
``saccade_events_batch`` generates thousands of recordings per second.

The defaults were fitted to the 1000 real N-MNIST recordings in
``../shared/data/nmnist/train`` against the same MNIST digits (see
``tests/bench/test_saccade.py``).

Training tooling for bench/nmnist.py, not part of the installed runtime: bench scripts
import it as ``saccade`` (bench/ is on their sys.path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.events import EVENT_DTYPE

# Image shift (dx, dy) in pixels at the triangle's corners. The event centroid
# of the real recordings moves down-right, then up-right, then left; these
# corners reproduce that path and keep a 28x28 digit inside 34x34.
TRIANGLE: tuple[tuple[float, float], ...] = ((-2.5, -1.5), (0.0, 3.0), (2.5, -1.5))


@dataclass(frozen=True)
class SaccadeParams:
    """Sensor and motion parameters of the simulation (see the module docstring).

    ``threshold`` is in natural-log units of luminance; ``batch`` is how many
    images are simulated together (it changes the order of random draws, so a
    seed reproduces a result only with the same batch).
    """

    size: int = 34
    step_us: int = 1000
    threshold: float = 0.38
    threshold_sigma: float = 0.03
    threshold_recording_sigma: float = 0.1
    refractory_us: int = 2000
    refractory_sigma: float = 0.3
    noise_hz: float = 1.5
    black_level: float = 0.12
    vertices: tuple[tuple[float, float], ...] = field(default=TRIANGLE)
    move_window: tuple[float, float] = (0.05, 0.9)
    batch: int = 128

    def __post_init__(self) -> None:
        if self.size < 2 or self.step_us < 1 or self.batch < 1:
            raise ParameterError("size >= 2, step_us >= 1 and batch >= 1 are required")
        if not self.threshold > 0 or not self.threshold_sigma >= 0:
            raise ParameterError("threshold must be > 0 and threshold_sigma >= 0")
        if not self.threshold_recording_sigma >= 0:
            raise ParameterError("threshold_recording_sigma must be >= 0")
        if self.refractory_us < 0 or not self.refractory_sigma >= 0:
            raise ParameterError("refractory_us and refractory_sigma must be >= 0")
        if not self.noise_hz >= 0 or not self.black_level > 0:
            raise ParameterError("noise_hz must be >= 0 and black_level > 0")
        lo, hi = self.move_window
        if not 0 <= lo < hi <= 1:
            raise ParameterError("move_window must be (start, end) with 0 <= start < end <= 1")
        if len(self.vertices) < 2 or not all(
            len(v) == 2 and all(math.isfinite(c) for c in v) for v in self.vertices
        ):
            raise ParameterError("vertices must be at least two finite (dx, dy) pairs")


def trajectory(n_steps: int, params: SaccadeParams) -> np.ndarray:
    """(n_steps + 1, 2) image shifts (dx, dy) at t = k * step_us, k = 0..n_steps.

    One saccade per edge of the closed polygon of ``vertices``, each taking an
    equal share of the time: a raised-cosine move (smooth start and stop, as a
    pan-tilt unit does) between the fractions ``move_window`` of that share, still
    otherwise. The default window puts the event peak near 50 ms into each
    saccade and the stop near 90 ms, as in the real recordings.
    """
    corners = np.asarray(params.vertices, dtype=np.float64)
    n_sacc = len(corners)
    u = np.arange(n_steps + 1, dtype=np.float64) / max(n_steps, 1) * n_sacc
    which = np.minimum(u.astype(np.int64), n_sacc - 1)
    lo, hi = params.move_window
    phase = np.clip((u - which - lo) / (hi - lo), 0.0, 1.0)
    ease = (1.0 - np.cos(np.pi * phase)) / 2.0
    start = corners[which]
    end = corners[(which + 1) % n_sacc]
    return start + (end - start) * ease[:, None]


def _as_intensity(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) uint8 or float in [0, 1] -> (N, size, size) float32 in [0, 1], centred."""
    if not isinstance(images, np.ndarray) or images.ndim != 3:
        raise ParameterError("images must be an (N, H, W) array (one image: (H, W))")
    n, h, w = images.shape
    if h > size or w > size or h == 0 or w == 0:
        raise ParameterError(f"image {h}x{w} does not fit the {size}x{size} sensor")
    if images.dtype == np.uint8:
        data = images.astype(np.float32) / np.float32(255.0)
    elif images.dtype.kind == "f":
        data = images.astype(np.float32)
        if not bool(np.isfinite(data).all()) or float(data.min()) < 0 or float(data.max()) > 1:
            raise ParameterError("float images must be finite and within [0, 1]")
    else:
        raise ParameterError(f"images must be uint8 or float, got {images.dtype}")
    out = np.zeros((n, size, size), dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    out[:, top : top + h, left : left + w] = data
    return out


def _simulate_chunk(
    intensity: np.ndarray,
    path: np.ndarray,
    rng: np.random.Generator,
    duration_us: int,
    p: SaccadeParams,
) -> list[np.ndarray]:
    """Run the change detectors for one batch; return one sorted event array per image."""
    b, s, _ = intensity.shape
    thr, refr = _pixel_params(rng, b, s, p)
    step_us = np.float32(p.step_us)
    cur = np.empty((b, s, s), dtype=np.float32)
    tmp = np.empty_like(cur)
    log_lum = _LogLuminance(intensity, path, p.black_level, tmp)

    prev = log_lum(0, np.empty_like(cur))
    # The memorised level of a real pixel dates from some earlier event, so it sits
    # anywhere within half a threshold of the first image. Starting exactly at it
    # would leave every pixel on the threshold lattice of the starting image, and
    # the return to the first corner would fire them all in the same microsecond.
    ref = prev + thr * (rng.random((b, s, s), dtype=np.float32) - np.float32(0.5))
    # Sensor time from which each pixel may fire again.
    ready_at = np.full((b, s, s), -np.inf, dtype=np.float32)
    thr_flat, ref_flat, ready_flat, refr_flat = (a.reshape(-1) for a in (thr, ref, ready_at, refr))
    diff = np.empty_like(ref)
    mask = np.empty((b, s, s), dtype=bool)
    ready = np.empty_like(mask)
    found: list[tuple[np.ndarray, ...]] = []
    for k in range(1, len(path)):
        t_k = np.float32(k * p.step_us)
        if np.array_equal(path[k], path[k - 1]):
            np.copyto(cur, prev)  # still between saccades: same image, no interpolation
        else:
            log_lum(k, cur)
        np.subtract(cur, ref, out=diff)
        np.abs(diff, out=tmp)
        np.greater_equal(tmp, thr, out=mask)
        np.less_equal(ready_at, t_k, out=ready)
        mask &= ready
        hit = np.flatnonzero(mask)
        if hit.size == 0:
            prev, cur = cur, prev
            continue
        d, th, rf = diff.reshape(-1)[hit], thr_flat[hit], refr_flat[hit]
        # As many events as thresholds crossed, but no more than fit the step
        # between refractory periods; the rest is reported later.
        cap = np.maximum(np.floor(step_us / np.maximum(rf, 1e-3)), 1)
        count = np.minimum(np.floor(np.abs(d) / th), np.minimum(cap, 255))
        sign = np.sign(d)
        l0, l1 = prev.reshape(-1)[hit], cur.reshape(-1)[hit]
        ref0, ready0 = ref_flat[hit], ready_flat[hit]
        found.append((hit, count, sign, ref0, th, l0, l1, ready0, rf, np.full(hit.size, t_k)))
        t_last = _crossing_time(ref0 + sign * count * th, l0, l1, float(t_k), float(step_us))
        t_last = np.maximum(t_last, ready0 + (count - 1) * rf)
        ref_flat[hit] = ref0 + sign * count * th
        ready_flat[hit] = t_last + rf
        prev, cur = cur, prev
    return _collect(found, rng, b, s, duration_us, p)


def _pixel_params(
    rng: np.random.Generator, b: int, s: int, p: SaccadeParams
) -> tuple[np.ndarray, np.ndarray]:
    """Contrast threshold and refractory period of every pixel of b recordings."""
    # Contrast threshold: a per-recording factor (lighting and bias settings
    # differed between real recordings) times per-pixel mismatch.
    sigma_rec = p.threshold_recording_sigma
    per_rec = np.exp(sigma_rec * rng.standard_normal((b, 1, 1)) - sigma_rec**2 / 2)
    mismatch = p.threshold_sigma * rng.standard_normal((b, s, s))
    thr = (np.maximum(p.threshold + mismatch, p.threshold / 4) * per_rec).astype(np.float32)
    # Refractory period per pixel: lognormal spread around refractory_us.
    spread = p.refractory_sigma * rng.standard_normal((b, s, s)) - p.refractory_sigma**2 / 2
    refr = (p.refractory_us * np.exp(spread)).astype(np.float32)
    return thr, refr


class _LogLuminance:
    """Log luminance seen by every pixel at step k of the path, for a batch of images.

    Pixel (r, c) sees the source at (r - dy, c - dx); area sampling of a pixel grid is
    bilinear interpolation, written as c0 + ax*cx + ay*cy + ax*ay*cxy with contiguous
    coefficient planes per integer shift, which the smooth path reuses for many steps.
    """

    def __init__(self, intensity: np.ndarray, path: np.ndarray, black_level: float, tmp: np.ndarray):
        self.margin = math.ceil(float(np.abs(path).max())) + 1
        margin = self.margin
        # Luminance canvas with a dark border wide enough for every shift.
        self.lum = np.pad(intensity + np.float32(black_level), ((0, 0), (margin,) * 2, (margin,) * 2),
                          constant_values=np.float32(black_level))  # fmt: skip
        self.path = path
        self.s = intensity.shape[1]
        self.tmp = tmp  # scratch of the batch's shape
        self.planes: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def __call__(self, k: int, out: np.ndarray) -> np.ndarray:
        """Write the log luminance at step k into ``out`` and return it."""
        fy, fx = self.margin - self.path[k, 1], self.margin - self.path[k, 0]
        iy, ix = math.floor(fy), math.floor(fx)
        ay, ax = np.float32(fy - iy), np.float32(fx - ix)
        c0, cx, cy, cxy = self._planes(iy, ix)
        tmp = self.tmp
        np.multiply(cx, ax, out=out)
        out += c0
        np.multiply(cy, ay, out=tmp)
        out += tmp
        np.multiply(cxy, ax * ay, out=tmp)
        out += tmp
        return np.log(out, out=out)

    def _planes(self, iy: int, ix: int) -> tuple[np.ndarray, ...]:
        if (iy, ix) not in self.planes:
            self.planes.clear()  # the path leaves a cell for good, mostly; keep memory flat
            lum, s = self.lum, self.s
            a00 = lum[:, iy : iy + s, ix : ix + s]
            a01 = lum[:, iy : iy + s, ix + 1 : ix + s + 1]
            a10 = lum[:, iy + 1 : iy + s + 1, ix : ix + s]
            a11 = lum[:, iy + 1 : iy + s + 1, ix + 1 : ix + s + 1]
            self.planes[iy, ix] = (a00.copy(), a01 - a00, a10 - a00, a00 - a01 - a10 + a11)
        return self.planes[iy, ix]


def _collect(
    found: list[tuple[np.ndarray, ...]],
    rng: np.random.Generator,
    b: int,
    s: int,
    duration_us: int,
    p: SaccadeParams,
) -> list[np.ndarray]:
    """The crossings found as events, plus background noise; one array per image."""
    parts: list[_Columns] = []
    if found:
        parts.append(_expand(found, s, float(p.step_us)))
    if p.noise_hz > 0:
        parts.append(_noise(rng, b, s, duration_us, p.noise_hz))
    if not parts:
        return [np.zeros(0, dtype=EVENT_DTYPE) for _ in range(b)]
    return _split(parts, b, duration_us)


# Events in flight, as columns: image index, x, y, t (us), polarity.
_Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _crossing_time(
    level: np.ndarray, l0: np.ndarray, l1: np.ndarray, t_k: np.ndarray | float, step_us: float
) -> np.ndarray:
    """When, inside the step ending at t_k, the log luminance (linear from l0 to l1)
    reached ``level``; clipped to the step."""
    span = np.where(l1 == l0, 1, l1 - l0)
    frac = np.clip((level - l0) / span, 0.0, 1.0)
    return t_k - step_us * (1 - frac)


def _expand(found: list[tuple[np.ndarray, ...]], s: int, step_us: float) -> _Columns:
    """Turn per-step threshold crossings into individual timed events."""
    hit, count_f, sign, ref0, th, l0, l1, ready0, rf, t_k = (
        np.concatenate(c) for c in zip(*found, strict=True)
    )
    count = count_f.astype(np.int64)
    rep = np.repeat(np.arange(hit.size), count)
    # j = 1..count within each crossing run
    j = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count) + 1
    sg = sign[rep]
    t = _crossing_time(ref0[rep] + sg * j * th[rep], l0[rep], l1[rep], t_k[rep], step_us)
    # No event before the pixel's refractory period is over.
    t = np.maximum(t, ready0[rep] + (j - 1) * rf[rep])
    img, rest = np.divmod(hit[rep], s * s)
    y, x = np.divmod(rest, s)
    return img, x, y, np.rint(t).astype(np.int64), (sg > 0).astype(np.uint8)


def _noise(rng: np.random.Generator, b: int, s: int, duration_us: int, rate_hz: float) -> _Columns:
    """Background activity: Poisson events, uniform over pixels, time and polarity."""
    n = rng.poisson(rate_hz * s * s * duration_us * 1e-6, size=b)
    total = int(n.sum())
    return (
        np.repeat(np.arange(b), n),
        rng.integers(0, s, total),
        rng.integers(0, s, total),
        rng.integers(0, duration_us, total),
        rng.integers(0, 2, total, dtype=np.uint8),
    )


def _split(parts: list[_Columns], b: int, duration_us: int) -> list[np.ndarray]:
    """Sort by (image, t), drop anything past the end, split per image."""
    img, x, y, t, p = (np.concatenate(c) for c in zip(*parts, strict=True))
    keep = (t >= 0) & (t < duration_us)
    img, x, y, t, p = img[keep], x[keep], y[keep], t[keep], p[keep]
    order = np.argsort(img * duration_us + t)
    ev = np.empty(order.size, dtype=EVENT_DTYPE)
    ev["x"] = x[order]
    ev["y"] = y[order]
    ev["t"] = t[order]
    ev["p"] = p[order]
    bounds = np.cumsum(np.bincount(img, minlength=b))[:-1]
    return np.split(ev, bounds)


def saccade_events_batch(
    images: np.ndarray,
    *,
    rng: np.random.Generator,
    duration_us: int = 300_000,
    params: SaccadeParams | None = None,
) -> list[np.ndarray]:
    """One EVENT_DTYPE recording (sorted by t, within size x size) per image of
    an (N, H, W) batch. Deterministic given the state of ``rng``."""
    p = SaccadeParams() if params is None else params
    if not isinstance(rng, np.random.Generator):
        raise ParameterError("rng must be a numpy.random.Generator")
    if isinstance(duration_us, bool) or not isinstance(duration_us, int) or duration_us < p.step_us:
        raise ParameterError(f"duration_us must be an int >= step_us ({p.step_us})")
    intensity = _as_intensity(images, p.size)
    path = trajectory(duration_us // p.step_us, p)
    out: list[np.ndarray] = []
    for start in range(0, len(intensity), p.batch):
        out += _simulate_chunk(intensity[start : start + p.batch], path, rng, duration_us, p)
    return out


def saccade_events(
    image: np.ndarray,
    *,
    rng: np.random.Generator,
    duration_us: int = 300_000,
    params: SaccadeParams | None = None,
) -> np.ndarray:
    """Events (EVENT_DTYPE, sorted by t) of one still (H, W) image seen through saccades."""
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        raise ParameterError("image must be a 2-D (H, W) array")
    return saccade_events_batch(image[None], rng=rng, duration_us=duration_us, params=params)[0]


__all__ = ["TRIANGLE", "SaccadeParams", "saccade_events", "saccade_events_batch", "trajectory"]
