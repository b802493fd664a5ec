"""The package-level convert() stays the function, whatever was imported before."""

from __future__ import annotations

import importlib

import pytest

pytest.importorskip("torch", reason="the converter needs torch (the 'convert' extra)")


def test_convert_is_the_function_after_the_implementation_module_loads() -> None:
    importlib.import_module("spikecast.converters.conversion")
    import spikecast.converters as pkg

    assert callable(pkg.convert) and pkg.convert.__module__ == "spikecast.converters"
