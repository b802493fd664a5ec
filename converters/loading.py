"""Load a torch model for conversion: a ``module:factory`` spec plus a state_dict, or TorchScript.

No pickle: state dicts load with ``torch.load(..., weights_only=True)``; calibration
arrays with ``np.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from spikecast.ext.core.errors import ConversionError, ModelFileError
from torch import nn


def load_factory(spec: str) -> nn.Module:
    """Build a model from ``package.module:factory`` or ``path/to/file.py:factory``."""
    if ":" not in spec:
        raise ConversionError(
            f"model spec {spec!r} must look like 'package.module:factory' or 'file.py:factory'"
        )
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise ConversionError(f"cannot import {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except (ImportError, OSError) as exc:
        raise ConversionError(f"cannot import {mod_name!r} for model spec {spec!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ConversionError(f"{mod_name!r} has no callable {attr!r} (model spec {spec!r})")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConversionError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_state_dict(model: nn.Module, path: str | Path) -> nn.Module:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot load state_dict: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: state_dict does not fit the model: {exc}") from exc
    return model.eval()


def load_torchscript(path: str | Path, sample: torch.Tensor) -> nn.Module:
    """Rebuild a scripted chain of layers as nn.Sequential and check it computes the same."""
    path = Path(path)
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot load TorchScript: {exc}") from exc
    scripted.eval()
    layers: list[nn.Module] = []
    for name, child in scripted.named_children():
        layers.append(_rebuild(name, child, path))
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():
        ok = torch.allclose(model(sample), scripted(sample), atol=1e-5)
    if not ok:
        raise ConversionError(
            f"{path}: the TorchScript forward is not a plain chain of its children; "
            "convert from a module:factory spec and a state_dict instead"
        )
    return model


def _rebuild(name: str, child: Any, path: Path) -> nn.Module:
    kind = getattr(child, "original_name", type(child).__name__)
    state = {k: v.detach().clone() for k, v in child.state_dict().items()}
    m: nn.Module
    if kind == "Conv2d":
        w = state["weight"]
        m = nn.Conv2d(
            w.shape[1],
            w.shape[0],
            tuple(w.shape[2:]),
            stride=tuple(child.stride),
            padding=tuple(child.padding),
            bias="bias" in state,
        )
    elif kind == "Linear":
        w = state["weight"]
        m = nn.Linear(w.shape[1], w.shape[0], bias="bias" in state)
    elif kind in ("BatchNorm2d", "BatchNorm1d"):
        n = state["running_mean"].shape[0]
        m = (nn.BatchNorm2d if kind == "BatchNorm2d" else nn.BatchNorm1d)(n, eps=float(child.eps))
    elif kind == "ReLU":
        m = nn.ReLU()
    elif kind == "MaxPool2d":
        m = nn.MaxPool2d(child.kernel_size, child.stride)
    elif kind == "AvgPool2d":
        m = nn.AvgPool2d(child.kernel_size, child.stride)
    elif kind == "Flatten":
        m = nn.Flatten()
    elif kind in ("Dropout", "Identity"):
        m = nn.Identity()
    else:
        raise ConversionError(
            f"{path}: TorchScript child '{name}' ({kind}) cannot be rebuilt; "
            "convert from a module:factory spec and a state_dict instead"
        )
    if state:
        m.load_state_dict(state)
    return m


def load_array(spec: str, default_key: str = "x") -> np.ndarray:
    """``file.npy`` or ``file.npz[:key]`` without pickle."""
    path_str, _, key = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    path = Path(path_str)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot load array: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        name = key or default_key
        if name not in loaded.files:
            raise ModelFileError(f"{path}: no array {name!r}; it has {loaded.files}")
        return np.asarray(loaded[name])


__all__ = ["load_array", "load_factory", "load_state_dict", "load_torchscript"]
