"""Layer-wise bias calibration of a converted frame network at a target number of steps.

After normalisation a spiking layer's rate over T steps is not the normalised ANN
activation it stands for: the residual charge left in the membrane, the activations
clipped at λ, and the errors of the layers before all move it, by an amount that
depends on the channel. Following the bias correction of Li et al. (2021, "A Free Lunch
From ANN: Towards Efficient, Accurate Spiking Neural Networks Calibration"), each
spiking layer in order is run on calibration frames for T steps, the layers before it
already corrected, and every channel's bias moves by the mean gap between what the ANN
computes and what the SNN fires::

    b_c <- b_c + θ · mean_{n, h, w}( min(a_c, B θ) / θ - N_c(T) / T )

with a_c the normalised ANN activation of channel c (the original network's, so the
target does not move), N_c(T) its spike count after T steps, θ its threshold and B the
spikes a neuron may fire per step. A channel that fires short of its ANN activation on
average (a network normalised at max-norm fires sparsely) gets the charge it lacks each
step; one that fires over gets less. The weights, thresholds and λ stay as they are, so
the engine and the reference simulator still agree spike for spike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from spikecast.ext.core.checks import check_int
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import Layer, Network

#: Key of ``Network.meta`` that records the calibration (steps, frames, per-layer shift).
META_KEY = "bias_calibration"


def ann_activations(net: Network, x: torch.Tensor, clips: dict[int, float], cap: bool) -> list[torch.Tensor]:
    """Every layer's output on normalised frames ``x`` with the network evaluated as an
    ANN: spiking layers ReLU, or their clipped ReLU's normalised maximum from ``clips``;
    ``cap`` also caps them at what a neuron can fire, B θ per step. Layers with a bias
    calibration are evaluated with the bias they had before it (the ANN the model came
    from), via :func:`uncalibrated`."""
    net = uncalibrated(net)
    outs: list[torch.Tensor] = []
    with torch.no_grad():
        for j, ly in enumerate(net.layers):
            srcs = ly.sources(j)
            h = x if srcs[0] < 0 else outs[srcs[0]]
            if ly.kind == "maxpool":
                outs.append(F.max_pool2d(h, ly.kernel, ly.stride, ly.padding))
                continue
            h = _synapses(ly, h, with_bias=True)
            for k, e in zip(srcs[1:], ly.extra, strict=True):
                h = h + _synapses(e, outs[k], with_bias=False)
            if ly.spiking:
                top = clips.get(j, math.inf)
                h = h.clamp(0.0, min(top, net.max_spikes * ly.threshold) if cap else top)
            outs.append(h)
    return outs


def uncalibrated(net: Network) -> Network:
    """``net`` with every calibrated bias moved back by its recorded shift (float32
    rounding aside, the bias conversion gave it): the ANN the model came from."""
    record = net.meta.get(META_KEY)
    if not record:
        return net
    layers = list(net.layers)
    for j, shift in record["shift"].items():
        ly = layers[int(j)]
        bias = np.asarray(ly.bias, np.float64) - np.asarray(shift, np.float64)
        layers[int(j)] = replace(ly, bias=bias.astype(np.float32))
    return net.with_(layers=tuple(layers))


def _synapses(ly: Layer, h: torch.Tensor, with_bias: bool) -> torch.Tensor:
    w = torch.from_numpy(np.asarray(ly.weight))
    b = torch.from_numpy(np.asarray(ly.bias)) if with_bias and ly.bias is not None else None
    if ly.kind == "conv":
        return F.conv2d(h, w, b, stride=ly.stride, padding=ly.padding, groups=ly.groups)
    return F.linear(h.reshape(h.shape[0], -1), w, b)


def _probe(net: Network, layer: int) -> Network:
    """``net`` up to ``layer``, read by a zero output layer: ``layer``'s spikes are the whole
    network's (no later layer feeds back), and the layers after it cost nothing."""
    src = net.layers[layer]
    n = math.prod(src.out_shape)
    out = Layer("linear", "bias_probe", tuple(src.out_shape), (1,), np.zeros((1, n), np.float32),
                np.zeros(1, np.float32), spiking=False, inputs=(layer,))
    return net.with_(layers=(*net.layers[: layer + 1], out), class_names=("probe",), calibration=None)


