"""``spikecast run`` without a broker: decisions as JSON lines on stdout, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from service_kit import polarity_net, uniform_events
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
