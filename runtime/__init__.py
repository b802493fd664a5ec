"""spikecast.runtime: sources, encoders, the early-exit rule, publishers, service and CLI.

Importing this package stays light: no torch, no MQTT client until used.
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

__all__ = [
    "EVENT_DTYPE",
    "ConversionError",
    "ModelFileError",
    "ParameterError",
    "PublishError",
    "SpikecastError",
    "StreamError",
    "make_events",
    "validate_events",
]
