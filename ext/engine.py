"""The event-driven engine: compile a Network once, run many streams over it.

>>> plan = CompiledNetwork(net)           # read-only, shared by every engine and thread
>>> eng = Engine(plan)                    # one per stream: membranes, counts, spike buffers
>>> res = eng.run(frame, t_max=100, tau=0.95, t_min=5)   # early exit inside the compiled loop
>>> res.class_index, res.confidence, res.steps, res.exit, res.synops

Streams (the runtime): ``eng.feed(EventSteps...)`` advances one step per binned
step of events and can stop at the first confident step; read ``eng.confidence``,
``eng.logits``, ``eng.t``, ``eng.synops`` and call ``eng.reset()`` after a decision.

Every argument is validated here, before any compiled code runs; bad values raise
:class:`~spikecast.ext.core.errors.ParameterError`. The semantics are those of
docs/step-semantics.md and of :mod:`spikecast.converters.reference`, which the
engine reproduces spike for spike when every sum is exact in float32.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from spikecast.ext import _engine  # type: ignore[attr-defined]
from spikecast.ext.core.checks import INT32_MAX as _INT32_MAX
from spikecast.ext.core.checks import check_float, check_int
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.exits import EXIT_REASONS, ExitReason
from spikecast.ext.core.network import Layer, Network

_EXIT_MAX_STEPS = EXIT_REASONS.index("max_steps")
_EXIT_END_OF_STREAM = EXIT_REASONS.index("end_of_stream")

_KIND_CODE = {"conv": 0, "linear": 1, "maxpool": 2}
# "Never confident": c(t) <= 1 < 2.
_NO_TAU = 2.0


# ----------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunResult:
    """One decision: the engine's state when a run stopped.

    ``logits`` is z(t) = λ_L V_L / t (K,), ``synops`` and ``spikes`` are per layer
    (L,) totals since reset (max-pool: passed spikes; output layer: 0 spikes).
    ``t_eff`` is the divisor t of z: the steps run, or their decayed sum after ``decay``.
    """

    class_index: int
    confidence: float
    logits: np.ndarray
    steps: int
    exit: ExitReason
    synops: np.ndarray
    spikes: np.ndarray
    t_eff: float

    @property
    def total_synops(self) -> int:
        return int(self.synops.sum())


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Decisions of a batch of N independent frames, as arrays."""

    class_index: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float64
    steps: np.ndarray  # (N,) int32
    exit_code: np.ndarray  # (N,) int8, index into EXIT_REASONS
    synops: np.ndarray  # (N, L) int64
    spikes: np.ndarray  # (N, L) int64
    logits: np.ndarray  # (N, K) float32

    @property
    def exit(self) -> np.ndarray:
        """(N,) exit reasons as strings."""
        return np.asarray(EXIT_REASONS, dtype=object)[self.exit_code].astype(str)

    def __len__(self) -> int:
        return len(self.class_index)


# ----------------------------------------------------------------------------------
# Event input
# ----------------------------------------------------------------------------------


