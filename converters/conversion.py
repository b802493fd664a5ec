"""Convert a trained torch CNN into a rate-coded spiking :class:`Network`.

Rueckauer et al. (2017): IF neurons with reset by subtraction fire at rates that
track ReLU activations. The steps are:

1. parse the model with torch.fx (:mod:`spikecast.converters.parse`) into a graph
   of ops;
2. fold BatchNorm into the conv/linear layer before it, and average-pooling into
   the layer after it where that is exact; a residual sum or a channel
   concatenation becomes one layer with one weight set per input (an identity skip
   is a 1x1 identity weight set; a 1x1 conv of a sum without activation composes
   into its weight sets), and a layer opens at every activation;
3. measure each ReLU layer's activations on calibration data and take λ_l, the
   p-th percentile of the nonzero ones (p = 100 is max-norm); a clipped ReLU is
   mapped onto the neuron's saturation (below);
4. rescale: W_l ← W_l · λ_{l-1} / λ_l and b_l ← b_l / λ_l (λ_0 = 1; the output
   layer keeps λ_L = 1 so its integrated V_L / t is in the ANN's logit units);
   each weight set of a layer with several inputs is scaled by λ_src / λ_l, so
   every input (both branches of a residual sum) arrives on the layer's scale;
5. optionally run a held-out set through the reference simulator to record the
   calibration table that the early-exit rule uses.

A clipped ReLU (ReLU6, Hardtanh(0, a), clamp(0, a)) maps onto the neuron's saturation.
An IF neuron with reset by subtraction spikes at most once per step, so its rate is at
most 1 and rate·λ at most λ: the SNN computes min(relu(x), λ) in the rate limit. λ is
min(percentile of the activations, a) (they are measured after the clip, which gives
exactly that). Where calibration activations reach the clip often enough that the
percentile is a, λ = a and the saturation *is* the clip, exactly. Where they do not,
λ stays the percentile (< a): the neuron saturates below a, as every ReLU layer does
at its percentile, and keeps the finer rate resolution of the smaller λ instead of
spending rate range on values the calibration data never reach. λ is never above a,
so the SNN never passes values the ANN clips.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from spikecast.converters.bias import ann_activations, calibrate_biases
from spikecast.converters.parse import INPUT, Op, trace
from spikecast.ext.core.calibration import META_KEY, Calibration, Recommendation, decision_steps
from spikecast.ext.core.checks import check_int
from spikecast.ext.core.errors import ConversionError, ParameterError
from spikecast.ext.core.network import (
    MAX_SPIKES_RANGE,
    CalibrationTable,
    InputSpec,
    Layer,
    Network,
    SmallTableWarning,
    check_evidence_steps,
    check_max_pool,
    check_readout,
    check_v_init,
    small_table_warning,
    softmax_confidence,
)
from torch import nn

#: meta key: {layer index: a} for the layers converted from a ReLU clipped at a.
CLIP_KEY = "clipped_activations"

# Above this many nonzero activations per layer, λ comes from a seeded uniform subsample.
_MAX_PERCENTILE_SAMPLES = 4_000_000


@dataclass
class _Draft:
    """A layer before normalisation (mutable while folding)."""

    kind: str  # conv | linear | maxpool
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    relu: bool = False
    clip: float | None = None  # a clipped ReLU's maximum (ReLU6: 6)
    #: Draft indices of the layers it reads (-1: the network input), the primary first;
    #: each further one through its weight set in ``extra`` (residual adds, concatenations).
    sources: list[int] = field(default_factory=lambda: [-1])
    extra: list[_Draft] = field(default_factory=list)

    def synapses(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """This weight set applied to ``x``."""
        if self.weight is None:
            raise ConversionError(f"node '{self.name}': layer has no weights")
        b = self.bias if bias else None
        if self.kind == "conv":
            return F.conv2d(x, self.weight, b, stride=self.stride, padding=self.padding, groups=self.groups)
        return F.linear(x.reshape(x.shape[0], -1), self.weight, b)

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        if not self.relu:
            return y
        return F.relu(y) if self.clip is None else y.clamp(0.0, self.clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In a chain: this layer applied to the previous one's output ``x``."""
        if self.extra:
            raise ConversionError(f"node '{self.name}': a layer with several inputs needs run_drafts")
        if self.kind == "maxpool":
            return F.max_pool2d(x, self.kernel, self.stride, self.padding)
        return self.activate(self.synapses(x))


def run_drafts(drafts: Sequence[_Draft], x: torch.Tensor) -> list[torch.Tensor]:
    """Every draft's output on ``x``, each reading its sources' outputs."""
    outs: list[torch.Tensor] = []
    for d in drafts:
        h = [x if j < 0 else outs[j] for j in d.sources]
        if d.kind == "maxpool":
            outs.append(F.max_pool2d(h[0], d.kernel, d.stride, d.padding))
            continue
        y = d.synapses(h[0])
        for e, hk in zip(d.extra, h[1:], strict=True):
            y = y + e.synapses(hk, bias=False)
        outs.append(d.activate(y))
    return outs


