"""bench/fuzz.py, bench/faults.py and bench/soak.py in their --quick form, and the
contracts of the committed bench/results/fuzz.json, faults.json and soak.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("SPIKECAST_DATA", ROOT.parent / "shared" / "data"))
FUZZ_TARGETS = {"nmnist", "aedat4", "evt2", "evt3", "dat", "npy", "npz", "packet", "network", "cmd_set"}
FAULT_SCENARIOS = {"broker_restart", "far_future_t0", "command_flood", "worker_kill",
                   "worker_failover", "worker_hang"}


def need_data() -> None:
    for p in (DATA / "dvs" / "nmnist_sample.bin", DATA / "nmnist" / "train"):
        if not p.exists():
            pytest.skip(f"{p} not found: the shared data is not next to this checkout")


def check_fuzz(r: dict[str, Any], inputs: int) -> None:
    assert FUZZ_TARGETS <= set(r), sorted(r)
    for name in FUZZ_TARGETS:
        t = r[name]
        assert t["inputs"] >= inputs, (name, t["inputs"])
        assert t["accepted"] + t["clean_errors"] + t["other_exceptions"] + t["crashes"] + t["hangs"] \
            == t["inputs"], (name, t)
        assert t["crashes"] == 0 and t["hangs"] == 0, (name, t["crash_examples"])
        assert t["other_exceptions"] == 0, (name, t["other_exception_examples"])
        assert t["accepted"] >= 1, name  # the unmutated seeds parse
        assert 0 < t["peak_rss_mb"] < 1024, (name, t["peak_rss_mb"])
        # Traced peak per input <= 20 x max(input size, the stated 64 kB floor).
        assert t["memory_floor_bytes"] == 64 * 1024, (name, t)
        assert t["memory_goal_met"] and t["worst_memory_over_input"] <= 20, (name, t)


def check_faults(r: dict[str, Any]) -> None:
    assert FAULT_SCENARIOS <= set(r), sorted(r)
    for name in FAULT_SCENARIOS:
        s = r[name]
        for key in ("decisions_expected", "delivered", "duplicates", "lost", "counted_drops"):
            assert key in s, (name, key)
        assert s["lost"] == 0, (name, s)
        assert s["decisions_expected"] > 0 and s["delivered"] >= s["decisions_expected"], (name, s)
    assert r["broker_restart"]["delivered"] > r["broker_restart"]["delivered_before_outage"]
    assert r["far_future_t0"]["decisions_after_far_future"] > 0
    assert r["far_future_t0"]["counted_drops"].get("packets_bad_time") == 1
    flood = r["command_flood"]
    assert flood["good_command_applied"] and flood["bad_commands_counted"] == flood["bad_commands_sent"]
    assert r["worker_kill"]["last_will_offline"]
    for name in ("worker_failover", "worker_hang"):
        s = r[name]
        assert s["failover_s"] is not None and s["will_after_s"] is not None, (name, s)
        assert sum(s["streams_taken_over"].values()) == s["moved_streams"] > 0, (name, s)
    # A crash is seen at once; a hang only when the keepalive runs out.
    assert r["worker_failover"]["will_after_s"] < 1.0
    assert r["worker_hang"]["will_after_s"] >= 1.5 * r["worker_hang"]["keepalive_s"] * 0.9


def test_fuzz_quick_finds_nothing(tmp_path: Path) -> None:
    need_data()
    pytest.importorskip("aedat", reason="AEDAT4 needs the spikecast[dvs] extra")
    out = tmp_path / "fuzz.json"
    run = subprocess.run([sys.executable, "bench/fuzz.py", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    check_fuzz(json.loads(out.read_text()), 300)


def test_faults_quick_lose_nothing(tmp_path: Path) -> None:
    need_data()
    need_broker()
    out = tmp_path / "faults.json"
    run = subprocess.run([sys.executable, "bench/faults.py", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    check_faults(json.loads(out.read_text()))


def check_soak(r: dict[str, Any]) -> None:
    for key in ("minutes", "streams", "events", "decisions", "rss_mb_start", "rss_mb_end",
                "rss_slope_mb_per_min", "lost"):
        assert key in r, key
    assert r["lost"] == 0 and r["duplicates"] == 0, r
    assert r["decisions"] > 0 and r["events"] > 0 and r["delivered"] == r["decisions"], r


def need_broker() -> None:
    if not (shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK)):
        pytest.skip("no mosquitto binary")
    pytest.importorskip("paho.mqtt", reason="paho-mqtt (aiomqtt's dependency) is missing")


def test_soak_quick_loses_nothing(tmp_path: Path) -> None:
    need_data()
    need_broker()
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "bench/soak.py", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())
    check_soak(r)
    assert r["streams"] == 2 and r["minutes"] >= 0.3


def load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.exists():
        pytest.skip(f"{path} not present; run the bench script that writes it")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_committed_fuzz_results_meet_the_goals() -> None:
    check_fuzz(load("fuzz.json"), 10_000)


def test_committed_fault_results_lose_nothing() -> None:
    check_faults(load("faults.json"))


def test_committed_soak_results_lose_nothing_and_do_not_grow() -> None:
    r = load("soak.json")
    check_soak(r)
    assert r["minutes"] >= 10 and r["streams"] >= 4
    # Flat once the decision history (10,000) is full: the last third of the run.
    assert abs(r["rss_slope_last_third_mb_per_min"]) < 0.2, r["rss_slope_last_third_mb_per_min"]
