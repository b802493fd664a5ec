"""NIR out and in: a spikecast :class:`Network` as a NIR graph, and NIR graphs of
integrate-and-fire networks (as sinabs and snnTorch export them) as a Network.

NIR (the Neuromorphic Intermediate Representation, package ``nir``, the ``nir``
extra) describes a network as continuous-time primitives joined by edges. A
spikecast network maps onto it like this (docs/model-format.md has the table):

- frame input: ``Input`` then ``Scale`` (scale/std per channel; a non-zero mean is
  an offset NIR has no primitive for: it is recorded in the graph metadata);
  event input: ``Input`` alone, the event counts are the input spikes;
- a conv layer: ``Conv2d`` (weight, bias, stride, padding, dilation 1, groups 1);
  a linear layer: ``Flatten`` (after a 3-D layer) and ``Affine`` (weight, bias);
- each hidden layer's neurons: ``IF`` with ``r = 1`` and ``v_threshold = θ``;
- the output layer's neurons: ``I``, the non-spiking integrator, with ``r = λ_L``,
  so that its v(t) / t is the logit estimate z(t) = λ_L V_L / t.

What NIR's primitives do not say is recorded in the graph metadata: ``reset``
(NIR's IF resets to ``v_reset``; spikecast's default resets by subtraction), the
threshold test (spikecast fires at V >= θ, NIR's text says v > v_thr), the input
kind, encoding, normalisation and dt_us, class names, layer names, every λ and
threshold as float64, temperature, the initial membrane fraction ``v_init`` (NIR's
IF has no initial state) and ``meta`` — all as one JSON text under
``spikecast``, so that :func:`from_nir` restores the exact ``.scn`` (the calibration
table is not carried). Max-pools (gated or count) have no NIR primitive and are refused.

Import walks the graph from its ``Input`` to its ``Output`` (a chain: no branches,
no recurrence, no subgraphs) and takes ``Conv2d``/``Affine``/``Linear`` followed by
an IF-type neuron as one layer. ``SumPool2d``/``AvgPool2d`` with stride = kernel are
folded into the next layer's weights. ``LIF``/``LI`` with an infinite time constant
(how snnTorch exports ``Leaky(beta=1)``) are IF/I; any leaky neuron is refused.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spikecast.ext.core.errors import ConversionError, ModelFileError, SpikecastError
from spikecast.ext.core.network import InputSpec, Layer, Network

META_KEY = "spikecast"
META_VERSION = 1
THRESHOLD_TEST = "v >= v_threshold"
_INSTALL_HINT = "NIR needs the nir package: pip install 'spikecast[nir]'"


def _nir() -> Any:
    try:
        import nir
    except ImportError as exc:
        raise SpikecastError(_INSTALL_HINT) from exc
    return nir


# ----------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------


def _graph_metadata(net: Network) -> dict[str, Any]:
    spec = net.input
    record = {
        "version": META_VERSION,
        "input": net.manifest()["input"],
        "reset": net.reset,
        "threshold_test": THRESHOLD_TEST,
        "class_names": list(net.class_names),
        "temperature": float(net.temperature),
        # NIR's IF has no initial state: spiking layers start at v_init·θ, recorded here
        # (only when not 0, so earlier exports keep their metadata).
        **({"v_init": float(net.v_init)} if net.v_init else {}),
        # The early-exit signal (not a NIR concept): only when not the rate rule.
        **({"evidence_steps": float(net.evidence_steps)} if net.evidence_steps else {}),
        "layers": [
            {
                "name": ly.name,
                "lambda": float(ly.lam),
                "threshold": float(ly.threshold),
                "has_bias": ly.bias is not None,
                "in_shape": [int(v) for v in ly.in_shape],
            }
            for ly in net.layers
        ],
        "meta": dict(net.meta),
    }
    return {
        META_KEY: json.dumps(record, sort_keys=True, allow_nan=False),
        "reset": net.reset,
        "threshold_test": THRESHOLD_TEST,
        "input_kind": spec.kind,
        "input_encoding": spec.encoding,
        "dt_us": int(spec.dt_us),
        "class_names": ",".join(net.class_names),
        **({"v_init": float(net.v_init)} if net.v_init else {}),
    }


def _input_nodes(nir: Any, spec: InputSpec) -> list[tuple[str, Any]]:
    nodes: list[tuple[str, Any]] = [("input", nir.Input(input_type=np.array(spec.shape)))]
    if spec.kind == "frame":
        c = spec.shape[0]
        gain = np.broadcast_to(np.float64(spec.scale) / np.asarray(spec.std, np.float64), (c,))
        offset = np.broadcast_to(-np.asarray(spec.mean, np.float64) / np.asarray(spec.std, np.float64), (c,))
        scale = np.broadcast_to(gain.astype(np.float32)[:, None, None], spec.shape).copy()
        meta = {"offset_per_channel": offset.astype(np.float32)} if np.any(offset != 0) else {}
        nodes.append(("scale", nir.Scale(scale=scale, metadata=meta)))
    return nodes


def _layer_nodes(nir: Any, i: int, ly: Layer, reset: str) -> list[tuple[str, Any]]:
    if ly.kind == "maxpool":
        raise ConversionError(
            f"layer {i} ({ly.name}): spikecast's max-pools have no NIR primitive: gated or count, "
            "they pass spikes by the inputs' spike counts so far in each window, which needs "
            "per-window spike counts that no NIR node holds (NIR's pools sum or average spikes). "
            "Retrain with AvgPool2d (converted by folding it into the next layer) to export this network"
        )
    if ly.inputs or ly.extra:
        raise ConversionError(
            f"layer {i} ({ly.name}) reads several layers (a residual add or a concatenation); "
            "this exporter writes one chain of nodes. Export a network without skips"
        )
    if ly.groups != 1:
        raise ConversionError(
            f"layer {i} ({ly.name}) is a grouped convolution (groups={ly.groups}); this exporter "
            "writes ungrouped Conv2d nodes only"
        )
    if ly.weight is None:  # conv and linear layers always have one (Layer.check)
        raise ConversionError(f"layer {i} ({ly.name}) has no weights")
    out = tuple(int(v) for v in ly.out_shape)
    bias = ly.bias if ly.bias is not None else np.zeros(out[0], np.float32)
    nodes: list[tuple[str, Any]] = []
    if ly.kind == "conv":
        syn = nir.Conv2d(
            input_shape=tuple(int(v) for v in ly.in_shape[1:]),
            weight=ly.weight,
            stride=tuple(ly.stride),
            padding=tuple(ly.padding),
            dilation=(1, 1),
            groups=1,
            bias=bias,
        )
        nodes.append((f"conv{i}", syn))
    else:
        if len(ly.in_shape) > 1:
            nodes.append(
                (f"flatten{i}", nir.Flatten(input_type=np.array(ly.in_shape), start_dim=0, end_dim=-1))
            )
        nodes.append((f"affine{i}", nir.Affine(weight=ly.weight, bias=bias)))
    if ly.spiking:
        neuron = nir.IF(
            r=np.ones(out, np.float32),
            v_threshold=np.full(out, ly.threshold, np.float32),
            v_reset=np.zeros(out, np.float32),
            metadata={"reset": reset, "lambda": float(ly.lam)},
        )
        nodes.append((f"if{i}", neuron))
    else:
        nodes.append((f"output_integrator{i}", nir.I(r=np.full(out, ly.lam, np.float32))))
    return nodes


def to_nir(net: Network) -> Any:
    """The NIR graph of ``net`` (a ``nir.NIRGraph``); raise ConversionError for max-pool."""
    if net.max_spikes > 1:
        raise ConversionError(
            f"max_spikes={net.max_spikes}: NIR's IF neuron emits at most one spike per step, so a "
            "burst network has no NIR form; convert with max_spikes=1 to export"
        )
    if net.readout != "spikes":
        raise ConversionError(
            f"readout={net.readout!r}: NIR's output integrator reads spikes only, so the graph would "
            "decide differently; export net.with_(readout='spikes') (the same spikes, a spike read-out)"
        )
    nir = _nir()
    nodes = _input_nodes(nir, net.input)
    for i, ly in enumerate(net.layers):
        nodes.extend(_layer_nodes(nir, i, ly, net.reset))
    nodes.append(("output", nir.Output(output_type=np.array(net.layers[-1].out_shape))))
    names = [name for name, _ in nodes]
    # nir 1.0.8's Conv2d computes its output type from the kernel height alone: its type
    # check fails on a correct graph with a non-square kernel, so it runs only without one.
    square = all(ly.kernel[0] == ly.kernel[1] for ly in net.layers if ly.kind == "conv")
    return nir.NIRGraph(
        nodes=dict(nodes),
        edges=list(itertools.pairwise(names)),
        metadata=_graph_metadata(net),
        type_check=square,
    )


def export_nir(net: Network, path: str | Path) -> Path:
    """Write ``net`` as a NIR file (HDF5); return the path."""
    path = Path(path)
    _nir().write(path, to_nir(net))
    return path


# ----------------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NirImportOptions:
    """What a NIR graph may not say; ``None`` takes it from the graph's spikecast
    metadata, or the default (frame input, analog, reset by subtraction, dt 1000 µs)."""

    input_kind: str | None = None
    input_encoding: str | None = None
    dt_us: int | None = None
    reset: str | None = None
    class_names: tuple[str, ...] | None = None


@dataclass
class _Synapse:
    kind: str  # conv | linear
    name: str
    in_shape: tuple[int, ...]
    weight: np.ndarray
    bias: np.ndarray
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def out_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (int(self.weight.shape[0]),)
        _, h, w = self.in_shape
        oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        return (int(self.weight.shape[0]), oh, ow)


@dataclass
class _Pool:
    name: str
    kernel: tuple[int, int]
    in_shape: tuple[int, int, int]
    average: bool
    flattened: bool = False


@dataclass
class _Walk:
    """The state while walking the chain of nodes."""

    shape: tuple[int, ...]
    layers: list[Layer] = field(default_factory=list)
    synapse: _Synapse | None = None
    pool: _Pool | None = None
    scale: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    neuron_kinds: list[str] = field(default_factory=list)


def _arr(v: Any) -> np.ndarray:
    return np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)


def _pair(v: Any, what: str, name: str) -> tuple[int, int]:
    if isinstance(v, (str, bytes)):
        raise ConversionError(f"node '{name}': {what} {v!r} must be integers")
    a = _arr(v).astype(np.int64).ravel()
    if a.size == 1:
        return (int(a[0]), int(a[0]))
    if a.size == 2:
        return (int(a[0]), int(a[1]))
    raise ConversionError(f"node '{name}': {what} {a.tolist()} must be one or two integers")


def _chain(graph: Any) -> list[tuple[str, Any]]:
    """The nodes from the Input to the Output, in order; refuse anything but a chain."""
    nir = _nir()
    nodes = graph.nodes
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in graph.edges:
        if a not in nodes or b not in nodes:
            raise ConversionError(f"edge ({a!r}, {b!r}) names a node the graph does not have")
        succ[a].append(b)
        pred[b].append(a)
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise ConversionError(f"the graph must have exactly one Input node, it has {len(inputs)}")
    order, current, seen = [], inputs[0], set()
    while True:
        if current in seen:
            raise ConversionError(f"node '{current}' closes a loop: recurrent graphs cannot be imported")
        seen.add(current)
        order.append((current, nodes[current]))
        if len(succ[current]) > 1 or len(pred[current]) > 1:
            raise ConversionError(
                f"node '{current}' branches or merges: only a chain of layers imports (no residuals)"
            )
        if not succ[current]:
            break
        current = succ[current][0]
    if not isinstance(order[-1][1], nir.Output) or len(order) != len(nodes):
        raise ConversionError("the graph must be one chain from its Input to its Output node")
    return order


def _refuse_leaky(name: str, node: Any) -> None:
    taus = [np.asarray(getattr(node, k)) for k in ("tau", "tau_mem", "tau_syn") if hasattr(node, k)]
    finite = [t for t in taus if np.any(np.isfinite(t))]
    if finite or type(node).__name__.startswith("Cuba"):
        tau = float(np.ravel(finite[0])[0]) if finite else float("nan")
        raise ConversionError(
            f"node '{name}' ({type(node).__name__}): spikecast runs integrate-and-fire neurons only; "
            f"leaky neurons (tau={tau:g}) cannot be represented. Export the network with IF neurons "
            "(sinabs IAF, snnTorch Leaky(beta=1)) or retrain without leak"
        )
    if hasattr(node, "v_leak") and np.any(_arr(node.v_leak) != 0):
        raise ConversionError(f"node '{name}': a non-zero v_leak cannot be represented")


def _per_channel(values: np.ndarray, shape: tuple[int, ...], what: str, name: str) -> np.ndarray:
    """The value per output channel of ``values`` broadcast to ``shape``; refuse per-neuron ones."""
    full = np.broadcast_to(values.astype(np.float64), shape).reshape(shape[0], -1)
    if np.any(full != full[:, :1]):
        raise ConversionError(
            f"node '{name}': {what} differs between neurons of one channel; spikecast keeps one value "
            "per layer (per output channel, by rescaling the weights)"
        )
    out: np.ndarray = full[:, 0]
    return out


def _fold_scale(syn: _Synapse, factor: np.ndarray) -> _Synapse:
    """Scale each output channel's weights and bias by ``factor`` (float64, then float32)."""
    shape = (-1,) + (1,) * (syn.weight.ndim - 1)
    syn.weight = (syn.weight.astype(np.float64) * factor.reshape(shape)).astype(np.float32)
    syn.bias = (syn.bias.astype(np.float64) * factor).astype(np.float32)
    return syn