def _fold_bn(
    w: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm1d | nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """BN(Wx + b) = (γ/σ)·W x + (γ/σ)(b − μ) + β, with σ = sqrt(var + eps)."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ConversionError("BatchNorm without running statistics cannot be folded")
    mean, var = mean.double(), var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    shape = (-1,) + (1,) * (w.ndim - 1)
    return w * scale.reshape(shape), (b - mean) * scale + beta


def avg_pool(pool: Op, x: torch.Tensor) -> torch.Tensor:
    """The average-pool ``pool`` applied to ``x`` (B, C, H, W), exactly as torch does."""
    if pool.adaptive is not None:
        return F.adaptive_avg_pool2d(x, pool.adaptive)
    ceil, include_pad, div = pool.avg
    return F.avg_pool2d(x, pool.kernel, pool.stride, pool.padding, ceil, include_pad, div)


def _fold_avgpool_into(pool: Op, op: Op, w: torch.Tensor, flat_after: bool) -> tuple[torch.Tensor, Op]:
    """Fold an average-pool into the conv or linear layer that follows it.

    An average-pool is a fixed linear map P, so Linear ∘ pool is the Linear W·P, always
    exact (any kernel, stride, padding, ceil_mode, count_include_pad, divisor, or an
    adaptive pool to any size). A conv
    after a pool is one conv over the full map, its taps spread over the pool windows
    (kernel (k_c − 1)·s_p + k_p, stride s_c·s_p, padding p_c·s_p + p_p), where that is
    exact: uniform windows (no ceil_mode; count_include_pad unless padding 0) and the
    conv's padding meeting only the pool's zero padding; checked, else refused.
    """
    c, h, wd = pool.in_shape
    if op.kind == "linear":
        # W' = W·P: the pool's transpose applied to each row of W (its vector-Jacobian product).
        x = torch.zeros(w.shape[0], c, h, wd, dtype=w.dtype, requires_grad=True)
        y = avg_pool(pool, x)
        (y * w.reshape(y.shape)).sum().backward()
        if x.grad is None:  # cannot happen: x requires grad and reaches y
            raise ConversionError(f"node '{op.node}': could not fold the average pool")
        new_op = Op("linear", op.node, (c, h, wd), op.out_shape, op.module)
        return x.grad.reshape(w.shape[0], -1).detach(), new_op
    if flat_after:
        raise ConversionError(f"node '{pool.node}': average-pool then flatten must feed a Linear layer")
    if pool.adaptive is not None:
        raise ConversionError(
            f"node '{pool.node}': adaptive average-pool of a {h}x{wd} map to {pool.adaptive} has uneven "
            f"windows and cannot be folded into conv '{op.node}'; use an output size that divides "
            "the map, or feed a Linear layer"
        )
    up, new_op = _pool_then_conv(pool, op, w)
    if not _same_conv(pool, op, w, up, new_op):
        raise ConversionError(
            f"node '{pool.node}': average-pool (kernel {pool.kernel}, stride {pool.stride}, padding "
            f"{pool.padding}) of a {h}x{wd} map cannot be folded into conv '{op.node}' exactly "
            "(uneven windows, or the conv's padding reaches pooled-away pixels); use stride == "
            "kernel on a divisible map, pool into a Linear layer, or MaxPool2d"
        )
    return up, new_op


def _pool_then_conv(pool: Op, op: Op, w: torch.Tensor) -> tuple[torch.Tensor, Op]:
    """The one conv equal to ``op`` after ``pool`` inside the map (see _fold_avgpool_into)."""
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel, pool.stride, pool.padding
    ch, cw = op.kernel
    div = pool.avg[2] or kh * kw
    up = torch.zeros(*w.shape[:2], (ch - 1) * sh + kh, (cw - 1) * sw + kw, dtype=w.dtype)
    for jy in range(ch):
        for jx in range(cw):
            tap = w[:, :, jy : jy + 1, jx : jx + 1] / div
            up[:, :, jy * sh : jy * sh + kh, jx * sw : jx * sw + kw] += tap
    new_op = replace(
        op,
        in_shape=pool.in_shape,
        kernel=(up.shape[2], up.shape[3]),
        stride=(op.stride[0] * sh, op.stride[1] * sw),
        padding=(op.padding[0] * sh + ph, op.padding[1] * sw + pw),
    )
    return up, new_op


def _same_conv(pool: Op, op: Op, w: torch.Tensor, up: torch.Tensor, new_op: Op) -> bool:
    """Whether conv ∘ pool and the folded conv agree on a random map (in float64)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, *pool.in_shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = F.conv2d(avg_pool(pool, x), w, None, op.stride, op.padding, groups=op.groups)
        got = F.conv2d(x, up, None, new_op.stride, new_op.padding, groups=op.groups)
    if ref.shape != got.shape:
        return False
    scale = float(ref.abs().max()) or 1.0
    return float((ref - got).abs().max()) <= 1e-9 * scale


@dataclass
class _Spikes:
    """A spiking value: the output of draft(s) ``parts`` (index, channels; -1 the input),
    channel-concatenated, maybe flattened, maybe with an average-pool waiting to fold."""

    parts: list[tuple[int, int]]
    shape: tuple[int, ...]
    pool: Op | None = None
    flat: bool = False


@dataclass
class _Affine:
    """A value before its activation: Σ_k W_k·S_k + b over weight sets (source, draft)."""

    name: str
    out_shape: tuple[int, ...]
    terms: list[tuple[int, _Draft]]
    bias: torch.Tensor


_Value = _Spikes | _Affine


class _GraphBuilder:
    """Walks the parsed ops once (in graph order), folding BN, average-pools, sums and
    concatenations into weight sets, and opening a draft at every activation."""

    def __init__(self) -> None:
        self.drafts: list[_Draft] = []
        self.values: dict[str, _Value] = {}

    def spikes_of(self, key: str, shape: tuple[int, ...]) -> _Value:
        if key == INPUT:
            return _Spikes([(-1, shape[0])], shape)
        return self.values[key]

    def add(self, op: Op, last: bool) -> None:
        ins = [self.spikes_of(k, op.in_shape) for k in op.inputs]
        handler = getattr(self, f"_{op.kind}")
        self.values[op.key] = handler(op, ins, last)

    # -- layers ----------------------------------------------------------------------
    def _conv(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        x = ins[0]
        if isinstance(x, _Affine):
            return self._compose(op, x)
        mod = op.module
        if mod is None:
            raise ConversionError(f"node '{op.node}': missing module")
        w = mod.weight.detach().double()
        b = torch.zeros(w.shape[0], dtype=torch.float64)
        if mod.bias is not None:
            b = mod.bias.detach().double()
        if x.pool is not None:
            w, op = _fold_avgpool_into(x.pool, op, w, x.flat and op.kind == "conv")
        if len(x.parts) > 1 and op.groups != 1:
            raise ConversionError(f"node '{op.node}': a grouped conv over a concatenation is not supported")
        # The input as its sources shape it (a Linear reads it flattened in (C, H, W) order).
        shape = op.in_shape if op.kind == "conv" or x.pool is not None else x.shape
        per_channel = math.prod(shape[1:]) if op.kind == "linear" else 1
        terms, c0 = [], 0
        for j, c in x.parts:  # a concatenation: one weight set per part, on its channels
            wk = w[:, c0 * per_channel : (c0 + c) * per_channel] if len(x.parts) > 1 else w
            terms.append((j, _synapse_draft(op, (c, *shape[1:]), wk)))
            c0 += c
        return _Affine(op.node, op.out_shape, terms, b)

    _linear = _conv

    def _compose(self, op: Op, x: _Affine) -> _Affine:
        """A pointwise (1x1, stride 1) conv of a weighted sum without activation (e.g.
        MobileNetV2's linear bottleneck, or its residual stream) is one more linear map:
        it composes into each weight set, W·(Σ W_k S_k + b) = Σ (W·W_k) S_k + W·b."""
        pointwise = op.kind == "conv" and op.kernel == (1, 1) and op.stride == (1, 1)
        if not pointwise or op.padding != (0, 0) or op.groups != 1 or op.module is None:
            raise ConversionError(f"node '{x.name}': hidden layer without ReLU cannot spike; add nn.ReLU")
        w = op.module.weight.detach().double()[:, :, 0, 0]
        b = w @ x.bias
        if op.module.bias is not None:
            b = b + op.module.bias.detach().double()
        terms = []
        for j, t in x.terms:
            if t.weight is None or t.groups != 1:
                raise ConversionError(
                    f"node '{op.node}': a 1x1 conv after '{x.name}', a grouped layer without ReLU, "
                    "does not compose; add an activation"
                )
            wt = torch.einsum("om,m...->o...", w, t.weight)
            terms.append((j, replace(t, name=op.node, out_shape=op.out_shape, weight=wt)))
        return _Affine(op.node, op.out_shape, terms, b)

    def _bn(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        x = ins[0]
        if not isinstance(x, _Affine):
            raise ConversionError(
                f"node '{op.node}': BatchNorm must directly follow a Conv2d or Linear layer to be folded"
            )
        bias = x.bias
        terms = []  # new weight sets: the unfolded value may have other readers
        for j, t in x.terms:
            if t.weight is None:
                raise ConversionError(f"node '{op.node}': BatchNorm after an input without weights")
            w, _ = _fold_bn(t.weight, torch.zeros_like(bias), op.module)  # type: ignore[arg-type]
            terms.append((j, replace(t, weight=w)))
        _, bias = _fold_bn(torch.zeros(len(bias), 1, dtype=bias.dtype), bias, op.module)  # type: ignore[arg-type]
        return _Affine(x.name, x.out_shape, terms, bias)

    def _relu(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        x = ins[0]
        if isinstance(x, _Affine):
            return self._open(x, op.clip)
        if x.pool is not None or x.parts[0][0] < 0:
            raise ConversionError(
                f"node '{op.node}': ReLU must directly follow Conv2d/Linear (optionally with BatchNorm)"
            )
        if op.clip is not None:  # a clip after a ReLU (or max-pools of one, which commute)
            for j, _ in x.parts:
                d = self._layer_behind(j)
                d.clip = op.clip if d.clip is None else min(d.clip, op.clip)
        return x

    def _layer_behind(self, j: int) -> _Draft:
        while self.drafts[j].kind == "maxpool":
            j = self.drafts[j].sources[0]
        return self.drafts[j]

    def _open(self, x: _Affine, clip: float | None) -> _Spikes:
        """A spiking draft from the weighted sum ``x`` and its activation."""
        (j0, first), rest = x.terms[0], x.terms[1:]
        sources = [j0, *(j for j, _ in rest)]
        d = replace(first, name=x.name, bias=x.bias, relu=True, clip=clip, sources=sources,
                    extra=[t for _, t in rest])  # fmt: skip
        self._append(d)
        return _Spikes([(len(self.drafts) - 1, x.out_shape[0])], x.out_shape)

    def _append(self, d: _Draft) -> None:
        if any(j < 0 for j in d.sources[1:]) or (self.drafts and d.sources[0] < 0):
            raise ConversionError(
                f"node '{d.name}': the network input feeds several layers, a sum or a concatenation; "
                "only the first layer may read it"
            )
        self.drafts.append(d)

    # -- pooling and reshaping ---------------------------------------------------------
    def _maxpool(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        x = ins[0]
        if not isinstance(x, _Spikes) or x.pool is not None or x.parts[0][0] < 0 or x.flat:
            raise ConversionError(
                f"node '{op.node}': max-pool must follow a ReLU layer (spikes gate only rates)"
            )
        outs = []
        for j, c in x.parts:  # max-pooling a concatenation pools each part
            shape = (c, *op.out_shape[1:])
            self._append(_Draft("maxpool", op.node, (c, *op.in_shape[1:]), shape, kernel=op.kernel,
                                stride=op.stride, padding=op.padding, relu=True, sources=[j]))  # fmt: skip
            outs.append((len(self.drafts) - 1, c))
        return _Spikes(outs, op.out_shape)

    def _avgpool(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        x = ins[0]
        if not isinstance(x, _Spikes) or x.pool is not None or x.parts[0][0] < 0 or x.flat:
            raise ConversionError(f"node '{op.node}': average-pool must follow a ReLU layer")
        return _Spikes(x.parts, op.out_shape, pool=op)

    def _flatten(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        x = ins[0]
        return replace(x, flat=True) if isinstance(x, _Spikes) else x

    def _softmax(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        if not last:
            raise ConversionError(f"node '{op.node}': Softmax is supported only as the last op")
        return ins[0]

    # -- joins -------------------------------------------------------------------------
    def _add(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        """A residual sum: both operands' weight sets into the same membranes; a spiking
        operand (an identity skip) becomes a 1x1 identity weight set."""
        a, b = (self._as_affine(op, x) for x in ins)
        if isinstance(ins[0], _Spikes) and isinstance(ins[1], _Affine):
            a, b = b, a  # the layer's own weights first
        if a.out_shape != b.out_shape:
            raise ConversionError(f"node '{op.node}': sum of shapes {a.out_shape} and {b.out_shape}")
        return _Affine(a.name, a.out_shape, a.terms + b.terms, a.bias + b.bias)

    def _as_affine(self, op: Op, x: _Value) -> _Affine:
        if isinstance(x, _Affine):
            return x
        if x.pool is not None or x.parts[0][0] < 0:
            raise ConversionError(
                f"node '{op.node}': a sum needs layer outputs (after Conv2d/Linear or a ReLU), not "
                "the network input or an average-pool"
            )
        n = x.shape[0]
        eye = torch.eye(n, dtype=torch.float64)
        terms, c0 = [], 0
        for j, c in x.parts:
            conv = len(x.shape) == 3
            w = eye[:, c0 : c0 + c, None, None] if conv else eye[:, c0 : c0 + c]
            in_shape = (c, *x.shape[1:])
            terms.append((j, _Draft("conv" if conv else "linear", op.node, in_shape, x.shape, weight=w)))
            c0 += c
        return _Affine(op.node, x.shape, terms, torch.zeros(n, dtype=torch.float64))

    def _cat(self, op: Op, ins: list[_Value], last: bool) -> _Value:
        parts = []
        for x in ins:
            if isinstance(x, _Affine):
                raise ConversionError(
                    f"node '{op.node}': concatenation of '{x.name}', a layer without ReLU; concatenate "
                    "activations (spikes)"
                )
            if x.pool is not None or x.flat or x.parts[0][0] < 0:
                raise ConversionError(
                    f"node '{op.node}': concatenation needs layer outputs, not the network input, a "
                    "flattened or an average-pooled one"
                )
            parts.extend(x.parts)
        return _Spikes(parts, op.out_shape)

    # -- the end -----------------------------------------------------------------------
    def finish(self, key: str) -> list[_Draft]:
        """The drafts, once the model's output ``key`` is known to be a spiking-free layer."""
        out = self.values.get(key)
        if isinstance(out, _Spikes):
            if out.pool is not None:
                raise ConversionError(
                    f"node '{out.pool.node}': average-pool must be followed by a Conv2d or Linear layer"
                )
            j = out.parts[-1][0]
            if j >= 0 and self.drafts[j].kind != "maxpool":
                raise ConversionError(
                    f"node '{self.drafts[j].name}': the output layer has a ReLU; remove it so the output "
                    "integrator reads logits"
                )
        if not isinstance(out, _Affine):
            raise ConversionError("the model must end with a Conv2d or Linear layer (the output)")
        self._open(out, None)
        self.drafts[-1].relu = False
        return self.drafts


def _synapse_draft(op: Op, in_shape: tuple[int, ...], w: torch.Tensor) -> _Draft:
    """One weight set of a conv or linear op (no bias: the layer holds it)."""
    return _Draft(op.kind, op.node, in_shape, op.out_shape, weight=w, kernel=op.kernel, stride=op.stride,
                  padding=op.padding, groups=op.groups)  # fmt: skip


def build_drafts(ops: Sequence[Op]) -> list[_Draft]:
    """Group parsed ops into conv/linear/maxpool drafts with BN, average-pools, residual
    sums and concatenations folded into their weight sets."""
    builder = _GraphBuilder()
    for i, op in enumerate(ops):
        builder.add(op, last=i == len(ops) - 1)
    return builder.finish(ops[-1].key if ops else INPUT)


def _batches(calibration: Any, batch_size: int, limit: int) -> Iterator[torch.Tensor]:
    """Yield float32 input batches from arrays, tensors, or a DataLoader of x or (x, y)."""
    if isinstance(calibration, (np.ndarray, torch.Tensor)):
        data = torch.as_tensor(
            np.asarray(calibration) if isinstance(calibration, np.ndarray) else calibration
        )
        data = data[:limit].float()
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size]
        return
    if isinstance(calibration, Iterable):
        seen = 0
        for item in calibration:
            x = item[0] if isinstance(item, (tuple, list)) else item
            x = torch.as_tensor(x).float()
            yield x[: limit - seen]
            seen += len(x)
            if seen >= limit:
                return
        return
    raise ParameterError(
        "calibration data must be an array, a tensor or an iterable of batches, "
        f"not {type(calibration).__name__}"
    )


class _Sample:
    """A uniform random sample of a stream of activations in bounded memory.

    Every value is kept with the same probability ``rate``; when the buffer passes twice
    the cap, the rate halves and the buffer is thinned by half, so memory stays below
    2 × cap values per layer however much calibration data there is.
    """

    def __init__(self, cap: int, gen: torch.Generator) -> None:
        self.cap, self.gen, self.rate = cap, gen, 1.0
        self.parts: list[torch.Tensor] = []
        self.size = 0

    def _thin(self, v: torch.Tensor, keep: float) -> torch.Tensor:
        return v[torch.rand(v.shape, generator=self.gen) < keep]

    def add(self, v: torch.Tensor) -> None:
        if self.rate < 1.0:
            v = self._thin(v, self.rate)
        self.parts.append(v)
        self.size += len(v)
        while self.size > 2 * self.cap:
            self.rate /= 2
            self.parts = [self._thin(torch.cat(self.parts), 0.5)]
            self.size = len(self.parts[0])

    def percentile(self, p: float) -> float:
        v = torch.cat(self.parts).numpy() if self.parts else np.zeros(0, np.float32)
        return float(np.percentile(v, p)) if v.size else 0.0


def default_threads() -> int:
    """The CPUs this process may run on (taskset and cgroup CPU sets respected)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _progress(items: Iterable[Any], progress: bool, desc: str, total: int | None = None) -> Iterable[Any]:
    """``items`` behind a tqdm bar when ``progress`` (tqdm is in the convert extra)."""
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total if total is not None else _length(items))


def _length(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _n_batches(calibration: Any, batch_size: int, limit: int) -> int | None:
    """How many batches _batches() yields, where that is known before reading them."""
    if isinstance(calibration, (np.ndarray, torch.Tensor)):
        return -(-min(len(calibration), limit) // batch_size)
    return _length(calibration)  # a DataLoader knows its batches (it may stop at the limit)


def measure_activations(
    drafts: Sequence[_Draft], batches: Iterable[torch.Tensor], progress: bool, total: int | None = None
) -> tuple[list[_Sample], int]:
    """A bounded sample of each ReLU draft's positive activations; (samples, inputs seen)."""
    gen = torch.Generator().manual_seed(0)
    acts = [_Sample(_MAX_PERCENTILE_SAMPLES, gen) for _ in drafts]
    seen = 0
    with torch.no_grad():
        for x in _progress(batches, progress, "measuring activations", total):
            seen += len(x)
            for j, (d, h) in enumerate(zip(drafts, run_drafts(drafts, x.double()), strict=True)):
                if d.relu and d.kind != "maxpool":
                    acts[j].add(h[h > 0].float())
    if seen == 0:
        raise ParameterError("calibration data is empty")
    return acts, seen


def lambdas_at(drafts: Sequence[_Draft], acts: Sequence[_Sample], percentile: float) -> list[float]:
    """λ per draft: the ``percentile`` of its activations (see the module docstring)."""
    lambdas: list[float] = []
    for j, d in enumerate(drafts):
        if d.kind == "maxpool":
            lambdas.append(lambdas[d.sources[0]])  # a pooled rate has its input's scale
        elif not d.relu:
            lambdas.append(1.0)  # output integrator: keep logits in ANN units
        else:
            lam = acts[j].percentile(percentile)
            if d.clip is not None:
                # The activations were measured after the clip, so this is already
                # min(percentile of the unclipped ReLU, a): see the module docstring.
                lam = min(lam, d.clip)
            lambdas.append(lam if lam > 0 else 1.0)  # a silent layer keeps its scale
    return lambdas


def measure_lambdas(
    drafts: Sequence[_Draft], batches: Iterable[torch.Tensor], percentile: float, progress: bool
) -> tuple[list[float], int]:
    """λ per draft from calibration activations; returns (lambdas, samples seen)."""
    acts, seen = measure_activations(drafts, batches, progress)
    return lambdas_at(drafts, acts, percentile), seen


#: The λ percentiles ``convert(percentile=None, holdout=...)`` chooses from.
AUTO_PERCENTILES = (99.0, 99.5, 99.9, 100.0)
#: Without a holdout set: the classic choice (Rueckauer et al. 2017).
DEFAULT_PERCENTILE = 99.9
#: A candidate is eligible if its plateau is within this of the best candidate's.
AUTO_PLATEAU_TOLERANCE = 0.005
#: Spikes per neuron and step ``convert(max_spikes=None, holdout=...)`` chooses from, for
#: a frame network (1: the classic neuron; 4: burst coding, bench/lowlatency.py).
AUTO_MAX_SPIKES = (1, 4)
#: ``convert(bias_steps=None, holdout=...)`` on analog frames: the step count at which
#: every spiking layer's bias is calibrated (converters/bias.py), on this many of the
#: calibration frames.
AUTO_BIAS_STEPS = 64
BIAS_FRAMES = 512


#: The exit signals ``convert(evidence_steps=None, holdout=...)`` chooses from: 0 is the
#: rate rule, the others the evidence rule's t_e in steps (docs/decisions.md).
AUTO_EVIDENCE_STEPS = (0.0, 10.0, 20.0, 50.0, 100.0, 200.0)


#: The read-outs ``convert(readout=None, holdout=...)`` weighs (``Network.readout``,
#: docs/decisions.md): the first is the one λ, bursts and the exit signal are chosen with.
AUTO_READOUTS = ("spikes", "membrane")


def choose_readout(scores: dict[str, dict[str, float]]) -> str:
    """The read-out that reaches the common target (the best plateau less
    AUTO_PLATEAU_TOLERANCE) in the fewest mean steps at its earliest point on the holdout
    table (``equal_accuracy_steps``; None where it never does), so a read-out with a higher
    plateau is not made to keep more samples than the other; ties go to the spike
    read-out (Rueckauer et al.'s)."""
    eligible = {r: v["equal_accuracy_steps"] for r, v in scores.items()
                if v.get("equal_accuracy_steps") is not None}  # fmt: skip
    if not eligible:
        raise ParameterError("no read-out to choose from")
    return min(eligible, key=lambda r: (eligible[r], r != "spikes"))


def choose_evidence_steps(scores: dict[float, dict[str, float]]) -> float:
    """The exit signal whose recommended point decides in the fewest mean steps; ties go
    to the rate rule (0), then to the larger t_e. All candidates share one run, so one
    plateau: ``scores[e]`` needs only ``mean_steps``."""
    if not scores:
        raise ParameterError("no exit signal to choose from")
    return min(scores, key=lambda e: (scores[e]["mean_steps"], e != 0, -e))


def choose_percentile(scores: dict[float, dict[str, float]]) -> float:
    """The percentile whose recommended operating point decides earliest, among those
    whose plateau accuracy is within AUTO_PLATEAU_TOLERANCE of the best; ties go to the
    larger percentile (less clipping). ``scores[p]`` has ``plateau_accuracy`` and
    ``mean_steps`` (the recommended point's, on the holdout table)."""
    if not scores:
        raise ParameterError("no percentile to choose from")
    best = max(v["plateau_accuracy"] for v in scores.values())
    floor = best - AUTO_PLATEAU_TOLERANCE - 1e-12
    eligible = [p for p, v in scores.items() if v["plateau_accuracy"] >= floor]
    return min(eligible, key=lambda p: (scores[p]["mean_steps"], -p))


def convert(  # noqa: PLR0913  (public API: keyword-only options, each documented; a bundle would break callers)
    model: nn.Module,
    calibration: Any,
    *,
    percentile: float | None = None,
    v_init: float | None = None,
    evidence_steps: float | None = None,
    max_spikes: int | None = None,
    max_pool: str = "count",
    readout: str | None = None,
    bias_steps: int | None = None,
    reset: str = "subtract",
    input_kind: str = "frame",
    input_encoding: str = "analog",
    input_scale: float = 1.0,
    input_mean: Sequence[float] = (0.0,),
    input_std: Sequence[float] = (1.0,),
    dt_us: int = 1000,
    class_names: Sequence[str] | None = None,
    holdout: tuple[Any, Any] | None = None,
    calibration_steps: int = 200,
    temperature: float = 1.0,
    max_calibration_samples: int = 10_000,
    batch_size: int = 256,
    progress: bool = True,
    n_threads: int | None = None,
) -> Network:
    """Convert ``model`` into a spiking :class:`Network`.

    ``calibration`` is network-input data (what ``model`` takes, already normalised):
    an array or tensor (N, C, H, W), or a DataLoader of ``x`` or ``(x, y)`` batches.
    ``percentile`` picks λ per layer (100 = max-norm). ``None`` (the default) takes
    99.9 without a holdout set; with one, it converts at each of AUTO_PERCENTILES
    (99, 99.5, 99.9, 100: a lower one clips more and fires sooner, a higher one keeps
    the large activations) and keeps the one whose recommended operating point decides
    in the fewest mean steps on the holdout table, among those whose plateau accuracy
    is within 0.5 pt of the best (``meta["percentile_choice"]`` records every
    candidate). ``v_init`` is where every
    spiking layer's membrane starts after a reset, as a fraction of its threshold, in
    [0, 1); 0 is the classic Rueckauer et al. start, 0.5 makes the rate code round to
    nearest instead of down (Bu et al. 2022). ``None`` (the default) takes what won in
    bench/lowlatency.py for the input kind: 0.5 for frames (accurate after few steps),
    0 for events (whose input builds up over the stream: 0.5 fired early on too little
    evidence and decided later on N-MNIST). ``input_scale/mean/std`` record
    how raw frames map to that input (``x = (raw*scale - mean)/std``) for the runtime.
    ``evidence_steps`` picks the early-exit signal (``Network.evidence_steps``): 0 the
    rate rule, t_e > 0 the evidence rule. ``None`` (the default) takes the rate rule
    without a holdout set; with one, it tabulates each of AUTO_EVIDENCE_STEPS on the
    same holdout run and keeps the one whose recommended point decides in the fewest
    mean steps (``meta["exit_signal_choice"]``), for each candidate percentile.
    ``max_spikes`` = B > 1 is burst coding: every hidden layer's λ is divided by B (its
    spikes carry 1/B of the activation, so the rate code resolves B times finer) and a
    neuron may emit up to B spikes per step (so nothing saturates sooner than with B = 1).
    The SNN is accurate after fewer steps (MNIST frames: the ANN's accuracy after 4) for
    up to B times the spikes and SynOps per step (reset by subtraction only). ``None``
    (the default) is 1, except for a frame network converted with a holdout set: then each
    of AUTO_MAX_SPIKES (1 and 4) gets its own percentile choice, and the one whose
    recommended point does the least work per decision on the holdout run (SynOps plus
    neuron updates: a burst step costs more than a one-spike step, so steps alone would
    not compare them), among plateaus within 0.5 pt of the best, is kept
    (``meta["max_spikes_choice"]``). A frame decision's latency is its compute; an event
    network's is sensor time, which bursts did not shorten on N-MNIST (bench/vs_ann.py),
    so event networks keep 1.
    ``max_pool`` picks how max-pool layers pass spikes (``Network.max_pool``): "count"
    (the default) makes each window's spike count the max of its inputs' counts, the rate
    code's max-pool; "gated" is Rueckauer et al.'s gate, which passes the spikes of the
    input with the largest count so far, and one more each time an input ties that count
    and takes the lead on its lower index, so windows whose inputs trade the lead fire too
    often. Count was as accurate or better on MNIST, CIFAR-10 and N-MNIST, for fewer SynOps
    (docs/step-semantics.md, "Pooling"). It is recorded only for networks with a max-pool.
    ``readout`` picks what the logits read (``Network.readout``): "spikes" (Rueckauer et
    al.: the output integrates the last hidden layer's spikes) or "membrane" (the output
    weights applied to that layer's spike counts plus its residual membrane, N + V/θ,
    through ReLU and the max-pools between: the last quantisation of the rate code drops
    out of the logits; the spikes stay the same). ``None`` (the default) is "spikes"
    without a holdout set. With one, λ's percentile, the burst size and the exit signal
    are chosen with the spike read-out; then, where the output reads a spiking layer
    through max-pools only, the chosen network gets one more holdout run with the
    membrane read-out (and its own exit signal), and the read-out that reaches the better
    plateau less 0.5 pt in the fewest mean steps (each at its earliest point on the table:
    equal accuracy, as bench/vs_ann.py compares) is kept (``meta["readout_choice"]``).
    bench/readout.py: on N-MNIST the membrane read-out reached the frame ANN's accuracy
    after 48.7 ms of sensor time instead of 59.6; on CIFAR-10 86.5% after 44.9 mean steps
    instead of 82.3.
    ``bias_steps`` = T > 0 calibrates every spiking layer's bias at T steps on the first
    BIAS_FRAMES calibration frames (:mod:`spikecast.converters.bias`, Li et al. 2021):
    each channel gets the mean charge per step by which its rate falls short of its ANN
    activation (a layer normalised at max-norm fires sparsely, so its rates fall short
    most), layer by layer; ``meta["bias_calibration"]`` records the shifts, and
    :func:`ann_logits` still evaluates the ANN the model came from. 0 leaves the biases
    as normalisation made them. ``None`` (the default) is AUTO_BIAS_STEPS for analog
    frames converted with a holdout set (the table and operating point are then those of
    the calibrated network; on CIFAR-10 it cut the early exit's mean steps at the ANN's
    accuracy by a third and was neutral on MNIST), else 0: a plain conversion stays
    Rueckauer et al.'s, and event input changes over a stream, so one rate per channel
    does not describe it.
    ``holdout=(x, labels)`` records the early-exit calibration table over
    ``calibration_steps`` steps (frames, or EventSteps per recording for an event
    network) and the operating point the model recommends from it.
    ``input_kind='events'`` makes an event-input network whose input is per-step event
    counts with ``dt_us`` per step. ``n_threads`` engines record the holdout tables
    (default: every CPU this process may run on); the tables do not depend on it.
    """
    _check_options(percentile, reset, max_spikes, calibration_steps, max_pool, n_threads)
    readouts = _readouts(readout)
    v_init = check_v_init("v_init", (0.5 if input_kind == "frame" else 0.0) if v_init is None else v_init)
    if evidence_steps is not None:
        evidence_steps = check_evidence_steps("evidence_steps", evidence_steps)
    model = model.eval()
    first = _checked_first_batch(calibration, next(_batches(calibration, batch_size, batch_size), None),
                                 input_kind, input_scale)  # fmt: skip
    ops = trace(model, first[:1])
    drafts = build_drafts(ops)
    _check_folding(model, drafts, first)
    acts, seen = measure_activations(
        drafts, _batches(calibration, batch_size, max_calibration_samples), progress,
        _n_batches(calibration, batch_size, max_calibration_samples),
    )
    first_shape = tuple(int(v) for v in first.shape[1:])
    spec = InputSpec(
        kind=input_kind,  # type: ignore[arg-type]
        shape=(first_shape[0], first_shape[1], first_shape[2]),
        scale=float(input_scale),
        mean=tuple(float(v) for v in input_mean),
        std=tuple(float(v) for v in input_std),
        encoding=input_encoding,  # type: ignore[arg-type]
        dt_us=int(dt_us),
    )
    # Bursts are chosen for analog frames only (see the docstring).
    auto_burst = holdout is not None and (input_kind, input_encoding, reset) == ("frame", "analog",
                                                                                  "subtract")
    bursts = (max_spikes,) if max_spikes is not None else AUTO_MAX_SPIKES if auto_burst else (1,)
    bias_steps, bias_frames = _bias_setup(bias_steps, holdout is not None, spec, calibration, batch_size)
    clips = {str(j): d.clip for j, d in enumerate(drafts) if d.clip is not None}
    pool_mode = max_pool if any(d.kind == "maxpool" for d in drafts) else "gated"
    n_out = int(np.prod(drafts[-1].out_shape))
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_out))
    meta: dict[str, Any] = {
        "converter": "spikecast",
        "method": "Rueckauer et al. 2017, layer-wise data-based normalisation",
        "v_init": v_init,
        "calibration_samples": seen,
        "source_model": type(model).__name__,
        **({CLIP_KEY: clips} if clips else {}),
    }

    def network(p: float, burst: int) -> Network:
        lambdas = lambdas_at(drafts, acts, p)
        if burst > 1:  # burst: hidden spikes carry 1/B of the activation (the output keeps λ)
            lambdas = [lam / burst if j < len(drafts) - 1 else lam for j, lam in enumerate(lambdas)]
        layers = [_layer(j, d, lambdas, last=j == len(drafts) - 1) for j, d in enumerate(drafts)]
        net = Network(
            input=spec, layers=tuple(layers), class_names=names,
            reset=reset,  # type: ignore[arg-type]
            temperature=temperature,
            meta={**meta, **({"max_spikes": burst} if burst > 1 else {}), "percentile": p},
            v_init=v_init, evidence_steps=evidence_steps or 0.0, max_spikes=burst,
            max_pool=pool_mode,  # type: ignore[arg-type]
            readout=readouts[0],  # type: ignore[arg-type]
        )  # fmt: skip
        return _with_biases_calibrated(net, bias_frames, bias_steps, progress, n_threads or default_threads())

    if holdout is None:
        return network(DEFAULT_PERCENTILE if percentile is None else percentile, bursts[0])
    hx = list(holdout[0]) if input_kind == "events" else holdout[0]
    if input_kind == "frame":  # the same check as the calibration data's, on the table's inputs
        _check_scaled(torch.as_tensor(np.asarray(hx[:batch_size], np.float32)), input_scale, "holdout")
    candidates = AUTO_PERCENTILES if percentile is None else (percentile,)
    signals = AUTO_EVIDENCE_STEPS if evidence_steps is None else (evidence_steps,)
    best: dict[int, Network] = {}
    best_scores: dict[int, dict[str, float]] = {}
    for burst in bursts:
        nets: dict[float, Network] = {}
        scores: dict[float, dict[str, float]] = {}
        what = "calibration tables (λ percentiles" + (f", bursts of {burst})" if burst > 1 else ")")
        for p in _progress(candidates, progress, what):
            nets[p], scores[p] = _with_best_signal(network(p, burst), hx, holdout[1], calibration_steps,
                                                   signals, batch_size, progress, n_threads)  # fmt: skip
        if percentile is not None:
            best[burst], best_scores[burst] = nets[percentile], scores[percentile]
            continue
        chosen = choose_percentile(scores)
        choice = {
            "rule": "fewest mean steps at the recommended point, among plateaus within "
            f"{AUTO_PLATEAU_TOLERANCE * 100:g} pt of the best; ties to the larger percentile",
            "candidates": {f"{p:g}": v for p, v in scores.items()},
            "chosen": chosen,
        }
        best[burst] = nets[chosen].with_(meta={**nets[chosen].meta, "percentile_choice": choice})
        best_scores[burst] = scores[chosen]
    net = best[bursts[0]] if len(best) == 1 else _chosen_burst(best, best_scores)
    if len(readouts) > 1:
        net = _with_better_readout(net, (hx, holdout[1]), calibration_steps, signals, batch_size, progress,
                                   n_threads)  # fmt: skip
    return _warn_small_table(net)


def _chosen_burst(nets: dict[int, Network], scores: dict[int, dict[str, float]]) -> Network:
    """Of each burst size's network (percentile and exit signal chosen) with its score,
    the one whose recommended point does the least work per decision, among plateaus
    within AUTO_PLATEAU_TOLERANCE of the best (``meta["max_spikes_choice"]`` records them)."""
    chosen = choose_max_spikes(scores)
    choice = {
        "rule": "least work per decision at the recommended point (mean SynOps + mean steps x "
        f"neurons), among plateaus within {AUTO_PLATEAU_TOLERANCE * 100:g} pt of the best; "
        "ties to fewer spikes per step",
        "candidates": {str(b): v for b, v in scores.items()},
        "chosen": chosen,
    }
    net = nets[chosen]
    return net.with_(meta={**net.meta, "max_spikes_choice": choice})


def choose_max_spikes(scores: dict[int, dict[str, float]]) -> int:
    """The burst size whose recommended point does the least work per decision
    (``mean_work``), among those whose plateau accuracy is within AUTO_PLATEAU_TOLERANCE of
    the best; ties, or work not counted (the reference simulator's runs), go to fewer
    spikes per step."""
    if not scores:
        raise ParameterError("no burst size to choose from")
    best = max(v["plateau_accuracy"] for v in scores.values())
    floor = best - AUTO_PLATEAU_TOLERANCE - 1e-12
    eligible = [b for b, v in scores.items() if v["plateau_accuracy"] >= floor]
    if not all("mean_work" in scores[b] for b in eligible):
        return min(eligible)
    return min(eligible, key=lambda b: (scores[b]["mean_work"], b))


_SCORE_KEYS = ("plateau_accuracy", "mean_steps", "accuracy", "tau", "t_min")


def _warn_small_table(net: Network) -> Network:
    """Say so (a :class:`SmallTableWarning`) when the holdout set was too small to make
    the recommended point a safe default; the model's summary says it too."""
    warning = small_table_warning(net.meta)
    if warning is not None:
        warnings.warn(warning, SmallTableWarning, stacklevel=3)
    return net


def _readouts(readout: str | None) -> tuple[str, ...]:
    """The read-outs a holdout run weighs: the one asked for, else AUTO_READOUTS (the
    first builds the candidates, see convert())."""
    if readout is not None:
        return (check_readout("readout", readout),)
    return AUTO_READOUTS


def _membrane_applies(net: Network) -> bool:
    """Whether the membrane read-out can read ``net``'s output (Network.readout_source)."""
    try:
        net.readout_source()
    except ParameterError:
        return False
    return True


def _with_better_readout(
    net: Network, holdout: tuple[Any, Any], n_steps: int, signals: Sequence[float], batch_size: int,
    progress: bool, n_threads: int | None,
) -> Network:
    """``net`` (chosen with AUTO_READOUTS[0], its table and point recorded) or, where its
    layers allow the membrane read-out, its copy with each other read-out (one more
    holdout run each, with its own exit signal): the one that reaches the best plateau
    less AUTO_PLATEAU_TOLERANCE in the fewest mean steps at its earliest point on its
    table (see convert())."""
    hx, hy = holdout
    if not _membrane_applies(net):
        return net
    runs = {AUTO_READOUTS[0]: net}
    for r in AUTO_READOUTS[1:]:
        runs[r], _ = _with_best_signal(net.with_(readout=r), hx, hy, n_steps, signals, batch_size,
                                       progress, n_threads)  # fmt: skip
    cals = {}
    for r, net_r in runs.items():
        if net_r.calibration is None:
            raise ConversionError("a holdout run left no calibration table")
        cals[r] = Calibration(net_r.calibration)
    target = max(c.plateau_accuracy for c in cals.values()) - AUTO_PLATEAU_TOLERANCE - 1e-12
    scores: dict[str, dict[str, Any]] = {}
    for r, cal in cals.items():
        point = cal.choose(target, cal.table.n_steps)
        steps = None if point is None else cal.stats(point.tau, point.t_min, point.t_max).mean_steps
        rec = runs[r].meta[META_KEY]
        scores[r] = {**{k: rec[k] for k in _SCORE_KEYS}, "equal_accuracy_steps": steps}
    chosen = choose_readout(scores)
    choice = {
        "rule": "fewest mean steps on the holdout table to the best plateau less "
        f"{AUTO_PLATEAU_TOLERANCE * 100:g} pt (each read-out's earliest point); ties to the spike read-out; "
        "λ, bursts and exit signal chosen with the spike read-out",
        "target_accuracy": target,
        "candidates": scores,
        "chosen": chosen,
    }
    out = runs[chosen]
    return out.with_(meta={**out.meta, "readout_choice": choice})


def _with_best_signal(
    net: Network, hx: Any, hy: Any, n_steps: int, signals: Sequence[float], batch_size: int, progress: bool,
    n_threads: int | None,
) -> tuple[Network, dict[str, float]]:
    """``net`` with the exit signal (of ``signals``) whose recommended point decides
    earliest on the holdout table, that table and point; and the point's score."""
    run = _holdout_run(net, hx, hy, n_steps, batch_size, progress, n_threads)
    tables = _tables(net, run, signals)
    recs = {e: Calibration(t).recommend() for e, t in tables.items()}
    points = {e: r.as_dict() for e, r in recs.items()}
    chosen = choose_evidence_steps(points)
    out = with_calibration(net.with_(evidence_steps=chosen), tables[chosen],
                           f"{tables[chosen].n_samples} held-out samples", recs[chosen])  # fmt: skip
    if len(signals) > 1:
        choice = {
            "rule": "fewest mean steps at the recommended point; ties to the rate rule",
            "candidates": {("rate" if e == 0 else f"evidence/{e:g}"): {k: v[k] for k in _SCORE_KEYS}
                           for e, v in points.items()},
            "chosen": out.exit_signal,
        }
        out = out.with_(meta={**out.meta, "exit_signal_choice": choice})
    point = out.meta[META_KEY]  # the table's recommendation, as with_calibration recorded it
    return out, {k: point[k] for k in _SCORE_KEYS} | _work(out, run, recs[chosen])


def _work(net: Network, run: _HoldoutRun, rec: Recommendation) -> dict[str, float]:
    """Mean SynOps and work per decision at the recommended point, on the holdout run:
    work counts SynOps and neuron updates alike (every step updates every neuron; each is
    one read-modify-write of a float, bench/engine.py: about 0.1 ns each). Empty from the
    reference simulator, which counts no SynOps."""
    if run.synops is None:
        return {}
    table = net.calibration
    if table is None:
        raise ConversionError("the network has no calibration table to score")
    p = rec.point
    steps = decision_steps(table.confidence, p.tau, p.t_min, p.t_max)
    synops = float(run.synops[steps - 1, np.arange(table.n_samples)].mean())
    neurons = sum(ly.n_neurons for ly in net.layers if ly.kind != "maxpool")
    return {"mean_synops": synops, "mean_work": synops + float(steps.mean()) * neurons}


def _checked_first_batch(calibration: Any, first: torch.Tensor | None, input_kind: str,
                         input_scale: float) -> torch.Tensor:
    """The first calibration batch, checked: it has the (N, C, H, W) shape the engine
    needs, and is not raw sensor data where ``input_scale`` says the model takes scaled
    values."""
    if first is None:
        raise ParameterError("calibration data are empty: convert() needs inputs to measure λ on")
    if first.ndim != 4:
        shape = tuple(np.shape(calibration)) if isinstance(calibration, (np.ndarray, torch.Tensor)) \
            else tuple(first.shape)  # a DataLoader: its first batch
        hint = ""
        if len(shape) == 3:
            hint = f"; images without a channel axis: pass x[:, None], shape {(shape[0], 1, *shape[1:])}"
        elif len(shape) == 2:
            hint = ("; flat vectors: pass them as images, x.reshape(N, C, H, W) (e.g. (N, 1, 28, 28) "
                    "for MNIST), and let the model's Flatten take them from there")
        raise ParameterError(
            f"calibration data must hold (N, C, H, W) inputs, what the model takes; got {shape}{hint}"
        )
    if input_kind == "frame":
        _check_scaled(first, input_scale, "calibration")
    return first


def _check_scaled(x: torch.Tensor, input_scale: float, what: str) -> None:
    """Refuse raw sensor values where ``input_scale`` < 1 says the model takes scaled ones:
    whole numbers up to 255, say, with input_scale 1/255. λ (or the table) would be
    measured on inputs 1/input_scale too large, and the runtime's scaled frames would
    barely fire the network."""
    if not 0 < input_scale < 1 or x.numel() == 0:
        return
    top = float(x.max())
    if top >= 2 and bool(torch.all(x == torch.round(x))):
        raise ParameterError(
            f"{what} data look like raw sensor values (whole numbers up to {top:g}) while "
            f"input_scale={input_scale:g} says the model takes raw * {input_scale:g}: pass what "
            f"the model takes (x * {input_scale:g}, the calibration and holdout data both), or "
            "input_scale=1 if the model was trained on raw values"
        )


def _bias_setup(
    bias_steps: int | None, with_holdout: bool, spec: InputSpec, calibration: Any, batch_size: int
) -> tuple[int, np.ndarray | None]:
    """The bias calibration's steps (None: the default, see convert()) and frames: the
    first BIAS_FRAMES calibration frames, or None when there is none to make."""
    analog = (spec.kind, spec.encoding) == ("frame", "analog")
    if bias_steps is None:
        bias_steps = AUTO_BIAS_STEPS if with_holdout and analog else 0
    bias_steps = check_int("bias_steps", bias_steps, 0, 1_000_000)
    if bias_steps and not analog:
        raise ParameterError("bias_steps > 0 needs a network that takes analog frames (input_kind='frame', "
                             "input_encoding='analog')")  # fmt: skip
    if not bias_steps:
        return 0, None
    batches = list(_batches(calibration, batch_size, BIAS_FRAMES))
    if not batches or not sum(len(b) for b in batches):
        raise ParameterError("the calibration data gave no frames on a second pass, which the bias "
                             "calibration needs: pass an array, a tensor or a re-iterable DataLoader, "
                             "or bias_steps=0")  # fmt: skip
    return bias_steps, torch.cat(batches)[:BIAS_FRAMES].numpy()


def _with_biases_calibrated(
    net: Network, frames: np.ndarray | None, n_steps: int, progress: bool, n_threads: int
) -> Network:
    """``net`` with its biases calibrated on ``frames`` at ``n_steps`` (none: as it is)."""
    if frames is None:
        return net
    return calibrate_biases(net, frames, n_steps, clips=normalised_clips(net), progress=progress,
                            n_threads=n_threads)  # fmt: skip


def normalised_clips(net: Network) -> dict[int, float]:
    """Each clipped layer's ReLU maximum on its normalised scale (a / λ)."""
    return {int(k): float(v) / net.layers[int(k)].lam for k, v in net.meta.get(CLIP_KEY, {}).items()}


def _check_options(
    percentile: float | None, reset: str, max_spikes: int | None, calibration_steps: int, max_pool: str,
    n_threads: int | None,
) -> None:
    """convert()'s plain option checks, before any data is read."""
    check_max_pool("max_pool", max_pool)
    if n_threads is not None:  # None: calibration_tables takes every CPU
        check_int("n_threads", n_threads, 1, 1024)
    if percentile is not None and not 0 < percentile <= 100:
        raise ParameterError(f"percentile must be in (0, 100], got {percentile}")
    if reset not in ("subtract", "zero"):
        raise ParameterError(f"reset must be 'subtract' or 'zero', not {reset!r}")
    if max_spikes is not None:
        check_int("max_spikes", max_spikes, *MAX_SPIKES_RANGE)
    if max_spikes is not None and max_spikes > 1 and reset != "subtract":
        raise ParameterError(f"max_spikes={max_spikes} needs reset='subtract', not {reset!r}")
    if calibration_steps < 1:
        raise ParameterError(f"calibration_steps must be >= 1, got {calibration_steps}")


def _layer(j: int, d: _Draft, lambdas: Sequence[float], last: bool) -> Layer:
    """Draft j normalised: each weight set from source k scaled by λ_k / λ_j (λ_input = 1),
    so every input arrives on this layer's scale; the bias by 1 / λ_j."""
    lam = lambdas[j]
    inputs = tuple(d.sources) if d.sources != [j - 1] else ()
    if d.kind == "maxpool":
        return Layer("maxpool", d.name, d.in_shape, d.out_shape, kernel=d.kernel, stride=d.stride,
                     padding=d.padding, lam=lam, inputs=inputs)  # fmt: skip
    if d.bias is None:
        raise ConversionError(f"node '{d.name}': layer has no bias")

    def synapses(e: _Draft, src: int, bias: np.ndarray | None) -> Layer:
        if e.weight is None:
            raise ConversionError(f"node '{d.name}': layer has no weights")
        scale = (lambdas[src] if src >= 0 else 1.0) / lam
        w = (e.weight * scale).float().numpy()
        return Layer(e.kind, d.name, e.in_shape, d.out_shape, weight=w, bias=bias, kernel=e.kernel,
                     stride=e.stride, padding=e.padding, groups=e.groups)  # fmt: skip

    extra = tuple(synapses(e, k, None) for e, k in zip(d.extra, d.sources[1:], strict=True))
    b = (d.bias / lam).float().numpy()
    main = synapses(d, d.sources[0], b)
    return replace(main, lam=lam, spiking=not last, inputs=inputs, extra=extra)


def _check_folding(model: nn.Module, drafts: Sequence[_Draft], x: torch.Tensor) -> None:
    """The folded ANN must compute what the model computes (up to float error)."""
    with torch.no_grad():
        ref = model(x[:8])
        h = run_drafts(drafts, x[:8].double())[-1]
    if ref.shape != h.shape:
        raise ConversionError(f"folded network outputs {tuple(h.shape)}, model outputs {tuple(ref.shape)}")
    # A trailing softmax is in the model but not the logits we keep: compare after it.
    if not torch.allclose(ref.double(), h, atol=1e-4, rtol=1e-4):
        soft = torch.softmax(h, dim=-1)
        logsoft = torch.log_softmax(h, dim=-1)
        if not (
            torch.allclose(ref.double(), soft, atol=1e-5) or torch.allclose(ref.double(), logsoft, atol=1e-4)
        ):
            err = float((ref.double() - h).abs().max())
            raise ConversionError(
                f"folding changed the model's output by {err:.3g}; please report this model"
            )


def ann_logits(net: Network, x: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The normalised network evaluated as an ANN (ReLU rates × λ); argmax equals the model's.

    A clipped layer (``meta["clipped_activations"]``) clips its normalised activation
    at a / λ (1 when λ = a: the neuron's saturation). Calibrated biases
    (``meta["bias_calibration"]``) are evaluated as conversion found them."""
    out = []
    xt = torch.as_tensor(np.asarray(x, np.float32))
    clips = normalised_clips(net)
    for i in range(0, len(xt), batch_size):
        h = ann_activations(net, xt[i : i + batch_size], clips, cap=False)[-1]
        out.append(h.reshape(h.shape[0], -1) * net.layers[-1].lam)
    return torch.cat(out).numpy()


def calibration_table(
    net: Network, x: Any, labels: Any, n_steps: int, batch_size: int = 256, progress: bool = True,
    n_threads: int | None = None,
) -> CalibrationTable:
    """Run a held-out set step by step and record c(t) and whether argmax z(t) was right.

    ``x``: normalised frames (N, C, H, W) for a frame network, or a sequence of
    :class:`~spikecast.ext.engine.EventSteps` (one per recording) for an event network.
    Uses the compiled engine's :func:`~spikecast.ext.engine.trace` (it matches the
    reference simulator); Poisson-coded frames go through the reference simulator.
    """
    signal = (net.evidence_steps,)
    tables = calibration_tables(net, x, labels, n_steps, signal, batch_size, progress, n_threads)
    return tables[net.evidence_steps]


@dataclass(frozen=True)
class _HoldoutRun:
    """One run over a held-out set: z(t) (T, N, K), the steps behind each row (T, N) or
    (T, 1), the labels, and SynOps since reset (T, N; None from the reference simulator)."""

    logits: np.ndarray
    steps: np.ndarray
    labels: np.ndarray
    synops: np.ndarray | None


def _holdout_run(
    net: Network, x: Any, labels: Any, n_steps: int, batch_size: int, progress: bool, n_threads: int | None,
) -> _HoldoutRun:
    from spikecast.ext.engine import EventSteps
    from spikecast.ext.engine import trace as engine_trace

    ys = np.asarray(labels).astype(np.int64).ravel()
    events = net.input.kind == "events"
    if events:
        items = list(x)
        if not items or not all(isinstance(e, EventSteps) for e in items):
            raise ParameterError(
                "an event network's holdout is a sequence of EventSteps (one per recording; "
                "EventSteps.from_arrays bins events), with one label each"
            )
        n = len(items)
    else:
        xs = np.asarray(x, np.float32)
        n = len(xs)
    if n != len(ys) or n == 0:
        raise ParameterError(f"holdout needs as many labels as inputs, got {n} and {len(ys)}")
    if events or net.input.encoding == "analog":
        threads = default_threads() if n_threads is None else n_threads
        tr = engine_trace(net, items if events else xs, n_steps, n_threads=threads, logits=True)
        if tr.logits is None:  # trace(logits=True) always returns them
            raise ParameterError("the engine's trace returned no logits")
        return _HoldoutRun(tr.logits, tr.steps_run, ys, tr.synops)
    from spikecast.converters.reference import simulate_batched

    logits, _, _ = simulate_batched(
        net, xs, n_steps, batch_size=batch_size, rng=np.random.default_rng(0), progress=progress,
        desc="calibration table",
    )  # fmt: skip
    return _HoldoutRun(logits, np.arange(1, n_steps + 1, dtype=np.float64)[:, None], ys, None)


def _tables(net: Network, run: _HoldoutRun, evidence_steps: Sequence[float]) -> dict[float, CalibrationTable]:
    correct = run.logits.argmax(axis=-1) == run.labels[None, :]
    return {
        float(e): CalibrationTable(
            softmax_confidence(run.logits, run.steps, net.temperature, float(e)).astype(np.float32), correct
        )
        for e in evidence_steps
    }


def calibration_tables(
    net: Network,
    x: Any,
    labels: Any,
    n_steps: int,
    evidence_steps: Sequence[float],
    batch_size: int = 256,
    progress: bool = True,
    n_threads: int | None = None,
) -> dict[float, CalibrationTable]:
    """One run over the held-out set, tabulated for each exit signal in ``evidence_steps``
    (0: the rate rule; t_e: the evidence rule, see ``Network.evidence_steps``). The
    spikes and logits do not depend on the rule, only c(t) does."""
    run = _holdout_run(net, x, labels, n_steps, batch_size, progress, n_threads)
    return _tables(net, run, evidence_steps)


def with_calibration(
    net: Network,
    table: CalibrationTable,
    source: str | None = None,
    recommendation: Recommendation | None = None,
) -> Network:
    """``net`` with its calibration table and the operating point it recommends
    (``meta["operating_point"]``, see :mod:`spikecast.ext.core.calibration`);
    ``recommendation``: the table's, when the caller has it already."""
    rec = Calibration(table).recommend() if recommendation is None else recommendation
    meta = {**net.meta, META_KEY: rec.as_dict()}
    if source is not None:
        meta["calibration_table"] = source
    return net.with_(calibration=table, meta=meta)


__all__ = [
    "AUTO_EVIDENCE_STEPS",
    "AUTO_MAX_SPIKES",
    "AUTO_PERCENTILES",
    "ann_logits",
    "build_drafts",
    "calibration_table",
    "calibration_tables",
    "choose_evidence_steps",
    "choose_max_spikes",
    "choose_percentile",
    "convert",
    "lambdas_at",
    "measure_activations",
    "measure_lambdas",
    "with_calibration",
]
