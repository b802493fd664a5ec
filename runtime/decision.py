"""The early-exit rule and the calibration table that prices it.

Rule: publish at the first step t with t >= t_min and c(t) >= τ; at t_max publish
anyway with ``exit = "max_steps"``. The calibration table (per-step confidence and
correctness of a held-out set, recorded at conversion) replays the rule exactly for
any (τ, t_min, t_max), so τ can be chosen for a target accuracy and every decision
can carry the accuracy expected at its step and confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import CalibrationTable

# Confidence bins for expected accuracy: finer near 1, where decisions happen.
_CONF_EDGES = np.array(
    [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0 + 1e-9]
)


@dataclass(frozen=True)
class OperatingPoint:
    """τ, t_min, t_max and an optional target accuracy that τ is derived from."""

    tau: float = 0.9
    t_min: int = 1
    t_max: int = 200
    target_accuracy: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ParameterError(f"tau must be in [0, 1], got {self.tau}")
        if self.t_min < 1 or self.t_max < self.t_min:
            raise ParameterError(f"need 1 <= t_min <= t_max, got t_min={self.t_min}, t_max={self.t_max}")
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise ParameterError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")

    def updated(self, changes: dict[str, Any]) -> OperatingPoint:
        """A copy with the given fields changed; unknown keys or bad types raise ParameterError."""
        allowed = {"tau": float, "t_min": int, "t_max": int, "target_accuracy": float}
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in allowed:
                raise ParameterError(f"unknown operating-point field {key!r}; use {sorted(allowed)}")
            if value is None and key == "target_accuracy":
                clean[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterError(f"{key} must be a number, got {value!r}")
            if allowed[key] is int and float(value) != int(value):
                raise ParameterError(f"{key} must be a whole number of steps, got {value!r}")
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
    """(N,) 1-based step at which the rule decides each sample of a (T, N) confidence table."""
    t_max = min(t_max, confidence.shape[0])
    conf = confidence[:t_max]
    hit = conf >= tau
    hit[: t_min - 1] = False
    first = np.argmax(hit, axis=0)
    any_hit = hit.any(axis=0)
    return np.where(any_hit, first + 1, t_max)


class Calibration:
    """Replays the early-exit rule on a :class:`CalibrationTable`."""

    def __init__(self, table: CalibrationTable) -> None:
        if table.n_samples < 1 or table.n_steps < 1:
            raise ParameterError("the calibration table is empty")
        self.table = table
        self._acc_grid = self._expected_grid()

    def stats(self, tau: float, t_min: int, t_max: int) -> PolicyStats:
        steps = decision_steps(self.table.confidence, tau, t_min, t_max)
        cols = np.arange(self.table.n_samples)
        correct = self.table.correct[steps - 1, cols]
        conf = self.table.confidence[steps - 1, cols]
        return PolicyStats(
            accuracy=float(correct.mean()),
            mean_steps=float(steps.mean()),
            p95_steps=float(np.percentile(steps, 95)),
            confident_fraction=float((conf >= tau).mean()),
        )

    def accuracy_at(self, t: int) -> float:
        """Accuracy of deciding every sample at fixed step t."""
        t = min(max(t, 1), self.table.n_steps)
        return float(self.table.correct[t - 1].mean())

    def tau_for_target(self, target_accuracy: float, t_min: int, t_max: int) -> float:
        """Smallest τ on a fine grid whose replayed accuracy reaches the target.

        If no τ reaches it (the target is above what t_max allows), returns 1.0,
        which means: always run to t_max.
        """
        for tau in np.round(np.concatenate([np.arange(0.10, 0.99, 0.01), np.arange(0.990, 1.0, 0.001)]), 4):
            if self.stats(float(tau), t_min, t_max).accuracy >= target_accuracy:
                return float(tau)
        return 1.0

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
        cbin = int(
            np.clip(np.searchsorted(_CONF_EDGES, confidence, side="right") - 1, 0, len(_CONF_EDGES) - 2)
        )
        sbin = min(int(np.log2(max(step, 1))), 15)
        return float(self._acc_grid[sbin, cbin])


#: Candidate earliest decision steps. Rate estimates z(t) = λ V / t from a few ms of
#: events are noisy and often confidently wrong, so t_min is chosen with τ.
T_MIN_GRID = (10, 20, 30, 40, 50, 60, 80, 100)
def choose_operating_point(
    cal: Calibration, target_accuracy: float, t_max: int, t_min_grid: Sequence[int] = T_MIN_GRID
) -> OperatingPoint:
    """The (τ, t_min) whose replay on the calibration table reaches ``target_accuracy``
    with the fewest mean steps: for each t_min the smallest such τ (Calibration's own
    search), then the t_min that decides earliest. If none reaches it, τ = 1 (run to t_max)."""
    best: tuple[float, OperatingPoint] | None = None
    for t_min in t_min_grid:
        if t_min > t_max:
            continue
        tau = cal.tau_for_target(target_accuracy, t_min, t_max)
        stats = cal.stats(tau, t_min, t_max)
        if stats.accuracy < target_accuracy:
            continue
        if best is None or stats.mean_steps < best[0]:
            best = (stats.mean_steps, OperatingPoint(tau=tau, t_min=t_min, t_max=t_max))
    if best is None:
        return OperatingPoint(tau=1.0, t_min=min(t_min_grid[0], t_max), t_max=t_max)
    return best[1]




def resolve(point: OperatingPoint, calibration: Calibration | None) -> OperatingPoint:
    """Derive τ from the target accuracy when one is set and a table exists."""
    if point.target_accuracy is None:
        return point
    if calibration is None:
        raise ParameterError(
            "target_accuracy needs a network with a calibration table (convert with holdout=)"
        )
    tau = calibration.tau_for_target(point.target_accuracy, point.t_min, point.t_max)
    return replace(point, tau=tau)


__all__ = [
    "T_MIN_GRID",
    "Calibration",
    "OperatingPoint",
    "PolicyStats",
    "choose_operating_point",
    "decision_steps",
    "resolve",
]
