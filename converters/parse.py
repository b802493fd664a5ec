"""Parse a torch model into a flat list of supported ops with torch.fx.

Supported: Conv2d (also grouped and depthwise), Linear, BatchNorm1d/2d, ReLU (module,
``F.relu``, ``torch.relu``, ``x.relu()``), clipped ReLUs (ReLU6, Hardtanh(0, a),
``F.relu6``, ``F.hardtanh(x, 0, a)``, ``clamp``/``clip(x, 0, a)``: mapped onto the
neuron's saturation, see conversion.py), MaxPool2d, AvgPool2d (any kernel, stride,
padding; folded where exact), AdaptiveAvgPool2d to sizes that divide the map and
``mean`` over (2, 3) (global average pooling), Flatten and ``view``/``reshape``/
``flatten`` (method or function) to (B, N), Dropout and Identity
(dropped), a trailing Softmax, and the joins that make a graph: a residual ``+`` /
``torch.add`` of two tensors and ``torch.cat`` on channels (each op names the values
it reads). Anything else raises :class:`ConversionError` naming the node, its op
and the fix; nothing is dropped in silence.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from spikecast.ext.core.errors import ConversionError
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

OpKind = Literal[
    "conv", "linear", "bn", "relu", "maxpool", "avgpool", "flatten", "softmax", "add", "cat"
]
#: The key of the network input among the values ops read.
INPUT = "<input>"

_DROP_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_RELU_FUNCS = (F.relu, torch.relu, torch.nn.functional.relu_, torch.relu_)
_DROP_FUNCS = (F.dropout, F.dropout1d, F.dropout2d, torch.dropout)
_CLAMP_FUNCS = (torch.clamp, torch.clip, torch.clamp_, torch.clip_)
_CLAMP_METHODS = ("clamp", "clamp_", "clip", "clip_")
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
    groups: int = 1
    #: kind "relu" only: the upper clip ``a`` of ReLU6 / Hardtanh(0, a) / clamp(0, a).
    clip: float | None = None
    #: kind "avgpool" only: (ceil_mode, count_include_pad, divisor_override) of F.avg_pool2d.
    avg: tuple[bool, bool, int | None] = (False, True, None)
    #: kind "avgpool" only: the output size of an AdaptiveAvgPool2d whose windows are
    #: uneven (it folds into a Linear layer only); None for a plain average-pool.
    adaptive: tuple[int, int] | None = None
    #: The graph: this op's value is ``key`` (its fx node name); it reads the values
    #: ``inputs`` (keys of earlier ops, or INPUT). "add" sums two, "cat" joins channels.
    key: str = ""
    inputs: tuple[str, ...] = ()


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


def _is_shape_query(node: fx.Node) -> bool:
    """``x.size(...)``, ``x.shape`` and ``x.shape[i]``: shape arithmetic for view/reshape."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op != "call_function":
        return False
    if node.target is getattr:
        return len(node.args) > 1 and node.args[1] == "shape"
    if node.target is operator.getitem and node.args and isinstance(node.args[0], fx.Node):
        return _is_shape_query(node.args[0])
    return False


_ADD_FUNCS = (operator.add, torch.add, operator.iadd)
_CAT_FUNCS = (torch.cat, torch.concat, torch.concatenate)


def _ops_from_graph(gm: fx.GraphModule) -> list[Op]:
    """The ops in graph (topological) order, each naming the values it reads (``inputs``:
    keys of earlier ops, or ``INPUT``); the model's output is the last op's value."""
    ops: list[Op] = []
    value: dict[str, str] = {}  # fx node name -> key of the op whose value it is
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model must take exactly one input, it takes {len(placeholders)}")
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            value[node.name] = INPUT
            continue
        if node.op == "output":
            out = node.args[0]
            last = ops[-1].key if ops else INPUT
            if not isinstance(out, fx.Node) or value.get(out.name) != last:
                raise _refuse(node, "output", "the output must be the model's last layer (one tensor)")
            break
        if _is_shape_query(node):
            continue  # only feeds view/reshape arguments
        if node.op == "get_attr":
            raise _refuse(
                node, f"get_attr {node.target}", "parameters used outside a layer are not supported"
            )
        op = _join_op(node, value)
        if op is None:
            first = node.args[0] if node.args else None
            if not isinstance(first, fx.Node) or first.name not in value:
                raise _refuse(
                    node,
                    f"{node.op} {getattr(node.target, '__name__', node.target)}",
                    "an op must take a layer's output as its first argument",
                )
            op = _classify(gm, node)
            if op is None:  # dropped (Dropout, Identity, contiguous): an alias
                value[node.name] = value[first.name]
                continue
            op = replace(op, key=node.name, inputs=(value[first.name],))
        ops.append(op)
        value[node.name] = node.name
    return ops


def _tensor_args(node: fx.Node, args: Any, value: dict[str, str], what: str) -> tuple[str, ...]:
    if not all(isinstance(a, fx.Node) and a.name in value for a in args):
        raise _refuse(node, what, "only sums and concatenations of layer outputs convert (no constants)")
    return tuple(value[a.name] for a in args)


