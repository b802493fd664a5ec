"""What a --source names (a file, a glob, a directory) and how a sensor's geometry
is checked against the network input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spikecast.ext.core.errors import ParameterError, StreamError
from spikecast.ext.core.network import InputSpec
from spikecast.runtime.encode import SpatialMap, check_geometry, fit_map
from spikecast.runtime.readers import detect_format, read_events
from spikecast.runtime.sources import list_sources

SPEC = InputSpec("events", (2, 34, 34), dt_us=1000)


def nmnist_records(n: int, *, x: int = 5) -> bytes:
    """``n`` N-MNIST records at (x, 3), one per microsecond."""
    rows = [bytes([x, 3, 0, (t >> 8) & 0xFF, t & 0xFF]) for t in range(n)]
    return b"".join(rows)


def test_an_nmnist_binary_under_another_name_is_recognised_by_its_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sample.bs2"
    path.write_bytes(nmnist_records(50))
    assert detect_format(path) == "nmnist"
    rec = read_events(path)
    assert (rec.width, rec.height, len(rec)) == (34, 34, 50)
    path.write_bytes(nmnist_records(50, x=60))  # outside 34x34: not N-MNIST by content
    with pytest.raises(StreamError, match="--format"):
        detect_format(path)
    path.write_bytes(nmnist_records(50)[:-1])  # not whole records
    with pytest.raises(StreamError, match="cannot tell"):
        detect_format(path)


def test_a_directory_lists_its_event_files_and_skips_the_rest(tmp_path: Path) -> None:
    for name in ("b.bin", "a.npz", "c.bs2", "labels.csv", ".hidden.bin", "notes.txt"):
        (tmp_path / name).write_bytes(nmnist_records(20))
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    got = list_sources(str(tmp_path))
    assert [p.name for p in got.paths] == ["a.npz", "b.bin", "c.bs2", "labels.csv"]
    assert [p.name for p in got.skipped] == [".hidden.bin", "notes.txt", "sub"]
    assert not got.single
    frames = list_sources(str(tmp_path / "*.bin"))
    assert [p.name for p in frames.paths] == ["b.bin"]  # a glob skips hidden files itself
    assert list_sources(str(tmp_path / "b.bin")).single
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StreamError, match="no event files"):
        list_sources(str(empty))


def test_fit_takes_the_largest_centred_region_of_the_input_shape() -> None:
    assert fit_map(640, 480, 34, 34) == SpatialMap((82, 2, 476, 476), 14)
    assert fit_map(68, 68, 34, 34) == SpatialMap(None, 2)
    assert fit_map(78, 42, 34, 34) == SpatialMap((22, 4, 34, 34), 1)
    for w, h in ((640, 480), (1280, 720), (320, 240), (78, 42)):
        m = fit_map(w, h, 34, 34)
        assert m.mapped_size(w, h) == (34, 34)
    with pytest.raises(ParameterError, match="smaller"):
        fit_map(20, 40, 34, 34)


def test_geometry_is_refused_fitted_or_warned() -> None:
    assert check_geometry("f", (34, 34), SPEC, SpatialMap()) == (SpatialMap(), None)
    with pytest.raises(ParameterError, match=r"f: the sensor is 640x480 but the network takes "
                       r"34x34: add --crop 82 2 476 476 --downsample 14"):
        check_geometry("f", (640, 480), SPEC, SpatialMap())
    with pytest.raises(ParameterError, match=r"\(46x35 after --downsample 14\)"):
        check_geometry("f", (640, 480), SPEC, SpatialMap(None, 14))
    ok = SpatialMap((82, 2, 476, 476), 14)
    assert check_geometry("f", (640, 480), SPEC, ok) == (ok, None)
    assert check_geometry("f", (640, 480), SPEC, SpatialMap(), fit=True) == (ok, None)
    mapping, warning = check_geometry("f", (32, 34), SPEC, SpatialMap())
    assert mapping == SpatialMap() and warning is not None and "32x34" in warning
    with pytest.raises(ParameterError, match="no crop fits"):
        check_geometry("f", (20, 100), SPEC, SpatialMap())


def test_count_outside_after_the_mapping() -> None:
    ev = np.zeros(4, [("x", "u2"), ("y", "u2"), ("t", "i8"), ("p", "u1")])
    ev["x"] = [0, 33, 34, 100]
    ev["y"] = [0, 0, 0, 0]
    assert SpatialMap().count_outside(ev, 34, 34) == 2
    assert SpatialMap((1, 0, 40, 34), 1).count_outside(ev, 34, 34) == 2  # x=0 and x=100
    assert SpatialMap(None, 4).count_outside(ev, 34, 34) == 0


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_count_outside_without_a_crop_matches_the_mapping(factor: int) -> None:
    # The no-crop shortcut (bounds on x and y) counts what the mapped coordinates say.
    from spikecast.ext.core.events import make_events

    rng = np.random.default_rng(factor)
    for hi in (34 * factor, 34 * factor + 5, 200):
        n = 500
        ev = make_events(rng.integers(0, hi, n), rng.integers(0, hi, n), np.arange(n), np.ones(n, int))
        m = SpatialMap(None, factor)
        xs, ys, keep = m.apply(ev["x"], ev["y"])
        expected = int((~(keep & (xs < 34) & (ys < 34))).sum())
        assert m.count_outside(ev, 34, 34) == expected
    assert SpatialMap(None, factor).count_outside(ev[:0], 34, 34) == 0


def test_a_file_name_becomes_a_valid_stream_level() -> None:
    from spikecast.runtime.mqtt.topics import MAX_NAME_CHARS, validate_name
    from spikecast.runtime.sources import stream_name

    assert stream_name("00042") == "00042"
    assert stream_name("00042", "cam0") == "cam0-00042"
    assert stream_name("a+b#c/d\x00e") == "a_b_c_d_e"
    assert stream_name("cmd") == "cmd_" and stream_name("workers") == "workers_"
    assert stream_name("") == "_"
    long = stream_name("x" * 1000)
    assert len(long) == MAX_NAME_CHARS
    for s in ("a+b#c", "cmd", "", "x" * 1000):
        validate_name(stream_name(s))
