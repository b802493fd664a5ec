"""Run-time SIMD dispatch: the engine picks the CPU's widest kernels, and every path
gives the same spikes, bit for bit, as the portable one."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import engine_nets as nets  # tests/ext is on sys.path (pytest's rootdir-less import mode)
import numpy as np
import pytest
from spikecast.ext import Engine, EventSteps, _bench, _engine  # type: ignore[attr-defined]
from spikecast.ext.core.network import InputSpec, Layer, Network

PATHS = ("portable", "avx2", "avx512f")  # narrowest first


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def _supported() -> list[str]:
    best = _engine.cpu_simd_level()
    return list(PATHS[: PATHS.index(best) + 1])


@pytest.fixture
def restore_paths() -> Iterator[None]:
    before = (_engine.simd_level(), _bench.simd_level())
    yield
    _engine.set_simd_level(before[0])
    _bench.set_simd_level(before[1])


def test_dispatch_reports_the_cpus_widest_path() -> None:
    """A default build (no -march) still runs the widest kernels /proc/cpuinfo lists."""
    assert _engine.simd_level() in PATHS
    assert _engine.simd_level() == _engine.cpu_simd_level()
    assert _bench.simd_level() == _engine.simd_level()
    flags = _cpu_flags()
    if flags is None or platform.machine() != "x86_64":
        pytest.skip("not x86-64 Linux: nothing to compare with")
    want = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "portable"
    assert _engine.simd_level() == want


def test_set_simd_level_checks_and_returns_the_previous(restore_paths: None) -> None:
    best = _engine.cpu_simd_level()
    assert _engine.set_simd_level("portable") == best
    assert _engine.simd_level() == "portable"
    assert _engine.set_simd_level(best) == "portable"
    with pytest.raises(ValueError, match="unknown"):
        _engine.set_simd_level("sse9")
    if best != "avx512f":
        with pytest.raises(ValueError, match="does not support"):
            _engine.set_simd_level("avx512f")


def _random_net(seed: int, reset: str, kind: str) -> Network:
    """Unrounded float32 weights (sums are inexact: only identical arithmetic agrees) and
    widths that fill whole vectors (64, 32) and leave tails (20, 37, 5)."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    l0 = Layer("conv", "conv0", (2, 12, 11), (20, 12, 11), weight=normal(20, 2, 3, 3, scale=0.7),
               bias=normal(20, scale=0.1), kernel=(3, 3), padding=(1, 1))  # fmt: skip
    l1 = Layer("conv", "conv1", (20, 12, 11), (64, 6, 6), weight=normal(64, 20, 3, 3, scale=0.25),
               bias=normal(64, scale=0.05), kernel=(3, 3), stride=(2, 2), padding=(1, 1))  # fmt: skip
    l2 = Layer("linear", "fc2", (64, 6, 6), (37,), weight=normal(37, 64 * 36, scale=0.08),
               bias=normal(37, scale=0.05))  # fmt: skip
    l3 = Layer("linear", "out", (37,), (5,), weight=normal(5, 37, scale=0.3), spiking=False)
    spec = InputSpec(kind, (2, 12, 11))  # type: ignore[arg-type]
    return Network(spec, (l0, l1, l2, l3), tuple("abcde"), reset=reset)  # type: ignore[arg-type]


