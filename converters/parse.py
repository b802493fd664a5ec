"""Parse a torch model into a flat list of supported ops with torch.fx.

Supported: Conv2d, Linear, BatchNorm1d/2d, ReLU (module, ``F.relu``, ``torch.relu``,
``x.relu()``), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d to 1x1, Flatten and
``view``/``reshape``/``flatten`` to (B, N), Dropout and Identity (dropped), and a
trailing Softmax. Anything else raises :class:`ConversionError` naming the node,
its op and the fix; nothing is dropped in silence.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from spikecast.ext.core.errors import ConversionError
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

OpKind = Literal["conv", "linear", "bn", "relu", "maxpool", "avgpool", "flatten", "softmax"]

_DROP_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_RELU_FUNCS = (F.relu, torch.relu, torch.nn.functional.relu_, torch.relu_)
_DROP_FUNCS = (F.dropout, F.dropout1d, F.dropout2d, torch.dropout)
_FLATTEN_METHODS = ("view", "reshape", "flatten")
_PASS_METHODS = ("contiguous",)


@dataclass(frozen=True)
class Op:
    """One supported operation, with shapes (batch dim dropped) from shape propagation."""

    kind: OpKind
    node: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    module: nn.Module | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise ConversionError(f"node '{node.name}' ({node.op} {node.target}) produces no single tensor")
    return tuple(int(s) for s in meta.shape[1:])


def _refuse(node: fx.Node, what: str, fix: str) -> ConversionError:
    # A module node is named by its path in the model ("features.3"), as users know it.
    label = node.target if node.op == "call_module" else node.name
    return ConversionError(f"node '{label}' ({node.op} {what}) is not supported: {fix}")


def trace(model: nn.Module, sample: torch.Tensor) -> list[Op]:
    """Trace ``model`` on a one-sample batch and return its ops in order."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...)
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Keep forward() free of "
            "data-dependent control flow, or pass an nn.Sequential"
        ) from exc
    try:
        ShapeProp(gm).propagate(sample)
    except Exception as exc:  # the model's own error on this input shape
        raise ConversionError(
            f"running {type(model).__name__} on an input of shape {tuple(sample.shape)} failed: {exc}"
        ) from exc
    return _ops_from_graph(gm)


def _ops_from_graph(gm: fx.GraphModule) -> list[Op]:
    ops: list[Op] = []
    current: fx.Node | None = None  # the node carrying the activation
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model must take exactly one input, it takes {len(placeholders)}")
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise _refuse(node, "output", "the output must be the end of one chain of layers")
            break
        if node.op == "call_method" and node.target == "size":
            continue  # only feeds view/reshape arguments
        if node.op == "get_attr":
            raise _refuse(
                node, f"get_attr {node.target}", "parameters used outside a layer are not supported"
            )
        if not node.args or node.args[0] is not current:
            raise _refuse(
                node,
                f"{node.op} {getattr(node.target, '__name__', node.target)}",
                "only a single chain of layers converts (no branches, residuals or concatenation)",
            )
        users = (
            [u for u in current.users if not (u.op == "call_method" and u.target == "size")]
            if current
            else []
        )
        if len(users) > 1:
            raise _refuse(
                node,
                "branch",
                "an activation feeds several layers (a branch or residual connection); only chains convert",
            )
        op = _classify(gm, node)
        if op is not None:
            ops.append(op)
        current = node
    return ops


