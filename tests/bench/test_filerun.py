"""bench/filerun.py on a few real recordings, and the contract of its committed results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
NMNIST = ROOT.parent / "shared" / "data" / "nmnist" / "train"
MODEL = ROOT / "bench" / "models" / "nmnist.scn"

sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.skipif(not NMNIST.is_dir(), reason="needs ../shared/data/nmnist (see ../shared/data/README.md)")
def test_spikecast_run_decides_like_the_engine_alone(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # common.machine() reports the torch version
    import filerun

    out = tmp_path / "filerun.json"
    filerun.main(["--files", "12", "--repeats", "1", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["files"] == 12 and r["every_file_decided_every_repeat"]
    assert r["decisions_equal_engine_alone"] and r["exit_status"] == 0
    assert r["engine_alone_cpu_s"] > 0 and r["spikecast_run_cpu_s"] > 0


def test_committed_results_hold_their_fields() -> None:
    r = json.loads((RESULTS / "filerun.json").read_text())
    assert r["files"] == 1000 and r["repeats"] >= 3
    assert r["every_file_decided_every_repeat"] and r["decisions_equal_engine_alone"]
    assert r["overhead"] == pytest.approx(r["spikecast_run_cpu_s"] / r["engine_alone_cpu_s"] - 1)
    assert r["goals"]["overhead_15pct_met"] == (r["overhead"] <= 0.15)
