"""The exit reasons are spelled once in Python and once in Cython, and they agree."""

from __future__ import annotations

from spikecast.ext import _engine  # type: ignore[attr-defined]
from spikecast.ext.core.exits import DECISION_EXITS, EXIT_REASONS, RUNNING


def test_cython_enum_matches_the_python_literal() -> None:
    codes = sorted(_engine.ExitCode, key=int)
    assert [int(c) for c in codes] == list(range(len(EXIT_REASONS)))
    names = [c.name.removeprefix("EXIT_").lower() for c in codes]
    assert names == ["none", *EXIT_REASONS[1:]]
    assert EXIT_REASONS[0] == RUNNING  # code 0: still running
    assert RUNNING not in DECISION_EXITS and set(DECISION_EXITS) < set(EXIT_REASONS)