def _classify(gm: fx.GraphModule, node: fx.Node) -> Op | None:
    in_shape = _shape(node.args[0]) if isinstance(node.args[0], fx.Node) else ()
    out_shape = _shape(node)
    name = str(node.target) if node.op == "call_module" else node.name

    def op(kind: OpKind, **kw: Any) -> Op:
        return Op(kind=kind, node=name, in_shape=in_shape, out_shape=out_shape, **kw)

    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        tname = type(m).__name__
        if isinstance(m, _DROP_MODULES):
            return None
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or _pair(m.dilation) != (1, 1):
                raise _refuse(node, tname, "grouped or dilated convolutions; use groups=1, dilation=1")
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise _refuse(node, tname, "padding must be integers with padding_mode='zeros'")
            return op(
                "conv",
                module=m,
                kernel=_pair(m.kernel_size),
                stride=_pair(m.stride),
                padding=_pair(m.padding),
            )
        if isinstance(m, nn.Linear):
            return op("linear", module=m)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not m.track_running_stats or m.running_mean is None:
                raise _refuse(node, tname, "BatchNorm needs running statistics (track_running_stats=True)")
            return op("bn", module=m)
        if isinstance(m, nn.ReLU):
            return op("relu")
        if isinstance(m, nn.MaxPool2d):
            if m.ceil_mode or _pair(m.dilation) != (1, 1) or _pair(m.padding) != (0, 0):
                raise _refuse(node, tname, "max-pool needs padding=0, dilation=1, ceil_mode=False")
            stride = m.stride if m.stride is not None else m.kernel_size
            return op("maxpool", kernel=_pair(m.kernel_size), stride=_pair(stride))
        if isinstance(m, nn.AvgPool2d):
            stride = m.stride if m.stride is not None else m.kernel_size
            if m.ceil_mode or _pair(m.padding) != (0, 0) or m.divisor_override is not None:
                raise _refuse(
                    node, tname, "average-pool needs padding=0, ceil_mode=False, no divisor_override"
                )
            return op("avgpool", kernel=_pair(m.kernel_size), stride=_pair(stride))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            if len(out_shape) != 3 or out_shape[1:] != (1, 1):
                raise _refuse(node, tname, "adaptive average-pool converts only to output size 1x1")
            return op("avgpool", kernel=(in_shape[1], in_shape[2]), stride=(in_shape[1], in_shape[2]))
        if isinstance(m, nn.Flatten):
            return _flatten(node, in_shape, out_shape)
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            return op("softmax")
        raise _refuse(node, tname, _fix_for(tname))
    if node.op == "call_function":
        fn = node.target
        if fn in _RELU_FUNCS:
            return op("relu")
        if fn in _DROP_FUNCS:
            return None
        if fn is torch.flatten:
            return _flatten(node, in_shape, out_shape)
        if fn in (F.softmax, torch.softmax, F.log_softmax):
            return op("softmax")
        fname = getattr(fn, "__name__", str(fn))
        if fn in (operator.add, torch.add, torch.cat):
            raise _refuse(node, fname, "residual additions and concatenations are not supported")
        raise _refuse(node, fname, _fix_for(fname))
    if node.op == "call_method":
        if node.target == "relu":
            return op("relu")
        if node.target in _FLATTEN_METHODS:
            return _flatten(node, in_shape, out_shape)
        if node.target in _PASS_METHODS:
            return None
        if node.target in ("softmax", "log_softmax"):
            return op("softmax")
        raise _refuse(node, f"Tensor.{node.target}", _fix_for(str(node.target)))
    raise _refuse(node, str(node.target), "unknown graph node")


def _flatten(node: fx.Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Op | None:
    n = 1
    for s in in_shape:
        n *= s
    if out_shape != (n,):
        raise _refuse(node, "reshape", f"only flattening to (batch, {n}) is supported, got {out_shape}")
    if len(in_shape) == 1:
        return None
    return Op(kind="flatten", node=node.name, in_shape=in_shape, out_shape=out_shape)


def _fix_for(what: str) -> str:
    low = what.lower()
    if any(k in low for k in ("sigmoid", "tanh", "gelu", "elu", "leaky", "silu", "hardswish", "prelu")):
        return "IF neurons approximate ReLU only; replace the activation with nn.ReLU and retrain"
    if "pool" in low:
        return "use MaxPool2d, AvgPool2d or AdaptiveAvgPool2d(1)"
    if "norm" in low:
        return "only BatchNorm1d/2d directly after Conv2d or Linear can be folded"
    return "supported ops are Conv2d, Linear, BatchNorm, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout"


__all__ = ["Op", "trace"]