def _fold_pool(pool: _Pool, syn: _Synapse) -> _Synapse:
    """A sum- or average-pool with stride = kernel folded into the layer after it."""
    kh, kw = pool.kernel
    c, h, w = pool.in_shape
    hp, wp = h // kh, w // kw
    div = float(kh * kw) if pool.average else 1.0
    weight = syn.weight.astype(np.float64)
    if syn.kind == "linear":
        wr = weight.reshape(weight.shape[0], c, hp, wp)
        full = np.zeros((weight.shape[0], c, h, w))
        full[:, :, : hp * kh, : wp * kw] = wr.repeat(kh, axis=2).repeat(kw, axis=3) / div
        syn.weight, syn.in_shape = full.reshape(weight.shape[0], -1).astype(np.float32), (c, h, w)
        return syn
    if pool.flattened or h != hp * kh or w != wp * kw:
        raise ConversionError(
            f"node '{pool.name}': a pool of a {h}x{w} map by {pool.kernel} that feeds a convolution "
            "folds exactly only when the map size is divisible by the kernel"
        )
    syn.weight = (weight.repeat(kh, axis=2).repeat(kw, axis=3) / div).astype(np.float32)
    syn.kernel = (syn.kernel[0] * kh, syn.kernel[1] * kw)
    syn.stride = (syn.stride[0] * kh, syn.stride[1] * kw)
    syn.padding = (syn.padding[0] * kh, syn.padding[1] * kw)
    syn.in_shape = (c, h, w)
    return syn


