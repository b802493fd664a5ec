"""``spikecast run`` without a broker: decisions as JSON lines on stdout, clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from service_kit import brightness_net, polarity_net, uniform_events
from spikecast.runtime.cli import main
from spikecast.runtime.payload import validate_decision_payload


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model = polarity_net(lam=3.0).save(tmp_path / "net.scn")
    rec = tmp_path / "rec"
    rec.mkdir()
    for name, pol in (("on", 1), ("off", 0)):
        np.savez(
            rec / f"{name}.npz",
            events=uniform_events(100, 20, polarity=pol, seed=pol),
            width=np.int64(34),
            height=np.int64(34),
        )
    return model, rec


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    rc = main(["run", *argv])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


def test_run_writes_one_valid_decision_line_per_file(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, rec = files
    rc, lines, _ = run(
        capsys,
        "--model",
        str(model),
        "--source",
        str(rec / "*.npz"),
        "--device",
        "edge1",
        "--tau",
        "0.9",
    )
    assert rc == 0
    for d in lines:
        validate_decision_payload(d)
    assert [(d["stream"], d["label"], d["device"]) for d in lines] == [
        ("off", "off", "edge1"),
        ("on", "on", "edge1"),
    ]


def test_all_decisions_and_window_policy(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, rec = files
    rc, lines, _ = run(
        capsys,
        "--model",
        str(model),
        "--source",
        str(rec / "on.npz"),
        "--all-decisions",
        "--policy",
        "window",
        "--window-ms",
        "25",
        "--tau",
        "0.9",
    )
    assert rc == 0
    # 100 steps in windows of 25: one decision per window, each from its window's start.
    t0 = lines[0]["sensor_t0_us"]
    assert [d["sensor_t0_us"] - t0 for d in lines] == [0, 25_000, 50_000, 75_000]
    assert [d["seq"] for d in lines] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "nothing-here.npz"], "no such file"),
        (["--source", "nothing-*.npz"], "matches no files"),
        (["--source", "mqtt"], "needs --mqtt"),
        (["--source", "x.npz", "--mqtt", "mqtt://u:pw@localhost"], "must not carry a password"),
        (["--source", "x.npz", "--ha-discovery"], "--ha-discovery needs --mqtt"),
    ],
)
def test_errors_exit_2_with_a_message(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    model, _ = files
    rc, lines, err = run(capsys, "--model", str(model), *argv)
    assert rc == 2 and lines == []
    assert err.startswith("spikecast: error:") and message in err


def test_missing_model_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "--model", str(tmp_path / "absent.scn"), "--source", "mqtt")
    assert rc == 2 and "absent.scn" in err


# -- loss accounting, sources, geometry ------------------------------------------------

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BENCH_MODEL = Path(__file__).resolve().parents[2] / "bench" / "models" / "nmnist.scn"


def shared(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data/{'/'.join(parts)} not found (shared data not present)")
    return path


def summary(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("spikecast: ")]
    assert lines, err
    return lines[-1]


def nmnist_bytes(events: np.ndarray) -> bytes:
    """N-MNIST .bin records for events with t < 2**23."""
    out = np.zeros((len(events), 5), np.uint8)
    t = events["t"].astype(np.int64)
    out[:, 0], out[:, 1] = events["x"], events["y"]
    out[:, 2] = (events["p"].astype(np.int64) << 7) | (t >> 16)
    out[:, 3], out[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    return out.tobytes()


def test_a_clean_run_ends_with_a_summary_line(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, rec = files
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(rec / "*.npz"))
    assert rc == 0 and len(lines) == 2
    assert summary(err) == "spikecast: 2 decisions from 2 files (4,000 events); dropped: none"


def test_a_frame_file_run_counts_frames_and_says_which_point_it_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spikecast.service")
    model = brightness_net().save(tmp_path / "net.scn")
    frames = np.zeros((3, 4, 4), np.uint8)
    frames[1:] = 255  # one dark frame, two bright ones
    np.save(tmp_path / "frames.npy", frames)
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(tmp_path / "frames.npy"))
    assert rc == 0 and [d["label"] for d in lines] == ["dark", "bright", "bright"]
    assert summary(err) == "spikecast: 3 decisions from 1 file (3 frames); dropped: none"
    # What the run decided with, where it came from, and what the model's table says of it.
    # (The CLI logs to stderr; here pytest captures the log.)
    assert "operating point: tau=" in caplog.text and "(the model's recommended point, rate rule); " \
        "on its calibration table" in caplog.text


def test_inspect_prints_the_layers_and_the_default_point(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = files
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "conv0" in out and "calibration table: 50 held-out samples x 60 steps" in out
    assert "default operating point: tau=" in out and "(the model's recommended point, rate rule); on " \
        "its calibration table" in out
    assert "other points (t_min=1):" in out


def test_the_cli_moves_what_it_loaded_out_of_the_collectors_reach(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI owns its process: what start-up made (modules, the model) is frozen, so
    full collections while serving scan only what serving made (shorter pauses)."""
    import gc

    model, rec = files
    gc.unfreeze()
    try:
        rc, lines, _ = run(capsys, "--model", str(model), "--source", str(rec / "*.npz"))
        assert rc == 0 and len(lines) == 2
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()  # the test process goes on collecting as before