def spike_rates(net: Network, x: np.ndarray, n_steps: int, layer: int, n_threads: int = 1) -> np.ndarray:
    """Spikes per step of ``layer`` over ``n_steps`` steps, per frame and neuron, torch
    order (N, *out_shape), on the compiled engine running the network up to ``layer``;
    ``n_threads`` engines share the frames (each writes its own rows, so the result does
    not depend on them)."""
    from spikecast.ext.engine import CompiledNetwork, Engine

    plan = CompiledNetwork(_probe(net, layer))
    shape = net.layers[layer].out_shape
    n = math.prod(shape)
    counts = np.zeros((len(x), n), np.float64)

    def run(rows: np.ndarray) -> None:
        eng = Engine(plan)
        for i in rows:
            eng.reset()
            eng.set_frame(x[i])
            fired = []
            for _ in range(n_steps):
                eng.step(1)
                fired.append(eng.spiked(layer))
            counts[i] = np.bincount(np.concatenate(fired), minlength=n)

    chunks = [c for c in np.array_split(np.arange(len(x)), max(1, n_threads)) if len(c)]
    with ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="spikecast-bias") as pool:
        list(pool.map(run, chunks))  # list(): re-raises a worker's error here
    return (counts / n_steps).reshape(len(x), *shape)


def calibrate_biases(
    net: Network,
    frames: np.ndarray,
    n_steps: int,
    *,
    clips: dict[int, float] | None = None,
    progress: bool = False,
    n_threads: int = 1,
) -> Network:
    """``net`` with every spiking layer's bias calibrated at ``n_steps`` steps on
    normalised ``frames`` (N, C, H, W) (module docstring); ``meta[META_KEY]`` records it.

    ``clips`` maps layer indices to a clipped ReLU's normalised maximum; ``progress``
    shows a bar over the layers; ``n_threads`` engines run the frames (the result does not
    depend on it)."""
    if net.input.kind != "frame" or net.input.encoding != "analog":
        raise ParameterError("bias calibration needs a network that takes analog frames")
    check_int("bias calibration steps", n_steps, 1)
    check_int("n_threads", n_threads, 1, 1024)
    x = np.ascontiguousarray(frames, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != tuple(net.input.shape) or len(x) == 0:
        raise ParameterError(f"bias calibration frames must be (N, *{tuple(net.input.shape)}), got {x.shape}")
    if net.meta.get(META_KEY):
        raise ParameterError("this network's biases are calibrated already")
    targets = ann_activations(net, torch.from_numpy(x), clips or {}, cap=True)
    layers = list(net.layers)
    shifts: dict[str, list[float]] = {}
    todo: Iterable[int] = [j for j, ly in enumerate(layers) if ly.spiking and ly.kind != "maxpool"]
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc="bias calibration", unit="layer")
    for j in todo:
        ly = layers[j]
        cur = net.with_(layers=tuple(layers))
        gap = targets[j].numpy() - ly.threshold * spike_rates(cur, x, n_steps, j, n_threads)
        delta = gap.mean(axis=(0, 2, 3)) if gap.ndim == 4 else gap.mean(axis=0)
        # One shift per output channel: Layer holds its bias to that shape.
        bias = np.zeros(ly.out_shape[0], np.float32) if ly.bias is None else np.asarray(ly.bias, np.float32)
        layers[j] = replace(ly, bias=(bias + delta).astype(np.float32))
        shifts[str(j)] = [float(v) for v in delta]
    method = "bias correction (Li et al. 2021), layer by layer, on the engine's rates"
    record = {"steps": n_steps, "frames": len(x), "shift": shifts, "method": method}
    return net.with_(layers=tuple(layers), meta={**net.meta, META_KEY: record})


__all__ = ["META_KEY", "ann_activations", "calibrate_biases", "spike_rates", "uncalibrated"]