def _join_op(node: fx.Node, value: dict[str, str]) -> Op | None:
    """A residual ``+`` / ``torch.add`` or a ``torch.cat`` on dim 1; None for other nodes."""
    fn = node.target
    is_add = (node.op == "call_function" and fn in _ADD_FUNCS) or (
        node.op == "call_method" and fn in ("add", "add_", "__add__")
    )
    is_cat = node.op == "call_function" and fn in _CAT_FUNCS
    if not (is_add or is_cat):
        return None
    name = getattr(fn, "__name__", str(fn))
    shape = _shape(node)
    if is_add:
        if node.kwargs.get("alpha", 1) != 1 or len(node.args) != 2:
            raise _refuse(node, name, "only a plain sum of two tensors converts (no alpha)")
        inputs = _tensor_args(node, node.args, value, name)
        return Op("add", node.name, shape, shape, key=node.name, inputs=inputs)
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or not isinstance(dim, int) or dim % (len(shape) + 1) != 1:
        raise _refuse(node, name, "only a concatenation of channels (dim=1) converts")
    inputs = _tensor_args(node, parts, value, name)
    return Op("cat", node.name, shape, shape, key=node.name, inputs=inputs)


@dataclass(frozen=True)
class _Site:
    """The node being classified, with its shapes (batch dim dropped)."""

    node: fx.Node
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def op(self, kind: OpKind, **kw: Any) -> Op:
        name = str(self.node.target) if self.node.op == "call_module" else self.node.name
        return Op(kind=kind, node=name, in_shape=self.in_shape, out_shape=self.out_shape, **kw)

    def refuse(self, what: str, fix: str) -> ConversionError:
        return _refuse(self.node, what, fix)

    def flatten(self) -> Op | None:
        return _flatten(self.node, self.in_shape, self.out_shape)


def _classify(gm: fx.GraphModule, node: fx.Node) -> Op | None:
    in_shape = _shape(node.args[0]) if isinstance(node.args[0], fx.Node) else ()
    site = _Site(node, in_shape, _shape(node))
    if node.op == "call_module":
        return _classify_module(gm.get_submodule(str(node.target)), site)
    if node.op == "call_function":
        return _classify_function(node.target, site)
    if node.op == "call_method":
        return _classify_method(str(node.target), site)
    raise site.refuse(str(node.target), "unknown graph node")


def _conv_op(m: nn.Conv2d, site: _Site) -> Op:
    if _pair(m.dilation) != (1, 1):
        raise site.refuse(type(m).__name__, "dilated convolutions; use dilation=1")
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        raise site.refuse(type(m).__name__, "padding must be integers with padding_mode='zeros'")
    return site.op(
        "conv",
        module=m,
        kernel=_pair(m.kernel_size),
        stride=_pair(m.stride),
        padding=_pair(m.padding),
        groups=int(m.groups),
    )


def _bn_op(m: nn.BatchNorm1d | nn.BatchNorm2d, site: _Site) -> Op:
    if not m.track_running_stats or m.running_mean is None:
        raise site.refuse(type(m).__name__, "BatchNorm needs running statistics (track_running_stats=True)")
    return site.op("bn", module=m)


def _maxpool_op(m: nn.MaxPool2d, site: _Site) -> Op:
    if m.ceil_mode or _pair(m.dilation) != (1, 1):
        raise site.refuse(type(m).__name__, "max-pool needs dilation=1, ceil_mode=False")
    stride = m.stride if m.stride else m.kernel_size
    return site.op("maxpool", kernel=_pair(m.kernel_size), stride=_pair(stride), padding=_pair(m.padding))


def _avgpool_op(m: nn.AvgPool2d, site: _Site) -> Op:
    """Any AvgPool2d: a fixed linear map, folded into the layer after it (where exact)."""
    stride = m.stride if m.stride else m.kernel_size
    div = m.divisor_override
    return site.op(
        "avgpool",
        kernel=_pair(m.kernel_size),
        stride=_pair(stride),
        padding=_pair(m.padding),
        avg=(bool(m.ceil_mode), bool(m.count_include_pad), None if div is None else int(div)),
    )


