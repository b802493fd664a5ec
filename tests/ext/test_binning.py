"""bin_events: one compiled call gives what the numpy encoder gave, event for event."""

from __future__ import annotations

import numpy as np
import pytest
from spikecast.ext.binning import bin_events, scev_decode
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.events import EVENT_DTYPE


def numpy_reference(ev: np.ndarray, origin: int, dt: int, shape: tuple[int, int, int],
                    crop: tuple[int, int, int, int] | None, factor: int) -> tuple[np.ndarray, ...]:
    """The encoder as it was written in numpy (runtime/encode.py before the kernel)."""
    c, h, w = shape
    xs, ys = ev["x"].astype(np.int64), ev["y"].astype(np.int64)
    keep = np.ones(len(ev), bool)
    if crop is not None:
        x0, y0, cw, ch = crop
        xs, ys = xs - x0, ys - y0
        keep = (xs >= 0) & (ys >= 0) & (xs < cw) & (ys < ch)
    xs, ys = xs // factor, ys // factor
    keep &= (xs < w) & (ys < h)
    outside = int((~keep).sum())
    chan = ev["p"].astype(np.int64) if c == 2 else np.zeros(len(ev), np.int64)
    steps = (ev["t"] - origin) // dt
    keep &= steps >= 0
    return ((chan * h + ys) * w + xs)[keep], steps[keep], outside, int((~keep).sum()) - outside


def random_events(n: int, seed: int, size: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.empty(n, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, size, n), rng.integers(0, size, n)
    ev["t"] = np.sort(rng.integers(-5_000, 50_000, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    ("crop", "factor"), [(None, 1), (None, 2), ((10, 5, 64, 64), 2), ((0, 0, 34, 34), 1)]
)
def test_matches_the_numpy_encoder(channels: int, crop: tuple[int, int, int, int] | None,
                                   factor: int) -> None:
    ev = random_events(3_000, seed=channels * 10 + factor)
    shape = (channels, 34, 34)
    got = bin_events(ev, 1_000, 1_000, shape, crop=crop, factor=factor)
    idx, steps, outside, before = numpy_reference(ev, 1_000, 1_000, shape, crop, factor)
    assert got.indices.dtype == np.int32 and got.steps.dtype == np.int64
    assert np.array_equal(got.indices, idx) and np.array_equal(got.steps, steps)
    assert (got.outside, got.before, got.dropped) == (outside, before, outside + before)
    assert got.in_order


def test_unsorted_views_and_other_field_types() -> None:
    ev = random_events(500, seed=3)[::-1]  # a strided, unsorted view
    got = bin_events(ev, 0, 1_000, (2, 34, 34))
    idx, steps, _, _ = numpy_reference(ev, 0, 1_000, (2, 34, 34), None, 1)
    assert np.array_equal(got.indices, idx) and np.array_equal(got.steps, steps)
    assert not got.in_order
    wide = np.zeros(len(ev), [("t", "<i8"), ("x", "<i4"), ("y", "<i4"), ("p", "<i2")])
    for k in ("t", "x", "y", "p"):
        wide[k] = ev[k]
    again = bin_events(wide, 0, 1_000, (2, 34, 34))
    assert np.array_equal(again.indices, idx) and np.array_equal(again.steps, steps)
    empty = bin_events(ev[:0], 0, 1_000, (1, 34, 34))
    assert len(empty.indices) == 0 and empty.dropped == 0


def test_bad_arguments() -> None:
    ev = random_events(10, seed=1)
    with pytest.raises(ParameterError):
        bin_events(ev, 0, 0, (2, 34, 34))
    with pytest.raises(ParameterError):
        bin_events(ev, 0, 1_000, (3, 34, 34))
    with pytest.raises(ParameterError):
        bin_events(np.zeros(3, [("x", "<u2")]), 0, 1_000, (2, 34, 34))


def test_scev_decode_checks_and_writes_the_columns() -> None:
    n = 4
    x = np.array([0, 1, 33, 2], "<u2")
    y = np.array([0, 5, 33, 1], "<u2")
    dt = np.array([0, 10, 10, 4_000_000_000], "<u4")
    p = np.array([0, 1, 1, 0], "u1")

    def body(**cols: np.ndarray) -> memoryview:
        c = {"x": x, "y": y, "dt": dt, "p": p, **cols}
        return memoryview(b"".join(c[k].tobytes() for k in ("x", "y", "dt", "p")))

    t0 = 2**40 + 7
    ev = scev_decode(body(), n, 34, 34, t0)
    assert ev is not None and ev.dtype == EVENT_DTYPE
    assert ev["x"].tolist() == x.tolist() and ev["y"].tolist() == y.tolist()
    assert ev["t"].tolist() == [t0 + int(d) for d in dt]  # u32 dt beyond 2^31 stays positive
    assert ev["p"].tolist() == p.tolist()
    assert scev_decode(body(x=np.array([0, 1, 34, 2], "<u2")), n, 34, 34, t0) is None
    assert scev_decode(body(y=np.array([0, 34, 3, 2], "<u2")), n, 34, 34, t0) is None
    assert scev_decode(body(dt=np.array([0, 10, 9, 11], "<u4")), n, 34, 34, t0) is None
    assert scev_decode(body(p=np.array([0, 1, 2, 0], "u1")), n, 34, 34, t0) is None
    empty = scev_decode(memoryview(b""), 0, 34, 34, t0)
    assert empty is not None and len(empty) == 0
    with pytest.raises(ValueError, match="shorter"):
        scev_decode(body()[:-1], n, 34, 34, t0)
