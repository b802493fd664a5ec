"""The dense reference simulator: docs/step-semantics.md, written plainly in torch.

This is the specification the Cython engine is tested against, so it favours being
obviously correct over being fast. For each step t = 1..T and each layer l:

    V_l += W_l · S_{l-1}(t) + b_l          (frames: layer 1 adds I = W_1·x + b_1)
                                           (several inputs: Σ_k W_lk · S_{src k}(t) + b_l)
    S_l(t) = [V_l >= θ_l]                  (spiking layers; V_l(0) = v_init·θ_l, output V_L(0) = 0)
    V_l -= θ_l · S_l(t)                    (reset by subtraction; or V_l = 0 on a spike)

Gated max-pool: counts C += S_in(t); in each window the input with the largest count
(lowest flat index on a tie) is the winner, and the output spikes iff the winner spiked.
Count max-pool (``Network.max_pool == "count"``): with M(t) the largest count in the
window, the output emits M(t) − M(t−1) spikes, so its count is the max of its inputs'.
The last layer only integrates: z(t) = λ_L · V_L / t, c(t) = max softmax(z(t) / temperature)
(under the evidence rule, max softmax(z(t)·t / (t_e·temperature)): ``Network.confidence``).
SynOps: every spike (or event) adds its border-aware fan-out; analog frame input adds none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import Layer, Network


@dataclass(frozen=True, eq=False)
class SimResult:
    """What a simulation of a batch of B samples over T steps returns.

    logits: (T, B, K) z(t); confidence: (T, B) c(t);
    spike_counts: per layer, (B, *out_shape) total spikes (max-pool: passed spikes;
    output layer: zeros); synops: (B, L) per layer; spikes: per layer (T, B, *out_shape)
    uint8 trains when recorded.
    """

    logits: np.ndarray
    confidence: np.ndarray
    spike_counts: list[np.ndarray]
    synops: np.ndarray
    spikes: list[np.ndarray] | None

    def predictions(self) -> np.ndarray:
        """(T, B) argmax of z(t)."""
        return np.asarray(self.logits.argmax(axis=-1))

    def accuracy_by_step(self, labels: np.ndarray) -> np.ndarray:
        """(T,) fraction correct after each step."""
        return np.asarray((self.predictions() == np.asarray(labels)[None, :]).mean(axis=1))


def fanout(layer: Layer) -> np.ndarray:
    """Number of synapses each input neuron drives, border-aware, shaped like the input."""
    if layer.kind == "linear":
        return np.full(layer.in_shape, layer.out_shape[0], dtype=np.int64)
    if layer.kind == "maxpool":
        return np.zeros(layer.in_shape, dtype=np.int64)
    c_in, h, w = layer.in_shape
    c_out, oh, ow = layer.out_shape

    def per_axis(n: int, k: int, s: int, p: int, n_out: int) -> np.ndarray:
        pos = np.arange(n)[:, None] + p - np.arange(n_out)[None, :] * s  # kernel tap index
        return ((pos >= 0) & (pos < k)).sum(axis=1)

    rows = per_axis(h, layer.kernel[0], layer.stride[0], layer.padding[0], oh)
    cols = per_axis(w, layer.kernel[1], layer.stride[1], layer.padding[1], ow)
    per_pos = (c_out // layer.groups) * rows[:, None] * cols[None, :]
    return np.broadcast_to(per_pos, (c_in, h, w)).astype(np.int64)


def _apply(layer: Layer, s: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    w, b = params
    if layer.kind == "conv":
        return F.conv2d(s, w, b, stride=layer.stride, padding=layer.padding, groups=layer.groups)
    return F.linear(s.reshape(s.shape[0], -1), w, b)


def _params(layer: Layer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = torch.as_tensor(np.asarray(layer.weight, np.float32), device=device)
    b = None if layer.bias is None else torch.as_tensor(np.asarray(layer.bias, np.float32), device=device)
    return w, b


def gated_maxpool(s: torch.Tensor, counts: torch.Tensor, layer: Layer) -> torch.Tensor:
    """Pass the spike of each window's winner: the largest count, lowest flat index on a tie.
    Padding is no input: count -1 (never the winner), no spike."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    if ph or pw:
        counts = F.pad(counts, (pw, pw, ph, ph), value=-1.0)
        s = F.pad(s, (pw, pw, ph, ph), value=0.0)
    win_c = counts.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C, OH, OW, kh, kw)
    win_s = s.unfold(2, kh, sh).unfold(3, kw, sw)
    flat_c = win_c.reshape(*win_c.shape[:4], kh * kw)
    idx = flat_c.argmax(dim=-1, keepdim=True)  # torch returns the first maximal index
    return win_s.reshape(*win_s.shape[:4], kh * kw).gather(-1, idx).squeeze(-1)


