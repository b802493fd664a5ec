"""spikecast.ext: the compiled event-driven engine, on the torch-free core (:mod:`.core`).

The engine names load on first use, so ``import spikecast.ext.core`` (the model file,
errors, checks) does not load the compiled module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spikecast.ext.engine import (
        EXIT_REASONS,
        BatchResult,
        CompiledNetwork,
        Engine,
        EventSteps,
        ExitReason,
        RunResult,
        Trace,
        compile_network,
        run_batch,
        trace,
    )

__all__ = [
    "EXIT_REASONS",
    "BatchResult",
    "CompiledNetwork",
    "Engine",
    "EventSteps",
    "ExitReason",
    "RunResult",
    "Trace",
    "compile_network",
    "run_batch",
    "trace",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from spikecast.ext import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'spikecast.ext' has no attribute {name!r}")
