"""Transforms: each pure function, its dataclass, and bin_events' counting rule."""

from __future__ import annotations

import numpy as np
import pytest
from spikecast.converters.errors import ParameterError
from spikecast.runtime.events import EVENT_DTYPE, make_events
from spikecast.runtime.transforms import (
    Bin,
    CenterCrop,
    Crop,
    Downsample,
    MergePolarity,
    TimeWindow,
    bin_events,
    crop,
    downsample,
    downsampled_size,
    merge_polarity,
    time_window,
)


def events() -> np.ndarray:
    return make_events(
        x=[0, 5, 9, 3, 7, 9],
        y=[0, 2, 7, 3, 5, 1],
        t_us=[100, 200, 300, 300, 450, 999],
        p=[1, 0, 1, 1, 0, 0],
    )


def test_crop_keeps_box_and_shifts() -> None:
    ev = events()
    out = crop(ev, x0=3, y0=1, width=5, height=5)
    assert out.tolist() == [(2, 1, 200, 0), (0, 2, 300, 1), (4, 4, 450, 0)]
    assert out.dtype == EVENT_DTYPE
    assert np.array_equal(ev, events())  # input untouched
    assert Crop(3, 1, 5, 5)(ev).tolist() == out.tolist()
    assert Crop(3, 1, 5, 5).output_size == (5, 5)


def test_center_crop() -> None:
    cc = CenterCrop(sensor_size=(10, 8), size=(4, 4))
    assert (cc.box.x0, cc.box.y0) == (3, 2)
    assert cc(events()).tolist() == [(2, 0, 200, 0), (0, 1, 300, 1)]
    with pytest.raises(ParameterError, match="exceeds"):
        CenterCrop(sensor_size=(10, 8), size=(11, 4))


@pytest.mark.parametrize("args", [(-1, 0, 2, 2), (0, 0, 0, 2), (0, 0, 2, 1.5), (True, 0, 2, 2)])
def test_crop_rejects_bad_box(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ParameterError):
        Crop(*args)


def test_downsample() -> None:
    out = downsample(events(), factor=4)
    assert out["x"].tolist() == [0, 1, 2, 0, 1, 2]
    assert out["y"].tolist() == [0, 0, 1, 0, 1, 0]
    assert np.array_equal(out["t"], events()["t"]) and np.array_equal(out["p"], events()["p"])
    assert downsampled_size(10, 8, 4) == (3, 2)
    assert downsampled_size(34, 34, 2) == (17, 17)
    ds = Downsample(4)
    assert ds.output_size(10, 8) == (3, 2)
    assert np.array_equal(ds(events()), out)
    with pytest.raises(ParameterError):
        Downsample(0)


def test_downsampled_events_fit_new_size() -> None:
    rng = np.random.default_rng(1)
    ev = make_events(rng.integers(0, 37, 500), rng.integers(0, 23, 500), np.arange(500), [0] * 500)
    for f in (1, 2, 3, 5, 8):
        w, h = downsampled_size(37, 23, f)
        out = downsample(ev, factor=f)
        assert int(out["x"].max()) == w - 1 and int(out["y"].max()) == h - 1


def test_merge_polarity() -> None:
    ev = events()
    assert merge_polarity(ev)["p"].tolist() == [0] * 6
    assert ev["p"].tolist() == [1, 0, 1, 1, 0, 0]
    assert MergePolarity()(ev)["p"].sum() == 0


def test_time_window_half_open() -> None:
    ev = events()
    assert time_window(ev, t0_us=200, t1_us=450)["t"].tolist() == [200, 300, 300]
    assert time_window(ev, t0_us=0, t1_us=100).size == 0
    assert time_window(ev, t0_us=999, t1_us=1000)["t"].tolist() == [999]
    assert TimeWindow(300, 301)(ev)["x"].tolist() == [9, 3]
    with pytest.raises(ParameterError, match="before"):
        TimeWindow(5, 4)
    with pytest.raises(ParameterError, match="before"):
        time_window(ev, t0_us=5, t1_us=4)


def test_bin_counts_each_event_once() -> None:
    ev = make_events(
        x=[1, 1, 1, 2, 0, 3],
        y=[0, 0, 0, 1, 1, 0],
        t_us=[1000, 1500, 1999, 2000, 4999, 5000],
        p=[1, 1, 0, 1, 0, 1],
    )
    frames = bin_events(ev, dt_us=1000, t0_us=1000, n_steps=4, channels=2, height=2, width=4)
    assert frames.shape == (4, 2, 2, 4) and frames.dtype == np.float32
    assert frames[0, 1, 0, 1] == 2  # two ON events at one pixel in one step count twice
    assert frames[0, 0, 0, 1] == 1
    assert frames[1, 1, 1, 2] == 1
    assert frames[3, 0, 1, 0] == 1
    assert frames.sum() == 5  # t=5000 is past the last step
    merged = bin_events(ev, dt_us=1000, t0_us=1000, n_steps=4, channels=1, height=2, width=4)
    assert merged.shape == (4, 1, 2, 4)
    assert merged[0, 0, 0, 1] == 3
    assert np.array_equal(merged[:, 0], frames.sum(axis=1))


def test_bin_matches_a_loop_reference() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    ev = make_events(
        rng.integers(0, 6, n), rng.integers(0, 5, n), np.sort(rng.integers(0, 10_000, n)),
        rng.integers(0, 2, n),
    )  # fmt: skip
    got = bin_events(ev, dt_us=700, t0_us=500, n_steps=12, channels=2, height=5, width=6)
    ref = np.zeros((12, 2, 5, 6), np.float32)
    for x, y, t, p in ev.tolist():
        k = (t - 500) // 700
        if 0 <= k < 12 and t >= 500:
            ref[k, p, y, x] += 1
    assert np.array_equal(got, ref)
    b = Bin(dt_us=700, n_steps=12, channels=2, height=5, width=6)
    assert np.array_equal(b(ev, t0_us=500), ref)


def test_bin_rejects_bad_input() -> None:
    ev = events()
    kw = {"dt_us": 100, "t0_us": 0, "n_steps": 10, "channels": 2, "height": 8, "width": 10}
    with pytest.raises(ParameterError, match="outside"):
        bin_events(ev, **{**kw, "width": 9})
    for bad in ({"channels": 3}, {"dt_us": 0}, {"n_steps": 0}):
        with pytest.raises(ParameterError):
            bin_events(ev, **{**kw, **bad})
    with pytest.raises(ParameterError, match="structured"):
        bin_events(np.zeros((3, 4)), **kw)


def test_empty_events_everywhere() -> None:
    ev = np.zeros(0, dtype=EVENT_DTYPE)
    assert crop(ev, x0=0, y0=0, width=2, height=2).size == 0
    assert downsample(ev, factor=2).size == 0
    assert merge_polarity(ev).size == 0
    assert time_window(ev, t0_us=0, t1_us=10).size == 0
    f = bin_events(ev, dt_us=1, t0_us=0, n_steps=2, channels=1, height=2, width=2)
    assert f.shape == (2, 1, 2, 2) and f.sum() == 0
