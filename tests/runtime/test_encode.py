"""Frames from files (runtime/encode.py, ``load_frames``): layouts, scaling, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spikecast.ext.core.errors import StreamError
from spikecast.ext.core.network import InputSpec
from spikecast.runtime.encode import load_frames

RGB = InputSpec("frame", (3, 4, 5), scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def saved(tmp_path: Path, arr: np.ndarray) -> Path:
    np.save(tmp_path / "f.npy", arr)
    return tmp_path / "f.npy"


def test_channel_first_and_channel_last_stacks_give_the_same_frames(tmp_path: Path) -> None:
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5)).astype(np.uint8)
    first = load_frames(saved(tmp_path, raw), RGB)
    last = load_frames(saved(tmp_path, raw.transpose(0, 2, 3, 1)), RGB)
    one = load_frames(saved(tmp_path, raw[1].transpose(1, 2, 0)), RGB)  # one (H, W, C) image
    np.testing.assert_array_equal(first, last)
    np.testing.assert_array_equal(one, first[1:])
    # (raw * scale - mean) / std, per channel
    np.testing.assert_allclose(first, (raw / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)


def test_one_channel_frames_may_drop_the_channel_axis(tmp_path: Path) -> None:
    gray = InputSpec("frame", (1, 4, 5), scale=1 / 255)
    raw = np.arange(40, dtype=np.uint8).reshape(2, 4, 5)
    np.testing.assert_allclose(load_frames(saved(tmp_path, raw), gray)[:, 0], raw / 255, rtol=1e-6)
    assert load_frames(saved(tmp_path, raw[0]), gray).shape == (1, 1, 4, 5)


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((2, 3, 5, 4)), r"frames of shape \(3, 5, 4\) do not match the network input \(3, 4, 5\)"),
        (np.full((1, 3, 4, 5), np.nan), "NaN or infinity"),
    ],
)
def test_frames_that_do_not_fit_are_refused_with_the_file(
    tmp_path: Path, arr: np.ndarray, match: str
) -> None:
    path = saved(tmp_path, arr)
    with pytest.raises(StreamError, match=match) as exc:
        load_frames(path, RGB)
    assert str(path) in str(exc.value)
