"""``spikecast convert`` (converters/cli.py): what the command line adds to convert()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converter needs torch (the 'convert' extra)")
from spikecast.ext.core.network import Network  # noqa: E402
from spikecast.runtime.cli import main  # noqa: E402
from torch import nn  # noqa: E402

FACTORY = """
from torch import nn

def make():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
"""


def model_args(tmp_path: Path) -> list[str]:
    """``--model file.py:factory --weights state_dict``, the README's way."""
    (tmp_path / "nets.py").write_text(FACTORY)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return ["--model", f"{tmp_path / 'nets.py'}:make", "--weights", str(tmp_path / "w.pt")]


def test_convert_takes_a_fractional_input_scale_and_reports_its_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (60, 1, 6, 6))
    np.save(tmp_path / "calib.npy", (raw[:40] / 255).astype(np.float32))
    np.savez(tmp_path / "hold.npz", x=(raw[40:] / 255).astype(np.float32), y=rng.integers(0, 3, 20))
    argv = ["convert", *model_args(tmp_path), "--calibration", str(tmp_path / "calib.npy"),
            "--holdout", str(tmp_path / "hold.npz"), "--calibration-steps", "20", "--quiet"]  # fmt: skip
    assert main([*argv, "--input-scale", "1/255", "--out", str(tmp_path / "a.scn")]) == 0
    out = capsys.readouterr().out
    # The same float as convert(input_scale=1 / 255): the file matches the Python API's.
    assert Network.load(tmp_path / "a.scn").input.scale == 1 / 255
    assert "lambda percentile: " in out and "(chosen on the holdout table of 99, 99.5, 99.9, 100)" in out
    assert "recommended point: tau=" in out and "on the table after" in out
    # Frames with a holdout set: one spike per step weighed against bursts of 4.
    assert "(chosen on the holdout run of 1, 4: the least work per decision)" in out
    assert "rate after 64 steps matches its ANN activation on 40 calibration frames" in out
    assert main([*argv, "--max-spikes", "1", "--bias-steps", "0", "--out", str(tmp_path / "one.scn")]) == 0
    out = capsys.readouterr().out
    assert "spikes per step" not in out and "biases: calibrated" not in out
    assert Network.load(tmp_path / "one.scn").max_spikes == 1
    assert main([*argv, "--readout", "membrane", "--max-spikes", "1", "--bias-steps", "0",
                 "--out", str(tmp_path / "mem.scn")]) == 0  # fmt: skip
    assert "read-out: membrane" in capsys.readouterr().out
    assert Network.load(tmp_path / "mem.scn").readout == "membrane"
    with pytest.raises(SystemExit):
        main([*argv, "--input-scale", "1/0", "--out", str(tmp_path / "b.scn")])
    assert "not a number or a fraction like 1/255: '1/0'" in capsys.readouterr().err


def test_convert_refuses_raw_pixels_with_a_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = np.random.default_rng(1).integers(0, 256, (20, 1, 6, 6)).astype(np.float32)
    np.save(tmp_path / "raw.npy", raw)
    argv = ["convert", *model_args(tmp_path), "--calibration", str(tmp_path / "raw.npy"),
            "--input-scale", "1/255", "--quiet", "--out", str(tmp_path / "c.scn")]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "look like raw sensor values (whole numbers up to 255)" in err and "x * 0.00392157" in err
    assert not (tmp_path / "c.scn").exists()