def _check_events(indices: Any, offsets: Any, n_input: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a CSR pair of per-step event indices; return contiguous int32/int64 arrays."""
    idx = np.asarray(indices)
    off = np.asarray(offsets)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ParameterError(f"event indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    if off.ndim != 1 or off.size < 1 or off.dtype.kind not in "iu":
        raise ParameterError(f"event offsets must be a 1-D integer array of n_steps + 1, got {off.shape}")
    if idx.size > _INT32_MAX:
        raise ParameterError(f"too many events in one call ({idx.size}); feed them in pieces")
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= n_input:
            bad = lo if lo < 0 else hi
            raise ParameterError(f"event index {bad} outside the input's {n_input} (C*H*W) positions")
    if int(off[0]) != 0 or int(off[-1]) != idx.size or (off.size > 1 and int(np.diff(off).min()) < 0):
        raise ParameterError(
            f"event offsets must start at 0, never decrease and end at the number of events "
            f"({idx.size}); got {off[0]}..{off[-1]}"
        )
    return (
        np.ascontiguousarray(idx, dtype=np.int32),
        np.ascontiguousarray(off, dtype=np.int64),
    )


@dataclass(frozen=True, eq=False)
class EventSteps:
    """Events binned into consecutive steps, as a CSR pair (the engine's native input).

    Step k's events are ``indices[offsets[k]:offsets[k + 1]]``: flat input positions
    ``(c * H + y) * W + x`` (int32), one entry per event, so a pixel with two events in
    one step appears twice. ``shape`` is the network input (C, H, W).
    """

    indices: np.ndarray
    offsets: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ParameterError(f"event shape must be (C, H, W) with positive sizes, got {self.shape}")
        idx, off = _check_events(self.indices, self.offsets, math.prod(shape))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "offsets", off)

    @property
    def n_steps(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.indices)

    def steps(self, start: int, stop: int) -> EventSteps:
        """The sub-stream of steps [start, stop)."""
        if not 0 <= start <= stop <= self.n_steps:
            raise ParameterError(f"steps [{start}, {stop}) outside 0..{self.n_steps}")
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return EventSteps(self.indices[a:b], self.offsets[start : stop + 1] - a, self.shape)

    @classmethod
    def from_arrays(
        cls,
        x: Any,
        y: Any,
        p: Any,
        step: Any,
        shape: Sequence[int],
        n_steps: int | None = None,
    ) -> EventSteps:
        """Bin events given as columns: pixel ``x``, ``y``, polarity ``p`` (0/1) and the
        0-based ``step`` each falls in (need not be sorted). With one input channel the
        polarities are merged. ``n_steps`` defaults to the last step + 1."""
        c, h, w = (int(s) for s in shape)
        cols = [np.asarray(a).ravel() for a in (x, y, p, step)]
        n = len(cols[0])
        if any(len(a) != n for a in cols):
            raise ParameterError(f"event columns differ in length: {[len(a) for a in cols]}")
        if any(a.size and a.dtype.kind not in "iub" for a in cols):
            raise ParameterError("event x, y, p and step must be integer arrays")
        xs, ys, ps, st = (a.astype(np.int64, copy=False) for a in cols)
        if n_steps is None:
            n_steps = int(st.max()) + 1 if n else 0
        if n_steps < 0:
            raise ParameterError(f"n_steps must be >= 0, got {n_steps}")
        for name, a, hi in (("x", xs, w), ("y", ys, h), ("p", ps, 2), ("step", st, n_steps)):
            if n and (int(a.min()) < 0 or int(a.max()) >= hi):
                raise ParameterError(f"event {name} outside [0, {hi}): {int(a.min())}..{int(a.max())}")
        chan = ps if c == 2 else np.zeros_like(ps)
        if c not in (1, 2):
            raise ParameterError(f"event input needs 1 or 2 polarity channels, not {c}")
        flat = (chan * h + ys) * w + xs
        if n > 1 and int(np.diff(st).min()) < 0:
            order = np.argsort(st, kind="stable")
            flat, st = flat[order], st[order]
        offsets = np.zeros(n_steps + 1, np.int64)
        np.cumsum(np.bincount(st, minlength=n_steps), out=offsets[1:])
        return cls(flat.astype(np.int32), offsets, (c, h, w))

    @classmethod
    def from_counts(cls, counts: Any) -> EventSteps:
        """From dense per-step event counts (T, C, H, W) of non-negative integers (the
        reference simulator's event input for one sample)."""
        a = np.asarray(counts)
        if a.ndim != 4:
            raise ParameterError(f"event counts must be (T, C, H, W), got {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a != np.round(a)):
            raise ParameterError("event counts must be non-negative integers")
        t = a.shape[0]
        flat = a.reshape(t, math.prod(a.shape[1:])).astype(np.int64)  # -1 fails for T = 0
        step_of, pos = np.nonzero(flat)
        reps = flat[step_of, pos]
        indices = np.repeat(pos, reps).astype(np.int32)
        per_step = flat.sum(axis=1)
        offsets = np.zeros(t + 1, np.int64)
        np.cumsum(per_step, out=offsets[1:])
        return cls(indices, offsets, (a.shape[1], a.shape[2], a.shape[3]))


# ----------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------


def _chw(shape: Sequence[int]) -> tuple[int, int, int]:
    """A layer shape as (C, H, W); a flat (n,) vector is (n, 1, 1)."""
    if len(shape) == 3:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    return (math.prod(int(s) for s in shape), 1, 1)


def _channel_last_to_torch(shape: Sequence[int]) -> np.ndarray:
    """For each channel-last index (y*W + x)*C + c, its torch flat index (c*H + y)*W + x."""
    c, h, w = _chw(shape)
    return np.arange(c * h * w, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).ravel()


def _torch_to_channel_last(shape: Sequence[int]) -> np.ndarray:
    c, h, w = _chw(shape)
    return np.arange(c * h * w, dtype=np.int64).reshape(h, w, c).transpose(2, 0, 1).ravel()


def _tap_tables(
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each input position y*W + x, its valid taps (ky*kw + kx) and outputs (oy*OW + ox).

    Input row y reaches output row oy through tap ky iff y + pad - ky == oy * stride,
    0 <= oy < OH (border-aware: padded taps simply do not exist). Returned as CSR
    (ptr, tap, out) in position order.
    """
    (h, w), (oh, ow), (kh, kw), (sh, sw), (ph, pw) = in_hw, out_hw, kernel, stride, padding

    def axis(n: int, k: int, s: int, p: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        num = np.arange(n)[:, None] + p - np.arange(k)[None, :]
        valid = (num >= 0) & (num % s == 0) & (num // s < n_out)
        return valid, num // s

    vy, oy = axis(h, kh, sh, ph, oh)
    vx, ox = axis(w, kw, sw, pw, ow)
    valid = vy[:, None, :, None] & vx[None, :, None, :]  # (h, w, kh, kw)
    y, x, ky, kx = np.nonzero(valid)  # C order: sorted by position, then tap
    ptr = np.zeros(h * w + 1, np.int64)
    np.cumsum(np.bincount(y * w + x, minlength=h * w), out=ptr[1:])
    tap = ky * kw + kx
    out = oy[y, ky] * ow + ox[x, kx]
    return ptr, tap, out


def _conv_runs(
    layer: Layer, in_chw: tuple[int, int, int], out_chw: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scatter runs of a conv: for each input position, (weight offset, membrane offset,
    length in floats) triples, CSR over positions.

    With the kernel columns stored reversed, tap kx of kernel row ky reaches output
    column ox = x + pad - kx: as kx falls ox rises, and the reversed weight column
    kw-1-kx rises too, so with stride 1 the valid taps of one kernel row form a single
    contiguous run of (#taps * c_out) floats on both sides. Other strides: one run
    of c_out floats per tap.

    Grouped conv (g groups): a spike of input channel c reaches only the c_out/g output
    channels of its group, so each tap is one run of c_out/g floats (the membrane side
    is strided by c_out between positions, so runs of a row do not merge); membrane
    offsets here are for group 0 and the kernel adds (c // (c_in/g)) * (c_out/g).
    """
    c_out = out_chw[0]
    c_out_g = c_out // layer.groups
    kh, kw = layer.kernel
    ptr, tap, out = _tap_tables(in_chw[1:], out_chw[1:], layer.kernel, layer.stride, layer.padding)
    ky, kx = tap // kw, tap % kw
    pos = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    if layer.stride[1] == 1 and layer.groups == 1 and len(tap):
        # Entries are sorted by (position, ky, kx): group each kernel row of a position
        # and start its run at the largest kx (the smallest output column).
        key = pos * kh + ky
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        count = np.diff(np.r_[first, len(key)])
        last = first + count - 1
        w_off = (ky[last] * kw + (kw - 1 - kx[last])) * c_out
        m_off = out[last] * c_out
        length = count * c_out
        run_pos = pos[first]
    else:
        w_off = (ky * kw + (kw - 1 - kx)) * c_out_g
        m_off = out * c_out
        length = np.full(len(tap), c_out_g)
        run_pos = pos
    run_ptr = np.zeros(len(ptr), np.int64)
    np.cumsum(np.bincount(run_pos, minlength=len(ptr) - 1), out=run_ptr[1:])
    return run_ptr, w_off, m_off, length


def _i32(a: np.ndarray, what: str) -> np.ndarray:
    if a.size and (int(a.max()) > _INT32_MAX or int(a.min()) < -_INT32_MAX):
        raise ParameterError(f"{what} is too large for the engine's 32-bit indices")
    out = np.ascontiguousarray(a, dtype=np.int32).reshape(-1)
    out.flags.writeable = False
    return out


def _f32(a: np.ndarray) -> np.ndarray:
    """A read-only flat float32 copy starting on a 64-byte boundary (whole cache lines:
    the AVX-512 scatter is ~1.5x faster on aligned rows)."""
    src = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    buf = np.empty(src.size + 16, np.float32)
    gap = -buf.ctypes.data % 64
    shift = gap // 4 if gap % 4 == 0 else 0
    out = buf[shift : shift + src.size]
    out[...] = src
    out.flags.writeable = False
    return out


_EMPTY_I32 = np.zeros(0, np.int32)
_EMPTY_F32 = np.zeros(0, np.float32)


def _compile_layer(i: int, layer: Layer, prev_shape: tuple[int, ...]) -> dict[str, Any]:
    where = f"layer {i} ({layer.name})"
    in_chw = _chw(prev_shape)
    out_chw = _chw(layer.out_shape)
    n_in, n_out = math.prod(in_chw), math.prod(out_chw)
    if max(n_in, n_out) > _INT32_MAX // 2:
        raise ParameterError(f"{where}: too many neurons for the engine")
    d: dict[str, Any] = {
        "kind": _KIND_CODE[layer.kind],
        "src": i - 1,  # CompiledNetwork sets the layer's (or extra weight set's) source
        "spiking": int(layer.spiking),
        "n_in": n_in,
        "n_out": n_out,
        "in_chw": in_chw,
        "out_chw": out_chw,
        "kernel": tuple(int(k) for k in layer.kernel),
        "stride": tuple(int(s) for s in layer.stride),
        "threshold": float(np.float32(layer.threshold)),
        "lam": float(np.float32(layer.lam)),
        "v_init": 0.0,  # CompiledNetwork sets a spiking layer's: Network.initial_potential
        "weight": _EMPTY_F32,
        "bias": _f32(np.zeros(out_chw[0], np.float32)),
        "tab_ptr": _EMPTY_I32,
        "tab_w": _EMPTY_I32,
        "tab_m": _EMPTY_I32,
        "tab_n": _EMPTY_I32,
        "win_init": _EMPTY_I32,
        # How the sweep visits the neurons (set below from the bias; see _sweep_plan).
        "sweep_mode": _SWEEP_DENSE,
        "nz_blocks": _EMPTY_I32,
        "tab_px": _EMPTY_I32,
        "tab_pn": _EMPTY_I32,
        # Grouped conv: channels per group on each side (ungrouped: c_in and c_out).
        "groups_chw": (in_chw[0] // layer.groups, out_chw[0] // layer.groups),
        # Positions and channels come from a shift and a mask when c_in is a power of two.
        "c_in_shift": in_chw[0].bit_length() - 1 if in_chw[0] & (in_chw[0] - 1) == 0 else -1,
    }
    if not (np.isfinite(np.float32(layer.threshold)) and np.float32(layer.threshold) > 0):
        raise ParameterError(f"{where}: threshold {layer.threshold} is not a positive float32")
    if layer.kind == "maxpool":
        (sh, sw), (ph, pw) = layer.stride, layer.padding
        ptr, _, win = _tap_tables(in_chw[1:], out_chw[1:], layer.kernel, layer.stride, (ph, pw))
        # Each window's first (top-left) input inside the map: the winner while all counts
        # are 0 (padding is never an input: it neither spikes nor wins).
        c, oh, ow = out_chw
        oy, ox, ch = np.meshgrid(np.arange(oh), np.arange(ow), np.arange(c), indexing="ij")
        y0, x0 = np.maximum(oy * sh - ph, 0), np.maximum(ox * sw - pw, 0)
        first = (y0 * in_chw[2] + x0) * c + ch
        d.update(tab_ptr=_i32(ptr, where), tab_m=_i32(win, where), win_init=_i32(first, where))
        return d
    weight = np.asarray(layer.weight, np.float32)
    bias = None if layer.bias is None else np.asarray(layer.bias, np.float32)
    if layer.kind == "conv":
        # [c_out][c_in/g][ky][kx] -> [c_in][ky][kw-1-kx][c_out/g]: see _conv_runs. Input
        # channel c = group * c_in/g + j holds the weights of its group's outputs.
        g = layer.groups
        c_out, c_in_g, kh, kw = weight.shape
        grouped = weight[:, :, :, ::-1].reshape(g, c_out // g, c_in_g, kh, kw)
        d["weight"] = _f32(grouped.transpose(0, 2, 3, 4, 1))
        if bias is not None:
            d["bias"] = _f32(bias)
        ptr, w_off, m_off, length = _conv_runs(layer, in_chw, out_chw)
        d.update(
            tab_ptr=_i32(ptr, where),
            tab_w=_i32(w_off, where),
            tab_m=_i32(m_off, where),
            tab_n=_i32(length, where),
        )
        if weight.size > _INT32_MAX:
            raise ParameterError(f"{where}: too many weights for the engine")
    else:
        # Rows in the channel-last order of the input: the torch flatten (C, H, W) is
        # absorbed here, at compile time.
        d["weight"] = _f32(weight.T[_channel_last_to_torch(prev_shape)])
        if bias is not None:
            d["bias"] = _f32(bias)
    d["sweep_mode"], d["nz_blocks"] = _sweep_plan(d["bias"])
    return d


_SWEEP_DENSE, _SWEEP_MIXED, _SWEEP_SPARSE = 0, 1, 2
_SWEEP_BLOCK = 16  # lanes: the blocks of a row that the MIXED sweep visits on every row


def _sweep_plan(bias: np.ndarray) -> tuple[int, np.ndarray]:
    """(sweep mode, offsets of the 16-channel blocks with a nonzero bias) of a layer.

    A neuron whose bias is zero and that received no input keeps V exactly and cannot
    spike unless it was left at V >= θ, so the sweep can skip it (docs/step-semantics.md,
    "Sparse sweep"): SPARSE (no nonzero bias) visits only the rows that received input
    or are pending, MIXED also the nonzero blocks of every row, DENSE everything.
    """
    blocks = [j for j in range(0, len(bias), _SWEEP_BLOCK) if np.any(bias[j : j + _SWEEP_BLOCK] != 0)]
    if not blocks:
        return _SWEEP_SPARSE, _EMPTY_I32
    if len(blocks) == -(-len(bias) // _SWEEP_BLOCK):
        return _SWEEP_DENSE, _EMPTY_I32
    return _SWEEP_MIXED, _i32(np.asarray(blocks), "bias blocks")


def _mark_tables(d: dict[str, Any], mode: int, where: str) -> dict[str, Any]:
    """A conv's (or extra's) run tables in rows for the sparse sweep: each run's first
    output row (pixel) and how many rows it covers. Runs start on a row (m = out * c_out,
    group 0) and are whole rows or a part of one (grouped, strided)."""
    if d["kind"] != _KIND_CODE["conv"] or mode == _SWEEP_DENSE:
        return {**d, "tab_px": _EMPTY_I32, "tab_pn": _EMPTY_I32}
    c_out = d["out_chw"][0]
    m = d["tab_m"].astype(np.int64)
    n = d["tab_n"].astype(np.int64)
    return {**d, "tab_px": _i32(m // c_out, where), "tab_pn": _i32(-(-n // c_out), where)}


class CompiledNetwork:
    """A Network compiled for the engine: weights laid out for scatter, index tables.

    Read-only once built; share one among any number of :class:`Engine` s and threads.
    """

    def __init__(self, network: Network) -> None:
        if not isinstance(network, Network):
            raise ParameterError(f"expected a spikecast Network, got {type(network).__name__}")
        network.check()
        self.network = network
        spec = network.input
        self.input_kind = spec.kind
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in spec.shape)  # type: ignore[assignment]
        self.n_input = math.prod(self.input_shape)
        self.n_layers = len(network.layers)
        self.n_classes = network.n_classes
        self.layer_names = tuple(ly.name for ly in network.layers)
        self.layer_shapes = tuple(tuple(int(s) for s in ly.out_shape) for ly in network.layers)
        #: Frames enter as analog current; events (and Poisson-coded frames) as spikes.
        self.takes_frames = spec.kind == "frame" and spec.encoding == "analog"
        self.takes_events = not self.takes_frames
        if self.n_input > _INT32_MAX // 2:
            raise ParameterError(f"input {self.input_shape} is too large for the engine")

        layers, extras, extra_ptr = [], [], [0]

        def shape_of(j: int) -> tuple[int, ...]:
            return self.input_shape if j < 0 else tuple(network.layers[j].out_shape)

        for i, ly in enumerate(network.layers):
            srcs = ly.sources(i)
            where = f"layer {i} ({ly.name})"
            d = _compile_layer(i, ly, shape_of(srcs[0]))
            if ly.spiking and network.max_spikes > 1:
                # Burst layers (and pools, which pass their winners' bursts) list a neuron
                # once per spike, and sweep every neuron (no row marks).
                d["max_spikes"] = int(network.max_spikes)
                if ly.kind != "maxpool":
                    d["sweep_mode"], d["nz_blocks"] = _SWEEP_DENSE, _EMPTY_I32
            mode = d["sweep_mode"] if ly.spiking else _SWEEP_DENSE  # the marks' tables
            layers.append(
                {**_mark_tables(d, mode, where), "src": srcs[0], "v_init": network.initial_potential(ly)}
            )
            # Each further input: a weight set of its own into this layer's membranes,
            # marking its rows as the layer's own input does.
            for j, e in zip(srcs[1:], ly.extra, strict=True):
                x = _compile_layer(i, e, shape_of(j))
                extras.append({**_mark_tables(x, mode, where), "src": j, "sweep_mode": mode})
            extra_ptr.append(len(extras))
        self._to_torch = [_channel_last_to_torch(s) for s in self.layer_shapes]
        if not (np.isfinite(np.float32(network.temperature)) and network.temperature > 0):
            raise ParameterError(f"temperature {network.temperature} is not a positive float32")
        self._core = _engine.CompiledPlan(
            layers,
            _i32(_torch_to_channel_last(self.input_shape), "input"),
            _i32(_torch_to_channel_last(self.layer_shapes[-1]), "output"),
            self.n_classes,
            float(network.temperature),
            float(network.evidence_steps),
            network.reset == "zero",
            network.max_pool == "count",
            extras,
            _i32(np.asarray(extra_ptr), "extras"),
            *self._readout(layers[-1]),
        )

    def _readout(self, out: dict[str, Any]) -> tuple[int, np.ndarray | None]:
        """The membrane read-out's source layer (-1: the spike read-out) and the output's
        weights [n_in][n_out] with the columns zero-padded to a multiple of 16."""
        if self.network.readout != "membrane":
            return -1, None
        src = self.network.readout_source()
        w = np.asarray(out["weight"], np.float32)
        n_out = self.layer_shapes[-1][0]
        w = w.reshape(-1, n_out)
        padded = np.zeros((w.shape[0], -(-n_out // 16) * 16), np.float32)
        padded[:, :n_out] = w
        padded.setflags(write=False)
        return src, padded

    def __repr__(self) -> str:
        return (
            f"CompiledNetwork({self.n_layers} layers, input {self.input_kind} {self.input_shape}, "
            f"{self.n_classes} classes)"
        )


def compile_network(network: Network) -> CompiledNetwork:
    """Compile a Network for the engine (same as ``CompiledNetwork(network)``)."""
    return CompiledNetwork(network)


# ----------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------


def _check_int(name: str, value: Any, lo: int, hi: int = _INT32_MAX) -> int:
    return check_int(name, value, lo, hi)


def _check_tau(tau: float | None) -> float:
    return _NO_TAU if tau is None else check_float("tau", tau, 0.0, 1.0)


def _check_frames(frames: Any, shape: tuple[int, int, int], batch: bool) -> np.ndarray:
    """A frame (C, H, W) (or (H, W) when C == 1), or a batch (N, C, H, W); finite float32."""
    a = np.asarray(frames)
    if a.dtype.kind not in "fiub":
        raise ParameterError(f"frames must be numeric, got dtype {a.dtype}")
    want = (len(shape) + 1) if batch else len(shape)
    if shape[0] == 1 and a.ndim == want - 1:
        a = a.reshape(*a.shape[:-2], 1, *a.shape[-2:])
    if a.ndim != want or tuple(a.shape[-3:]) != shape:
        what = f"(N, {shape[0]}, {shape[1]}, {shape[2]})" if batch else f"{shape}"
        raise ParameterError(f"frames must have shape {what}, got {a.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf below
        a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ParameterError("frame contains NaN or infinity (or values beyond float32)")
    return a


# ----------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------


class Engine:
    """The state of one stream over a shared :class:`CompiledNetwork`.

    Not for use by two threads at once (that raises); give each thread its own
    Engine over the same plan.
    """

    def __init__(self, network: CompiledNetwork | Network) -> None:
        if isinstance(network, Network):
            network = CompiledNetwork(network)
        if not isinstance(network, CompiledNetwork):
            raise ParameterError(f"expected a CompiledNetwork or Network, got {type(network).__name__}")
        self.plan = network
        self._core = _engine.EngineCore(network._core)

    # -- state -----------------------------------------------------------------------
    def reset(self) -> None:
        """Clear membranes, pool counts, step count, SynOps and the frame current."""
        self._core.reset()

    @property
    def t(self) -> int:
        """Steps run since the last reset."""
        return int(self._core.t)

    @property
    def exit(self) -> ExitReason:
        """Why the last run or feed stopped ("running" if it has not)."""
        return EXIT_REASONS[self._core.exit_code]

    @property
    def confidence(self) -> float:
        """c(t) = max softmax(z(t) / temperature) (evidence rule: × t/t_e); 1/K before the first step."""
        return float(self._core.confidence)

    @property
    def class_index(self) -> int:
        """argmax z(t) (the first maximum)."""
        return int(self._core.class_index)

    @property
    def logits(self) -> np.ndarray:
        """z(t) = λ_L V_L / t, float32 (K,), torch order of the output layer."""
        out: np.ndarray = self._core.logits()
        return out

    @property
    def synops(self) -> np.ndarray:
        """SynOps per layer since reset, int64 (L,)."""
        out: np.ndarray = self._core.synops()
        return out

    @property
    def spikes(self) -> np.ndarray:
        """Spikes per layer since reset, int64 (L,) (max-pool: passed spikes)."""
        out: np.ndarray = self._core.spike_totals()
        return out

    def result(self) -> RunResult:
        """The current state as a decision record."""
        return RunResult(
            class_index=self.class_index,
            confidence=self.confidence,
            logits=self.logits,
            steps=self.t,
            exit=self.exit,
            synops=self.synops,
            spikes=self.spikes,
            t_eff=float(self._core.t_eff),
        )

    def layer_spikes(self, layer: int) -> np.ndarray:
        """Debug/test hook: uint8 spikes of ``layer`` at the last step per neuron (0/1; up
        to max_spikes for burst networks), flat in torch (C, H, W) order. Max-pool layers
        give the spikes they passed."""
        layer = _check_int("layer", layer, -self.plan.n_layers, self.plan.n_layers - 1)
        layer %= self.plan.n_layers
        if layer == self.plan.n_layers - 1:
            raise ParameterError("the output layer is a non-spiking integrator; read logits instead")
        n = math.prod(self.plan.layer_shapes[layer])
        counts = np.bincount(self.plan._to_torch[layer][self._core.spike_list(layer)], minlength=n)
        return counts.astype(np.uint8)

    def spiked(self, layer: int) -> np.ndarray:
        """Flat torch-order (C, H, W) indices of the neurons of ``layer`` that spiked at the
        last step, a burst neuron once per spike: the sparse form of :meth:`layer_spikes`
        (``np.bincount`` of it over the steps counts each neuron's spikes)."""
        layer = _check_int("layer", layer, -self.plan.n_layers, self.plan.n_layers - 1)
        layer %= self.plan.n_layers
        if layer == self.plan.n_layers - 1:
            raise ParameterError("the output layer is a non-spiking integrator; read logits instead")
        return self.plan._to_torch[layer][self._core.spike_list(layer)]  # type: ignore[no-any-return]

    def decay(self, factor: float) -> None:
        """Keep the state but forget old evidence: the output integrator and the divisor
        of z = λ_L V_L / t are both scaled by ``factor`` in [0, 1), so earlier spans count
        ``factor`` times less; hidden layers stay warm. Steps, SynOps and spike counts
        restart from 0 (they describe the next decision)."""
        self._core.decay(check_float("decay factor", factor, 0.0, 1.0, hi_open=True))

    # -- input -----------------------------------------------------------------------
    def set_frame(self, frame: Any) -> None:
        """Set the first layer's input current I = W1·x + b1 from a normalised frame
        (C, H, W); it is added at every following step. Does not reset the state."""
        if not self.plan.takes_frames:
            raise ParameterError(
                "this network takes spikes (event input or Poisson-coded frames): use feed()"
            )
        x = _check_frames(frame, self.plan.input_shape, batch=False)
        self._core.set_current(x.ravel())

    def step(
        self,
        n_steps: int = 1,
        *,
        tau: float | None = None,
        t_min: int = 0,
        t_max: int | None = None,
    ) -> int:
        """Advance up to ``n_steps`` steps without input events (frames: with the current
        set by :meth:`set_frame`). Stops early at the first step with t >= t_min and
        c(t) >= tau, or when t reaches t_max. Returns the steps run."""
        n = _check_int("n_steps", n_steps, 0)
        tau_v, t_min_v, t_max_v = self._limits(tau, t_min, t_max)
        if self.plan.takes_frames and not self._core.has_current:
            raise ParameterError("set a frame with set_frame() before stepping")
        if n == 0:
            return 0
        if self.t >= t_max_v:
            self._core.set_exit(_EXIT_MAX_STEPS)
            return 0
        self._check_room(n)
        self._core.set_exit(0)
        return int(self._core.advance(None, None, n, tau_v, t_min_v, t_max_v))

    def feed(
        self,
        events: EventSteps,
        *,
        tau: float | None = None,
        t_min: int = 0,
        t_max: int | None = None,
    ) -> int:
        """Advance one step per step of ``events``; stop early at the first step with
        t >= t_min and c(t) >= tau, or when t reaches t_max. Returns the steps consumed
        (the rest of ``events`` is for the caller to feed after a reset)."""
        if not self.plan.takes_events:
            raise ParameterError("this network takes analog frames: use set_frame() and step()")
        if not isinstance(events, EventSteps):
            raise ParameterError(f"events must be EventSteps, got {type(events).__name__}")
        if events.shape != self.plan.input_shape:
            raise ParameterError(
                f"events of shape {events.shape} for a network input {self.plan.input_shape}"
            )
        tau_v, t_min_v, t_max_v = self._limits(tau, t_min, t_max)
        # Re-checked here, not only in EventSteps: its arrays could have been changed since.
        # One pass in compiled code (EventSteps keeps them contiguous int32/int64); the
        # numpy check only to say what is wrong.
        idx, off = events.indices, events.offsets
        if not _engine.events_valid(idx, off, self.plan.n_input):
            idx, off = _check_events(idx, off, self.plan.n_input)
        n = len(off) - 1
        if n == 0:
            return 0
        if self.t >= t_max_v:
            self._core.set_exit(_EXIT_MAX_STEPS)
            return 0
        self._check_room(min(n, t_max_v - self.t))
        self._core.set_exit(0)
        return int(self._core.advance(idx, off, min(n, _INT32_MAX), tau_v, t_min_v, t_max_v))

    def feed_csr(
        self, indices: np.ndarray, offsets: np.ndarray, *, tau: float, t_min: int, t_max: int
    ) -> int:
        """:meth:`feed` for callers that build the CSR pair themselves, once per packet (the
        runtime's stream decider): C-contiguous int32 ``indices`` and int64 ``offsets``
        (n_steps + 1), a float ``tau``, ints ``t_min >= 0`` and ``t_max >= 1``, none of them
        re-checked here. Memory stays safe whatever they hold (the kernel bounds-checks
        every event and offset); wrong values give wrong results, not an error."""
        n = len(offsets) - 1
        if n <= 0:
            return 0
        t = self._core.t
        if t >= t_max:
            self._core.set_exit(_EXIT_MAX_STEPS)
            return 0
        n = min(n, t_max - t)
        if t > _INT32_MAX - 1 - n:
            self._check_room(n)
        self._core.set_exit(0)
        return int(self._core.advance(indices, offsets, n, tau, t_min, t_max))

    def run(
        self,
        inputs: Any,
        t_max: int,
        *,
        tau: float | None = None,
        t_min: int = 1,
    ) -> RunResult:
        """Reset, then run one sample: a normalised frame (C, H, W), or EventSteps.

        Stops at the first t >= t_min with c(t) >= tau ("confident"), at t_max
        ("max_steps"), or for events when their steps run out ("end_of_stream").
        """
        t_max_v = _check_int("t_max", t_max, 1)
        if isinstance(inputs, EventSteps):
            self.reset()
            self.feed(inputs, tau=tau, t_min=t_min, t_max=t_max_v)
            if self.exit == "running":
                self._core.set_exit(_EXIT_END_OF_STREAM)
        else:
            if not self.plan.takes_frames:
                raise ParameterError("this network takes spikes: pass EventSteps")
            tau_v = _check_tau(tau)
            t_min_v = _check_int("t_min", t_min, 0)
            x = _check_frames(inputs, self.plan.input_shape, batch=False)
            self.reset()
            self._core.set_current(x.ravel())
            self._core.advance(None, None, t_max_v, tau_v, t_min_v, t_max_v)
        return self.result()

    def _check_room(self, n_steps: int) -> None:
        # The step counter is 32-bit: about 24 days of 1 ms steps without a reset.
        if self.t > _INT32_MAX - 1 - n_steps:
            raise ParameterError(
                f"{n_steps} more steps would overflow the step counter at t={self.t}; reset first"
            )

    def _limits(self, tau: float | None, t_min: int, t_max: int | None) -> tuple[float, int, int]:
        return (
            _check_tau(tau),
            _check_int("t_min", t_min, 0),
            _INT32_MAX if t_max is None else _check_int("t_max", t_max, 1),
        )


# ----------------------------------------------------------------------------------
# Batches over threads
# ----------------------------------------------------------------------------------


def run_batch(
    network: CompiledNetwork | Network,
    frames: Any,
    t_max: int,
    *,
    tau: float | None = None,
    t_min: int = 1,
    n_threads: int = 1,
    chunk_size: int = 8,
) -> BatchResult:
    """Run N independent normalised frames (N, C, H, W), each from reset with early exit.

    ``n_threads`` Python threads each drive their own engine over the shared plan with
    the GIL released, taking chunks of ``chunk_size`` samples in turn (early exit makes
    samples uneven). Equals N calls of :meth:`Engine.run`.
    """
    plan = network if isinstance(network, CompiledNetwork) else CompiledNetwork(network)
    if not plan.takes_frames:
        raise ParameterError("run_batch takes analog frames; this network takes spikes")
    t_max_v = _check_int("t_max", t_max, 1)
    tau_v = _check_tau(tau)
    t_min_v = _check_int("t_min", t_min, 0)
    n_threads = _check_int("n_threads", n_threads, 1, 1024)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    x4 = _check_frames(frames, plan.input_shape, batch=True)
    x = x4.reshape(x4.shape[0], -1)
    n, n_layers, k = x.shape[0], plan.n_layers, plan.n_classes
    res = BatchResult(
        class_index=np.zeros(n, np.int64),
        confidence=np.zeros(n, np.float64),
        steps=np.zeros(n, np.int32),
        exit_code=np.zeros(n, np.int8),
        synops=np.zeros((n, n_layers), np.int64),
        spikes=np.zeros((n, n_layers), np.int64),
        logits=np.zeros((n, k), np.float32),
    )
    starts = itertools.count(0, chunk_size)  # next() is atomic under the GIL
    lock = threading.Lock()

    def worker() -> None:
        core = _engine.EngineCore(plan._core)
        while True:
            with lock:
                a = next(starts)
            if a >= n:
                return
            b = min(a + chunk_size, n)
            core.run_frames(
                x[a:b], t_max_v, tau_v, t_min_v,
                res.class_index[a:b], res.confidence[a:b], res.steps[a:b], res.exit_code[a:b],
                res.synops[a:b], res.spikes[a:b], res.logits[a:b],
            )  # fmt: skip

    n_threads = min(n_threads, max(1, -(-n // chunk_size)))
    if n_threads == 1:
        worker()
    else:
        with ThreadPoolExecutor(n_threads, thread_name_prefix="spikecast-engine") as pool:
            for f in [pool.submit(worker) for _ in range(n_threads)]:
                f.result()
    return res


# ----------------------------------------------------------------------------------
# Traces: the per-step state of many samples (calibration, decision rules, benchmarks)
# ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Trace:
    """Per-step state of N independent samples, as (T, N) arrays.

    Row t-1 is the state after step t: argmax z(t), c(t), SynOps since reset and, when
    asked for, z(t) itself (T, N, K). An event stream shorter than T keeps its last
    state for the remaining rows (it would decide with ``end_of_stream`` there);
    ``n_steps`` says how many steps of input each sample had.
    """

    class_index: np.ndarray  # (T, N) int32
    confidence: np.ndarray  # (T, N) float32
    synops: np.ndarray  # (T, N) int64
    n_steps: np.ndarray  # (N,) int64
    logits: np.ndarray | None = None  # (T, N, K) float32

    @property
    def steps_run(self) -> np.ndarray:
        """(T, N) float64: the steps behind each row, t or the sample's n_steps past its end
        (the divisor t of z(t), for recomputing c(t) from ``logits``: Network.confidence)."""
        t = np.arange(1, self.class_index.shape[0] + 1, dtype=np.float64)[:, None]
        out: np.ndarray = np.minimum(t, self.n_steps[None, :].astype(np.float64))
        return out

    def correct(self, labels: Any) -> np.ndarray:
        """(T, N) whether argmax z(t) equals each sample's label."""
        y = np.asarray(labels).astype(np.int64).ravel()
        if y.shape != (self.class_index.shape[1],):
            raise ParameterError(f"need {self.class_index.shape[1]} labels, got {y.shape}")
        out: np.ndarray = self.class_index == y[None, :]
        return out


def _trace_inputs(plan: CompiledNetwork, inputs: Any) -> tuple[int, Any]:
    """(N, a getter of sample i) for frames (N, C, H, W) or a sequence of EventSteps."""
    if plan.takes_frames:
        x4 = _check_frames(inputs, plan.input_shape, batch=True)
        x = x4.reshape(x4.shape[0], -1)
        return len(x), lambda i: x[i]
    items = list(inputs)
    for i, ev in enumerate(items):
        if not isinstance(ev, EventSteps) or ev.shape != plan.input_shape:
            raise ParameterError(
                f"input {i}: this network takes EventSteps of shape {plan.input_shape}, got "
                f"{type(ev).__name__}{'' if not isinstance(ev, EventSteps) else ' ' + str(ev.shape)}"
            )
    return len(items), lambda i: items[i]


def trace(
    network: CompiledNetwork | Network,
    inputs: Any,
    n_steps: int,
    *,
    logits: bool = False,
    n_threads: int = 1,
) -> Trace:
    """Run each sample from reset for ``n_steps`` steps and record every step's state.

    ``inputs``: normalised frames (N, C, H, W) for an analog frame network, or a
    sequence of :class:`EventSteps` for a network that takes spikes. Threads work as in
    :func:`run_batch` (one engine each over the shared plan, GIL released). The stepping
    and the recording run in compiled code; Python runs once per sample.
    """
    plan = network if isinstance(network, CompiledNetwork) else CompiledNetwork(network)
    t = _check_int("n_steps", n_steps, 1)
    n_threads = _check_int("n_threads", n_threads, 1, 1024)
    n, sample = _trace_inputs(plan, inputs)
    k = plan.n_classes
    cls = np.zeros((n, t), np.int32)
    conf = np.zeros((n, t), np.float32)
    syn = np.zeros((n, t), np.int64)
    lgt = np.zeros((n, t, k) if logits else (n, 0, k), np.float32)
    lengths = np.full(n, t, np.int64)
    counter = itertools.count()
    lock = threading.Lock()

    def run_one(core: Any, i: int) -> None:
        core.reset()
        x = sample(i)
        if plan.takes_frames:
            core.set_current(x)
            done = core.trace(None, None, t, cls[i], conf[i], syn[i], lgt[i])
        else:
            lengths[i] = x.n_steps
            m = min(x.n_steps, t)
            off = x.offsets[: m + 1]
            done = core.trace(x.indices, off, m, cls[i], conf[i], syn[i], lgt[i]) if m else 0
            if done == 0:  # no input at all: the state before any step
                cls[i], conf[i] = core.class_index, core.confidence
        if 0 < done < t:  # the stream ended: carry its last state forward
            for arr in (cls[i], conf[i], syn[i]):
                arr[done:] = arr[done - 1]
            if logits:
                lgt[i, done:] = lgt[i, done - 1]

    def worker() -> None:
        core = _engine.EngineCore(plan._core)
        while True:
            with lock:
                i = next(counter)
            if i >= n:
                return
            run_one(core, i)

    n_threads = min(n_threads, max(n, 1))
    if n_threads == 1:
        worker()
    else:
        with ThreadPoolExecutor(n_threads, thread_name_prefix="spikecast-trace") as pool:
            for f in [pool.submit(worker) for _ in range(n_threads)]:
                f.result()
    return Trace(
        class_index=np.ascontiguousarray(cls.T),
        confidence=np.ascontiguousarray(conf.T),
        synops=np.ascontiguousarray(syn.T),
        n_steps=lengths,
        logits=np.ascontiguousarray(lgt.transpose(1, 0, 2)) if logits else None,
    )


__all__ = [
    "EXIT_REASONS",
    "BatchResult",
    "CompiledNetwork",
    "Engine",
    "EventSteps",
    "ExitReason",
    "RunResult",
    "Trace",
    "compile_network",
    "run_batch",
    "trace",
]
