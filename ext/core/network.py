"""The Network artifact: a converted spiking network as plain arrays plus a JSON manifest.

One file: a zip of ``.npy`` members (``manifest.npy``, a JSON text as uint8, then one
member per array), no pickle anywhere. The manifest carries a format version, the
layers in order (kind, shapes, kernel, stride, padding, λ, threshold), the input
spec, class names, reset, temperature, the calibration table, ``meta`` and a sha256.

Format version 2: the sha256 covers a canonical JSON encoding of the whole manifest
(less the ``sha256`` field) and every array (name, dtype, shape, bytes); it is
:attr:`Network.sha256`, the ``model_sha256`` of every decision. Version 1 files
(earlier releases) hashed the arrays only: they still load, with a
:class:`UnverifiedManifestWarning` and ``Network.file_version == 1``; re-save them.

:func:`load_network` trusts nothing: duplicate or unexpected members are refused,
the manifest (at most 16 MiB, bounded depth) is read first and every field is
type- and range-checked, each member's declared size is checked against the
manifest and a ceiling (``max_bytes``, 4 GiB by default) *before* it is
decompressed, and every failure is a :class:`ModelFileError` naming the file and
the field.

Weights are kept in torch's layout: conv ``(C_out, C_in, kh, kw)``, linear
``(out, in)`` where ``in`` indexes the previous layer's output flattened in
``(C, H, W)`` order. The engine re-lays them out for scatter when it compiles.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from spikecast.ext.core.checks import INT32_MAX, check_float, check_int, is_finite_number, is_int
from spikecast.ext.core.errors import ModelFileError, ParameterError

FORMAT_NAME = "spikecast-network"
FORMAT_VERSION = 2

# Ranges every numeric field must lie in (in memory and in a file). They keep
# every float a normal float32 with room to spare, so λ·V/t and z/temperature
# stay finite: λ = 1e39 or temperature = 1e-320 are refused, not NaN later.
SCALE_RANGE = (1e-12, 1e12)  # λ, thresholds, input scale and std
TEMPERATURE_RANGE = (1e-6, 1e6)
V_INIT_RANGE = (0.0, 1.0)  # initial membrane / threshold: [0, 1), 1 would fire unprompted
MAX_SPIKES_RANGE = (1, 64)  # spikes a neuron may emit per step (burst coding)
EVIDENCE_STEPS_RANGE = (1.0, 1e6)  # the evidence rule's step scale t_e; 0 (the rate rule) also allowed
MEAN_LIMIT = 1e12
MAX_DIM = 1 << 20  # any one shape entry
MAX_NEURONS = (1 << 31) - 1  # product of a shape (the engine indexes with int32)
MAX_GEOMETRY = 4096  # kernel, stride, padding
MAX_LAYERS = 4096
MAX_INPUTS = 64  # inputs of one layer (a residual add: 2; a concatenation: its parts)
MAX_NAME = 1024  # characters in a layer or class name
MAX_CLASSES = 1 << 20
MAX_META_BYTES = 1 << 20  # canonical JSON of meta
MAX_META_DEPTH = 32
MAX_MANIFEST_BYTES = 16 << 20
MAX_MODEL_BYTES = 4 << 30  # default ceiling on the decompressed arrays of one file

LayerKind = Literal["conv", "linear", "maxpool"]
ResetMode = Literal["subtract", "zero"]
#: How a max-pool layer passes spikes (docs/step-semantics.md, "Pooling").
MaxPoolMode = Literal["gated", "count"]
MAX_POOL_MODES: tuple[str, ...] = get_args(MaxPoolMode)
#: What the output layer reads (docs/step-semantics.md, "Read-out").
ReadoutMode = Literal["spikes", "membrane"]
READOUT_MODES: tuple[str, ...] = get_args(ReadoutMode)
#: ``meta`` key of the operating point a converted model recommends (calibration.py).
META_OPERATING_POINT = "operating_point"
InputKind = Literal["frame", "events"]
InputEncoding = Literal["analog", "poisson"]


@dataclass(frozen=True)
class InputSpec:
    """What the first layer consumes.

    Frames: a raw image ``r`` (H, W) or (C, H, W) becomes the network input
    ``x = (r * scale - mean[c]) / std[c]``, which is what the ANN was trained on.
    Events: per-step event counts per (polarity channel, y, x) binned over ``dt_us``;
    ``shape[0]`` is 2 (OFF, ON channels) or 1 (polarities merged).
    """

    kind: InputKind
    shape: tuple[int, int, int]
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    encoding: InputEncoding = "analog"
    dt_us: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in ("frame", "events"):
            raise ParameterError(f"input kind must be 'frame' or 'events', not {self.kind!r}")
        if self.encoding not in ("analog", "poisson"):
            raise ParameterError(f"input encoding must be 'analog' or 'poisson', not {self.encoding!r}")
        if len(self.shape) != 3:
            raise ParameterError(f"input shape must be (C, H, W), not {self.shape}")
        _check_shape("input shape", self.shape)
        c = self.shape[0]
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, c):
                raise ParameterError(f"input {name} needs 1 or {c} values, got {len(vals)}")
        _check_positive("input scale", self.scale, SCALE_RANGE)
        for v in self.std:
            _check_positive("input std", v, SCALE_RANGE)
        for v in self.mean:
            check_float("input mean", v, -MEAN_LIMIT, MEAN_LIMIT)
        check_int("input dt_us", self.dt_us, 1, INT32_MAX)
        if self.kind == "events" and (self.shape[0] not in (1, 2) or self.dt_us < 1):
            raise ParameterError(
                f"event input needs 1 or 2 polarity channels and dt_us >= 1, "
                f"got {self.shape[0]} channels, dt_us={self.dt_us}"
            )

    @property
    def merge_polarity(self) -> bool:
        return self.kind == "events" and self.shape[0] == 1

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Map a raw frame (H, W), (C, H, W) or a batch (B, C, H, W) to network input, float32."""
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.shape[-3:] != self.shape:
            raise ParameterError(f"frame shape {x.shape} does not match the network input {self.shape}")
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        out: np.ndarray = ((x * np.float32(self.scale) - mean) / std).astype(np.float32)
        return out


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of the spiking network.

    ``spiking`` is False only for the last layer, the non-spiking output integrator.
    ``lam`` is λ_l, the activation scale the layer was normalised by, so that
    ``rate * lam`` estimates the ANN activation.
    """

    kind: LayerKind
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    lam: float = 1.0
    threshold: float = 1.0
    spiking: bool = True
    #: Conv only: input and output channels split into ``groups`` groups, each output
    #: channel seeing only its group's inputs (torch's ``Conv2d(groups=g)``); the weight
    #: is then ``(C_out, C_in / groups, kh, kw)``. ``groups == C_in``: depthwise.
    groups: int = 1
    #: The layers whose spikes this layer reads (-1: the network input). The first is
    #: the primary input, whose synapses are this layer's in_shape, weight, kernel,
    #: stride, padding and groups; each further one has its own synapses in ``extra``.
    #: Empty (the default): the previous layer, a chain.
    inputs: tuple[int, ...] = ()
    #: One weight set per further input, into this layer's membranes: a conv or linear
    #: Layer (in_shape, weight, kernel, stride, padding, groups; no bias, its out_shape
    #: this layer's). A residual add or a channel concatenation feeds a layer this way.
    extra: tuple[Layer, ...] = ()

    def sources(self, index: int) -> tuple[int, ...]:
        """The layers this layer (at ``index``) reads: ``inputs``, or the previous one."""
        return tuple(self.inputs) if self.inputs else (index - 1,)

    @property
    def n_neurons(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the ANN layer per input: every weight (of every weight
        set) times the output positions it is applied at; 0 for max-pool."""
        positions = int(np.prod(self.out_shape[1:])) if self.kind == "conv" else 1
        own = 0 if self.weight is None else int(self.weight.size) * positions
        return own + sum(extra.macs for extra in self.extra)

    def check(self, where: str) -> None:
        """Raise ParameterError if shapes, weights and geometry disagree or are out of range."""
        self._check_values(where)
        expect = self._expected_out(where)
        if tuple(self.out_shape) != tuple(expect):
            raise ParameterError(f"{where}: output shape {self.out_shape} should be {expect}")
        if self.bias is not None and self.bias.shape != (self.out_shape[0],):
            raise ParameterError(f"{where}: bias shape {self.bias.shape} should be ({self.out_shape[0]},)")
        for arr in (self.weight, self.bias):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ParameterError(f"{where}: weights contain NaN or infinity")

    def _check_values(self, where: str) -> None:
        _check_shape(f"{where}: in_shape", self.in_shape)
        _check_shape(f"{where}: out_shape", self.out_shape)
        geometry = (("kernel", self.kernel, 1), ("stride", self.stride, 1), ("padding", self.padding, 0))
        for name, pair, lo in geometry:
            if len(pair) != 2:
                raise ParameterError(f"{where}: {name} must be two integers, got {pair}")
            for v in pair:
                check_int(f"{where}: {name}", v, lo, MAX_GEOMETRY)
        _check_positive(f"{where}: threshold", self.threshold, SCALE_RANGE)
        _check_positive(f"{where}: lambda", self.lam, SCALE_RANGE)
        check_int(f"{where}: groups", self.groups, 1, MAX_DIM)
        if self.groups != 1 and self.kind != "conv":
            raise ParameterError(f"{where}: only a conv layer has groups, not {self.kind}")

    def _expected_out(self, where: str) -> tuple[int, ...]:
        if self.kind == "maxpool":
            if self.weight is not None or self.bias is not None:
                raise ParameterError(f"{where}: a maxpool layer has no weights")
            return _pool_out(self.in_shape, self.kernel, self.stride, self.padding)
        if self.kind == "conv":
            if self.weight is None or self.weight.ndim != 4:
                raise ParameterError(f"{where}: conv weight must be 4-D (C_out, C_in, kh, kw)")
            c_out, c_in_g, kh, kw = self.weight.shape
            g = self.groups
            fits = len(self.in_shape) == 3 and self.in_shape[0] == c_in_g * g and c_out % g == 0
            if not fits or (kh, kw) != self.kernel:
                raise ParameterError(
                    f"{where}: conv weight {self.weight.shape} does not fit input {self.in_shape}, "
                    f"kernel {self.kernel} and groups {g}"
                )
            _, h, w = _pool_out(self.in_shape, self.kernel, self.stride, self.padding)
            return (c_out, h, w)
        if self.kind == "linear":
            if self.weight is None or self.weight.ndim != 2:
                raise ParameterError(f"{where}: linear weight must be 2-D (out, in)")
            if self.weight.shape[1] != int(np.prod(self.in_shape)):
                raise ParameterError(
                    f"{where}: linear weight {self.weight.shape} does not fit input {self.in_shape}"
                )
            return (int(self.weight.shape[0]),)
        raise ParameterError(f"{where}: unknown layer kind {self.kind!r}")