class _Importer:
    """Walks the chain of a NIR graph and builds spikecast layers."""

    def __init__(self, chain: list[tuple[str, Any]]) -> None:
        shape = tuple(int(v) for v in _arr(chain[0][1].input_type["input"]).ravel())
        self.walk = _Walk(shape=shape)
        self.chain = chain

    def synapse(self, name: str, node: Any) -> None:
        walk = self.walk
        if walk.synapse is not None:
            raise ConversionError(
                f"node '{name}': two weight layers in a row (after '{walk.synapse.name}'); "
                "each Conv2d/Affine must be followed by IF neurons"
            )
        kind = type(node).__name__
        weight = _arr(node.weight).astype(np.float32)
        bias = (
            _arr(node.bias).astype(np.float32) if kind != "Linear" else np.zeros(weight.shape[0], np.float32)
        )
        if kind == "Conv2d":
            syn = self._conv(name, node, weight, bias)
        else:
            if weight.ndim != 2:
                raise ConversionError(f"node '{name}': {kind} weight must be 2-D, got {weight.shape}")
            syn = _Synapse("linear", name, walk.shape, weight, bias)
            if walk.pool is None and weight.shape[1] != math.prod(walk.shape):
                raise ConversionError(f"node '{name}': weight {weight.shape} does not fit input {walk.shape}")
        if walk.pool is not None:
            syn = _fold_pool(walk.pool, syn)
            walk.pool = None
        walk.synapse = syn
        walk.shape = syn.out_shape()

    def _conv(self, name: str, node: Any, weight: np.ndarray, bias: np.ndarray) -> _Synapse:
        if int(_arr(node.groups)) != 1 or _pair(node.dilation, "dilation", name) != (1, 1):
            raise ConversionError(f"node '{name}': grouped or dilated convolutions cannot be imported")
        kernel = (int(weight.shape[2]), int(weight.shape[3]))
        padding = node.padding
        if isinstance(padding, (str, bytes)):
            pad = padding.decode() if isinstance(padding, bytes) else padding
            if pad == "valid":
                padding = (0, 0)
            elif pad == "same" and all(k % 2 == 1 for k in kernel):
                padding = (kernel[0] // 2, kernel[1] // 2)
            else:
                raise ConversionError(f"node '{name}': padding {pad!r} with kernel {kernel} is not supported")
        shape = self.walk.shape  # after a pending pool: the pooled map
        if len(shape) != 3 or shape[0] != weight.shape[1]:
            raise ConversionError(f"node '{name}': conv weight {weight.shape} does not fit input {shape}")
        return _Synapse(
            "conv",
            name,
            shape,
            weight,
            bias,
            kernel=kernel,
            stride=_pair(node.stride, "stride", name),
            padding=_pair(padding, "padding", name),
        )

    def neuron(self, name: str, node: Any, integrator: bool) -> None:
        walk = self.walk
        syn = walk.synapse
        if syn is None:
            raise ConversionError(f"node '{name}': neurons must follow a Conv2d, Affine or Linear node")
        kind = type(node).__name__
        out = syn.out_shape()
        # A LIF/LI with tau = inf (snnTorch's Leaky(beta=1)) integrates its input with gain 1.
        gain = np.ones(1) if kind in ("LIF", "LI") else _arr(node.r).astype(np.float64)
        if integrator:
            lam = _per_channel(gain, out, "r", name)
            lam_out = float(lam[0])
            if np.any(lam != lam[0]):
                syn, lam_out = _fold_scale(syn, lam), 1.0
            layer = self._layer(syn, spiking=False, lam=lam_out, threshold=1.0)
        else:
            theta = _arr(node.v_threshold).astype(np.float64) / gain
            if np.any(_arr(getattr(node, "v_reset", 0.0)) != 0):
                raise ConversionError(
                    f"node '{name}': v_reset must be 0 (spikecast resets to 0 or subtracts θ)"
                )
            per = _per_channel(theta, out, "v_threshold / r", name)
            threshold = float(per[0])
            if np.any(per != per[0]):
                syn, threshold = _fold_scale(syn, 1.0 / per), 1.0
                walk.notes.append(f"{name}: thresholds per channel folded into the weights")
            layer = self._layer(syn, spiking=True, lam=1.0, threshold=threshold)
        walk.layers.append(layer)
        walk.neuron_kinds.append(kind)
        walk.synapse = None

    def _layer(self, syn: _Synapse, spiking: bool, lam: float, threshold: float) -> Layer:
        return Layer(
            syn.kind,
            syn.name,
            syn.in_shape,
            syn.out_shape(),
            weight=syn.weight,
            bias=syn.bias,  # type: ignore[arg-type]
            kernel=syn.kernel,
            stride=syn.stride,
            padding=syn.padding,
            lam=lam,
            threshold=threshold,
            spiking=spiking,
        )

    def pool(self, name: str, node: Any) -> None:
        walk = self.walk
        kernel = _pair(node.kernel_size, "kernel_size", name)
        if walk.synapse is not None or not walk.layers or walk.pool is not None:
            raise ConversionError(f"node '{name}': a pool must follow IF neurons")
        if _pair(node.stride, "stride", name) != kernel or _pair(node.padding, "padding", name) != (0, 0):
            raise ConversionError(
                f"node '{name}': only pools with stride = kernel and no padding fold into the next layer"
            )
        if len(walk.shape) != 3:
            raise ConversionError(f"node '{name}': a 2-D pool needs a (C, H, W) input, got {walk.shape}")
        c, h, w = walk.shape
        walk.pool = _Pool(name, kernel, (c, h, w), average=type(node).__name__ == "AvgPool2d")
        walk.shape = (c, h // kernel[0], w // kernel[1])

    def flatten(self, name: str, node: Any) -> None:
        walk = self.walk
        if walk.synapse is not None:
            raise ConversionError(f"node '{name}': Flatten between a weight layer and its neurons")
        if int(_arr(node.start_dim)) not in (0, -len(walk.shape)) or int(_arr(node.end_dim)) != -1:
            raise ConversionError(f"node '{name}': only a Flatten of the whole (C, H, W) map is supported")
        if walk.pool is not None:
            walk.pool.flattened = True
        walk.shape = (math.prod(walk.shape),)

    def run(self) -> _Walk:
        for name, node in self.chain[1:]:
            self.visit(name, node)
        return self.walk

    def visit(self, name: str, node: Any) -> None:
        kind = type(node).__name__
        walk = self.walk
        if kind in ("Conv2d", "Affine", "Linear"):
            self.synapse(name, node)
        elif kind in ("IF", "LIF", "I", "LI", "CubaLIF", "CubaLI"):
            if kind != "IF" and kind != "I":
                _refuse_leaky(name, node)
            self.neuron(name, node, integrator=kind in ("I", "LI"))
        elif kind in ("SumPool2d", "AvgPool2d"):
            self.pool(name, node)
        elif kind == "Flatten":
            self.flatten(name, node)
        elif kind == "Scale":
            if walk.layers or walk.synapse is not None:
                raise ConversionError(f"node '{name}': Scale is supported only on the input")
            walk.scale = _arr(node.scale).astype(np.float64)
        elif kind == "Output":
            self.finish(name)
        elif kind != "Identity":
            raise ConversionError(
                f"node '{name}' ({kind}) is not supported: spikecast imports Conv2d, Affine, Linear, IF, I, "
                "SumPool2d/AvgPool2d (stride = kernel), Flatten and Scale (on the input)"
            )

    def finish(self, name: str) -> None:
        """At the Output: the last layer becomes the non-spiking output integrator."""
        walk = self.walk
        if walk.pool is not None:
            raise ConversionError(f"node '{walk.pool.name}': a pool must be followed by a weight layer")
        if walk.synapse is not None:  # the graph ends in weights: integrate them (λ = 1)
            walk.layers.append(self._layer(walk.synapse, spiking=False, lam=1.0, threshold=1.0))
            walk.neuron_kinds.append("none")
            walk.synapse = None
        if not walk.layers:
            raise ConversionError(f"node '{name}': the graph has no weight layer")
        last = walk.layers[-1]
        if last.spiking:  # sinabs and snnTorch end in spiking neurons: spikecast integrates them
            walk.layers[-1] = Layer(
                last.kind,
                last.name,
                last.in_shape,
                last.out_shape,
                weight=last.weight,
                bias=last.bias,
                kernel=last.kernel,
                stride=last.stride,
                padding=last.padding,
                lam=1.0,
                threshold=1.0,
                spiking=False,
            )
            walk.notes.append(
                f"{last.name}: the graph's last spiking layer runs as the non-spiking output integrator "
                "(z = V/t, its input current averaged)"
            )


def _text(v: Any) -> str:
    v = v[()] if hasattr(v, "shape") and getattr(v, "shape", None) == () else v
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _record(graph: Any) -> dict[str, Any] | None:
    meta = getattr(graph, "metadata", None) or {}
    if META_KEY not in meta:
        return None
    try:
        record = json.loads(_text(meta[META_KEY]))
    except ValueError as exc:
        raise ModelFileError(f"the graph's '{META_KEY}' metadata is not JSON: {exc}") from exc
    if not isinstance(record, dict) or record.get("version") != META_VERSION:
        raise ModelFileError(f"the graph's '{META_KEY}' metadata has an unknown version")
    return record


def _input_spec(
    walk: _Walk, shape: tuple[int, ...], record: dict[str, Any] | None, opts: NirImportOptions
) -> InputSpec:
    chw = tuple(shape) if len(shape) == 3 else (1, 1, math.prod(shape))
    base: dict[str, Any] = dict(record["input"]) if record else {"kind": "frame", "encoding": "analog"}
    base["shape"] = chw
    if record is None and walk.scale is not None:
        per = _per_channel(walk.scale, chw, "Scale", "scale")  # type: ignore[arg-type]
        if np.all(per == per[0]):
            base["scale"] = float(per[0])
        else:
            base["std"] = tuple(float(1.0 / s) for s in per)
    for key, value in (("kind", opts.input_kind), ("encoding", opts.input_encoding), ("dt_us", opts.dt_us)):
        if value is not None:
            base[key] = value
    return InputSpec(
        kind=base["kind"],
        shape=chw,
        scale=float(base.get("scale", 1.0)),  # type: ignore[arg-type]
        mean=tuple(base.get("mean", (0.0,))),
        std=tuple(base.get("std", (1.0,))),
        encoding=base.get("encoding", "analog"),
        dt_us=int(base.get("dt_us", 1000)),
    )


def _restore(layers: list[Layer], record: dict[str, Any]) -> list[Layer]:
    """Names, λs and thresholds (float64) and absent biases from spikecast's own metadata."""
    saved = record.get("layers", [])
    if len(saved) != len(layers):
        raise ModelFileError(f"the graph has {len(layers)} layers, its spikecast metadata {len(saved)}")
    out = []
    for ly, rec in zip(layers, saved, strict=True):
        threshold = (
            float(rec["threshold"])
            if np.float32(rec["threshold"]) == np.float32(ly.threshold)
            else ly.threshold
        )
        lam = float(rec["lambda"])
        if not ly.spiking and np.float32(lam) != np.float32(ly.lam):
            lam = ly.lam  # the graph's I node was edited: trust the graph
        bias = ly.bias if rec.get("has_bias", True) or np.any(ly.bias != 0) else None
        in_shape = tuple(int(v) for v in rec.get("in_shape", ly.in_shape))
        if math.prod(in_shape) != math.prod(ly.in_shape) or (ly.kind != "linear" and in_shape != ly.in_shape):
            in_shape = ly.in_shape
        out.append(
            Layer(
                ly.kind,
                str(rec["name"]),
                in_shape,
                ly.out_shape,
                weight=ly.weight,
                bias=bias,
                kernel=ly.kernel,
                stride=ly.stride,
                padding=ly.padding,
                lam=lam,
                threshold=threshold,
                spiking=ly.spiking,
            )
        )
    return out


def from_nir(graph: Any, options: NirImportOptions | None = None) -> Network:
    """A spikecast Network from a NIR graph of IF neurons; ConversionError names what cannot map."""
    opts = options or NirImportOptions()
    chain = _chain(graph)
    importer = _Importer(chain)
    shape = importer.walk.shape
    walk = importer.run()
    record = _record(graph)
    layers = _restore(walk.layers, record) if record else walk.layers
    spec = _input_spec(walk, shape, record, opts)
    n_out = layers[-1].n_neurons
    names = opts.class_names or (
        tuple(record["class_names"]) if record else tuple(str(i) for i in range(n_out))
    )
    reset = opts.reset or (record["reset"] if record else "subtract")
    meta: dict[str, Any] = dict(record.get("meta", {})) if record else {}
    if record is None:
        meta["nir_import"] = {"neurons": walk.neuron_kinds, "notes": walk.notes}
    return Network(
        input=spec,
        layers=tuple(layers),
        class_names=tuple(names),
        reset=reset,  # type: ignore[arg-type]
        temperature=float(record["temperature"]) if record else 1.0,
        meta=meta,
        v_init=float(record.get("v_init", 0.0)) if record else 0.0,
        evidence_steps=float(record.get("evidence_steps", 0.0)) if record else 0.0,
    )


def import_nir(path: str | Path, options: NirImportOptions | None = None) -> Network:
    """Read a NIR file and import it (see :func:`from_nir`)."""
    nir = _nir()
    try:
        graph = nir.read(str(path), type_check=False)  # shapes are checked here (see to_nir)
    except (OSError, KeyError, ValueError, AssertionError) as exc:
        raise ModelFileError(f"{path}: cannot read a NIR graph: {exc}") from exc
    return from_nir(graph, options)


__all__ = ["NirImportOptions", "export_nir", "from_nir", "import_nir", "to_nir"]
