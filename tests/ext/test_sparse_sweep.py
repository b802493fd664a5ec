"""The sparse sweep (docs/step-semantics.md, "Sparse sweep"): layers whose bias is zero
on some or all channels visit only the rows (pixels) that received input or are still
pending, and must give the reference's spikes bit for bit, like the dense sweep.

Networks are exact in float32 (multiples of 2^-8, θ = 1: tests/ext/engine_nets.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import engine_nets as nets  # tests/ext is on sys.path (pytest's rootdir-less import mode)
import numpy as np
import pytest
from spikecast.ext import Engine, EventSteps, _engine  # type: ignore[attr-defined]
from spikecast.ext.core.network import InputSpec, Layer, Network
from spikecast.ext.engine import _SWEEP_DENSE, _SWEEP_MIXED, _SWEEP_SPARSE, _sweep_plan

reference = pytest.importorskip("spikecast.converters.reference", reason="the reference needs torch")

T = 20
PATHS = ("portable", "avx2", "avx512f")


def _zero_bias(net: Network, which: str = "all") -> Network:
    """``net`` with the bias of every conv/linear layer removed ("all", bias None), or
    zero on a pattern of channels ("mixed": the first 16-channel block and every third
    channel of the rest)."""
    layers = []
    for ly in net.layers:
        if ly.kind == "maxpool" or ly.bias is None:
            layers.append(ly)
        elif which == "all":
            layers.append(replace(ly, bias=None))
        else:
            b = np.array(ly.bias, np.float32)
            b[:16] = 0
            b[16::3] = 0
            layers.append(replace(ly, bias=b))
    return replace(net, layers=tuple(layers))


def _wide_mixed(seed: int = 11, reset: str = "subtract") -> Network:
    """Events (2, 9, 8) -> conv 48 p1 (blocks: zero, nonzero, partly zero) -> conv 37 s2
    (a tail block) -> linear 20 -> linear output, with the "mixed" bias pattern."""
    rng = np.random.default_rng(seed)
    l0 = nets.conv(rng, "conv0", (2, 9, 8), 48, (3, 3), (1, 1), (1, 1), w=(-40, 60), b=(-8, 30))
    l1 = nets.conv(rng, "conv1", l0.out_shape, 37, (3, 3), (2, 2), (1, 1), w=(-20, 30), b=(-8, 30))
    l2 = nets.linear(rng, "fc2", l1.out_shape, 20, w=(-30, 50), b=(-8, 30))
    l3 = nets.linear(rng, "out", (20,), 3, spiking=False)
    net = Network(InputSpec("events", (2, 9, 8)), (l0, l1, l2, l3), nets.names(3), reset=reset)  # type: ignore[arg-type]
    return _zero_bias(net, "mixed")


def _cases() -> list[tuple[str, Network]]:
    return [
        ("wide_events_bias_free", _zero_bias(nets.net_wide(kind="events"))),
        ("wide_events_bias_free_zero", _zero_bias(nets.net_wide(reset="zero", kind="events"))),
        ("conv_out_bias_free", _zero_bias(nets.net_events_conv_out(reset="subtract"))),
        ("grouped_events_bias_free", _zero_bias(nets.net_grouped(kind="events"))),
        ("grouped_wide_bias_free", _zero_bias(nets.net_grouped_wide())),
        ("dag_events_bias_free", _zero_bias(nets.net_dag(kind="events"))),
        ("dag_events_bias_free_zero", _zero_bias(nets.net_dag(reset="zero", kind="events"))),
        ("wide_mixed", _wide_mixed()),
        ("wide_mixed_zero", _wide_mixed(reset="zero")),
        ("dag_mixed", _zero_bias(nets.net_dag(kind="events"), "mixed")),
        # Frames: the first layer runs dense on its frame current, the rest sparse.
        ("frame_pool3_bias_free", _zero_bias(nets.net_frame_pool3())),
        ("dag_frame_bias_free", _zero_bias(nets.net_dag())),
    ]


CASES = _cases()


@pytest.fixture
def restore_path() -> Iterator[None]:
    before = _engine.simd_level()
    yield
    _engine.set_simd_level(before)


def _supported() -> list[str]:
    return list(PATHS[: PATHS.index(_engine.cpu_simd_level()) + 1])


def _inputs(net: Network, seed: int) -> np.ndarray:
    if net.input.kind == "frame":
        return nets.frames(net, 2, seed)
    return nets.event_counts(net, T, 2, density=0.3, seed=seed)


def _check_against_reference(net: Network, x: np.ndarray, name: str) -> None:
    ref = reference.simulate(net, x, T, record_spikes=True)
    assert ref.spikes is not None
    eng = Engine(net)
    for b in range(x.shape[0] if net.input.kind == "frame" else x.shape[1]):
        eng.reset()
        if net.input.kind == "frame":
            eng.set_frame(x[b])
        else:
            ev = EventSteps.from_counts(x[:, b])
        for t in range(T):
            assert (eng.step() if net.input.kind == "frame" else eng.feed(ev.steps(t, t + 1))) == 1
            for lay in range(len(net.layers) - 1):
                want = ref.spikes[lay][t, b].reshape(-1)
                assert np.array_equal(eng.layer_spikes(lay), want), f"{name}: {b=} step {t + 1} {lay=}"
            np.testing.assert_array_equal(eng.logits, ref.logits[t, b])
        np.testing.assert_array_equal(eng.synops, ref.synops[b].astype(np.int64))
    for lay in range(len(net.layers) - 1):
        assert ref.spikes[lay].any(), f"{name}: layer {lay} never spikes"


@pytest.mark.parametrize(("name", "net"), CASES, ids=[c[0] for c in CASES])
def test_sparse_sweep_matches_reference_on_every_path(name: str, net: Network, restore_path: None) -> None:
    x = _inputs(net, seed=4)
    for path in _supported():
        _engine.set_simd_level(path)
        _check_against_reference(net, x, f"{name} [{path}]")


def test_sweep_plan_by_bias_blocks() -> None:
    assert _sweep_plan(np.zeros(40, np.float32))[0] == _SWEEP_SPARSE
    assert _sweep_plan(np.full(40, 0.5, np.float32))[0] == _SWEEP_DENSE
    b = np.zeros(40, np.float32)
    b[20] = 0.25  # one nonzero channel: only its block [16, 32) on every row
    mode, blocks = _sweep_plan(b)
    assert mode == _SWEEP_MIXED
    assert blocks.tolist() == [16]
    b[[3, 33]] = -0.5  # a nonzero in every block: nothing to skip
    assert _sweep_plan(b)[0] == _SWEEP_DENSE


def _one_conv(reset: str, bias: float | None) -> Network:
    """Events (1, 4, 4) -> conv 1x1, 3 channels, weights 3.5/0.5/-1 -> linear output."""
    w = np.array([3.5, 0.5, -1.0], np.float32)[:, None, None, None]
    b = None if bias is None else np.full(3, bias, np.float32)
    conv = Layer("conv", "conv0", (1, 4, 4), (3, 4, 4), weight=w, bias=b)
    out = Layer("linear", "out", (3, 4, 4), (2,), weight=np.full((2, 48), 0.25, np.float32), spiking=False)
    return Network(InputSpec("events", (1, 4, 4)), (conv, out), ("a", "b"), reset=reset)  # type: ignore[arg-type]


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_pending_neurons_keep_spiking_without_input(reset: str, restore_path: None) -> None:
    """One event lifts V to 3.5θ: with reset by subtraction the neuron spikes at steps 1,
    2 and 3 with no more input (the sparse sweep must revisit its row), with reset to zero
    only at step 1."""
    net = _one_conv(reset, None)
    counts = np.zeros((6, 1, 1, 4, 4), np.float32)
    counts[0, 0, 0, 2, 1] = 1
    ref = reference.simulate(net, counts, 6, record_spikes=True)
    assert ref.spikes is not None
    fired = ref.spikes[0][:, 0, 0, 2, 1].tolist()
    assert fired == ([1, 1, 1, 0, 0, 0] if reset == "subtract" else [1, 0, 0, 0, 0, 0])
    ev = EventSteps.from_counts(counts[:, 0])
    for path in _supported():
        _engine.set_simd_level(path)
        eng = Engine(net)
        for t in range(6):
            eng.feed(ev.steps(t, t + 1))
            assert np.array_equal(eng.layer_spikes(0), ref.spikes[0][t, 0].reshape(-1)), (path, t)
            np.testing.assert_array_equal(eng.logits, ref.logits[t, 0])


def test_bias_free_output_layer_and_decay_leave_no_negative_zero() -> None:
    """A bias-free output layer is not integrated (V + 0 = V); decay(0) of a negative V
    gives +0, as integrating a zero bias afterwards always did."""
    net = _one_conv("subtract", None)
    net = replace(
        net, layers=(net.layers[0], replace(net.layers[1], weight=np.full((2, 48), -0.25, np.float32)))
    )
    counts = np.zeros((3, 1, 4, 4), np.float32)
    counts[0, 0, 1, 1] = 1
    eng = Engine(net)
    eng.feed(EventSteps.from_counts(counts))
    assert (eng.logits < 0).all()
    eng.decay(0.0)
    eng.step(1)
    assert eng.logits.tolist() == [0.0, 0.0]
    assert not np.signbit(eng.logits).any()


def test_large_bias_free_canvas_matches_reference() -> None:
    """A 1280x720 two-polarity canvas into a bias-free fully convolutional network (the
    issue 14 shape): a few events in one corner per step; only their rows are swept."""
    h, w = 720, 1280
    rng = np.random.default_rng(12)
    l0 = nets.conv(rng, "conv0", (2, h, w), 4, (3, 3), (1, 1), (1, 1), w=(-20, 120))
    l1 = nets.conv(rng, "conv1", l0.out_shape, 16, (4, 4), (4, 4), (0, 0), w=(-20, 90))
    l2 = nets.conv(rng, "conv2", l1.out_shape, 16, (4, 4), (4, 4), (0, 0), w=(-20, 60))
    l3 = nets.linear(rng, "out", l2.out_shape, 3, w=(-20, 20), spiking=False)
    net = _zero_bias(Network(InputSpec("events", (2, h, w)), (l0, l1, l2, l3), nets.names(3)))
    n_steps = 3
    counts = np.zeros((n_steps, 1, 2, h, w), np.float32)
    for t in range(n_steps):  # a blob near the bottom-right corner, and a stray event
        ys, xs = rng.integers(h - 40, h, 60), rng.integers(w - 48, w, 60)
        np.add.at(counts[t, 0], (rng.integers(0, 2, 60), ys, xs), 1)
        counts[t, 0, 0, rng.integers(0, h), rng.integers(0, w)] += 1
    ref = reference.simulate(net, counts, n_steps, record_spikes=True)
    assert ref.spikes is not None
    eng = Engine(net)
    ev = EventSteps.from_counts(counts[:, 0])
    for t in range(n_steps):
        eng.feed(ev.steps(t, t + 1))
        for lay in range(3):
            assert np.array_equal(eng.layer_spikes(lay), ref.spikes[lay][t, 0].reshape(-1)), (t, lay)
        np.testing.assert_array_equal(eng.logits, ref.logits[t, 0])
    np.testing.assert_array_equal(eng.synops, ref.synops[0].astype(np.int64))
    assert all(ref.spikes[lay].any() for lay in range(3))