def _trace(net: Network, path: str, seed: int, n_steps: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Every layer's spike list at every step, and the final logits, on one kernel path."""
    _engine.set_simd_level(path)
    rng = np.random.default_rng(seed)
    eng = Engine(net)
    if net.input.kind == "frame":
        eng.set_frame(rng.random(net.input.shape, dtype=np.float32))
        steps = [None] * n_steps
    else:
        counts = (rng.random((n_steps, *net.input.shape)) < 0.2).astype(np.int32)
        ev = EventSteps.from_counts(counts)
        steps = [ev.steps(t, t + 1) for t in range(n_steps)]
    trace = []
    for s in steps:
        assert (eng.step() if s is None else eng.feed(s)) == 1
        trace.extend(eng.layer_spikes(lay) for lay in range(len(net.layers) - 1))
    return trace, eng.logits


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("kind", ["frame", "events"])
def test_simd_paths_give_identical_spikes(kind: str, reset: str, restore_paths: None) -> None:
    net = _random_net(seed=3, reset=reset, kind=kind)
    want, want_logits = _trace(net, "portable", seed=5, n_steps=20)
    assert sum(len(s) for s in want) > 0
    for path in _supported()[1:]:
        got, logits = _trace(net, path, seed=5, n_steps=20)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert np.array_equal(g, w), f"{path}: entry {i} differs"
        assert logits.tobytes() == want_logits.tobytes(), path


def test_bench_roofline_adds_rows_on_every_path(restore_paths: None) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((9, 21)).astype(np.float32)  # 21: a tail on every path
    dst = rng.integers(0, 7, 50).astype(np.int32)
    src = rng.integers(0, 9, 50).astype(np.int32)
    want = np.zeros((7, 21), np.float32)
    for _ in range(2):
        for d, s in zip(dst, src, strict=True):
            want[d] += weight[s]
    for path in _supported():
        _bench.set_simd_level(path)
        membrane = np.zeros((7, 21), np.float32)
        assert _bench.roofline_scatter(membrane, weight, dst, src, 2) == 50 * 21 * 2
        assert membrane.tobytes() == want.tobytes(), path


def test_grouped_convs_and_dags_match_on_every_path(restore_paths: None) -> None:
    """Grouped/depthwise scatter (runs offset to the spike's group) and layers with several
    inputs agree on every path."""
    for net in (nets.net_grouped(kind="events"), nets.net_grouped_wide(kind="frame"), nets.net_dag()):
        want, want_logits = _trace(net, "portable", seed=2, n_steps=16)
        assert sum(len(s) for s in want) > 0
        for path in _supported()[1:]:
            got, logits = _trace(net, path, seed=2, n_steps=16)
            assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), path
            assert logits.tobytes() == want_logits.tobytes(), path


def _pooled_net(seed: int, kind: str) -> Network:
    """Unrounded weights: conv 37 channels (a tail on every path) -> max-pool k2 s2 ->
    linear output of 21 classes (two 16-wide blocks of class sums, the second partial)."""
    rng = np.random.default_rng(seed)
    def normal(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    l0 = Layer("conv", "conv0", (2, 9, 10), (37, 9, 10), weight=normal(37, 2, 3, 3, scale=0.7),
               bias=normal(37, scale=0.1), kernel=(3, 3), padding=(1, 1))  # fmt: skip
    l1 = Layer("maxpool", "pool1", (37, 9, 10), (37, 4, 5), kernel=(2, 2), stride=(2, 2))
    l2 = Layer("linear", "out", (37, 4, 5), (21,), weight=normal(21, 740, scale=0.1), spiking=False)
    spec = InputSpec(kind, (2, 9, 10))  # type: ignore[arg-type]
    return Network(spec, (l0, l1, l2), tuple(f"c{i}" for i in range(21)), max_pool="count")


def test_membrane_readout_logits_match_on_every_path(restore_paths: None) -> None:
    """The read-out's kernels (ReLU of N + (V − v_init·θ)·θ⁻¹, max-pool, class sums) give the
    same logits bits on every path, at every step, on sums that are not exact."""
    for net in (_random_net(seed=4, reset="subtract", kind="events").with_(readout="membrane", v_init=0.5),
                _pooled_net(seed=6, kind="frame").with_(readout="membrane")):  # fmt: skip
        runs = {}
        for path in _supported():
            _engine.set_simd_level(path)
            rng = np.random.default_rng(8)
            eng = Engine(net)
            if net.input.kind == "frame":
                eng.set_frame(rng.random(net.input.shape, dtype=np.float32))
                steps = [None] * 16
            else:
                ev = EventSteps.from_counts((rng.random((16, *net.input.shape)) < 0.2).astype(np.int32))
                steps = [ev.steps(t, t + 1) for t in range(16)]
            logits = []
            for s in steps:
                assert (eng.step() if s is None else eng.feed(s)) == 1
                logits.append(eng.logits.tobytes())
            runs[path] = logits
        for path, got in runs.items():
            assert got == runs["portable"], path
        assert len(set(runs["portable"])) > 8  # the logits move
