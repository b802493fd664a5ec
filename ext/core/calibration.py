"""The early-exit rule, replayed on a model's calibration table, and the operating
point a model recommends.

Rule: decide at the first step t with t >= t_min and c(t) >= τ; at t_max decide anyway
(``exit = "max_steps"``). A :class:`~spikecast.ext.core.network.CalibrationTable`
(per-step confidence and correctness of held-out samples, recorded at conversion)
replays the rule exactly for any (τ, t_min, t_max), so a point can be chosen for a
target accuracy and every decision can carry the accuracy expected at its step and
confidence.

The recommended point (:meth:`Calibration.recommend`) is what a user gets with no
flags: the point that decides earliest on average while giving away at most
``tolerance`` (half a point) of the model's *plateau* accuracy, the accuracy of
deciding at the table's last step. Accuracy differences measured on a small table are
noisy, so the loss is bounded, not estimated: a point qualifies only if the one-sided
Clopper-Pearson upper bound (at ``confidence``, 80%) on the fraction of held-out
samples that are right at the plateau but wrong at the point is within the tolerance.
The goal is to stay within 1 point of the plateau on new data; half of that is kept
as a margin, because the point is the cheapest of some 1,400 candidates (the winner's
loss on its own table is optimistic) and live data drift from the table's (with a
1-point tolerance, the MNIST model lost 1.15 points on test images the table never
saw; with half a point, none). With 200 held-out recordings no such loss is admitted
at all (and even none bounds it only at 0.8%, which ``summary()`` reports); with 1000
samples, up to two.

This module is pure numpy: the converter records the point in the model file, the
runtime reads it, and neither imports the other.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from spikecast.ext.core.checks import check_float, check_int, is_finite_number, is_int
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import META_OPERATING_POINT, CalibrationTable

#: The longest decision a point may ask for (about 2.8 h of 1 ms steps): far below the
#: engine's 32-bit step counter, and a bound on the work one decision can cost.
MAX_STEPS = 10_000_000

# Confidence bins for expected accuracy: finer near 1, where decisions happen.
_CONF_EDGES = np.array(
    [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0 + 1e-9]
)
_CONF_EDGE_LIST = tuple(float(e) for e in _CONF_EDGES)
#: Candidate τ: coarse below 0.99, fine above (where small-logit nets live).
#: Stops below 1: τ = 1 never decides (decision_steps), so it is no candidate.
TAU_GRID = tuple(
    float(t)
    for t in np.round(np.concatenate([np.arange(0.10, 0.99, 0.01), np.arange(0.990, 0.9995, 0.001)]), 4)
)
#: Candidate earliest decision steps. Rate estimates z(t) = λ V / t from a few steps
#: are noisy and often confidently wrong, so t_min is chosen with τ.
T_MIN_GRID = (1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 80, 100)


@dataclass(frozen=True)
class OperatingPoint:
    """τ, t_min, t_max and an optional target accuracy that τ is derived from."""

    tau: float = 0.9
    t_min: int = 1
    t_max: int = 200
    target_accuracy: float | None = None

    def __post_init__(self) -> None:
        check_float("tau", self.tau, 0.0, 1.0)
        check_int("t_min", self.t_min, 1, MAX_STEPS)
        check_int("t_max", self.t_max, 1, MAX_STEPS)
        if self.t_max < self.t_min:
            raise ParameterError(f"need 1 <= t_min <= t_max, got t_min={self.t_min}, t_max={self.t_max}")
        if self.target_accuracy is not None:
            check_float("target_accuracy", self.target_accuracy, 0.0, 1.0, lo_open=True)

    def updated(self, changes: Mapping[str, Any]) -> OperatingPoint:
        """A copy with the given fields changed; unknown keys or bad values raise ParameterError."""
        allowed = {"tau": float, "t_min": int, "t_max": int, "target_accuracy": float}
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in allowed:
                raise ParameterError(f"unknown operating-point field {key!r}; use {sorted(allowed)}")
            if value is None and key == "target_accuracy":
                clean[key] = None
                continue
            if not is_finite_number(value):
                raise ParameterError(f"{key} must be a finite number, got {value!r}")
            if allowed[key] is int:
                if float(value) != int(value):
                    raise ParameterError(f"{key} must be a whole number of steps, got {value!r}")
                value = int(value)
            clean[key] = allowed[key](value)
        return replace(self, **clean)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "t_min": self.t_min,
            "t_max": self.t_max,
            "target_accuracy": self.target_accuracy,
        }


@dataclass(frozen=True)
class PolicyStats:
    accuracy: float
    mean_steps: float
    p95_steps: float
    confident_fraction: float


def decision_steps(confidence: np.ndarray, tau: float, t_min: int, t_max: int) -> np.ndarray:
    """(N,) 1-based step at which the rule decides each sample of a (T, N) confidence table.

    τ >= 1 is never reached (a float32 table can hold c = 1.0 where the engine's double
    is just below it): such a rule decides at t_max, as the engine does."""
    t_max = min(t_max, confidence.shape[0])
    conf = confidence[:t_max]
    hit = conf >= tau if tau < 1.0 else np.zeros(conf.shape, bool)
    hit[: t_min - 1] = False
    first = np.argmax(hit, axis=0)
    any_hit = hit.any(axis=0)
    return np.where(any_hit, first + 1, t_max)


def grid_levels(confidence: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """(T, N) how many values of an ascending grid of τ (< 1) each c(t) reaches, compared
    in the table's own dtype, as ``confidence >= tau`` does (int16)."""
    q = np.asarray(taus, dtype=confidence.dtype)
    if q.ndim != 1 or not bool(np.all(q < 1.0)) or not bool(np.all(q[1:] > q[:-1])):
        raise ParameterError("a tau grid is ascending and 1-D, each tau < 1 (tau >= 1 never decides)")
    if len(q) >= np.iinfo(np.int16).max:
        raise ParameterError(f"a tau grid holds fewer than 32767 values, not {len(q)}")
    return np.searchsorted(q, confidence, side="right").astype(np.int16)


