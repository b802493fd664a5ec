"""The early-exit rule replayed on a calibration table, operating points, the recommended point."""

from __future__ import annotations

import numpy as np
import pytest
from spikecast.ext.core.calibration import (
    MAX_STEPS,
    TAU_GRID,
    Calibration,
    OperatingPoint,
    binomial_upper,
    decision_steps,
    grid_decision_steps,
    grid_levels,
    point_from_meta,
)
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import CalibrationTable


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


def test_operating_points_refuse_what_would_break_a_service() -> None:
    # cmd/set payloads seen in the wild: infinities, huge step counts, booleans.
    p = OperatingPoint()
    for bad in ({"t_max": float("inf")}, {"t_max": 1e400}, {"t_min": 10**400}, {"tau": float("nan")},
                {"t_max": 3_000_000_000}, {"tau": True}, {"t_max": MAX_STEPS + 1}):
        with pytest.raises(ParameterError):
            p.updated(bad)
    assert p.updated({"t_max": MAX_STEPS}).t_max == MAX_STEPS


def test_tau_for_an_unreachable_target_is_none() -> None:
    cal = Calibration(table())
    assert cal.tau_for_target(1.0, 1, 3) is None  # at t <= 3 sample 2 and 3 are wrong
    assert cal.choose(1.0, 3) is None
    p = cal.choose(1.0, 6)
    assert p is not None and cal.stats(p.tau, p.t_min, p.t_max).accuracy == 1.0


def test_binomial_upper_bound_matches_closed_forms() -> None:
    # k = 0: 1 - (1 - c)^(1/n) exactly ("rule of three" for large n).
    for n in (3, 200, 1000):
        assert binomial_upper(0, n, 0.8) == pytest.approx(1 - 0.2 ** (1 / n), rel=1e-6)
    assert binomial_upper(5, 5, 0.8) == 1.0
    assert binomial_upper(1, 200, 0.8) > binomial_upper(0, 200, 0.8)


def big_table(n: int = 1000, t: int = 50, seed: int = 0) -> tuple[CalibrationTable, np.ndarray]:
    """Samples whose confidence rises to 1 by a per-sample step; each is right from its
    own settling step on; 3% are never right (the plateau is 97%)."""
    rng = np.random.default_rng(seed)
    settle = rng.integers(5, 30, n)
    steps = np.arange(1, t + 1)[:, None]
    conf = np.clip(steps / settle[None], 0.0, 1.0).astype(np.float32) * 0.999
    correct = steps >= settle[None]
    correct[:, : int(0.03 * n)] = False
    return CalibrationTable(conf, correct), settle


def test_recommended_point_gives_away_at_most_the_tolerance() -> None:
    tab, _ = big_table()
    cal = Calibration(tab)
    rec = cal.recommend(tolerance=0.01)
    assert cal.plateau_accuracy == pytest.approx(0.97)
    assert rec.plateau_accuracy - rec.accuracy <= 0.01
    assert rec.lost_upper <= 0.01 and rec.mean_steps < tab.n_steps
    # It decides earlier than any stricter point, and a looser tolerance is earlier still.
    assert cal.recommend(tolerance=0.0).mean_steps >= rec.mean_steps >= cal.recommend(0.05).mean_steps
    # Re-checked on fresh samples of the same kind: within the tolerance (+ sampling noise).
    fresh, _ = big_table(seed=1)
    s = decision_steps(fresh.confidence, rec.point.tau, rec.point.t_min, rec.point.t_max)
    acc = fresh.correct[s - 1, np.arange(fresh.n_samples)].mean()
    assert acc >= fresh.correct[-1].mean() - 0.015


def test_small_tables_admit_no_loss() -> None:
    tab, _ = big_table(n=100)
    rec = Calibration(tab).recommend(tolerance=0.01)
    s = decision_steps(tab.confidence, rec.point.tau, rec.point.t_min, rec.point.t_max)
    right_at_end = tab.correct[-1]
    assert not (right_at_end & ~tab.correct[s - 1, np.arange(100)]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_decision_steps_equal_the_rule_one_tau_at_a_time(dtype: type) -> None:
    rng = np.random.default_rng(3)
    # Random walks that rise and fall, values on the grid itself, ties with tau, and
    # samples that never reach it.
    conf = np.clip(0.5 + np.cumsum(rng.normal(0, 0.08, (40, 30)), axis=0), 0, 1).astype(dtype)
    conf[5:9, :4] = np.asarray(TAU_GRID[40], dtype)
    conf[:, -3:] = 0.05
    conf[-1, -1] = 1.0
    levels = grid_levels(conf, TAU_GRID)
    for t_min, t_max in ((1, 40), (3, 40), (7, 20), (40, 40), (45, 40), (1, 1000)):
        grid = grid_decision_steps(levels, len(TAU_GRID), t_min, t_max)
        for g, tau in enumerate(TAU_GRID):
            np.testing.assert_array_equal(grid[g], decision_steps(conf, tau, t_min, t_max),
                                          err_msg=f"tau={tau} t_min={t_min} t_max={t_max}")
    for bad in ([0.5, 1.0], [0.6, 0.5], [[0.5]]):
        with pytest.raises(ParameterError, match="tau < 1"):
            grid_levels(conf, bad)


def test_recommend_is_the_exhaustive_search() -> None:
    tab, _ = big_table(n=300, seed=5)
    cal = Calibration(tab)
    for tolerance in (0.0, 0.01, 0.05):
        allowed = 0
        while binomial_upper(allowed + 1, tab.n_samples, 0.8) <= tolerance:
            allowed += 1
        right_at_end, cols = tab.correct[-1], np.arange(tab.n_samples)
        best = None
        for t_min in (1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 80, 100):
            for tau in TAU_GRID:
                s = decision_steps(tab.confidence, tau, t_min, tab.n_steps)
                if int((right_at_end & ~tab.correct[s - 1, cols]).sum()) <= allowed:
                    if best is None or s.mean() < best[0]:
                        best = (s.mean(), OperatingPoint(tau=tau, t_min=t_min, t_max=tab.n_steps))
                    break
        assert best is not None
        assert cal.recommend(tolerance=tolerance).point == best[1]


def test_point_from_meta_checks_what_it_reads() -> None:
    assert point_from_meta({}) is None
    p = point_from_meta({"operating_point": {"tau": 0.8, "t_min": 3, "t_max": 40}})
    assert p == OperatingPoint(tau=0.8, t_min=3, t_max=40)
    for bad in ({"tau": 2.0, "t_min": 1, "t_max": 5}, {"tau": 0.5, "t_min": "1", "t_max": 5}, [1, 2]):
        with pytest.raises(ParameterError):
            point_from_meta({"operating_point": bad})
