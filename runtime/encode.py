"""Encoders: sensor events -> the network's input spikes, raw frames -> analog input.

Events: the sensor's (x, y) are mapped to the network input by an optional crop and
an integer downsample, then each event becomes one input spike at flat position
``(c * H + y) * W + x`` in step ``(t - t0) // dt``; c is the polarity, or 0 when the
network merges polarities. Events that fall outside the network input after the
mapping are dropped and counted by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from spikecast.ext.binning import bin_events
from spikecast.ext.core.errors import ParameterError, StreamError
from spikecast.ext.core.network import InputSpec


@dataclass(frozen=True)
class SpatialMap:
    """Crop (x0, y0, width, height) on the sensor, then divide coordinates by ``factor``."""

    crop: tuple[int, int, int, int] | None = None
    factor: int = 1

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ParameterError(f"downsample factor must be >= 1, got {self.factor}")
        if self.crop is not None and (min(self.crop[:2]) < 0 or min(self.crop[2:]) < 1):
            raise ParameterError(f"crop must be (x0 >= 0, y0 >= 0, width >= 1, height >= 1), got {self.crop}")

    def apply(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mapped (x, y) as int64 and a mask of events that survive the crop."""
        xs, ys = x.astype(np.int64), y.astype(np.int64)
        keep = np.ones(len(xs), bool)
        if self.crop is not None:
            x0, y0, w, h = self.crop
            xs, ys = xs - x0, ys - y0
            keep = (xs >= 0) & (ys >= 0) & (xs < w) & (ys < h)
        return xs // self.factor, ys // self.factor, keep

    def mapped_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) a sensor of that size covers after the crop and downsample."""
        x0, y0, w, h = self.crop if self.crop is not None else (0, 0, width, height)
        w, h = max(0, min(w, width - x0)), max(0, min(h, height - y0))
        return -(-w // self.factor), -(-h // self.factor)

    def flags(self) -> str:
        """The ``spikecast run`` flags that give this mapping."""
        out = []
        if self.crop is not None:
            out.append("--crop " + " ".join(str(v) for v in self.crop))
        if self.factor != 1:
            out.append(f"--downsample {self.factor}")
        return " ".join(out)

    def count_outside(self, events: np.ndarray, width: int, height: int) -> int:
        """Events that fall outside a ``width`` x ``height`` input after the mapping."""
        if self.crop is None:  # the common case, without the int64 copies: x // f < w <=> x < w * f
            if not len(events):
                return 0
            x, y = events["x"], events["y"]
            w, h = width * self.factor, height * self.factor
            if int(x.max()) < w and int(y.max()) < h:
                return 0
            return int(((x >= w) | (y >= h)).sum())
        xs, ys, keep = self.apply(events["x"], events["y"])
        return int((~(keep & (xs < width) & (ys < height))).sum())


def fit_map(width: int, height: int, in_w: int, in_h: int) -> SpatialMap:
    """The largest centred region of a ``width`` x ``height`` sensor with the input's
    shape, downsampled by an integer factor to exactly ``in_w`` x ``in_h``."""
    if width < in_w or height < in_h:
        raise ParameterError(
            f"a {width}x{height} sensor is smaller than the {in_w}x{in_h} input: no crop fits"
        )
    k = min(width // in_w, height // in_h)
    w, h = in_w * k, in_h * k
    crop = None if (w, h) == (width, height) else ((width - w) // 2, (height - h) // 2, w, h)
    return SpatialMap(crop, k)


class GeometryError(ParameterError):
    """A source's sensor does not fit the network input; the message names the flags that
    fit it. ``sensor`` is its (width, height)."""

    def __init__(self, message: str, sensor: tuple[int, int]) -> None:
        super().__init__(message)
        self.sensor = sensor


def check_geometry(
    name: str, sensor: tuple[int, int], spec: InputSpec, mapping: SpatialMap, *, fit: bool = False
) -> tuple[SpatialMap, str | None]:
    """The mapping for a ``sensor`` = (width, height) source, and a warning if any.

    A sensor that covers more than the network input after ``mapping`` is refused
    with the ``--crop``/``--downsample`` that fits it; with ``fit`` that mapping is
    returned instead. A smaller one is accepted with a warning: its events land in
    the input's top-left corner.
    """
    _, in_h, in_w = spec.shape
    mw, mh = mapping.mapped_size(*sensor)
    if mw <= in_w and mh <= in_h:
        if (mw, mh) == (in_w, in_h):
            return mapping, None
        return mapping, (f"{name}: the sensor covers {mw}x{mh} after the mapping, less than "
                         f"the network input {in_w}x{in_h}")
    size = f"{sensor[0]}x{sensor[1]}"
    what = f"{name}: the sensor is {size}" + (f" ({mw}x{mh} after {mapping.flags()})"
                                             if mapping.flags() else "")
    if sensor[0] < in_w or sensor[1] < in_h:
        raise GeometryError(f"{what} but the network takes {in_w}x{in_h}; no crop fits it", sensor)
    suggested = fit_map(sensor[0], sensor[1], in_w, in_h)
    if fit:
        return suggested, None
    raise GeometryError(
        f"{what} but the network takes {in_w}x{in_h}: add {suggested.flags()} "
        "(or --fit to apply that to every file)",
        sensor,
    )


@dataclass(frozen=True)
class EncodedEvents:
    """Flat input indices with the 0-based step of each, in time order."""

    indices: np.ndarray  # int32
    steps: np.ndarray  # int64
    dropped: int
    outside: int = 0  # of the dropped: outside the input after the mapping
    in_order: bool = True  # the steps never decrease


def encode_events(
    events: np.ndarray, spec: InputSpec, t0_us: int, mapping: SpatialMap | None = None
) -> EncodedEvents:
    """Map EVENT_DTYPE events (t >= t0_us, sorted) to input indices and steps, in one
    compiled call (:func:`spikecast.ext.binning.bin_events`)."""
    if spec.kind != "events":
        raise ParameterError("this network takes frames, not events")
    m = mapping or SpatialMap()
    b = bin_events(events, t0_us, spec.dt_us, spec.shape, crop=m.crop, factor=m.factor)
    return EncodedEvents(b.indices, b.steps, b.dropped, b.outside, b.in_order)


def load_frames(path: Path, spec: InputSpec) -> np.ndarray:
    """Image file (PNG/JPEG via Pillow) or .npy stack -> normalised (N, C, H, W) float32.

    A .npy stack may be (N, C, H, W), channel-last (N, H, W, C), as images are usually
    held, or one frame without the N axis; one-channel frames may drop C."""
    if spec.kind != "frame":
        raise ParameterError(f"{path}: this network takes events, not frames")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StreamError(f"{path}: cannot read frames: {exc}") from exc
        if raw.ndim == spec_ndim(spec):
            raw = raw[None]
    else:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise StreamError(
                f"{path}: reading images needs Pillow: pip install 'spikecast[frames]'"
            ) from exc
        try:
            with Image.open(path) as src:
                im = src.convert("L" if spec.shape[0] == 1 else "RGB")
            if im.size != (spec.shape[2], spec.shape[1]):
                im = im.resize((spec.shape[2], spec.shape[1]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
        except (OSError, UnidentifiedImageError) as exc:
            raise StreamError(f"{path}: cannot decode image: {exc}") from exc
        raw = (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))[None]
    if raw.ndim == 3 and spec.shape[0] == 1:
        raw = raw[:, None]
    c, h, w = spec.shape
    if raw.ndim == 4 and tuple(raw.shape[1:]) == (h, w, c) != spec.shape:
        raw = raw.transpose(0, 3, 1, 2)  # channel-last, as numpy and Pillow hold images
    if raw.ndim != 4 or tuple(raw.shape[1:]) != spec.shape:
        raise StreamError(
            f"{path}: frames of shape {raw.shape[1:]} do not match the network input {spec.shape}"
        )
    x = raw.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise StreamError(f"{path}: frames contain NaN or infinity")
    return spec.normalize(x)


def spec_ndim(spec: InputSpec) -> int:
    """Dimensions of one raw frame: 2 for one channel, 3 otherwise."""
    return 2 if spec.shape[0] == 1 else 3


__all__ = [
    "EncodedEvents",
    "GeometryError",
    "SpatialMap",
    "check_geometry",
    "encode_events",
    "fit_map",
    "load_frames",
]
