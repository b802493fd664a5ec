"""Events into the engine's input arrays in one compiled call per packet.

:func:`bin_events` turns a sorted EVENT_DTYPE array into the flat input indices
(int32) and 0-based steps (int64) that :class:`~spikecast.ext.engine.EventSteps`
and :meth:`~spikecast.ext.engine.Engine.feed` take, after an optional crop and an
integer downsample, without a Python object or a numpy temporary per field. It is
the live path's encoder (``spikecast.runtime.encode.encode_events``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from spikecast.ext import _binning  # type: ignore[attr-defined]
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.events import EVENT_DTYPE


@dataclass(frozen=True, eq=False)
class BinnedEvents:
    """Kept events as flat input indices and steps, and what was dropped, by cause."""

    indices: np.ndarray  # int32
    steps: np.ndarray  # int64
    outside: int  # outside the crop or the input after the mapping (or polarity > 1)
    before: int  # before the origin
    in_order: bool  # the steps never decrease

    @property
    def dropped(self) -> int:
        return self.outside + self.before


def _records(events: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    fields = getattr(events.dtype, "fields", None) or {}
    if not {"x", "y", "t", "p"} <= set(fields) or events.ndim != 1:
        raise ParameterError("events must be a 1-D structured array with fields x, y, t, p")
    ev = np.ascontiguousarray(events)
    if any(fields[k][0] != EVENT_DTYPE.fields[k][0] for k in ("x", "y", "t", "p")):  # type: ignore[index]
        packed = np.empty(len(ev), EVENT_DTYPE)  # the kernel reads EVENT_DTYPE's fields
        for k in ("x", "y", "t", "p"):
            packed[k] = ev[k]  # by name (astype between record types goes by position)
        ev, fields = packed, EVENT_DTYPE.fields
    offsets = tuple(int(fields[k][1]) for k in ("x", "y", "t", "p"))
    return ev.view(np.uint8).reshape(-1), offsets  # type: ignore[return-value]


def bin_events(
    events: np.ndarray,
    origin_us: int,
    dt_us: int,
    shape: tuple[int, int, int],
    *,
    crop: tuple[int, int, int, int] | None = None,
    factor: int = 1,
) -> BinnedEvents:
    """Map EVENT_DTYPE events to input indices ``(c * H + y) * W + x`` and steps
    ``(t - origin_us) // dt_us`` (c: the polarity with two input channels, else 0).
    Events outside the crop or the input, and events before ``origin_us``, are dropped
    and counted. The result keeps the events' order."""
    c, h, w = (int(s) for s in shape)
    if c not in (1, 2) or min(h, w) < 1:
        raise ParameterError(f"event input must be (1 or 2, H, W), got {shape}")
    if dt_us < 1 or factor < 1:
        raise ParameterError(f"dt_us and factor must be >= 1, got {dt_us} and {factor}")
    n = len(events)
    raw, (ox, oy, ot, op) = _records(events)
    itemsize = len(raw) // n if n else 1
    idx = np.empty(n, np.int32)
    steps = np.empty(n, np.int64)
    x0, y0, cw, ch = crop if crop is not None else (0, 0, -1, -1)
    kept, outside, before, in_order = _binning.bin_events(
        raw, n, itemsize, ox, oy, ot, op, int(origin_us), int(dt_us), c, h, w,
        x0, y0, cw, ch, int(factor), idx, steps,
    )  # fmt: skip
    return BinnedEvents(idx[:kept], steps[:kept], int(outside), int(before), bool(in_order))


def scev_decode(body: memoryview, n: int, width: int, height: int, t0_us: int) -> np.ndarray | None:
    """The n events of a SCEV packet (``body``: the bytes after its header) as EVENT_DTYPE,
    with t = t0_us + dt, checked in the same compiled pass: None if any event is outside
    ``width`` x ``height``, back in time or of polarity > 1 (find which with numpy)."""
    out = np.empty(n, EVENT_DTYPE)
    f = EVENT_DTYPE.fields
    ok = _binning.scev_decode(
        np.frombuffer(body, np.uint8), n, width, height, t0_us, out.view(np.uint8),
        EVENT_DTYPE.itemsize, f["x"][1], f["y"][1], f["t"][1], f["p"][1],  # type: ignore[index]
    )
    return out if ok else None


__all__ = ["BinnedEvents", "bin_events", "scev_decode"]