def _pool_out(
    in_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ParameterError(f"a 2-D layer needs a (C, H, W) input, got {in_shape}")
    c, h, w = in_shape
    if min(*kernel, *stride) < 1 or min(padding) < 0:
        raise ParameterError(f"kernel {kernel} and stride {stride} must be >= 1, padding {padding} >= 0")
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ParameterError(f"kernel {kernel} with padding {padding} does not fit input {in_shape}")
    return (c, oh, ow)


@dataclass(frozen=True, eq=False)
class CalibrationTable:
    """Per-step confidence and correctness of a held-out set, recorded at conversion.

    ``confidence[t-1, n]`` is c(t) of held-out sample n and ``correct[t-1, n]``
    whether the argmax of z(t) was its label. Any early-exit rule (τ, t_min, t_max)
    can be replayed exactly on it; see :mod:`spikecast.runtime.decision`.
    """

    confidence: np.ndarray  # (T, N) float32
    correct: np.ndarray  # (T, N) bool

    def __post_init__(self) -> None:
        if self.confidence.ndim != 2 or self.confidence.shape != self.correct.shape:
            raise ParameterError(
                f"calibration confidence {self.confidence.shape} and correct {self.correct.shape} "
                "must both be (T, N)"
            )
        if self.correct.dtype != np.bool_:
            raise ParameterError(f"calibration correct must be bool, not {self.correct.dtype}")
        conf = self.confidence
        if conf.dtype.kind != "f" or not bool(np.all((conf >= 0) & (conf <= 1))):
            raise ParameterError("calibration confidence must be floats in [0, 1] (no NaN)")

    @property
    def n_steps(self) -> int:
        return int(self.confidence.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.confidence.shape[1])


@dataclass(frozen=True, eq=False)
class Network:
    """A converted spiking network: layers in order, input spec, classes, calibration."""

    input: InputSpec
    layers: tuple[Layer, ...]
    class_names: tuple[str, ...]
    reset: ResetMode = "subtract"
    temperature: float = 1.0
    calibration: CalibrationTable | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: Initial membrane potential of every spiking layer after a reset, as a fraction of
    #: its threshold, in [0, 1): 0.5 turns the rate code's floor quantisation into
    #: round-to-nearest (docs/step-semantics.md). The output integrator starts at 0.
    v_init: float = 0.0
    #: The early-exit signal (docs/decisions.md). 0: the rate rule, c(t) = max softmax(z(t)/T),
    #: confidence in the output *rate*. t_e > 0: the evidence rule, c(t) = max
    #: softmax(z(t)·t/(t_e·T)), confidence in the *accumulated* output λ·V/t_e, which keeps
    #: growing while the evidence agrees (a sequential test); at t = t_e the two agree.
    evidence_steps: float = 0.0
    #: Spikes a hidden neuron may emit in one step (docs/step-semantics.md): 1 is the
    #: classic IF neuron; B > 1 emits n = min(floor(V/θ), B) spikes once V >= θ and
    #: subtracts n·θ (burst coding; reset by subtraction only). Spikes are events: each
    #: of the n reaches every target, and the pools count each.
    max_spikes: int = 1
    #: Max-pool semantics (docs/step-semantics.md, "Pooling"). "gated" (Rueckauer et al.):
    #: a window passes the spikes of its input with the largest count so far. "count": a
    #: window emits M(t) - M(t-1) spikes, where M is the largest count among its inputs, so
    #: its own count is exactly the max of its inputs' counts (the rate code's max-pool).
    max_pool: MaxPoolMode = "gated"
    #: What the logits read (docs/step-semantics.md, "Read-out"). "spikes": the output
    #: integrator's V, which sums the last hidden layer's spikes (Rueckauer et al.).
    #: "membrane": the output weights applied to that layer's spike counts *plus* its
    #: residual membrane, N + V/θ − v_init (its integrated input since the reset, in units
    #: of θ), through ReLU and any max-pools between: z(t) = λ_L (W·P(ReLU(N + V/θ −
    #: v_init)) + b·t)/t. The last quantisation of the rate code drops out of the logits;
    #: the spikes are the same. Needs reset by subtraction and a linear output layer that
    #: reads a spiking layer through max-pools only.
    readout: ReadoutMode = "spikes"
    #: Format version of the file this network was loaded from (None: built in
    #: memory). 1 means only its arrays were verified, not its manifest.
    file_version: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.check()

    # -- structure -----------------------------------------------------------------
    def check(self) -> None:
        """Validate the whole chain; raise ParameterError naming the layer."""
        if not self.layers:
            raise ParameterError("a network needs at least one layer")
        if self.reset not in ("subtract", "zero"):
            raise ParameterError(f"reset must be 'subtract' or 'zero', not {self.reset!r}")
        self._check_fields()
        for i, layer in enumerate(self.layers):
            where = f"layer {i} ({layer.name})"
            self._check_inputs(i, layer, where)
            layer.check(where)
            last = i == len(self.layers) - 1
            if layer.spiking == last:
                raise ParameterError(f"{where}: only the last layer is the non-spiking output integrator")
        if self.layers[0].kind == "maxpool":
            raise ParameterError("the first layer must be conv or linear, not maxpool")
        if self.layers[-1].kind == "maxpool":
            raise ParameterError("the last layer must be conv or linear, not maxpool")
        n_out = self.layers[-1].n_neurons
        if len(self.class_names) != n_out:
            raise ParameterError(f"{len(self.class_names)} class names for {n_out} outputs")
        if self.readout == "membrane":
            self.readout_source()

    def readout_source(self) -> int:
        """The spiking layer the membrane read-out reads: the output layer's source, or the
        source of the chain of max-pools between them (each reading the layer before it).
        Raises ParameterError where the membrane read-out does not apply."""
        n = len(self.layers)
        out = self.layers[-1]
        if self.reset != "subtract":
            raise ParameterError("readout='membrane' needs reset='subtract' (N + V/θ is the integrated "
                                 "input only when a spike subtracts θ)")  # fmt: skip
        if n < 2 or out.kind != "linear" or out.extra or out.sources(n - 1) != (n - 2,):
            raise ParameterError("readout='membrane' needs a linear output layer reading the layer before it")
        j = n - 2
        while self.layers[j].kind == "maxpool":
            if self.layers[j].sources(j) != (j - 1,) or j == 0:
                raise ParameterError(f"readout='membrane': max-pool layer {j} must read the layer before it")
            j -= 1
        return j

    def _source_shape(self, j: int) -> tuple[int, ...]:
        return tuple(self.input.shape) if j < 0 else tuple(self.layers[j].out_shape)

    def _check_inputs(self, i: int, layer: Layer, where: str) -> None:
        """Sources are earlier layers (only layer 0 reads the network input) whose
        outputs fit the synapses that read them."""
        srcs = layer.sources(i)
        if len(srcs) != 1 + len(layer.extra) or len(srcs) > MAX_INPUTS:
            raise ParameterError(
                f"{where}: {len(srcs)} inputs need {len(srcs) - 1} extra weight sets, got "
                f"{len(layer.extra)} (at most {MAX_INPUTS} inputs)"
            )
        for k, j in enumerate(srcs):  # the input (-1) only as layer 0's primary
            if not (is_int(j) and (0 <= j < i or (j == -1 and i == k == 0))):
                raise ParameterError(
                    f"{where}: input {j} is not an earlier layer (-1: the input, layer 0 only)"
                )
        if layer.extra and layer.kind == "maxpool":
            raise ParameterError(f"{where}: a maxpool layer has one input")
        for k, (syn, j) in enumerate(zip((layer, *layer.extra), srcs, strict=True)):
            shape = self._source_shape(j)
            at = where if k == 0 else f"{where} input {k}"
            if syn.kind == "linear":
                if int(np.prod(syn.in_shape)) != int(np.prod(shape)):
                    raise ParameterError(f"{at}: input size {syn.in_shape} != output {shape} of {j}")
            elif tuple(syn.in_shape) != shape:
                raise ParameterError(f"{at}: input shape {syn.in_shape} != output {shape} of {j}")
            if k == 0:
                continue
            if syn.kind not in ("conv", "linear") or syn.bias is not None or syn.extra or syn.inputs:
                raise ParameterError(f"{at}: an extra weight set is a conv or linear without bias")
            syn.check(at)
            if tuple(syn.out_shape) != tuple(layer.out_shape):
                raise ParameterError(f"{at}: output shape {syn.out_shape} != the layer's {layer.out_shape}")

    def _check_fields(self) -> None:
        _check_positive("temperature", self.temperature, TEMPERATURE_RANGE)
        check_v_init("v_init", self.v_init)
        check_evidence_steps("evidence_steps", self.evidence_steps)
        check_int("max_spikes", self.max_spikes, *MAX_SPIKES_RANGE)
        if self.max_spikes > 1 and self.reset != "subtract":
            raise ParameterError(f"max_spikes={self.max_spikes} needs reset='subtract', not {self.reset!r}")
        check_max_pool("max_pool", self.max_pool)
        check_readout("readout", self.readout)
        if len(self.layers) > MAX_LAYERS:
            raise ParameterError(f"{len(self.layers)} layers, more than {MAX_LAYERS}")
        for i, name in enumerate((*self.class_names, *(ly.name for ly in self.layers))):
            if not isinstance(name, str) or len(name) > MAX_NAME:
                raise ParameterError(f"name {i} must be a string of at most {MAX_NAME} characters")
        check_meta(self.meta)

    @property
    def exit_signal(self) -> str:
        """"rate" or "evidence/t_e": which c(t) the early exit compares with τ."""
        return "rate" if self.evidence_steps == 0 else f"evidence/{self.evidence_steps:g}"

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def ann_macs(self) -> int:
        """Multiply-accumulates of the ANN per input (the cost SynOps are compared with)."""
        return sum(ly.macs for ly in self.layers)

    @property
    def sha256(self) -> str:
        """sha256 over the canonical manifest (every field, ``meta`` included) and every array.

        This is the ``sha256`` a version-2 file stores and the ``model_sha256`` of
        every decision: any edit to a threshold, λ, class name, temperature, reset,
        dt_us, meta, weight or calibration value changes it.
        """
        arrays = self._arrays()
        return _digest(self._file_manifest(arrays), arrays)

    def initial_potential(self, layer: Layer) -> float:
        """The membrane potential ``layer`` starts from after a reset (float32 arithmetic,
        so the engine and the reference start from the same value): v_init·θ for a
        spiking layer, 0 for the output integrator and max-pools (which have none)."""
        if not layer.spiking or layer.kind == "maxpool":
            return 0.0
        return float(np.float32(self.v_init) * np.float32(layer.threshold))

    def confidence(self, logits: np.ndarray, t_eff: np.ndarray | float) -> np.ndarray:
        """c(t) of logits z (..., K) after ``t_eff`` steps, in double precision and in the
        engine's order of operations (so replays decide at the same step as the engine)."""
        return softmax_confidence(logits, t_eff, self.temperature, self.evidence_steps)

    def probabilities(self, logits: np.ndarray, t_eff: float) -> np.ndarray:
        """The softmax (K,) whose maximum is :meth:`confidence`: what a decision reports."""
        z = np.asarray(logits, np.float32).astype(np.float64)
        p: np.ndarray = np.exp(_scaled_gaps(z, t_eff, self.temperature, self.evidence_steps))
        return p / p.sum(axis=-1, keepdims=True)

    def with_(self, **changes: Any) -> Network:
        """A copy with some fields replaced (the dataclass is frozen)."""
        return replace(self, **changes)

    def summary(self) -> str:
        """Human-readable table of layers, shapes, λ, neuron counts and input spec."""
        spec = self.input
        if spec.kind == "frame":
            inp = (
                f"frame {spec.shape} scale={spec.scale:g} mean={list(spec.mean)} "
                f"std={list(spec.std)} encoding={spec.encoding}"
            )
        else:
            pol = "merged" if spec.merge_polarity else "OFF/ON channels"
            inp = f"events {spec.shape} ({pol}), dt={spec.dt_us} us"
        lines = [
            f"input: {inp}",
            f"reset: {self.reset}   v_init: {self.v_init:g}   temperature: {self.temperature:g}   "
            f"exit signal: {self.exit_signal}   "
            + (f"max spikes/step: {self.max_spikes}   " if self.max_spikes > 1 else "")
            + (f"max-pool: {self.max_pool}   " if any(ly.kind == "maxpool" for ly in self.layers) else "")
            + (f"read-out: {self.readout}   " if self.readout != "spikes" else "")
            + f"classes: {self.n_classes}",
            f"{'#':>2}  {'kind':<8}{'name':<16}{'in':<16}{'out':<16}{'k/s/p':<14}"
            f"{'lambda':>10}{'theta':>7}{'neurons':>9}",
        ]
        total = 0
        for i, ly in enumerate(self.layers):
            geo = "" if ly.kind == "linear" else f"{ly.kernel[0]}/{ly.stride[0]}/{ly.padding[0]}"
            if ly.groups != 1:
                geo += f" g{ly.groups}"
            if ly.inputs:
                geo += " <" + ",".join(str(j) for j in ly.inputs)
            kind = ly.kind if ly.spiking else f"{ly.kind}*"
            n = ly.n_neurons if ly.kind != "maxpool" else 0
            total += n
            lines.append(
                f"{i:>2}  {kind:<8}{ly.name[:15]:<16}{_fmt(ly.in_shape):<16}{_fmt(ly.out_shape):<16}"
                f"{geo:<14}{ly.lam:>10.4g}{ly.threshold:>7.3g}{n:>9}"
            )
        lines.append(f"neurons: {total}   (* = non-spiking output integrator)")
        if self.calibration is not None:
            c = self.calibration
            lines.append(f"calibration table: {c.n_samples} held-out samples x {c.n_steps} steps")
        lines.extend(_point_lines(self.meta))
        lines.append(f"sha256: {self.sha256}")
        return "\n".join(lines)

    # -- persistence ---------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for i, ly in enumerate(self.layers):
            if ly.weight is not None:
                arrays[f"layer{i}.weight"] = np.ascontiguousarray(ly.weight, dtype=np.float32)
            if ly.bias is not None:
                arrays[f"layer{i}.bias"] = np.ascontiguousarray(ly.bias, dtype=np.float32)
            for k, e in enumerate(ly.extra):
                arrays[f"layer{i}.extra{k + 1}.weight"] = np.ascontiguousarray(e.weight, dtype=np.float32)
        if self.calibration is not None:
            arrays["calibration.confidence"] = np.ascontiguousarray(
                self.calibration.confidence, dtype=np.float32
            )
            arrays["calibration.correct"] = np.ascontiguousarray(self.calibration.correct, dtype=bool)
        return arrays

    def manifest(self) -> dict[str, Any]:
        spec = self.input
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "input": {
                "kind": spec.kind,
                "shape": [int(v) for v in spec.shape],
                "scale": float(spec.scale),
                "mean": [float(v) for v in spec.mean],
                "std": [float(v) for v in spec.std],
                "encoding": spec.encoding,
                "dt_us": int(spec.dt_us),
            },
            "layers": [
                {
                    "kind": ly.kind,
                    "name": ly.name,
                    "in_shape": [int(v) for v in ly.in_shape],
                    "out_shape": [int(v) for v in ly.out_shape],
                    "kernel": [int(v) for v in ly.kernel],
                    "stride": [int(v) for v in ly.stride],
                    "padding": [int(v) for v in ly.padding],
                    "lambda": float(ly.lam),
                    "threshold": float(ly.threshold),
                    "spiking": bool(ly.spiking),
                    "has_weight": ly.weight is not None,
                    "has_bias": ly.bias is not None,
                    # Written only when not 1, so ungrouped networks keep the manifest
                    # (and sha256) of earlier releases, and their files load unchanged.
                    **({"groups": int(ly.groups)} if ly.groups != 1 else {}),
                    **({"inputs": [int(j) for j in ly.inputs]} if ly.inputs else {}),
                    **({"extra": [_synapse_manifest(e) for e in ly.extra]} if ly.extra else {}),
                }
                for ly in self.layers
            ],
            "class_names": [str(c) for c in self.class_names],
            "reset": self.reset,
            "temperature": float(self.temperature),
            # Written only when not 0, so networks without it keep the manifest (and
            # sha256) of earlier releases.
            **({"v_init": float(self.v_init)} if self.v_init != 0 else {}),
            **({"evidence_steps": float(self.evidence_steps)} if self.evidence_steps != 0 else {}),
            **({"max_spikes": int(self.max_spikes)} if self.max_spikes != 1 else {}),
            **({"max_pool": self.max_pool} if self.max_pool != "gated" else {}),
            **({"readout": self.readout} if self.readout != "spikes" else {}),
            "calibration": None
            if self.calibration is None
            else {"steps": self.calibration.n_steps, "samples": self.calibration.n_samples},
            "meta": dict(self.meta),
        }

    def _file_manifest(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
        manifest = self.manifest()
        manifest["arrays"] = {k: {"dtype": v.dtype.name, "shape": list(v.shape)} for k, v in arrays.items()}
        return manifest

    def save(self, path: str | Path) -> Path:
        """Write the network to one file (format version 2, conventionally ``.scn``); return the path."""
        path = Path(path)
        arrays = self._arrays()
        manifest = self._file_manifest(arrays)
        manifest["sha256"] = _digest(manifest, arrays)
        text = json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8")
        members = {"manifest": np.frombuffer(text, dtype=np.uint8), **arrays}
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, arr in members.items():
                with zf.open(f"{name}.npy", "w", force_zip64=arr.nbytes > (1 << 30)) as f:
                    np.lib.format.write_array(f, arr, allow_pickle=False)
        return path

    @classmethod
    def load(cls, path: str | Path, *, max_bytes: int = MAX_MODEL_BYTES) -> Network:
        """Load and verify a network file; raise ModelFileError naming the file and problem."""
        return load_network(path, max_bytes=max_bytes)


def _synapse_manifest(e: Layer) -> dict[str, Any]:
    """An extra weight set of a layer: its geometry (the weight is an array member)."""
    return {
        "kind": e.kind,
        "in_shape": [int(v) for v in e.in_shape],
        "kernel": [int(v) for v in e.kernel],
        "stride": [int(v) for v in e.stride],
        "padding": [int(v) for v in e.padding],
        "groups": int(e.groups),
    }


def _point_lines(meta: Mapping[str, Any]) -> list[str]:
    """For summary(): the λ percentile (and whether convert() chose it), the recommended
    operating point with what its table says of it, and a warning when the table was too
    small to bound the plateau accuracy the point gives away (calibration.py)."""
    lines = []
    if is_finite_number(meta.get("percentile")):
        choice = meta.get("percentile_choice")
        how = ""
        if isinstance(choice, dict) and isinstance(choice.get("candidates"), dict):
            how = f" (chosen on the holdout table of {', '.join(choice['candidates'])})"
        lines.append(f"lambda percentile: {float(meta['percentile']):g}{how}")
    burst = meta.get("max_spikes_choice")
    if isinstance(burst, dict) and isinstance(burst.get("candidates"), dict):
        lines.append(f"spikes per step: up to {burst.get('chosen')} (chosen on the holdout run of "
                     f"{', '.join(burst['candidates'])}: the least work per decision)")
    readout = meta.get("readout_choice")
    if isinstance(readout, dict) and isinstance(readout.get("candidates"), dict):
        lines.append(f"read-out: {readout.get('chosen')} (chosen on the holdout table of "
                     f"{', '.join(readout['candidates'])}: the fewest mean steps at equal accuracy)")
    bias = meta.get("bias_calibration")
    if isinstance(bias, dict) and all(is_finite_number(bias.get(k)) for k in ("steps", "frames")):
        lines.append(f"biases: calibrated so that each channel's rate after {bias['steps']} steps matches "
                     f"its ANN activation on {bias['frames']} calibration frames")
    point = meta.get(META_OPERATING_POINT)
    if not isinstance(point, dict):
        return lines
    if all(is_finite_number(point.get(k)) for k in ("tau", "t_min", "t_max")):
        line = f"recommended point: tau={point['tau']:g} t_min={point['t_min']} t_max={point['t_max']}"
        if all(is_finite_number(point.get(k)) for k in ("accuracy", "mean_steps", "plateau_accuracy")):
            line += (f": {point['accuracy']:.2%} on the table after {point['mean_steps']:.1f} mean "
                     f"steps (plateau {point['plateau_accuracy']:.2%})")
        lines.append(line)
    warning = small_table_warning(meta)
    if warning is not None:
        lines.append(f"  {warning}")
    return lines


def small_table_warning(meta: Mapping[str, Any]) -> str | None:
    """Why the recommended point (``meta["operating_point"]``) is not a safe default, if
    its calibration table was too small to bound the plateau accuracy it gives away
    within its tolerance (ext/core/calibration.py); None when it was, or is not known."""
    point = meta.get(META_OPERATING_POINT)
    keys = ("lost_upper", "tolerance")
    if not isinstance(point, dict) or not all(is_finite_number(point.get(k)) for k in keys):
        return None
    bound, tol = float(point["lost_upper"]), float(point["tolerance"])
    if bound <= tol:
        return None
    n = f"its {point['samples']}" if is_int(point.get("samples")) else "its calibration table's"
    return (f"{n} held-out samples are too few to bound what the recommended point gives away "
            f"within {tol:.1%} (bound {bound:.1%}): a larger holdout set gives a safer default")


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


# -- value checks shared by the dataclasses and the loader ------------------------


def check_v_init(name: str, value: Any) -> float:
    """The initial membrane potential as a fraction of threshold: a number in [0, 1)."""
    return check_float(name, value, *V_INIT_RANGE, hi_open=True)


def check_max_pool(name: str, value: Any) -> str:
    """A max-pool mode: one of MAX_POOL_MODES."""
    if value not in MAX_POOL_MODES:
        raise ParameterError(f"{name} must be one of {MAX_POOL_MODES}, not {value!r}")
    return str(value)


def check_readout(name: str, value: Any) -> str:
    """A read-out mode: one of READOUT_MODES."""
    if value not in READOUT_MODES:
        raise ParameterError(f"{name} must be one of {READOUT_MODES}, not {value!r}")
    return str(value)


def check_evidence_steps(name: str, value: Any) -> float:
    """The evidence rule's step scale t_e: 0 (the rate rule) or a number in [1, 1e6]."""
    if is_finite_number(value) and float(value) == 0:
        return 0.0
    return check_float(name, value, *EVIDENCE_STEPS_RANGE)


def _scaled_gaps(
    z: np.ndarray, t_eff: np.ndarray | float, temperature: float, evidence_steps: float
) -> np.ndarray:
    """(z_k − max z)/T, times t_eff/t_e under the evidence rule: the exponents of c(t)."""
    d: np.ndarray = (z - z.max(axis=-1, keepdims=True)) / float(np.float32(temperature))
    if evidence_steps:
        g = np.asarray(np.float32(t_eff), np.float64) / float(np.float32(evidence_steps))
        d = d * (g[..., None] if np.ndim(g) else g)
    return d


def softmax_confidence(
    logits: np.ndarray, t_eff: np.ndarray | float, temperature: float, evidence_steps: float = 0.0
) -> np.ndarray:
    """c = max softmax of float32 logits (..., K) as the engine computes it: in double,
    exponents (z_k − z_max)/T (× t_eff/t_e under the evidence rule), summed in class
    order. ``t_eff`` broadcasts against the leading axes (a scalar, or (T, 1) steps)."""
    d = _scaled_gaps(np.asarray(logits, np.float32).astype(np.float64), t_eff, temperature, evidence_steps)
    total = np.zeros(d.shape[:-1])
    for k in range(d.shape[-1]):
        total += np.exp(d[..., k])
    out: np.ndarray = 1.0 / total
    return out


def _check_positive(name: str, value: Any, bounds: tuple[float, float]) -> float:
    return check_float(name, value, bounds[0], bounds[1])


def _check_shape(name: str, shape: tuple[int, ...]) -> None:
    if not 1 <= len(shape) <= 3:
        raise ParameterError(f"{name} must have 1 to 3 entries, got {shape}")
    for v in shape:
        check_int(name, v, 1, MAX_DIM)
    if math.prod(int(v) for v in shape) > MAX_NEURONS:
        raise ParameterError(f"{name} {shape} has more than {MAX_NEURONS} entries")


def check_meta(meta: Any) -> None:
    """``meta`` must be a JSON object: str keys, finite numbers, bounded depth and size."""
    if not isinstance(meta, Mapping):
        raise ParameterError(f"meta must be a mapping, got {type(meta).__name__}")
    _check_json_tree(meta, "meta", MAX_META_DEPTH)
    try:
        size = len(_canonical_json(dict(meta)))
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"meta is not JSON: {exc}") from None
    if size > MAX_META_BYTES:
        raise ParameterError(f"meta is {size} bytes of JSON, more than {MAX_META_BYTES}")


