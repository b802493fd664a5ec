"""Which operating point a run starts with, and targets the model cannot reach."""

from __future__ import annotations

import numpy as np
import pytest
from spikecast.ext.core.calibration import Calibration, OperatingPoint
from spikecast.ext.core.network import CalibrationTable, InputSpec, Layer, Network
from spikecast.runtime.decision import initial_point, resolve


def table(n: int = 400, t: int = 40) -> CalibrationTable:
    rng = np.random.default_rng(0)
    settle = rng.integers(3, 20, n)
    steps = np.arange(1, t + 1)[:, None]
    conf = (np.clip(steps / settle[None], 0, 1) * 0.99).astype(np.float32)
    correct = steps >= settle[None]
    correct[:, :8] = False  # plateau 98%
    return CalibrationTable(conf, correct)


def net(meta: dict | None = None, calibration: CalibrationTable | None = None) -> Network:
    w = np.full((2, 4), 0.5, np.float32)
    layer = Layer("linear", "fc", (1, 2, 2), (2,), w, None, spiking=False)
    return Network(InputSpec("frame", (1, 2, 2)), (layer,), ("a", "b"), calibration=calibration,
                   meta=meta or {})


def test_no_flags_means_the_models_recommended_point() -> None:
    tab = table()
    cal = Calibration(tab)
    choice = initial_point(net(calibration=tab), cal)
    assert choice.source == "model" and choice.warning is None
    assert choice.point == cal.recommend().point
    assert cal.stats(choice.point.tau, choice.point.t_min, choice.point.t_max).accuracy >= (
        cal.plateau_accuracy - 0.01
    )
    # A point recorded in the model file wins over the derived one.
    recorded = {"operating_point": {"tau": 0.7, "t_min": 2, "t_max": 30}}
    assert initial_point(net(recorded, tab), cal).point == OperatingPoint(0.7, 2, 30)


def test_flags_apply_over_the_recommended_point() -> None:
    tab = table()
    cal = Calibration(tab)
    rec = cal.recommend().point
    choice = initial_point(net(calibration=tab), cal, changes={"tau": 0.5})
    assert choice.source == "flags" and choice.point == OperatingPoint(0.5, rec.t_min, rec.t_max)
    explicit = OperatingPoint(0.6, 1, 10)
    assert initial_point(net(calibration=tab), cal, explicit).point == explicit


def test_a_model_without_a_table_warns_and_uses_the_generic_point() -> None:
    choice = initial_point(net(), None)
    assert choice.source == "default" and choice.point == OperatingPoint()
    assert choice.warning is not None and "no calibration table" in choice.warning


def test_resolve_derives_tau_from_a_reachable_target() -> None:
    cal = Calibration(table())
    p, warning = resolve(OperatingPoint(t_max=40, target_accuracy=0.9), cal)
    assert warning is None and cal.stats(p.tau, 1, 40).accuracy >= 0.9
    with pytest.raises(ValueError, match="calibration table"):
        resolve(OperatingPoint(target_accuracy=0.9), None)


def test_an_unreachable_target_is_reported_not_run_to_t_max() -> None:
    cal = Calibration(table())
    p, warning = resolve(OperatingPoint(t_max=40, target_accuracy=0.995), cal)
    assert warning is not None and "above what this model reaches" in warning and "0.9800" in warning
    rec = cal.recommend().point
    assert p.tau < 1.0 and p == OperatingPoint(rec.tau, rec.t_min, 40, 0.995)
    assert cal.stats(p.tau, p.t_min, p.t_max).mean_steps < 40