def test_files_wait_for_room_in_the_queue_instead_of_being_shed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 30 files of 2,000 events through a queue of 300 events: the old queue shed most.
    model = polarity_net(lam=3.0).save(tmp_path / "net.scn")
    rec = tmp_path / "rec"
    rec.mkdir()
    for k in range(30):
        np.savez(rec / f"f{k:02d}.npz", events=uniform_events(100, 20, polarity=k % 2, seed=k),
                 width=np.int64(34), height=np.int64(34))
    argv = ["--model", str(model), "--source", str(rec), "--tau", "0.99", "--t-max", "100"]
    rc, small, err = run(capsys, *argv, "--queue-events", "300")
    assert rc == 0, err
    assert summary(err).endswith("from 30 files (60,000 events); dropped: none")
    rc, big, _ = run(capsys, *argv)
    assert rc == 0
    # Every file decided, none cut short: the same decisions as with an ample queue.
    key = lambda d: (d["stream"], d["label"], d["steps"], d["exit"], d["sensor_t1_us"])  # noqa: E731
    assert [key(d) for d in small] == [key(d) for d in big]
    assert [d["stream"] for d in small] == [f"f{k:02d}" for k in range(30)]


def test_real_nmnist_files_are_all_decided_through_a_small_queue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    train = shared("nmnist", "train")
    rc, lines, err = run(capsys, "--model", str(BENCH_MODEL), "--source", str(train / "000[0-4]?.bin"),
                         "--target-accuracy", "0.99", "--queue-events", "20000")
    assert rc == 0, err
    assert len(lines) == 49 and summary(err).startswith("spikecast: 49 decisions from 49 files")
    assert summary(err).endswith("dropped: none")


def test_a_directory_source_means_its_event_files(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model, rec = files
    (rec / "labels.csv").write_text("file,label\non.npz,1\n")
    (rec / "more").mkdir()
    # An N-MNIST binary under another extension is recognised by its records.
    (rec / "bs.bs2").write_bytes(nmnist_bytes(uniform_events(100, 20, polarity=1, seed=5)))
    (rec / "renamed.dat1").write_bytes(nmnist_bytes(uniform_events(100, 20, polarity=0, seed=6)))
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(rec), "--tau", "0.9")
    assert rc == 0, err
    assert [(d["stream"], d["label"]) for d in lines] == [
        ("bs", "on"), ("off", "off"), ("on", "on"), ("renamed", "off")
    ]
    assert "skipped 2 entries that are not event files: labels.csv, more" in caplog.text


def test_a_file_whose_name_is_no_topic_level_is_still_decided(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model, _ = files
    rec = files[1] / "odd"
    rec.mkdir()
    (rec / "a+b#c.bs2").write_bytes(nmnist_bytes(uniform_events(100, 20, polarity=1, seed=5)))
    (rec / "cmd.bs2").write_bytes(nmnist_bytes(uniform_events(100, 20, polarity=0, seed=6)))
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(rec), "--tau", "0.9")
    assert rc == 0, err
    assert [d["stream"] for d in lines] == ["a_b_c", "cmd_"]
    assert "its decisions carry stream 'a_b_c'" in caplog.text
    assert summary(err).endswith("dropped: none")


