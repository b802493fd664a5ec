"""spikecast.ext.core: the torch-free ground floor that everything else stands on.

- :mod:`.errors`: the one error hierarchy (:class:`SpikecastError` and its children);
- :mod:`.network`: the ``.scn`` model file (:class:`Network`, :class:`InputSpec`, load/save);
- :mod:`.exits`: the exit reasons of a decision, shared with the compiled engine;
- :mod:`.events`: the one event dtype;
- :mod:`.checks`: argument checks shared by every layer.

It imports numpy and the standard library only: the converter (torch side), the
compiled engine and the runtime all import it, and it imports none of them.
"""

from __future__ import annotations

from spikecast.ext.core.errors import (
    ConversionError,
    ModelFileError,
    ParameterError,
    PublishError,
    SpikecastError,
    StreamError,
)
from spikecast.ext.core.events import EVENT_DTYPE, make_events, validate_events
from spikecast.ext.core.exits import EXIT_REASONS, ExitReason
from spikecast.ext.core.network import CalibrationTable, InputSpec, Layer, Network, load_network

__all__ = [
    "EVENT_DTYPE",
    "EXIT_REASONS",
    "CalibrationTable",
    "ConversionError",
    "ExitReason",
    "InputSpec",
    "Layer",
    "ModelFileError",
    "Network",
    "ParameterError",
    "PublishError",
    "SpikecastError",
    "StreamError",
    "load_network",
    "make_events",
    "validate_events",
]
