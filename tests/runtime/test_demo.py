"""``spikecast demo``: runs with no arguments and no broker, prints decisions, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from spikecast.runtime.demo import bundled_data, load_bundle, run_demo

DECISION_KEYS = {
    "stream", "label", "true", "correct", "confidence", "expected_accuracy", "steps", "exit",
    "sensor_ms", "stream_ms", "latency_ms", "wall_ms", "synops",
}  # fmt: skip


def _check_records(records: list[dict]) -> None:
    assert len(records) == 10, records
    assert sorted(r["true"] for r in records) == [str(d) for d in range(10)]
    for r in records:
        assert set(r) == DECISION_KEYS
        assert r["label"] in [str(d) for d in range(10)]
        assert 0.0 < r["confidence"] <= 1.0
        assert r["exit"] in ("confident", "max_steps", "end_of_stream")
        assert 1 <= r["steps"] <= 400
        assert r["sensor_ms"] == pytest.approx(r["steps"] * 1.0)
        assert r["sensor_ms"] <= r["stream_ms"] + 1.0
        assert r["latency_ms"] >= 0 and r["wall_ms"] >= 0
        assert r["synops"] > 0
        assert r["correct"] == (r["label"] == r["true"])
    assert sum(r["correct"] for r in records) >= 7, "the demo network should get most digits right"


def test_bundle_is_small_event_network() -> None:
    with bundled_data() as folder:
        net, streams = load_bundle(folder)
        size = (folder / "nmnist.scn").stat().st_size
    assert net.input.kind == "events" and net.input.shape == (2, 34, 34)
    assert net.calibration is not None
    assert size < 1_000_000
    assert len(streams) == 10


def test_run_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    records = run_demo()
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == records
    _check_records(records)
    assert "correct" in err


def test_higher_tau_never_decides_earlier() -> None:
    low = {r["stream"]: r for r in run_demo(tau=0.5)}
    high = {r["stream"]: r for r in run_demo(tau=1.0)}
    for name, r in high.items():
        assert r["steps"] >= low[name]["steps"]
        # c(t) >= 1.0 only when softmax saturates in float32; otherwise the stream runs out.
        assert r["exit"] != "confident" or r["confidence"] >= 0.9999


def test_cli_demo_subprocess_without_torch() -> None:
    """`spikecast demo` with no arguments, in a fresh interpreter where torch cannot load."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        sys.modules["tonic"] = None
        from spikecast.runtime.cli import main
        rc = main(["demo"])
        assert "torch" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        sys.exit(rc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    _check_records(records)
    assert "correct" in proc.stderr


def test_cli_demo_rejects_bad_tau() -> None:
    from spikecast.runtime.cli import main

    assert main(["demo", "--tau", "1.5"]) == 2
