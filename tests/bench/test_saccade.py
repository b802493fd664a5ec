"""Synthetic saccade events: determinism, ranges, order, and realism against N-MNIST."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.events import EVENT_DTYPE

# bench/ is not a package: its scripts import each other from their folder, and so does this test.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from saccade import (
    TRIANGLE,
    SaccadeParams,
    saccade_events,
    saccade_events_batch,
    trajectory,
)

DATA = Path(__file__).parents[2].parent / "shared" / "data"


def ring(size: int = 28) -> np.ndarray:
    """A digit-like test image: a thick ring, 0..255."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    return (np.clip(3.0 - np.abs(r - 8.0), 0, 1) * 255).astype(np.uint8)


def test_deterministic_given_seed() -> None:
    a = saccade_events(ring(), rng=np.random.default_rng(5))
    b = saccade_events(ring(), rng=np.random.default_rng(5))
    c = saccade_events(ring(), rng=np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_events_are_valid_and_sorted() -> None:
    ev = saccade_events(ring(), rng=np.random.default_rng(0))
    assert ev.dtype == EVENT_DTYPE
    assert int(ev["x"].max()) < 34 and int(ev["y"].max()) < 34
    assert int(ev["t"].min()) >= 0 and int(ev["t"].max()) < 300_000
    assert bool(np.all(np.diff(ev["t"]) >= 0))
    assert set(np.unique(ev["p"]).tolist()) == {0, 1}


def test_counts_polarity_and_timing_are_plausible() -> None:
    ev = saccade_events(ring(), rng=np.random.default_rng(1))
    assert 1_500 < ev.size < 12_000
    assert 0.4 < float(ev["p"].mean()) < 0.6
    # three saccades: activity in each third, quiet at the end of each
    per_third = np.bincount(ev["t"] // 100_000, minlength=3)
    assert per_third.min() > ev.size / 6
    pauses = (ev["t"] % 100_000) >= 92_000
    assert pauses.sum() < 0.06 * ev.size


def test_refractory_period_is_respected() -> None:
    params = SaccadeParams(refractory_sigma=0.0, noise_hz=0.0)
    ev = saccade_events(ring(), rng=np.random.default_rng(2), params=params)
    key = ev["y"].astype(np.int64) * 34 + ev["x"]
    order = np.lexsort((ev["t"], key))
    same = key[order][1:] == key[order][:-1]
    gaps = np.diff(ev["t"][order])[same]
    assert int(gaps.min()) >= params.refractory_us - 1  # rounding to whole us


def test_blank_image_gives_noise_only() -> None:
    blank = np.zeros((28, 28), np.uint8)
    assert (
        saccade_events(blank, rng=np.random.default_rng(0), params=SaccadeParams(noise_hz=0)).size
        == 0
    )
    noisy = saccade_events(blank, rng=np.random.default_rng(0), params=SaccadeParams(noise_hz=10))
    assert 2_000 < noisy.size < 5_000  # 34*34 px * 10 Hz * 0.3 s = 3468 expected


def test_batch_and_float_images() -> None:
    imgs = np.stack([ring(), ring()[::-1], np.zeros((28, 28), np.uint8)])
    out = saccade_events_batch(imgs.astype(np.float64) / 255, rng=np.random.default_rng(0))
    assert len(out) == 3
    assert all(e.dtype == EVENT_DTYPE for e in out)
    assert out[0].size > 1_000 and out[1].size > 1_000 and out[2].size < 1_000


def test_duration_and_smaller_sensor() -> None:
    ev = saccade_events(
        ring(20), rng=np.random.default_rng(0), duration_us=150_000, params=SaccadeParams(size=24)
    )
    assert int(ev["t"].max()) < 150_000 and int(ev["x"].max()) < 24


def test_trajectory_visits_the_triangle() -> None:
    path = trajectory(300, SaccadeParams())
    assert np.allclose(path[0], TRIANGLE[0]) and np.allclose(path[-1], TRIANGLE[0])
    assert np.allclose(path[95], TRIANGLE[1]) and np.allclose(path[195], TRIANGLE[2])
    assert np.abs(path).max() <= 3.0  # a 28x28 digit stays inside 34x34


@pytest.mark.parametrize(
    "image,kwargs",
    [
        (np.zeros((40, 40), np.uint8), {}),
        (np.full((28, 28), 2.0), {}),
        (np.full((28, 28), np.nan), {}),
        (np.zeros((28, 28), np.int32), {}),
        (np.zeros((2, 28, 28), np.uint8), {}),
        (np.zeros((28, 28), np.uint8), {"duration_us": 10}),
    ],
)
def test_rejects_bad_input(image: np.ndarray, kwargs: dict[str, int]) -> None:
    with pytest.raises(ParameterError):
        saccade_events(image, rng=np.random.default_rng(0), **kwargs)


def test_rejects_bad_params_and_rng() -> None:
    with pytest.raises(ParameterError):
        SaccadeParams(threshold=0)
    with pytest.raises(ParameterError):
        SaccadeParams(move_window=(0.9, 0.1))
    with pytest.raises(ParameterError):
        saccade_events(ring(), rng=np.random.RandomState(0))  # type: ignore[arg-type]


def test_similar_to_real_nmnist() -> None:
    """Same digits as real recordings 00001..00100: median count within 15%."""
    mnist, folder = DATA / "mnist" / "mnist.npz", DATA / "nmnist" / "train"
    if not (mnist.is_file() and folder.is_dir()):
        pytest.skip(f"../shared/data/mnist or nmnist not found: {DATA}")
    from spikecast.runtime.readers import read_events

    images = np.load(mnist)["x_train"][:100]
    real = np.array([len(read_events(folder / f"{i:05d}.bin")) for i in range(1, 101)])
    sim = np.array([e.size for e in saccade_events_batch(images, rng=np.random.default_rng(0))])
    assert abs(np.median(sim) / np.median(real) - 1) < 0.15
    assert np.corrcoef(sim, real)[0, 1] > 0.4  # busier digits give busier recordings
