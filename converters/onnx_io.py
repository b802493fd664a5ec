"""ONNX in: an ``.onnx`` file becomes a torch ``GraphModule`` (onnx2torch) that
:func:`spikecast.converters.conversion.convert` parses like any torch model.

onnx2torch maps most ONNX ops of a plain CNN to ``torch.nn`` modules (Conv -> Conv2d,
Gemm with constant weights -> Linear, Relu, MaxPool, AveragePool, BatchNormalization,
Flatten with axis 1). The few it maps to its own modules are replaced here by their
``torch.nn`` equivalent where that is exact (``GlobalAveragePool`` ->
``AdaptiveAvgPool2d(1)``); anything else reaches the fx parser, which refuses it by
name, as for a torch model.

onnx2torch imports torchvision at import time, for its NMS and RoIAlign converters
only. Where torchvision is missing or cannot load (a CUDA torchvision wheel next to a
CPU-only torch), a stand-in whose ops raise is put in its place while onnx2torch
imports; no CNN that converts to a spiking network uses those ops.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from spikecast.ext.core.errors import ConversionError, ModelFileError, SpikecastError

_INSTALL_HINT = "ONNX input needs onnx and onnx2torch: pip install 'spikecast[onnx]'"


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise ConversionError("this ONNX op needs torchvision, which cannot be imported here")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    for name in ("nms", "roi_align", "box_convert", "batched_nms"):
        setattr(ops, name, unavailable)
    tv.ops = ops  # type: ignore[attr-defined]
    return {"torchvision": tv, "torchvision.ops": ops}


def import_onnx2torch() -> Any:
    """Import onnx2torch, with a torchvision stand-in if the real one cannot load."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        import torchvision  # noqa: F401  (onnx2torch imports it; a broken install raises RuntimeError)

        stand_in: dict[str, types.ModuleType] = {}
    except Exception:  # ImportError, or RuntimeError from a wheel built for another torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        stand_in = _torchvision_stand_in()
        sys.modules.update(stand_in)
    try:
        import onnx2torch
    except ImportError as exc:
        raise SpikecastError(_INSTALL_HINT) from exc
    finally:
        for name in stand_in:  # onnx2torch keeps its references; nobody else sees the stand-in
            sys.modules.pop(name, None)
    return onnx2torch


def _normalise(gm: Any) -> Any:
    """Replace onnx2torch's own modules by exact ``torch.nn`` equivalents the parser knows."""
    from torch import nn

    for name, module in list(gm.named_modules()):
        if type(module).__name__ in ("OnnxGlobalAveragePool", "OnnxGlobalAveragePoolWithKnownInputShape"):
            parent_name, _, child = name.rpartition(".")
            parent = gm.get_submodule(parent_name) if parent_name else gm
            setattr(parent, child, nn.AdaptiveAvgPool2d(1))
    return gm


def load_onnx(path: str | Path) -> Any:
    """Load an ``.onnx`` file as a torch ``GraphModule`` ready for ``convert()``."""
    path = Path(path)
    try:
        import onnx
    except ImportError as exc:
        raise SpikecastError(_INSTALL_HINT) from exc
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError, ...
        raise ModelFileError(f"{path}: not a valid ONNX model: {exc}") from exc
    onnx2torch = import_onnx2torch()
    try:
        gm = onnx2torch.convert(model)
    except NotImplementedError as exc:
        raise ConversionError(f"{path}: onnx2torch cannot convert an op of this model: {exc}") from exc
    except Exception as exc:  # onnx2torch raises plain errors for malformed graphs
        raise ConversionError(f"{path}: onnx2torch failed: {exc}") from exc
    gm.eval()
    return _normalise(gm)


__all__ = ["import_onnx2torch", "load_onnx"]
