"""spikecast.converters: torch CNN -> rate-coded spiking Network, the artifact, the reference.

Importing this package does not import torch; :func:`convert` imports it on use.
"""

from __future__ import annotations

from typing import Any

from spikecast.ext.core.errors import (
    ConversionError,
    ModelFileError,
    ParameterError,
    PublishError,
    SpikecastError,
    StreamError,
)


def convert(model: Any, calibration: Any, **options: Any) -> Any:
    """Convert a trained torch model; see :func:`spikecast.converters.conversion.convert`.

    (The implementation lives in ``conversion``, not a submodule named ``convert``: importing
    such a submodule would replace this function on the package.)"""
    from spikecast.converters.conversion import convert as _convert

    return _convert(model, calibration, **options)


__all__ = [
    "ConversionError",
    "ModelFileError",
    "ParameterError",
    "PublishError",
    "SpikecastError",
    "StreamError",
    "convert",
]
