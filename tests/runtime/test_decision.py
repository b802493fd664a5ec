"""The early-exit rule replayed on a calibration table, and operating-point updates."""

from __future__ import annotations

import numpy as np
import pytest
from spikecast.ext.core.network import CalibrationTable
from spikecast.runtime.decision import Calibration, OperatingPoint, decision_steps, resolve


def table() -> CalibrationTable:
    # 4 samples over 6 steps; sample 3 never gets confident
    conf = np.array(
        [
            [0.2, 0.5, 0.3, 0.1],
            [0.6, 0.5, 0.3, 0.1],
            [0.95, 0.7, 0.3, 0.1],
            [0.97, 0.91, 0.92, 0.1],
            [0.99, 0.95, 0.92, 0.2],
            [0.99, 0.99, 0.95, 0.3],
        ],
        np.float32,
    )
    correct = np.array(
        [
            [0, 0, 0, 0],
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 0, 1],
            [1, 1, 1, 1],
            [1, 1, 1, 1],
        ],
        bool,
    )
    return CalibrationTable(conf, correct)


def test_decision_steps_follow_the_rule() -> None:
    t = table()
    assert decision_steps(t.confidence, 0.9, 1, 6).tolist() == [3, 4, 4, 6]
    assert decision_steps(t.confidence, 0.9, 4, 6).tolist() == [4, 4, 4, 6]
    assert decision_steps(t.confidence, 0.9, 1, 3).tolist() == [3, 3, 3, 3]
    assert decision_steps(t.confidence, 1.0, 1, 6).tolist() == [6, 6, 6, 6]


def test_stats_and_tau_for_a_target() -> None:
    cal = Calibration(table())
    s = cal.stats(0.9, 1, 6)
    assert s.accuracy == pytest.approx(0.75)  # sample 2 decides at step 4, where it is wrong
    assert s.mean_steps == pytest.approx(17 / 4)
    assert cal.accuracy_at(6) == 1.0
    tau = cal.tau_for_target(1.0, 1, 6)
    assert cal.stats(tau, 1, 6).accuracy == 1.0
    assert cal.stats(tau - 0.01, 1, 6).accuracy < 1.0  # the smallest such tau on the grid


def test_expected_accuracy_is_a_probability_that_grows_with_confidence() -> None:
    cal = Calibration(table())
    lo, hi = cal.expected_accuracy(2, 0.3), cal.expected_accuracy(5, 0.99)
    assert 0.0 <= lo < hi <= 1.0


def test_operating_point_updates_validate() -> None:
    p = OperatingPoint()
    assert p.updated({"tau": 0.5, "t_max": 50}).as_dict()["tau"] == 0.5
    with pytest.raises(ValueError, match="unknown"):
        p.updated({"taux": 1})
    with pytest.raises(ValueError, match="tau"):
        p.updated({"tau": 1.5})
    with pytest.raises(ValueError, match="whole number"):
        p.updated({"t_min": 2.5})
    with pytest.raises(ValueError, match="number"):
        p.updated({"tau": "high"})
    with pytest.raises(ValueError, match="t_min"):
        OperatingPoint(t_min=10, t_max=5)


def test_resolve_derives_tau_from_target() -> None:
    cal = Calibration(table())
    p = resolve(OperatingPoint(t_max=6, target_accuracy=1.0), cal)
    assert cal.stats(p.tau, 1, 6).accuracy == 1.0
    with pytest.raises(ValueError, match="calibration table"):
        resolve(OperatingPoint(target_accuracy=0.9), None)
