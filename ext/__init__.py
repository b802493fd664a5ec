"""spikecast.ext: the compiled event-driven engine and its validating Python wrappers."""

from spikecast.ext.engine import (
    EXIT_REASONS,
    BatchResult,
    CompiledNetwork,
    Engine,
    EventSteps,
    ExitReason,
    RunResult,
    compile_network,
    run_batch,
)

__all__ = [
    "EXIT_REASONS",
    "BatchResult",
    "CompiledNetwork",
    "Engine",
    "EventSteps",
    "ExitReason",
    "RunResult",
    "compile_network",
    "run_batch",
]