def count_maxpool(counts: torch.Tensor, before: torch.Tensor, layer: Layer) -> torch.Tensor:
    """M(t) − M(t−1) spikes per window, M the largest input count (``before``: the counts
    at t−1). Padding is no input: count -1, never the largest."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding

    def window_max(c: torch.Tensor) -> torch.Tensor:
        if ph or pw:
            c = F.pad(c, (pw, pw, ph, ph), value=-1.0)
        return F.max_pool2d(c, (kh, kw), (sh, sw))

    return window_max(counts) - window_max(before)


def poisson_spikes(x: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
    """S_0(t) = sign(x)·[u < |x|], u ~ U[0, 1) drawn from the explicit ``rng``."""
    if rng is None:
        raise ParameterError("Poisson input needs an explicit rng")
    u = torch.from_numpy(rng.random(tuple(x.shape), dtype=np.float32)).to(x.device)
    return torch.sign(x) * (u < x.abs()).float()


def simulate(
    net: Network,
    x: np.ndarray | torch.Tensor,
    n_steps: int,
    *,
    record_spikes: bool = False,
    rng: np.random.Generator | None = None,
    device: str | torch.device = "cpu",
) -> SimResult:
    """Run the network densely for ``n_steps`` steps on a batch.

    ``x`` is frames (B, C, H, W) already normalised (what the ANN takes) for frame
    input, or per-step event counts (T, B, C, H, W) for event input. Poisson input
    (frames with ``encoding == "poisson"``) draws S_0(t) = sign(x)·[u < |x|] from ``rng``.
    ``device`` lets the same dense loop run on a GPU for large evaluations.
    """
    with torch.inference_mode():
        return _simulate(net, x, n_steps, record_spikes, rng, torch.device(device))


def _check_input(net: Network, xt: torch.Tensor, n_steps: int, rng: np.random.Generator | None) -> int:
    """Validate the input for ``simulate``; return the batch size."""
    if n_steps < 1:
        raise ParameterError(f"n_steps must be >= 1, got {n_steps}")
    spec = net.input
    if spec.kind == "frame":
        if xt.ndim != 4 or tuple(xt.shape[1:]) != spec.shape:
            raise ParameterError(f"frames must be (B, {spec.shape}), got {tuple(xt.shape)}")
        if spec.encoding == "poisson" and rng is None:
            raise ParameterError("Poisson input needs an explicit rng")
        batch = int(xt.shape[0])
    else:
        if xt.ndim != 5 or tuple(xt.shape[2:]) != spec.shape or xt.shape[0] < n_steps:
            raise ParameterError(
                f"event counts must be (T >= {n_steps}, B, {spec.shape}), got {tuple(xt.shape)}"
            )
        batch = int(xt.shape[1])
    if not torch.isfinite(xt).all():
        raise ParameterError("input contains NaN or infinity")
    return batch


class _DenseRun:
    """The dense state of every layer for one batch, advanced one step at a time."""

    def __init__(self, net: Network, xt: torch.Tensor, batch: int, record_spikes: bool, dev: torch.device):
        layers = net.layers
        self.net = net
        self.batch = batch
        self.record_spikes = record_spikes
        self.params = [_params(ly, dev) if ly.weight is not None else (torch.zeros(0), None) for ly in layers]
        self.fan = [torch.as_tensor(fanout(ly), dtype=torch.float64, device=dev) for ly in layers]
        # Further inputs (residual adds, concatenations): (source, synapses, params, fan-out).
        self.extra = [
            [
                (j, e, _params(e, dev), torch.as_tensor(fanout(e), dtype=torch.float64, device=dev))
                for j, e in zip(ly.sources(i)[1:], ly.extra, strict=True)
            ]
            for i, ly in enumerate(layers)
        ]
        # Spiking layers start at v_init·θ (docs/step-semantics.md), the output at 0.
        self.v = [torch.full((batch, *ly.out_shape), net.initial_potential(ly), device=dev) for ly in layers]
        self.pool_counts = [torch.zeros(batch, *ly.in_shape, device=dev) for ly in layers]
        self.counts = [torch.zeros(batch, *ly.out_shape, device=dev) for ly in layers]
        self.synops = torch.zeros(batch, len(layers), dtype=torch.float64, device=dev)
        self.trains: list[list[torch.Tensor]] = [[] for _ in layers]
        analog = net.input.kind == "frame" and net.input.encoding == "analog"
        self.current = _apply(layers[0], xt, self.params[0]) if analog else None

    def step(self, x: torch.Tensor) -> None:
        """One step through every layer from input spikes ``x``; each layer reads this
        step's output of its sources (the previous layer in a chain)."""
        outs: list[torch.Tensor] = []
        for i, ly in enumerate(self.net.layers):
            src = ly.sources(i)[0]
            s = x if src < 0 else outs[src]
            s = self._pool(i, ly, s) if ly.kind == "maxpool" else self._layer(i, ly, s, outs)
            outs.append(s)
            if ly.spiking:
                self.counts[i] += s
                if self.record_spikes:
                    self.trains[i].append(s.to(torch.uint8))

    def _pool(self, i: int, ly: Layer, s: torch.Tensor) -> torch.Tensor:
        counts = self.pool_counts[i]
        counts += s
        if self.net.max_pool == "count":  # counts are small integers: counts - s is exact
            return count_maxpool(counts, counts - s, ly)
        return gated_maxpool(s, counts, ly)

    def _layer(self, i: int, ly: Layer, s: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
        v = self.v[i]
        if i == 0 and self.current is not None:
            v += self.current
        else:
            fan_in = s.abs().double().reshape(self.batch, -1) * self.fan[i].reshape(-1)
            self.synops[:, i] += fan_in.sum(dim=1)
            v += _apply(ly, s, self.params[i])
        for j, e, params, fan in self.extra[i]:  # the same sum, one more weight set per input
            self.synops[:, i] += (outs[j].abs().double().reshape(self.batch, -1) * fan.reshape(-1)).sum(dim=1)
            v += _apply(e, outs[j], params)
        if not ly.spiking:
            return s
        spk = (v >= ly.threshold).float()
        if self.net.max_spikes > 1:  # burst: min(floor(V/θ), B) spikes (at least 1) once V >= θ
            spk = spk * torch.clamp(torch.floor(v / ly.threshold), 1, self.net.max_spikes)
        if self.net.reset == "subtract":
            v -= ly.threshold * spk
        else:
            v *= 1.0 - spk
        return spk


def channel_last_weight(net: Network, w: torch.Tensor) -> torch.Tensor:
    """The output layer's weights (K, n_in) with the inputs in channel-last order, the
    engine's layout of the membrane read-out's sums (which needs a linear output: any
    other comes back as it is)."""
    in_shape = net.layers[-1].in_shape
    if net.layers[-1].kind != "linear" or len(in_shape) != 3:
        return w
    c, h, wd = in_shape
    return w.reshape(-1, c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def membrane_logits(run: _DenseRun, src: int, t: int, w: torch.Tensor) -> torch.Tensor:
    """The membrane read-out (``Network.readout``): u = ReLU(N + (V − v_init·θ)·θ⁻¹) of layer
    ``src``, max-pooled through the pools up to the output, z = λ_L (W·u + b·t)/t, with
    ``w`` the output's weights from :func:`channel_last_weight`. The sum
    W·u runs over the inputs in the engine's (channel-last) order and grouping, in
    float32, so the two agree bit for bit."""
    net = run.net
    ly = net.layers[src]
    inv = float(np.float32(1.0 / float(np.float32(ly.threshold))))  # θ⁻¹ in float32, as the engine
    u = torch.relu(run.counts[src] + (run.v[src] - net.initial_potential(ly)) * inv)
    for pool in net.layers[src + 1 : -1]:
        u = F.max_pool2d(u, pool.kernel, pool.stride, pool.padding)
    if u.ndim == 4:  # channel-last, as the engine lays out the output's inputs
        u = u.permute(0, 2, 3, 1)
    u = u.reshape(run.batch, -1)
    out = net.layers[-1]
    b = run.params[-1][1]
    # The engine's order: four partial sums over i mod 4 (the tail past the last whole
    # group of four into the first), then (s0 + s1) + (s2 + s3), in float32.
    n = u.shape[1]
    part = [torch.zeros(run.batch, w.shape[0], dtype=torch.float32, device=u.device) for _ in range(4)]
    for i in range(n):
        k = i % 4 if i < n - n % 4 else 0
        part[k] = part[k] + u[:, i : i + 1] * w[:, i]
    z = (part[0] + part[1]) + (part[2] + part[3])
    if b is not None:
        z = z + b * t
    return out.lam * z / t


def _simulate(
    net: Network,
    x: np.ndarray | torch.Tensor,
    n_steps: int,
    record_spikes: bool,
    rng: np.random.Generator | None,
    dev: torch.device,
) -> SimResult:
    spec = net.input
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev)
    batch = _check_input(net, xt, n_steps, rng)
    run = _DenseRun(net, xt, batch, record_spikes, dev)
    logits = np.zeros((n_steps, batch, net.n_classes), np.float32)
    out = net.layers[-1]
    src = net.readout_source() if net.readout == "membrane" else None
    w_out = channel_last_weight(net, run.params[-1][0])  # read only by the membrane read-out

    for t in range(1, n_steps + 1):
        if spec.kind == "events":
            s = xt[t - 1]
        elif run.current is not None:
            s = xt  # unused by layer 0: it takes the precomputed current
        else:
            s = poisson_spikes(xt, rng)
        run.step(s)
        if src is None:
            logits[t - 1] = (out.lam * run.v[-1].reshape(batch, -1) / t).cpu().numpy()
        else:
            logits[t - 1] = membrane_logits(run, src, t, w_out).cpu().numpy()

    steps = np.arange(1, n_steps + 1, dtype=np.float64)[:, None]
    conf = net.confidence(logits, steps).astype(np.float32)
    return SimResult(
        logits=logits,
        confidence=conf,
        spike_counts=[c.cpu().numpy() for c in run.counts],
        synops=run.synops.cpu().numpy(),
        spikes=[torch.stack(tr).cpu().numpy() if tr else np.zeros((0,)) for tr in run.trains]
        if record_spikes
        else None,
    )


def simulate_batched(
    net: Network,
    x: np.ndarray,
    n_steps: int,
    *,
    batch_size: int = 256,
    rng: np.random.Generator | None = None,
    progress: bool = False,
    desc: str = "simulate",
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate many frames in chunks; return logits (T, N, K), confidence (T, N), synops (N, L)."""
    chunks: Sequence[int] = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, unit="batch")
    logits, conf, syn = [], [], []
    for i in chunks:
        r = simulate(net, x[i : i + batch_size], n_steps, rng=rng, device=device)
        logits.append(r.logits)
        conf.append(r.confidence)
        syn.append(r.synops)
    return np.concatenate(logits, axis=1), np.concatenate(conf, axis=1), np.concatenate(syn, axis=0)


__all__ = ["SimResult", "count_maxpool", "fanout", "gated_maxpool", "simulate", "simulate_batched"]
