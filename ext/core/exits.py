"""Why a decision was made: the exit reasons, spelled once.

The compiled engine declares the same list as ``cpdef enum ExitCode`` in
``ext/_engine.pxd`` (code i is ``EXIT_REASONS[i]``); ``tests/ext/core/test_exits.py``
checks that the two agree.
"""

from __future__ import annotations

from typing import Literal, get_args

ExitReason = Literal["running", "confident", "max_steps", "end_of_stream"]
#: Exit reasons by the compiled engine's exit code.
EXIT_REASONS: tuple[ExitReason, ...] = get_args(ExitReason)

RUNNING: ExitReason = "running"
CONFIDENT: ExitReason = "confident"
MAX_STEPS: ExitReason = "max_steps"
END_OF_STREAM: ExitReason = "end_of_stream"
#: The reasons a published decision can carry (never "running").
DECISION_EXITS: tuple[ExitReason, ...] = (CONFIDENT, MAX_STEPS, END_OF_STREAM)

__all__ = [
    "CONFIDENT",
    "DECISION_EXITS",
    "END_OF_STREAM",
    "EXIT_REASONS",
    "MAX_STEPS",
    "RUNNING",
    "ExitReason",
]
