"""bench/ab_engine.py: a build imported from its own tree, the worker's figures, per-round ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import ab_engine  # noqa: E402

NMNIST = ROOT.parent / "shared" / "data" / "nmnist" / "train"


def job(name: str, cpu_ms: float, decisions: list[tuple[int, int]]) -> dict[str, Any]:
    return {"name": name, "tau": 0.9, "t_min": 1, "cpu_ms": cpu_ms, "mean_steps": 2.0,
            "decisions": [list(d) for d in decisions]}


def test_the_speedup_is_taken_per_round_then_its_median() -> None:
    same = [(1, 2), (3, 4)]
    rounds = [{"baseline": {"jobs": [job("a", b, same)]}, "candidate": {"jobs": [job("a", c, same)]}}
              for b, c in ((4.0, 1.0), (6.0, 2.0), (2.0, 1.0))]
    got = ab_engine.summarize(rounds)["a"]
    assert got["speedup_by_round"] == [4.0, 3.0, 2.0]
    assert got["speedup_median"] == 3.0  # not the ratio of the medians (4.0 / 1.0)
    assert got["baseline"]["cpu_ms_median"] == 4.0 and got["candidate"]["cpu_ms_median"] == 1.0
    assert got["same_decisions"] and got["decision_agreement"] == 1.0


def test_different_decisions_are_reported() -> None:
    rounds = [{"baseline": {"jobs": [job("a", 2.0, [(1, 2), (3, 4)])]},
               "candidate": {"jobs": [job("a", 1.0, [(1, 2), (3, 5)])]}}]
    got = ab_engine.summarize(rounds)["a"]
    assert not got["same_decisions"] and got["decision_agreement"] == 0.5


def test_the_import_root_wins_over_the_installed_package(tmp_path: Path) -> None:
    # A fake tree whose spikecast.ext says where it lives.
    tree = tmp_path / "tree"
    for name in ab_engine.PACKAGES:
        (tree / name).mkdir(parents=True)
        (tree / name / "__init__.py").write_text(f"WHERE = {name!r} + ' of the fake tree'\n")
    root = ab_engine.import_root(tree, tmp_path / "root")
    code = "import spikecast.ext as e; print(e.WHERE)"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(root), "PATH": ""},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ext of the fake tree"


@pytest.mark.skipif(not NMNIST.is_dir(), reason="needs ../shared/data/nmnist (see ../shared/data/README.md)")
def test_a_worker_decides_with_its_own_build_on_the_kernel_path_asked(tmp_path: Path) -> None:
    events = tmp_path / "events.npz"
    ab_engine.save_events(2, events)
    root = ab_engine.import_root(ROOT, tmp_path / "root")
    model = ROOT / "bench" / "models" / "nmnist.scn"
    jobs: list[dict[str, Any]] = [{"name": "default", "model": str(model), "tau": None, "t_min": None},
            {"name": "fixed", "model": str(model), "tau": 0.67, "t_min": 5}]
    out = tmp_path / "w.json"
    proc = ab_engine.launch(root, events, jobs, 1, None, out, simd="portable")
    assert proc.wait(timeout=300) == 0
    res = json.loads(out.read_text())
    assert res["engine"].startswith(str(ROOT / "ext")) and res["simd"] == "portable"

    default, fixed = res["jobs"]
    assert default["tau"] == 0.999 and default["t_min"] == 1  # the model's recommended point
    assert (fixed["tau"], fixed["t_min"]) == (0.67, 5)
    for j in res["jobs"]:
        assert j["cpu_ms"] > 0 and len(j["decisions"]) == 2
        assert all(steps >= j["t_min"] for _, steps in j["decisions"])
    # The same decisions as the engine in this process (its widest kernel path).
    from spikecast.ext import CompiledNetwork, Engine, EventSteps
    from spikecast.ext.core.network import Network

    plan = CompiledNetwork(Network.load(model))
    with np.load(events) as z:
        cols = {k: z[k] for k in z.files}
    n0 = int(cols["n"][0])
    st = EventSteps.from_arrays(*(cols[k][:n0] for k in ("x", "y", "p", "step")), plan.input_shape)
    r = Engine(plan).run(st, 10_000, tau=0.67, t_min=5)
    assert fixed["decisions"][0] == [r.class_index, r.steps]


def test_an_unknown_baseline_is_refused_with_its_name() -> None:
    with pytest.raises(SystemExit, match="'no-such-ref' is not a commit"):
        ab_engine.export_baseline("no-such-ref")
