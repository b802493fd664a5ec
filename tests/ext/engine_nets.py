"""Random spiking networks built directly from Layer objects, exact in float32.

Weights and biases are multiples of 2^-8 and θ = 1, and frames are small multiples
of 2^-8, so every sum the engine and the reference form is exact in float32 and
their spike trains must agree bit for bit.
"""

from __future__ import annotations

import numpy as np
from spikecast.ext.core.network import InputSpec, Layer, Network

Q = 1.0 / 256.0  # 2^-8


def q(rng: np.random.Generator, lo: int, hi: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random multiples of 2^-8 in [lo, hi] * 2^-8."""
    return (rng.integers(lo, hi + 1, size=shape) * Q).astype(np.float32)


def conv(  # noqa: PLR0913  (a test builder: one keyword per Layer field it varies)
    rng: np.random.Generator,
    name: str,
    in_shape: tuple[int, int, int],
    c_out: int,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    w: tuple[int, int] = (-40, 60),
    b: tuple[int, int] = (-8, 24),
    spiking: bool = True,
    groups: int = 1,
) -> Layer:
    c_in, h, wd = in_shape
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (wd + 2 * padding[1] - kernel[1]) // stride[1] + 1
    return Layer(
        "conv", name, in_shape, (c_out, oh, ow),
        weight=q(rng, *w, (c_out, c_in // groups, *kernel)), bias=q(rng, *b, (c_out,)),
        kernel=kernel, stride=stride, padding=padding, spiking=spiking, groups=groups,
    )  # fmt: skip


def pool(name: str, in_shape: tuple[int, int, int], k: int, s: int, p: int = 0) -> Layer:
    c, h, w = in_shape
    out = (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    return Layer("maxpool", name, in_shape, out, kernel=(k, k), stride=(s, s), padding=(p, p))


def linear(
    rng: np.random.Generator,
    name: str,
    in_shape: tuple[int, ...],
    n_out: int,
    w: tuple[int, int] = (-30, 50),
    b: tuple[int, int] = (-8, 24),
    spiking: bool = True,
    lam: float = 1.0,
) -> Layer:
    n_in = int(np.prod(in_shape))
    return Layer(
        "linear", name, in_shape, (n_out,),
        weight=q(rng, *w, (n_out, n_in)), bias=q(rng, *b, (n_out,)), spiking=spiking, lam=lam,
    )  # fmt: skip


def names(k: int) -> tuple[str, ...]:
    return tuple(f"c{i}" for i in range(k))


def net_frame_pool3(seed: int = 0, reset: str = "subtract") -> Network:
    """Frame (2, 11, 13): conv s1 p1 -> max-pool k3 s2 (overlapping) -> conv s2 p2
    -> flatten -> linear -> linear output."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "conv0", (2, 11, 13), 5, (3, 3), (1, 1), (1, 1))
    l1 = pool("pool1", l0.out_shape, 3, 2)
    l2 = conv(rng, "conv2", l1.out_shape, 6, (3, 3), (2, 2), (2, 2), w=(-50, 70))
    l3 = linear(rng, "fc3", l2.out_shape, 12, w=(-55, 55))
    l4 = linear(rng, "out", (12,), 4, spiking=False, lam=1.5)
    return Network(InputSpec("frame", (2, 11, 13)), (l0, l1, l2, l3, l4), names(4), reset=reset)  # type: ignore[arg-type]


def net_events_conv_out(seed: int = 1, reset: str = "zero") -> Network:
    """Events, 2 polarity channels (2, 9, 12): conv k(3,5) s(2,1) p(1,2) -> max-pool k2 s2
    -> conv output layer (15 classes)."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "conv0", (2, 9, 12), 4, (3, 5), (2, 1), (1, 2), w=(-40, 60), b=(-10, 10))
    l1 = pool("pool1", l0.out_shape, 2, 2)
    l2 = conv(rng, "out", l1.out_shape, 3, (2, 2), (1, 1), (0, 0), spiking=False)
    n = int(np.prod(l2.out_shape))
    return Network(InputSpec("events", (2, 9, 12)), (l0, l1, l2), names(n), reset=reset)  # type: ignore[arg-type]


def net_events_linear(seed: int = 2, reset: str = "subtract") -> Network:
    """Events with merged polarity (1, 8, 8): linear -> linear output."""
    rng = np.random.default_rng(seed)
    l0 = linear(rng, "fc0", (1, 8, 8), 20, w=(-40, 60), b=(-16, 12))
    l1 = linear(rng, "out", (20,), 3, spiking=False)
    return Network(InputSpec("events", (1, 8, 8)), (l0, l1), names(3), reset=reset)  # type: ignore[arg-type]


def net_frame_pool_pool(seed: int = 3, reset: str = "subtract") -> Network:
    """Frame (1, 10, 10): conv p1 -> max-pool k2 s2 -> max-pool k3 s2 -> linear output,
    plus padding 0 conv s2 branch-free chain; pools see many ties."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "conv0", (1, 10, 10), 3, (3, 3), (1, 1), (1, 1), w=(-20, 60))
    l1 = pool("pool1", l0.out_shape, 2, 2)
    l2 = pool("pool2", l1.out_shape, 3, 2)
    l3 = linear(rng, "out", l2.out_shape, 3, spiking=False)
    return Network(InputSpec("frame", (1, 10, 10)), (l0, l1, l2, l3), names(3), reset=reset)  # type: ignore[arg-type]


def net_frame_conv_only(seed: int = 4) -> Network:
    """A single conv output layer on frames (1, 6, 7), stride 2 padding 0."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "out", (1, 6, 7), 2, (3, 3), (2, 2), (0, 0), spiking=False)
    n = int(np.prod(l0.out_shape))
    return Network(InputSpec("frame", (1, 6, 7)), (l0,), names(n))


def net_tied_pool(seed: int = 5) -> Network:
    """Engineered ties: a conv with zero weights and a positive bias spikes identically at
    every position, so every pool window is a tie every step and the lowest index wins."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "conv0", (1, 6, 6), 2, (3, 3), (1, 1), (1, 1), w=(0, 0), b=(40, 120))
    l1 = pool("pool1", l0.out_shape, 2, 2)
    l2 = conv(rng, "conv2", l1.out_shape, 3, (2, 2), (1, 1), (1, 1), w=(-30, 90))
    l3 = linear(rng, "out", l2.out_shape, 2, spiking=False)
    return Network(InputSpec("frame", (1, 6, 6)), (l0, l1, l2, l3), names(2))


def frames(net: Network, n: int, seed: int = 0) -> np.ndarray:
    """Frames that are small multiples of 2^-8 (W1·x stays exact)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 48, size=(n, *net.input.shape)) * Q).astype(np.float32)


def event_counts(net: Network, n_steps: int, n: int, density: float = 0.15, seed: int = 0) -> np.ndarray:
    """Per-step event counts (T, N, C, H, W) in 0..3: pixels repeat within a step."""
    rng = np.random.default_rng(seed)
    shape = (n_steps, n, *net.input.shape)
    on = rng.random(shape) < density
    return (on * rng.integers(1, 4, size=shape)).astype(np.float32)


def net_wide(seed: int = 6, reset: str = "subtract", kind: str = "frame") -> Network:
    """Channel counts that are multiples of 16 (whole AVX-512 vectors, no tail):
    (2, 10, 9) -> conv 16 p1 -> max-pool k2 s2 -> conv 32 s2 -> linear 32 -> linear output."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "conv0", (2, 10, 9), 16, (3, 3), (1, 1), (1, 1), w=(-40, 60), b=(-12, 16))
    l1 = pool("pool1", l0.out_shape, 2, 2)
    l2 = conv(rng, "conv2", l1.out_shape, 32, (3, 3), (2, 2), (1, 1), w=(-50, 50), b=(-16, 8))
    l3 = linear(rng, "fc3", l2.out_shape, 32, w=(-40, 60), b=(-8, 16))
    l4 = linear(rng, "out", (32,), 5, spiking=False)
    spec = InputSpec(kind, (2, 10, 9))  # type: ignore[arg-type]
    return Network(spec, (l0, l1, l2, l3, l4), names(5), reset=reset)  # type: ignore[arg-type]


def net_frame_linear(seed: int = 7) -> Network:
    """Frame (3, 5, 7) into a linear first layer (the frame current through a permuted
    flatten) -> linear output."""
    rng = np.random.default_rng(seed)
    l0 = linear(rng, "fc0", (3, 5, 7), 24, w=(-40, 60), b=(-16, 12))
    l1 = linear(rng, "out", (24,), 4, spiking=False)
    return Network(InputSpec("frame", (3, 5, 7)), (l0, l1), names(4))


def net_grouped(seed: int = 8, reset: str = "subtract", kind: str = "frame") -> Network:
    """Grouped and depthwise convs (MobileNet-style): (2, 9, 10) -> conv 6 groups 2 p1
    (the frame current through a grouped first layer) -> depthwise 3x3 s2 p1 ->
    conv 12 groups 3 k(1, 3) s1 (rows of taps that must not merge across groups) ->
    max-pool k2 s2 -> depthwise x2 (channel multiplier 2) k2 -> linear output."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "gconv0", (2, 9, 10), 6, (3, 3), (1, 1), (1, 1), w=(-40, 70), groups=2)
    l1 = conv(rng, "dw1", l0.out_shape, 6, (3, 3), (2, 2), (1, 1), w=(-50, 90), groups=6)
    l2 = conv(rng, "gconv2", l1.out_shape, 12, (1, 3), (1, 1), (0, 1), w=(-40, 80), groups=3)
    l3 = pool("pool3", l2.out_shape, 2, 2)
    l4 = conv(rng, "dw4", l3.out_shape, 24, (2, 2), (1, 1), (1, 1), w=(-50, 90), groups=12)
    l5 = linear(rng, "out", l4.out_shape, 4, spiking=False)
    spec = InputSpec(kind, (2, 9, 10))  # type: ignore[arg-type]
    return Network(spec, (l0, l1, l2, l3, l4, l5), names(4), reset=reset)  # type: ignore[arg-type]


def net_grouped_wide(seed: int = 9, kind: str = "events") -> Network:
    """Groups of 16 and 32 channels (whole AVX-512 vectors): (2, 7, 8) -> conv 32 groups 2
    -> conv 64 groups 2 s2 p1 -> depthwise 2x2 s2 as a conv output layer."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "gconv0", (2, 7, 8), 32, (3, 3), (1, 1), (1, 1), w=(-40, 70), groups=2)
    l1 = conv(rng, "gconv1", l0.out_shape, 64, (3, 3), (2, 2), (1, 1), w=(-30, 50), groups=2)
    l2 = conv(rng, "out", l1.out_shape, 64, (2, 2), (2, 2), (0, 0), spiking=False, groups=64)
    n = int(np.prod(l2.out_shape))
    spec = InputSpec(kind, (2, 7, 8))  # type: ignore[arg-type]
    return Network(spec, (l0, l1, l2), names(n))


def with_inputs(layer: Layer, inputs: tuple[int, ...], *extra: Layer) -> Layer:
    """``layer`` reading ``inputs`` (the first through its own weights, the others through
    ``extra``)."""
    from dataclasses import replace

    return replace(layer, inputs=inputs, extra=tuple(replace(e, bias=None, spiking=True) for e in extra))


def identity(in_shape: tuple[int, int, int], scale: float) -> Layer:
    """An identity skip as a 1x1 conv with weight ``scale`` (λ_src / λ_dst after conversion)."""
    c = in_shape[0]
    w = (np.eye(c, dtype=np.float32) * np.float32(scale))[:, :, None, None]
    return Layer("conv", "skip", in_shape, in_shape, weight=w)


def net_dag(seed: int = 10, reset: str = "subtract", kind: str = "frame") -> Network:
    """A residual and concatenating DAG on (2, 8, 8):
    0 conv -> 1 conv -> 2 conv(1) + identity(0) -> 3 conv s2 -> 4 conv(3) + 1x1 s2 projection(2)
    -> 5 conv over cat(4, 3) -> 6 padded max-pool of 2 (not the previous layer) -> 7 linear output
    over cat(5, 6)."""
    rng = np.random.default_rng(seed)
    l0 = conv(rng, "conv0", (2, 8, 8), 4, (3, 3), (1, 1), (1, 1), w=(-30, 60))
    l1 = conv(rng, "conv1", l0.out_shape, 4, (3, 3), (1, 1), (1, 1), w=(-30, 50))
    l2 = with_inputs(
        conv(rng, "add2", l1.out_shape, 4, (3, 3), (1, 1), (1, 1), w=(-30, 40), b=(-16, 8)),
        (1, 0),
        identity(l0.out_shape, 0.75),
    )
    l3 = conv(rng, "conv3", l2.out_shape, 6, (3, 3), (2, 2), (1, 1), w=(-30, 60))
    l4 = with_inputs(
        conv(rng, "add4", l3.out_shape, 6, (3, 3), (1, 1), (1, 1), w=(-30, 40), b=(-16, 8)),
        (3, 2),
        conv(rng, "proj4", l2.out_shape, 6, (1, 1), (2, 2), (0, 0), w=(-40, 60)),
    )
    l5 = with_inputs(
        conv(rng, "cat5", l4.out_shape, 5, (3, 3), (1, 1), (1, 1), w=(-30, 50)),
        (4, 3),
        conv(rng, "cat5b", l3.out_shape, 5, (3, 3), (1, 1), (1, 1), w=(-30, 50)),
    )
    l6 = with_inputs(pool("pool6", l2.out_shape, 3, 2, 1), (2,))  # ResNet's stem pool: k3 s2 p1
    l7 = with_inputs(
        linear(rng, "out", l5.out_shape, 3, spiking=False),
        (5, 6),
        linear(rng, "outb", l6.out_shape, 3, spiking=False),
    )
    spec = InputSpec(kind, (2, 8, 8))  # type: ignore[arg-type]
    return Network(spec, (l0, l1, l2, l3, l4, l5, l6, l7), names(3), reset=reset)  # type: ignore[arg-type]