def _check_json_tree(obj: Any, name: str, max_depth: int) -> None:
    """JSON values only (str keys, finite numbers), nested at most ``max_depth`` deep."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > max_depth:
            raise ParameterError(f"{name} is nested deeper than {max_depth} levels")
        if isinstance(obj, Mapping):
            if not all(isinstance(k, str) for k in obj):
                raise ParameterError(f"{name} keys must be strings")
            stack.extend((v, depth + 1) for v in obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend((v, depth + 1) for v in obj)
        elif isinstance(obj, float) and not math.isfinite(obj):
            raise ParameterError(f"{name} holds a non-finite number {obj}")
        elif obj is not None and not isinstance(obj, (bool, int, float, str)):
            raise ParameterError(f"{name} holds a {type(obj).__name__}; only JSON values are allowed")


# -- hashing --------------------------------------------------------------------


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _digest(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """Format 2: sha256 of the canonical manifest (less ``sha256``), then every array."""
    text = _canonical_json({k: v for k, v in manifest.items() if k != "sha256"})
    h = hashlib.sha256(b"spikecast-network\0")
    h.update(struct.pack("<Q", len(text)))
    h.update(text)
    _update_arrays(h, arrays)
    return h.hexdigest()


def _hash_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """Format 1: sha256 over the arrays only (the manifest was not covered)."""
    h = hashlib.sha256()
    _update_arrays(h, arrays)
    return h.hexdigest()


def _update_arrays(h: Any, arrays: Mapping[str, np.ndarray]) -> None:
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.view(np.uint8).reshape(-1) if a.size else b"")


# -- loading --------------------------------------------------------------------


class UnverifiedManifestWarning(UserWarning):
    """A format-1 file: its arrays were verified, its manifest was not. Re-save it."""


class SmallTableWarning(UserWarning):
    """A converted model's holdout set was too small for a safe recommended point."""


