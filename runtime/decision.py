"""The decision rule as the runtime uses it: which operating point is in force.

The rule itself, its replay on a model's calibration table and the recommended point
live in :mod:`spikecast.ext.core.calibration` (the converter records the point, the
runtime reads it). Here: :func:`initial_point` picks the point a run starts with
(explicit flags over the model's recommended point over a generic default) and
:func:`resolve` turns a target accuracy into τ, reporting a target the model cannot
reach instead of silently running every decision to t_max.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from spikecast.ext.core.calibration import (
    T_MIN_GRID,
    Calibration,
    OperatingPoint,
    PolicyStats,
    Recommendation,
    decision_steps,
    point_from_meta,
)
from spikecast.ext.core.errors import ModelFileError, ParameterError
from spikecast.ext.core.network import Network, small_table_warning


@dataclass(frozen=True)
class PointChoice:
    """The operating point in force, where it came from, and any warning for the user."""

    point: OperatingPoint
    source: str  # "flags" | "model" | "default"
    warning: str | None = None
    recommendation: Recommendation | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {**self.point.as_dict(), "source": self.source}
        if self.warning is not None:
            out["warning"] = self.warning
        return out


def recommended(
    network: Network, calibration: Calibration | None
) -> tuple[OperatingPoint, Recommendation | None]:
    """The model's own point: recorded in its file, else derived from its table, else None."""
    try:
        point = point_from_meta(network.meta)
    except ParameterError as exc:
        raise ModelFileError(str(exc)) from exc
    rec = calibration.recommend() if calibration is not None else None
    if point is None and rec is not None:
        point = rec.point
    if point is None:
        raise LookupError("no recommended point")
    return point, rec


def initial_point(
    network: Network,
    calibration: Calibration | None,
    explicit: OperatingPoint | None = None,
    changes: Mapping[str, Any] | None = None,
) -> PointChoice:
    """The point a run starts with: ``explicit`` if given, else the model's recommended
    point, else :class:`OperatingPoint`'s generic default (with a warning); then any
    ``changes`` (flags) on top, and a target accuracy resolved against the table."""
    rec: Recommendation | None = None
    warning: str | None = None
    if explicit is not None:
        base, source = explicit, "flags"
    else:
        try:
            base, rec = recommended(network, calibration)
            source = "model"
            warning = small_table_warning(network.meta)
        except LookupError:
            base, source = OperatingPoint(), "default"
            warning = (
                "this model has no calibration table, so no recommended operating point: using the "
                f"generic tau={base.tau}, t_min={base.t_min}, t_max={base.t_max} (convert with holdout= "
                "to get one)"
            )
    if changes:
        base = base.updated(changes)
        source = "flags"
    point, unreachable = resolve(base, calibration)
    return PointChoice(point, source, unreachable or warning, rec)


_SOURCES = {"model": "the model's recommended point", "flags": "from the flags",
            "command": "from a command", "default": "a generic default"}


def point_line(choice: PointChoice, exit_signal: str, calibration: Calibration | None) -> str:
    """One line for the log at start: the point in force, where it came from, and what
    the model's table says of it."""
    p = choice.point
    line = (f"operating point: tau={p.tau:g} t_min={p.t_min} t_max={p.t_max} "
            f"({_SOURCES.get(choice.source, choice.source)}, {exit_signal} rule)")
    if p.target_accuracy is not None:
        line += f" for a target accuracy of {p.target_accuracy:g}"
    if calibration is not None:
        s = calibration.stats(p.tau, p.t_min, p.t_max)
        line += (f"; on its calibration table {s.accuracy:.2%} after {s.mean_steps:.1f} mean steps "
                 f"(plateau {calibration.plateau_accuracy:.2%})")
    return line


def resolve(point: OperatingPoint, calibration: Calibration | None) -> tuple[OperatingPoint, str | None]:
    """Derive τ from the target accuracy when one is set. A target the model cannot reach
    by t_max keeps the model's recommended τ and t_min and returns a warning saying so."""
    if point.target_accuracy is None:
        return point, None
    if calibration is None:
        raise ParameterError(
            "target_accuracy needs a network with a calibration table (convert with holdout=)"
        )
    tau = calibration.tau_for_target(point.target_accuracy, point.t_min, point.t_max)
    if tau is not None:
        return replace(point, tau=tau), None
    rec = calibration.recommend()
    used = replace(point, tau=rec.point.tau, t_min=min(rec.point.t_min, point.t_max))
    stats = calibration.stats(used.tau, used.t_min, used.t_max)
    return used, (
        f"target accuracy {point.target_accuracy:.4f} is above what this model reaches on its "
        f"calibration table by t_max={point.t_max} (plateau {calibration.plateau_accuracy:.4f}); "
        f"using the model's recommended tau={used.tau}, t_min={used.t_min} "
        f"(table accuracy {stats.accuracy:.4f}, {stats.mean_steps:.1f} mean steps)"
    )


__all__ = [
    "T_MIN_GRID",
    "Calibration",
    "OperatingPoint",
    "PointChoice",
    "PolicyStats",
    "decision_steps",
    "initial_point",
    "point_line",
    "recommended",
    "resolve",
]