def grid_decision_steps(levels: np.ndarray, n_taus: int, t_min: int, t_max: int) -> np.ndarray:
    """(G, N) :func:`decision_steps` for every τ of the grid that made ``levels``
    (:func:`grid_levels`) at once.

    The rule for the grid's k-th τ decides at the first step from t_min on where the
    running maximum of the level exceeds k, so a histogram of that running maximum per
    sample places every τ in one pass."""
    t_max = min(t_max, levels.shape[0])
    n, width = levels.shape[1], n_taus + 1
    if t_min > t_max:
        return np.full((n_taus, n), t_max, np.int64)
    reached = np.maximum.accumulate(levels[t_min - 1 : t_max], axis=0).astype(np.int64)
    hist = np.bincount((reached + width * np.arange(n)).ravel(), minlength=width * n)
    # below[k, s]: steps from t_min on at which sample s has not reached the k-th τ.
    below = np.cumsum(hist.reshape(n, width), axis=1)[:, :-1].T
    return np.where(below < reached.shape[0], t_min + below, t_max)


def binomial_upper(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen k times in n trials: the p
    with P(Binomial(n, p) <= k) = 1 - confidence (bisection; 1.0 if k == n)."""
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence

    def cdf(p: float) -> float:
        logs = [
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(k + 1)
        ]
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class Recommendation:
    """The operating point a model recommends, with what its table says about it."""

    point: OperatingPoint
    plateau_accuracy: float  # deciding every held-out sample at the table's last step
    accuracy: float  # the point, replayed on the table
    mean_steps: float
    lost_upper: float  # upper bound on the plateau accuracy given away
    tolerance: float
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "tau": self.point.tau,
            "t_min": self.point.t_min,
            "t_max": self.point.t_max,
            "plateau_accuracy": self.plateau_accuracy,
            "accuracy": self.accuracy,
            "mean_steps": self.mean_steps,
            "lost_upper": self.lost_upper,
            "tolerance": self.tolerance,
            "samples": self.samples,
            "rule": "fewest mean steps with the plateau loss bounded (Clopper-Pearson, 80%)",
        }


class Calibration:
    """Replays the early-exit rule on a :class:`CalibrationTable`."""

    def __init__(self, table: CalibrationTable) -> None:
        if table.n_samples < 1 or table.n_steps < 1:
            raise ParameterError("the calibration table is empty")
        self.table = table
        self._acc_grid = self._expected_grid()

    @property
    def plateau_accuracy(self) -> float:
        """Accuracy of deciding every held-out sample at the table's last step."""
        return self.accuracy_at(self.table.n_steps)

    def stats(self, tau: float, t_min: int, t_max: int) -> PolicyStats:
        steps = decision_steps(self.table.confidence, tau, t_min, t_max)
        cols = np.arange(self.table.n_samples)
        correct = self.table.correct[steps - 1, cols]
        conf = self.table.confidence[steps - 1, cols]
        return PolicyStats(
            accuracy=float(correct.mean()),
            mean_steps=float(steps.mean()),
            p95_steps=float(np.percentile(steps, 95)),
            confident_fraction=float((conf >= tau).mean()) if tau < 1.0 else 0.0,
        )

    def accuracy_at(self, t: int) -> float:
        """Accuracy of deciding every sample at fixed step t."""
        t = min(max(t, 1), self.table.n_steps)
        return float(self.table.correct[t - 1].mean())

    def tau_for_target(self, target_accuracy: float, t_min: int, t_max: int) -> float | None:
        """Smallest τ on :data:`TAU_GRID` whose replayed accuracy reaches the target, or
        None when no τ does (the target is above what the model reaches by t_max)."""
        for tau in TAU_GRID:
            if self.stats(tau, t_min, t_max).accuracy >= target_accuracy:
                return tau
        return None

    def choose(
        self, target_accuracy: float, t_max: int, t_min_grid: Sequence[int] = T_MIN_GRID
    ) -> OperatingPoint | None:
        """The (τ, t_min) whose replay reaches ``target_accuracy`` with the fewest mean
        steps (for each t_min its smallest such τ), or None if none reaches it."""
        best: tuple[float, OperatingPoint] | None = None
        for t_min in t_min_grid:
            if t_min > t_max:
                continue
            tau = self.tau_for_target(target_accuracy, t_min, t_max)
            if tau is None:
                continue
            steps = self.stats(tau, t_min, t_max).mean_steps
            if best is None or steps < best[0]:
                best = (steps, OperatingPoint(tau=tau, t_min=t_min, t_max=t_max))
        return None if best is None else best[1]

    def recommend(
        self,
        tolerance: float = 0.005,
        confidence: float = 0.8,
        t_min_grid: Sequence[int] = T_MIN_GRID,
    ) -> Recommendation:
        """The point that decides earliest while giving away at most ``tolerance`` of the
        plateau accuracy, bounded at ``confidence`` (module docstring)."""
        t_max = self.table.n_steps
        n = self.table.n_samples
        right_at_end = self.table.correct[t_max - 1]
        cols = np.arange(n)
        allowed = 0
        while allowed < n and binomial_upper(allowed + 1, n, confidence) <= tolerance:
            allowed += 1
        best: tuple[float, float, OperatingPoint] | None = None
        levels = grid_levels(self.table.confidence, TAU_GRID)
        for t_min in t_min_grid:
            if t_min > t_max:
                continue
            steps_grid = grid_decision_steps(levels, len(TAU_GRID), t_min, t_max)
            lost_grid = (right_at_end & ~self.table.correct[steps_grid - 1, cols]).sum(axis=1)
            # Losses only fall as τ rises: the first admissible τ is this t_min's earliest.
            admissible = np.flatnonzero(lost_grid <= allowed)
            if admissible.size:
                g = int(admissible[0])
                steps = steps_grid[g]
                if best is None or steps.mean() < best[0]:
                    tau = TAU_GRID[g]
                    best = (float(steps.mean()), tau, OperatingPoint(tau=tau, t_min=t_min, t_max=t_max))
        if best is None:  # nothing qualifies: decide at the end of the table
            best = (float(t_max), 1.0, OperatingPoint(tau=1.0, t_min=t_max, t_max=t_max))
        point = best[2]
        stats = self.stats(point.tau, point.t_min, point.t_max)
        steps = decision_steps(self.table.confidence, point.tau, point.t_min, t_max)
        lost = int((right_at_end & ~self.table.correct[steps - 1, cols]).sum())
        return Recommendation(
            point=point,
            plateau_accuracy=self.plateau_accuracy,
            accuracy=stats.accuracy,
            mean_steps=stats.mean_steps,
            lost_upper=binomial_upper(lost, n, confidence),
            tolerance=tolerance,
            samples=n,
        )

    def _expected_grid(self) -> np.ndarray:
        conf = self.table.confidence.ravel()
        correct = self.table.correct.ravel().astype(np.float64)
        steps = np.repeat(np.arange(1, self.table.n_steps + 1), self.table.n_samples)
        cbin = np.clip(np.searchsorted(_CONF_EDGES, conf, side="right") - 1, 0, len(_CONF_EDGES) - 2)
        sbin = np.minimum(np.log2(steps).astype(int), 15)
        hits = np.zeros((16, len(_CONF_EDGES) - 1))
        total = np.zeros_like(hits)
        np.add.at(hits, (sbin, cbin), correct)
        np.add.at(total, (sbin, cbin), 1.0)
        # Sparse cells borrow strength from their confidence bin over all steps.
        col_hits, col_total = hits.sum(axis=0), total.sum(axis=0)
        prior = (col_hits + 1.0) / (col_total + 2.0)
        strength = 10.0
        grid: np.ndarray = (hits + strength * prior) / (total + strength)
        return grid

    def expected_accuracy(self, step: int, confidence: float) -> float:
        """Empirical accuracy of held-out predictions at this step and confidence."""
        # bisect on a tuple: a decision's own cost, so no numpy call on scalars here.
        cbin = min(max(bisect.bisect_right(_CONF_EDGE_LIST, confidence) - 1, 0), len(_CONF_EDGE_LIST) - 2)
        sbin = min(max(int(step), 1).bit_length() - 1, 15)
        return float(self._acc_grid[sbin, cbin])


#: Key of the recommended point in ``Network.meta``.
META_KEY = META_OPERATING_POINT


def point_from_meta(meta: Mapping[str, Any], where: str = "model") -> OperatingPoint | None:
    """The operating point a model file records (``meta["operating_point"]``), checked."""
    raw = meta.get(META_KEY)
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not all(is_int(raw.get(k)) for k in ("t_min", "t_max")):
        raise ParameterError(f"{where}: meta.{META_KEY} must hold tau, t_min and t_max")
    return OperatingPoint(tau=raw.get("tau"), t_min=int(raw["t_min"]), t_max=int(raw["t_max"]))  # type: ignore[arg-type]


__all__ = [
    "MAX_STEPS",
    "META_KEY",
    "TAU_GRID",
    "T_MIN_GRID",
    "Calibration",
    "OperatingPoint",
    "PolicyStats",
    "Recommendation",
    "binomial_upper",
    "decision_steps",
    "grid_decision_steps",
    "grid_levels",
    "point_from_meta",
]
