"""The one error hierarchy of spikecast.

Every error spikecast raises on purpose derives from :class:`SpikecastError`, so
callers can catch the whole family at once. Errors about a bad argument value
also derive from :class:`ValueError`, as the standard library does.
"""

from __future__ import annotations


class SpikecastError(Exception):
    """Root of every error that spikecast raises on purpose."""


class ConversionError(SpikecastError):
    """A torch model cannot be converted; the message names the node and the fix."""


class ModelFileError(SpikecastError):
    """A Network file is missing, corrupt, truncated, tampered with or from the future."""


class StreamError(SpikecastError):
    """An event file, frame or live packet is malformed; the message names where."""


class PublishError(SpikecastError):
    """A decision could not be published (broker, TLS or outbox failure)."""


class ParameterError(SpikecastError, ValueError):
    """An argument or config value is out of range or of the wrong kind."""


__all__ = [
    "ConversionError",
    "ModelFileError",
    "ParameterError",
    "PublishError",
    "SpikecastError",
    "StreamError",
]