class _Bad(Exception):
    """A manifest field is missing, of the wrong type or out of range."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"manifest field {where}: {problem}")


_TOP_KEYS = (
    "format", "format_version", "input", "layers", "class_names", "reset", "temperature",
    "calibration", "meta", "arrays", "sha256",
)  # fmt: skip
# absent: 0, 0, 1, "gated", "spikes"
_TOP_OPTIONAL = ("v_init", "evidence_steps", "max_spikes", "max_pool", "readout")
_INPUT_KEYS = ("kind", "shape", "scale", "mean", "std", "encoding", "dt_us")
_LAYER_KEYS = (
    "kind", "name", "in_shape", "out_shape", "kernel", "stride", "padding", "lambda", "threshold",
    "spiking", "has_weight", "has_bias",
)  # fmt: skip
_LAYER_OPTIONAL = ("groups", "inputs", "extra")  # absent: 1, the previous layer, none
# Everything zipfile, zlib and numpy's .npy header parser raise on hostile bytes.
_ZIP_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError, struct.error,
    NotImplementedError, RuntimeError, OverflowError, KeyError, IndexError, SyntaxError,
    tokenize.TokenError,  # numpy's header parser on an unterminated dict (not a ValueError)
)  # fmt: skip
_DTYPES = {"float32": np.dtype("<f4"), "bool": np.dtype("|b1")}
_MAX_NPY_HEADER = 65536


class _Obj:
    """Typed, range-checked access to one JSON object of the manifest."""

    def __init__(
        self, obj: Any, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> None:
        if not isinstance(obj, dict):
            raise _Bad(where, f"must be an object, got {type(obj).__name__}")
        missing = [k for k in keys if k not in obj]
        extra = sorted(set(obj) - set(keys) - set(optional))
        if missing or extra:
            raise _Bad(where, f"missing keys {missing}, unexpected keys {extra}")
        self.obj, self.where = obj, where

    def _get(self, key: str, check: Any, *args: Any) -> Any:
        try:
            return check(key, self.obj[key], *args)
        except ParameterError as exc:
            raise _Bad(f"{self.where}.{key}", str(exc).removeprefix(f"{key} ")) from None

    def get_int(self, key: str, lo: int, hi: int) -> int:
        return int(self._get(key, check_int, lo, hi))

    def get_num(self, key: str, lo: float, hi: float) -> float:
        return float(self._get(key, check_float, lo, hi))

    def get_ints(self, key: str, lengths: tuple[int, ...], lo: int, hi: int) -> tuple[int, ...]:
        vals = self.get_list(key, max(lengths))
        if len(vals) not in lengths:
            raise _Bad(f"{self.where}.{key}", f"needs {' or '.join(map(str, lengths))} entries")
        return tuple(int(self._get(key, lambda k, _v, v=v: check_int(k, v, lo, hi))) for v in vals)

    def get_nums(self, key: str, lo: float, hi: float) -> tuple[float, ...]:
        vals = self.get_list(key, MAX_DIM)
        return tuple(float(self._get(key, lambda k, _v, v=v: check_float(k, v, lo, hi))) for v in vals)

    def get_list(self, key: str, max_len: int) -> list[Any]:
        v = self.obj[key]
        if not isinstance(v, list) or len(v) > max_len:
            raise _Bad(f"{self.where}.{key}", f"must be a list of at most {max_len} entries")
        return v

    def get_text(self, key: str, choices: tuple[str, ...] | None = None) -> str:
        v = self.obj[key]
        if not isinstance(v, str) or len(v) > MAX_NAME or (choices is not None and v not in choices):
            want = f"one of {choices}" if choices else f"a string of at most {MAX_NAME} characters"
            raise _Bad(f"{self.where}.{key}", f"must be {want}, got {str(v)[:80]!r}")
        return v

    def get_flag(self, key: str) -> bool:
        return bool(self._get(key, _strict_bool))


def _strict_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"{name} must be true or false, got {value!r}")
    return value


@contextmanager
def _model_errors(path: Path) -> Iterator[None]:
    """Turn every failure while reading ``path`` into a ModelFileError naming it."""
    try:
        yield
    except ModelFileError:
        raise
    except _Bad as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except ParameterError as exc:
        raise ModelFileError(f"{path}: inconsistent manifest: {exc}") from None
    except _ZIP_ERRORS as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise ModelFileError(f"{path}: corrupt or truncated network file: {problem}") from None


def load_network(path: str | Path, *, max_bytes: int = MAX_MODEL_BYTES) -> Network:
    """Load a ``.scn`` file written by :meth:`Network.save`, checking everything.

    ``max_bytes`` caps the decompressed size of all arrays together; it is checked
    against the sizes the zip declares before anything is decompressed, so memory
    stays below the file size plus ``max_bytes`` (plus the 16 MiB manifest cap).
    """
    check_int("max_bytes", max_bytes, 1)
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read network file: {exc}") from exc
    with f, _model_errors(path):
        if f.read(2) != b"PK":
            raise ModelFileError(f"{path}: not a spikecast network file (no zip header at byte 0)")
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            return _load_zip(zf, path, max_bytes)
    raise AssertionError("unreachable")  # pragma: no cover


def _load_zip(zf: zipfile.ZipFile, path: Path, max_bytes: int) -> Network:
    infos = _members(zf, path)
    manifest = _read_manifest(zf, infos.pop("manifest", None), path)
    version = _check_version(manifest, path)
    top = _Obj(manifest, "manifest", _TOP_KEYS, _TOP_OPTIONAL)
    spec = _input_spec(_Obj(manifest["input"], "input", _INPUT_KEYS))
    layers = _layers(top)
    fields = _top_fields(top)
    expected = _expected_arrays(layers, manifest)
    _check_sizes(top, expected, infos, path, max_bytes)
    arrays = {name: _read_npy(zf, infos[name], *expected[name], path) for name in expected}
    stated = top.get_text("sha256")
    digest = _digest(manifest, arrays) if version >= 2 else _hash_arrays(arrays)
    if digest != stated:
        raise ModelFileError(
            f"{path}: sha256 of the model is {digest}, manifest says {stated}: "
            "the file was modified or damaged"
        )
    net = _network(fields, spec, layers, arrays, version)
    if version >= 2 and net.sha256 != digest:
        raise ModelFileError(f"{path}: the manifest does not round-trip (fields of the wrong type)")
    if version == 1:
        warnings.warn(
            f"{path}: format-1 network file: its arrays are verified, but its manifest (thresholds, "
            "λ, class names, temperature, reset, dt_us, meta) is not; re-save it with this spikecast",
            UnverifiedManifestWarning,
            stacklevel=3,
        )
    return net


def _members(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """Member name (without ``.npy``) -> ZipInfo; refuse duplicates and strangers."""
    infos = zf.infolist()
    if len(infos) > (2 + MAX_INPUTS) * MAX_LAYERS + 3:
        raise ModelFileError(f"{path}: {len(infos)} members, more than a network can have")
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or name.count("/") or name.count("\\"):
            raise ModelFileError(f"{path}: unexpected member {name[:80]!r} (only .npy arrays belong here)")
        if name[:-4] in out:
            raise ModelFileError(f"{path}: member {name[:80]!r} appears twice")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"{path}: member {name[:80]!r} uses compression {info.compress_type}")
        out[name[:-4]] = info
    return out


def _read_manifest(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, path: Path) -> dict[str, Any]:
    if info is None:
        raise ModelFileError(f"{path}: no manifest inside; not a spikecast network file")
    if info.file_size > MAX_MANIFEST_BYTES + _MAX_NPY_HEADER:
        raise ModelFileError(f"{path}: manifest of {info.file_size} bytes, more than {MAX_MANIFEST_BYTES}")
    with zf.open(info) as f:
        shape, dtype, left = _npy_header(f, info, path)
        if dtype != np.uint8 or len(shape) != 1 or shape[0] != left:
            raise ModelFileError(f"{path}: manifest member is not a 1-D uint8 array of its size")
        raw = f.read(left)
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path}: manifest is not valid JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: manifest does not describe a {FORMAT_NAME} file")
    try:
        _check_json_tree(manifest, "manifest", MAX_META_DEPTH + 2)
    except ParameterError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return manifest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _check_version(manifest: dict[str, Any], path: Path) -> int:
    version: Any = manifest.get("format_version")
    if not is_int(version):
        raise ModelFileError(f"{path}: manifest has no integer format_version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: file format version {version} is newer than this spikecast reads "
            f"({FORMAT_VERSION}); upgrade spikecast"
        )
    if version < 1:
        raise ModelFileError(f"{path}: invalid format_version {version}")
    return int(version)


def _input_spec(d: _Obj) -> InputSpec:
    return InputSpec(
        kind=d.get_text("kind", ("frame", "events")),  # type: ignore[arg-type]
        shape=d.get_ints("shape", (3,), 1, MAX_DIM),  # type: ignore[arg-type]
        scale=d.get_num("scale", *SCALE_RANGE),
        mean=d.get_nums("mean", -MEAN_LIMIT, MEAN_LIMIT),
        std=d.get_nums("std", *SCALE_RANGE),
        encoding=d.get_text("encoding", ("analog", "poisson")),  # type: ignore[arg-type]
        dt_us=d.get_int("dt_us", 1, INT32_MAX),
    )


def _layers(top: _Obj) -> list[tuple[Layer, bool, bool]]:
    """(layer without arrays, has_weight, has_bias) for every manifest layer."""
    out = []
    for i, raw in enumerate(top.get_list("layers", MAX_LAYERS)):
        d = _Obj(raw, f"layers[{i}]", _LAYER_KEYS, _LAYER_OPTIONAL)
        layer = Layer(
            kind=d.get_text("kind", ("conv", "linear", "maxpool")),  # type: ignore[arg-type]
            name=d.get_text("name"),
            in_shape=d.get_ints("in_shape", (1, 3), 1, MAX_DIM),
            out_shape=d.get_ints("out_shape", (1, 3), 1, MAX_DIM),
            kernel=d.get_ints("kernel", (2,), 1, MAX_GEOMETRY),  # type: ignore[arg-type]
            stride=d.get_ints("stride", (2,), 1, MAX_GEOMETRY),  # type: ignore[arg-type]
            padding=d.get_ints("padding", (2,), 0, MAX_GEOMETRY),  # type: ignore[arg-type]
            lam=d.get_num("lambda", *SCALE_RANGE),
            threshold=d.get_num("threshold", *SCALE_RANGE),
            spiking=d.get_flag("spiking"),
            groups=d.get_int("groups", 2, MAX_DIM) if "groups" in d.obj else 1,
        )
        if "inputs" in d.obj:
            inputs = d.get_ints("inputs", tuple(range(1, MAX_INPUTS + 1)), -1, MAX_LAYERS)
            extra = [_synapses(raw, f"layers[{i}].extra[{k}]", layer) for k, raw in enumerate(
                d.get_list("extra", MAX_INPUTS) if "extra" in d.obj else []
            )]  # fmt: skip
            layer = replace(layer, inputs=inputs, extra=tuple(extra))
        elif "extra" in d.obj:
            raise _Bad(f"layers[{i}].extra", "needs the layer's inputs")
        out.append((layer, d.get_flag("has_weight"), d.get_flag("has_bias")))
    return out


def _synapses(raw: Any, where: str, host: Layer) -> Layer:
    """An extra weight set (its weight comes from the arrays)."""
    d = _Obj(raw, where, ("kind", "in_shape", "kernel", "stride", "padding", "groups"))
    return Layer(
        kind=d.get_text("kind", ("conv", "linear")),  # type: ignore[arg-type]
        name=host.name,
        in_shape=d.get_ints("in_shape", (1, 3), 1, MAX_DIM),
        out_shape=host.out_shape,
        kernel=d.get_ints("kernel", (2,), 1, MAX_GEOMETRY),  # type: ignore[arg-type]
        stride=d.get_ints("stride", (2,), 1, MAX_GEOMETRY),  # type: ignore[arg-type]
        padding=d.get_ints("padding", (2,), 0, MAX_GEOMETRY),  # type: ignore[arg-type]
        groups=d.get_int("groups", 1, MAX_DIM),
    )


def _weight_shape(ly: Layer) -> tuple[int, ...]:
    c_out = ly.out_shape[0]
    if ly.kind == "conv":
        return (c_out, ly.in_shape[0] // ly.groups, *ly.kernel)
    return (c_out, math.prod(ly.in_shape))


def _expected_arrays(
    layers: list[tuple[Layer, bool, bool]], manifest: dict[str, Any]
) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
    """Every array the manifest implies, with the dtype and shape it must have."""
    f32 = _DTYPES["float32"]
    out: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
    for i, (ly, has_w, has_b) in enumerate(layers):
        if has_w:
            out[f"layer{i}.weight"] = (f32, _weight_shape(ly))
        if has_b:
            out[f"layer{i}.bias"] = (f32, (ly.out_shape[0],))
        for k, e in enumerate(ly.extra):
            out[f"layer{i}.extra{k + 1}.weight"] = (f32, _weight_shape(e))
    calib = manifest["calibration"]
    if calib is not None:
        c = _Obj(calib, "calibration", ("steps", "samples"))
        shape = (c.get_int("steps", 1, MAX_DIM), c.get_int("samples", 1, MAX_DIM))
        out["calibration.confidence"] = (f32, shape)
        out["calibration.correct"] = (_DTYPES["bool"], shape)
    return out


def _check_sizes(
    top: _Obj,
    expected: dict[str, tuple[np.dtype[Any], tuple[int, ...]]],
    infos: dict[str, zipfile.ZipInfo],
    path: Path,
    max_bytes: int,
) -> None:
    """Manifest, members and declared sizes agree, under the ceiling: before decompressing."""
    stated = top.obj["arrays"]
    want = {k: {"dtype": dt.name, "shape": list(shape)} for k, (dt, shape) in expected.items()}
    if stated != want:
        bad = sorted(set(want) ^ set(stated) if isinstance(stated, dict) else want)
        bad = bad or sorted(k for k in want if stated[k] != want[k])
        raise _Bad("arrays", f"disagrees with the layers and calibration at {bad[:4]}")
    if set(infos) != set(expected):
        raise ModelFileError(
            f"{path}: members {sorted(infos)[:8]} do not match the manifest's arrays {sorted(expected)[:8]}"
        )
    total = 0
    for name, (dt, shape) in expected.items():
        nbytes = dt.itemsize * math.prod(shape)
        total += nbytes
        size = infos[name].file_size
        if not nbytes < size <= nbytes + _MAX_NPY_HEADER:
            raise ModelFileError(
                f"{path}: member {name}.npy declares {size} bytes, but {_fmt(shape)} {dt.name} needs {nbytes}"
            )
    if total > max_bytes:
        raise ModelFileError(f"{path}: arrays need {total} bytes, more than max_bytes={max_bytes}")


def _npy_header(f: Any, info: zipfile.ZipInfo, path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, data bytes left) from a .npy header; refuse Fortran order and objects."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
    else:
        raise ModelFileError(f"{path}: member {info.filename[:80]!r} has .npy version {version}")
    if fortran or dtype.hasobject or dtype.names is not None:
        raise ModelFileError(f"{path}: member {info.filename[:80]!r} is not a plain C-order array")
    left = info.file_size - f.tell()
    if dtype.itemsize * math.prod(shape) != left:
        raise ModelFileError(f"{path}: member {info.filename[:80]!r} holds {left} bytes, not {shape} {dtype}")
    return tuple(shape), dtype, left


def _read_npy(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: np.dtype[Any], shape: tuple[int, ...], path: Path
) -> np.ndarray:
    """Read one member whose dtype and shape the manifest fixed, in bounded chunks."""
    with zf.open(info) as f:
        got_shape, got_dtype, _ = _npy_header(f, info, path)
        if got_shape != shape or got_dtype != dtype:
            raise ModelFileError(
                f"{path}: member {info.filename} is {got_dtype} {got_shape}, manifest says {dtype} {shape}"
            )
        arr = np.empty(shape, dtype)
        view = arr.view(np.uint8).reshape(-1)
        pos = 0
        while pos < view.size:
            chunk = f.read(min(1 << 20, view.size - pos))
            if not chunk:
                raise ModelFileError(f"{path}: member {info.filename} is cut short at {pos} bytes")
            view[pos : pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
            pos += len(chunk)
    if dtype == np.bool_ and arr.size and int(view.max()) > 1:
        raise ModelFileError(f"{path}: member {info.filename} has bool bytes other than 0 and 1")
    return arr


def _top_fields(top: _Obj) -> dict[str, Any]:
    """class_names, reset, temperature and meta, checked before any array is read."""
    names = top.get_list("class_names", MAX_CLASSES)
    if not all(isinstance(n, str) and len(n) <= MAX_NAME for n in names):
        raise _Bad("class_names", f"must be strings of at most {MAX_NAME} characters")
    meta = top.obj["meta"]
    if not isinstance(meta, dict):
        raise _Bad("meta", "must be a JSON object")
    try:
        check_meta(meta)
    except ParameterError as exc:
        raise _Bad("meta", str(exc)) from None
    return {
        "class_names": tuple(names),
        "reset": top.get_text("reset", ("subtract", "zero")),
        "temperature": top.get_num("temperature", *TEMPERATURE_RANGE),
        "meta": meta,
        **({"v_init": float(top._get("v_init", check_v_init))} if "v_init" in top.obj else {}),
        **(
            {"evidence_steps": float(top._get("evidence_steps", check_evidence_steps))}
            if "evidence_steps" in top.obj
            else {}
        ),
        **({"max_spikes": top.get_int("max_spikes", *MAX_SPIKES_RANGE)} if "max_spikes" in top.obj else {}),
        **({"max_pool": top.get_text("max_pool", MAX_POOL_MODES)} if "max_pool" in top.obj else {}),
        **({"readout": top.get_text("readout", READOUT_MODES)} if "readout" in top.obj else {}),
    }


def _network(
    fields: dict[str, Any],
    spec: InputSpec,
    layers: list[tuple[Layer, bool, bool]],
    arrays: dict[str, np.ndarray],
    version: int,
) -> Network:
    built = tuple(
        replace(
            ly,
            weight=arrays.get(f"layer{i}.weight"),
            bias=arrays.get(f"layer{i}.bias"),
            extra=tuple(
                replace(e, weight=arrays[f"layer{i}.extra{k + 1}.weight"]) for k, e in enumerate(ly.extra)
            ),
        )
        for i, (ly, _, _) in enumerate(layers)
    )
    calib = None
    if "calibration.confidence" in arrays:
        calib = CalibrationTable(arrays["calibration.confidence"], arrays["calibration.correct"])
    return Network(input=spec, layers=built, calibration=calib, file_version=version, **fields)


__all__ = [
    "FORMAT_VERSION",
    "MAX_MODEL_BYTES",
    "MAX_POOL_MODES",
    "MAX_SPIKES_RANGE",
    "META_OPERATING_POINT",
    "READOUT_MODES",
    "CalibrationTable",
    "InputSpec",
    "Layer",
    "MaxPoolMode",
    "Network",
    "ReadoutMode",
    "SmallTableWarning",
    "UnverifiedManifestWarning",
    "check_evidence_steps",
    "check_max_pool",
    "check_meta",
    "check_readout",
    "check_v_init",
    "load_network",
    "small_table_warning",
    "softmax_confidence",
]