def test_unknown_extensions_take_format(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model, _ = files
    odd = tmp_path / "sample.xyz"
    ev = uniform_events(100, 20, polarity=1, seed=3)
    ev["x"] = 40  # beyond 34: the N-MNIST sniffer declines, so only --format can tell
    odd.write_bytes(nmnist_bytes(ev))
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(odd))
    assert rc == 2 and lines == []
    assert "--format" in err and "fmt=" in err and "nmnist" in err
    rc, _, err = run(capsys, "--model", str(model), "--source", str(odd), "--format", "bogus")
    assert rc == 2 and "format must be one of" in err


def test_unreadable_files_among_several_are_counted_and_exit_3(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model, rec = files
    (rec / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(rec / "*.npz"))
    assert rc == 3
    assert [d["stream"] for d in lines] == ["off", "on"]
    assert "skipped an unreadable file" in caplog.text and "broken.npz" in caplog.text
    assert summary(err).endswith("from 2 files (4,000 events); dropped: 1 unreadable file")


def test_a_bigger_sensor_is_refused_with_the_flags_that_fit(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model, _ = files
    ev = uniform_events(100, 40, polarity=1, seed=4)
    ev["x"] = ev["x"].astype(np.int64) * 14 + 82  # the digit spans the sensor's centre
    ev["y"] = ev["y"].astype(np.int64) * 14 + 2
    wide = tmp_path / "vga.npz"
    np.savez(wide, events=ev, width=np.int64(640), height=np.int64(480))
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(wide))
    assert rc == 2 and lines == []
    assert "vga.npz" in err and "640x480" in err and "34x34" in err
    assert "--crop 82 2 476 476 --downsample 14" in err and "--fit" in err
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(wide), "--fit")
    assert rc == 0 and [d["label"] for d in lines] == ["on"]
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(wide),
                         "--crop", "82", "2", "476", "476", "--downsample", "14")
    assert rc == 0 and [d["label"] for d in lines] == ["on"]
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(wide), "--fit",
                         "--downsample", "14")
    assert rc == 2 and "--fit" in err


def test_a_file_of_another_sensor_among_several_is_skipped_counted_and_exit_3(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model, rec = files
    for name in ("vga1", "vga2"):
        ev = uniform_events(100, 40, polarity=1, seed=4)
        ev["x"] = ev["x"].astype(np.int64) * 14 + 82  # the digit spans the sensor's centre
        ev["y"] = ev["y"].astype(np.int64) * 14 + 2
        np.savez(rec / f"{name}.npz", events=ev, width=np.int64(640), height=np.int64(480))
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(rec))
    assert rc == 3 and sorted(d["stream"] for d in lines) == ["off", "on"]
    assert summary(err) == ("spikecast: 2 decisions from 4 files (12,000 events); dropped: "
                            "2 files of a sensor that does not fit the input (see --fit)")
    # One warning per sensor size, with the flags that fit it.
    warned = [r.getMessage() for r in caplog.records if "another sensor size" in r.getMessage()]
    assert len(warned) == 1 and "--crop 82 2 476 476 --downsample 14" in warned[0]
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(rec), "--fit")
    assert rc == 0 and len(lines) == 4


def test_a_stream_mostly_outside_the_input_is_reported_not_decided(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model, rec = files
    # A 34x34 sensor cropped to its top-left 8x8: about 95% of the events fall outside.
    rc, lines, err = run(capsys, "--model", str(model), "--source", str(rec / "on.npz"),
                         "--crop", "0", "0", "8", "8")
    assert rc == 3 and lines == []
    assert "on.npz" in caplog.text and "fall outside the 34x34 network input" in caplog.text
    assert "1 file not decided (events mostly outside the input)" in summary(err)


@pytest.mark.parametrize(
    ("name", "size", "flags"),
    [
        ("gen3_640x480_evt2.raw", "640x480", "--crop 82 2 476 476 --downsample 14"),
        ("gen41_1280x720_evt3.raw", "1280x720", "--crop 283 3 714 714 --downsample 21"),
    ],
)
def test_real_dvs_recordings_of_other_sizes_are_refused(
    capsys: pytest.CaptureFixture[str], name: str, size: str, flags: str
) -> None:
    path = shared("dvs", name)
    rc, lines, err = run(capsys, "--model", str(BENCH_MODEL), "--source", str(path))
    assert rc == 2 and lines == []
    assert name in err and size in err and "34x34" in err and flags in err