def _adaptive_avgpool_op(m: nn.AdaptiveAvgPool2d | None, site: _Site) -> Op:
    """AdaptiveAvgPool2d (or F.adaptive_avg_pool2d) to an output size that divides the
    map: a plain average-pool."""
    if len(site.in_shape) != 3 or len(site.out_shape) != 3:
        raise site.refuse("AdaptiveAvgPool2d", "adaptive average-pool needs a (C, H, W) map")
    (_, h, w), (_, oh, ow) = site.in_shape, site.out_shape
    if h % oh or w % ow:
        # Uneven or overlapping windows (VGG's 7x7 of a 1x1 map: a replication): still a
        # fixed linear map, which folds exactly into a Linear layer after it.
        return site.op("avgpool", adaptive=(oh, ow))
    return site.op("avgpool", kernel=(h // oh, w // ow), stride=(h // oh, w // ow))


def _mean_op(site: _Site) -> Op:
    """``x.mean((2, 3))`` / ``torch.mean(x, dim=(-2, -1), keepdim=...)``: global average pooling."""
    node = site.node
    dims = _arg(node, 1, "dim", None)
    dims = (dims,) if isinstance(dims, int) else tuple(dims) if isinstance(dims, (tuple, list)) else ()
    if len(site.in_shape) != 3 or sorted(d % 4 for d in dims if isinstance(d, int)) != [2, 3]:
        raise site.refuse(
            "mean", "only a mean over the spatial dims (2, 3) converts (global average pooling)"
        )
    c, h, w = site.in_shape
    # Without keepdim the output is (C,): the (C, 1, 1) pool, then an implied flatten.
    return replace(site.op("avgpool", kernel=(h, w), stride=(h, w)), out_shape=(c, 1, 1))


def _clip_op(site: _Site, what: str, lo: Any, hi: Any) -> Op:
    """ReLU6, Hardtanh(0, a), clamp(0, a): a ReLU clipped at a > 0 (clamp(min=0): a ReLU)."""
    if not isinstance(lo, (int, float)) or float(lo) != 0.0:
        raise site.refuse(
            what, f"only a clip from 0 converts (ReLU6, Hardtanh(0, a), clamp(0, a)); got min {lo!r}"
        )
    if hi is None:
        return site.op("relu")
    if not isinstance(hi, (int, float)) or not 0 < float(hi) < float("inf"):
        raise site.refuse(what, f"the clip's maximum must be a positive number, got {hi!r}")
    return site.op("relu", clip=float(hi))


def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    """Argument ``name`` of a call, given positionally at ``i`` (after the input) or by name."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _hardtanh_op(m: nn.Hardtanh, site: _Site) -> Op:
    return _clip_op(site, type(m).__name__, m.min_val, m.max_val)


#: Module classes that convert, in the order they are tried, and how.
_MODULE_RULES: tuple[tuple[type | tuple[type, ...], Any], ...] = (
    (nn.Conv2d, _conv_op),
    (nn.Linear, lambda m, site: site.op("linear", module=m)),
    ((nn.BatchNorm1d, nn.BatchNorm2d), _bn_op),
    (nn.ReLU, lambda m, site: site.op("relu")),
    (nn.Hardtanh, _hardtanh_op),  # ReLU6 is a Hardtanh(0, 6)
    (nn.MaxPool2d, _maxpool_op),
    (nn.AvgPool2d, _avgpool_op),
    (nn.AdaptiveAvgPool2d, _adaptive_avgpool_op),
    (nn.Flatten, lambda m, site: site.flatten()),
    ((nn.Softmax, nn.LogSoftmax), lambda m, site: site.op("softmax")),
)


def _classify_module(m: nn.Module, site: _Site) -> Op | None:
    if isinstance(m, _DROP_MODULES):
        return None
    for types, make in _MODULE_RULES:
        if isinstance(m, types):
            op: Op | None = make(m, site)
            return op
    tname = type(m).__name__
    raise site.refuse(tname, _fix_for(tname))


def _clip_function(fn: Any, site: _Site) -> Op | None:
    """F.relu6, F.hardtanh and torch.clamp/clip as a clipped ReLU; None for other functions."""
    node = site.node
    if fn is F.relu6:
        return site.op("relu", clip=6.0)
    if fn is F.hardtanh:
        return _clip_op(site, "hardtanh", _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0))
    if fn in _CLAMP_FUNCS:
        return _clip_op(site, fn.__name__, _arg(node, 1, "min", None), _arg(node, 2, "max", None))
    return None


def _classify_function(fn: Any, site: _Site) -> Op | None:
    if fn in _RELU_FUNCS:
        return site.op("relu")
    if fn in _DROP_FUNCS:
        return None
    clip = _clip_function(fn, site)
    if clip is not None:
        return clip
    if fn in (torch.flatten, torch.reshape):
        return site.flatten()
    if fn in (torch.mean, F.adaptive_avg_pool2d):  # global average pooling
        return _mean_op(site) if fn is torch.mean else _adaptive_avgpool_op(None, site)
    if fn in (F.softmax, torch.softmax, F.log_softmax):
        return site.op("softmax")
    fname = getattr(fn, "__name__", str(fn))
    raise site.refuse(fname, _fix_for(fname))


def _classify_method(method: str, site: _Site) -> Op | None:
    if method in ("relu", "relu_"):
        return site.op("relu")
    if method in _CLAMP_METHODS:
        node = site.node
        return _clip_op(site, f"Tensor.{method}", _arg(node, 1, "min", None), _arg(node, 2, "max", None))
    if method in _FLATTEN_METHODS:
        return site.flatten()
    if method == "mean":
        return _mean_op(site)
    if method in _PASS_METHODS:
        return None
    if method in ("softmax", "log_softmax"):
        return site.op("softmax")
    raise site.refuse(f"Tensor.{method}", _fix_for(method))


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


__all__ = ["INPUT", "Op", "trace"]
