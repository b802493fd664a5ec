"""bench/models.py end to end: on synthetic images with an untrained ResNet (no data
needed), and on CIFAR-10 with the committed ResNet where the data set is present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'convert' extra)")
pytest.importorskip("matplotlib", reason="the bench extra is not installed")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
RESNET = "resnet20_cifar10"

# bench/ is not a package: its scripts import each other from their folder, and so does this test.
sys.path.insert(0, str(ROOT / "bench"))
import models  # noqa: E402
from resnet_cifar import ResNetCifar  # noqa: E402


def check_resnet(r: dict[str, Any]) -> None:
    assert set(r["snn_accuracy_by_T"]) == {"32", "64", "128", "256"}
    assert all(0.0 <= v <= 1.0 for v in r["snn_accuracy_by_T"].values())
    assert 0.0 <= r["ann_accuracy"] <= 1.0
    ee = r["early_exit"]
    assert 1 <= ee["t_min"] <= ee["mean_steps"] <= ee["t_max"]
    assert ee["replay_on_trace_agrees"] in (True, None)
    assert r["synops_per_decision"] == ee["synops_per_decision"] > 0
    assert len(r["accuracy_curve"]) == 256


def test_script_runs_on_synthetic_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "resnet.pt"
    torch.save(ResNetCifar(3).state_dict(), weights)
    models.main(["--quick", "--synthetic", "--weights", str(weights), "--out-dir", str(tmp_path),
                 "--threads", "1", "--tv-names", "resnet18"])  # fmt: skip
    r = json.loads((tmp_path / "models-quick.json").read_text())
    check_resnet(r[RESNET])
    (row,) = r["torchvision"]
    assert row["name"] == "resnet18" and row["converts"]
    assert row["reference_agreement"]["class_agreement"] == 1.0
    assert row["reference_agreement_weights_on_2^-8_grid"]["spike_exact"]
    assert row["ms_per_step"] > 0
    assert (tmp_path / "models-quick.png").stat().st_size > 0
    assert (tmp_path / f"{RESNET}-quick.scn").exists()


@pytest.mark.slow
def test_script_runs_on_cifar10(tmp_path: Path) -> None:
    if not (DATA / "cifar10" / "cifar10_jpeg.npz").exists():
        pytest.skip(f"{DATA / 'cifar10'} not found: the CIFAR-10 data is not next to this checkout")
    if not (ROOT / "bench" / "models" / f"{RESNET}.pt").exists():
        pytest.skip(f"bench/models/{RESNET}.pt not present; run bench/resnet_cifar.py")
    out = subprocess.run(
        [sys.executable, "bench/models.py", "--quick", "--skip-torchvision", "--threads", "1",
         "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "models-quick.json").read_text())
    check_resnet(r[RESNET])
    assert r[RESNET]["ann_accuracy"] > 0.3  # a trained network, far above chance
