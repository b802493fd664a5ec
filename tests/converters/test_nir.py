"""NIR out and in: spikecast -> NIR -> spikecast is exact; sinabs's graphs import and run."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from spikecast.converters.nir_io import NirImportOptions, export_nir, from_nir, import_nir, to_nir
from spikecast.ext import CompiledNetwork, Engine, EventSteps, trace
from spikecast.ext.core.errors import ConversionError
from spikecast.ext.core.network import InputSpec, Network

nir = pytest.importorskip("nir", reason="NIR needs the 'nir' extra")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ext"))
import engine_nets as nets  # noqa: E402  (tests/ext's exact-network builders)

DATA = Path(__file__).with_name("data")


def net_frame_deep(seed: int = 8, reset: str = "subtract") -> Network:
    """Frame input with a normalisation (mean, std per channel): conv p1 -> conv s2 (no
    bias) -> linear -> linear output with λ_L = 1.5 and a hidden threshold of 0.75."""
    rng = np.random.default_rng(seed)
    l0 = nets.conv(rng, "conv0", (2, 9, 8), 4, (3, 3), (1, 1), (1, 1))
    l1 = nets.conv(rng, "conv1", l0.out_shape, 5, (3, 2), (2, 2), (1, 0))
    l1 = replace(l1, bias=None)
    l2 = nets.linear(rng, "fc2", l1.out_shape, 10)
    l2 = replace(l2, threshold=0.75, lam=2.5)
    l3 = nets.linear(rng, "out", (10,), 3, spiking=False, lam=1.5)
    spec = InputSpec("frame", (2, 9, 8), scale=0.5, mean=(0.25, -0.125), std=(0.5, 2.0))
    return Network(spec, (l0, l1, l2, l3), ("a", "b", "c"), reset=reset, temperature=0.5, meta={"k": [1, 2]})  # type: ignore[arg-type]


NETS = {
    "frame_deep": net_frame_deep,
    "frame_deep_zero": lambda: net_frame_deep(reset="zero"),
    "events_linear": nets.net_events_linear,
    "frame_conv_only": nets.net_frame_conv_only,
    "frame_linear": nets.net_frame_linear,
    "frame_deep_v_init": lambda: net_frame_deep().with_(v_init=0.5),  # travels in the metadata
    "frame_deep_evidence": lambda: net_frame_deep().with_(evidence_steps=20.0),  # so does the exit signal
}


def inputs(net: Network, n: int = 4, steps: int = 16) -> list:
    if net.input.kind == "frame":
        return list(nets.frames(net, n))
    counts = nets.event_counts(net, steps, n, density=0.3)
    return [EventSteps.from_counts(counts[:, i]) for i in range(n)]


def assert_same_network(a: Network, b: Network) -> None:
    assert a.manifest() == b.manifest()
    for la, lb in zip(a.layers, b.layers, strict=True):
        for x, y in ((la.weight, lb.weight), (la.bias, lb.bias)):
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype and np.array_equal(x, y)
    assert a.sha256 == b.sha256


@pytest.mark.parametrize("name", sorted(NETS))
def test_round_trip_is_exact(name: str, tmp_path: Path) -> None:
    net = NETS[name]()
    path = export_nir(net, tmp_path / "net.nir")
    back = import_nir(path)
    assert_same_network(net, back)
    # and the spike trains: every layer's spikes at every step, and the logits
    a, b = Engine(net), Engine(back)
    for sample in inputs(net, n=2):
        a.reset(), b.reset()
        for t in range(12):
            if isinstance(sample, EventSteps):
                a.feed(sample.steps(t, t + 1)), b.feed(sample.steps(t, t + 1))
            else:
                if t == 0:
                    a.set_frame(sample), b.set_frame(sample)
                a.step(1), b.step(1)
            for layer in range(len(net.layers) - 1):
                assert np.array_equal(a.layer_spikes(layer), b.layer_spikes(layer))
            assert np.array_equal(a.logits, b.logits)
    ta = trace(CompiledNetwork(net), inputs(net), 16, logits=True)
    tb = trace(CompiledNetwork(back), inputs(net), 16, logits=True)
    assert ta.logits is not None and tb.logits is not None
    assert np.array_equal(ta.logits, tb.logits) and np.array_equal(ta.synops, tb.synops)


def test_graph_uses_nir_primitives() -> None:
    net = net_frame_deep()
    graph = to_nir(net)
    kinds = [type(graph.nodes[a]).__name__ for a, _ in graph.edges] + ["Output"]
    assert kinds == [
        "Input", "Scale", "Conv2d", "IF", "Conv2d", "IF", "Flatten", "Affine", "IF", "Affine", "I", "Output"
    ]  # fmt: skip
    assert graph.metadata["reset"] == "subtract" and graph.metadata["input_encoding"] == "analog"
    if_node = graph.nodes["if2"]
    assert np.all(if_node.v_threshold == np.float32(0.75)) and np.all(if_node.r == 1)
    assert np.all(graph.nodes["output_integrator3"].r == np.float32(1.5))
    np.testing.assert_array_equal(graph.nodes["scale"].scale[:, 0, 0], np.float32([1.0, 0.25]))
    assert graph.nodes["conv1"].bias.tolist() == [0.0] * 5  # NIR needs a bias: zeros


def test_export_refuses_the_gated_max_pool() -> None:
    with pytest.raises(ConversionError, match=r"max-pools have no NIR primitive.*AvgPool2d"):
        to_nir(nets.net_frame_pool3())


def test_export_refuses_grouped_and_multi_input_layers() -> None:
    with pytest.raises(ConversionError, match="grouped convolution"):
        to_nir(nets.net_grouped())
    with pytest.raises(ConversionError, match="reads several layers"):
        to_nir(nets.net_dag())


def test_foreign_graph_defaults_and_options() -> None:
    """Without spikecast metadata: frame input, reset by subtraction, classes '0'..; options win."""
    net = nets.net_events_linear()
    graph = to_nir(net)
    graph.metadata = {}
    plain = from_nir(graph)
    assert plain.input.kind == "frame" and plain.reset == "subtract" and plain.class_names == ("0", "1", "2")
    opts = NirImportOptions(input_kind="events", dt_us=500, reset="zero", class_names=("x", "y", "z"))
    told = from_nir(graph, opts)
    assert told.input.kind == "events" and told.input.dt_us == 500 and told.reset == "zero"
    assert told.class_names == ("x", "y", "z")
    for la, lb in zip(net.layers, told.layers, strict=True):
        assert np.array_equal(la.weight, lb.weight) and la.threshold == lb.threshold


def _chain_graph(*nodes: object) -> object:
    return nir.NIRGraph.from_list(*nodes)


def test_import_refuses_leaky_neurons() -> None:
    w = np.eye(3, dtype=np.float32)
    lif = nir.LIF(tau=np.full(3, 0.02), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))
    graph = _chain_graph(nir.Affine(weight=w, bias=np.zeros(3)), lif, nir.Affine(weight=w, bias=np.zeros(3)))
    with pytest.raises(ConversionError, match=r"integrate-and-fire neurons only; leaky neurons \(tau=0.02\)"):
        from_nir(graph)
    li = nir.LI(tau=np.full(3, 0.5), r=np.ones(3), v_leak=np.zeros(3))
    graph = _chain_graph(nir.Affine(weight=w, bias=np.zeros(3)), li)
    with pytest.raises(ConversionError, match="leaky neurons"):
        from_nir(graph)


def test_import_takes_snntorch_if_and_per_channel_thresholds() -> None:
    """snnTorch exports Leaky(beta=1) as LIF with tau = r = inf: an IF neuron. Thresholds
    that differ per neuron of a linear layer are folded into its weights (θ = 1)."""
    rng = np.random.default_rng(0)
    w0 = (rng.integers(-20, 40, (4, 6)) / 64).astype(np.float32)
    w1 = (rng.integers(-20, 40, (2, 4)) / 64).astype(np.float32)
    with np.errstate(divide="ignore"):
        tau = 1e-4 / (1 - np.ones(4))
    theta = np.array([1.0, 2.0, 0.5, 4.0])
    lif = nir.LIF(tau=tau, r=tau / 1e-4, v_leak=np.zeros(4), v_threshold=theta)
    out = nir.LIF(tau=np.full(2, np.inf), r=np.full(2, np.inf), v_leak=np.zeros(2), v_threshold=np.ones(2))
    graph = _chain_graph(nir.Affine(weight=w0, bias=np.zeros(4)), lif, nir.Linear(weight=w1), out)
    net = from_nir(graph)
    assert [ly.spiking for ly in net.layers] == [True, False] and net.layers[0].threshold == 1.0
    np.testing.assert_array_equal(net.layers[0].weight, w0 / theta[:, None].astype(np.float32))
    assert net.meta["nir_import"]["neurons"] == ["LIF", "LIF"]
    assert any("output integrator" in n for n in net.meta["nir_import"]["notes"])


def test_sinabs_export_imports_and_runs_like_sinabs() -> None:
    """tests/converters/data/sinabs_iaf.nir: what sinabs 3.1.3's to_nir wrote for
    Conv2d -> IAF -> SumPool2d -> Conv2d (no bias) -> IAF (θ = 8) -> Flatten -> Linear -> IAF
    (make_sinabs_fixture.py). sinabs_iaf_run.npz: sinabs's own spikes on an event stream."""
    net = import_nir(DATA / "sinabs_iaf.nir", NirImportOptions(input_kind="events"))
    assert [ly.kind for ly in net.layers] == ["conv", "conv", "linear"]
    assert [ly.threshold for ly in net.layers[:2]] == [1.0, 8.0] and not net.layers[-1].spiking
    assert net.layers[1].kernel == (6, 6) and net.layers[1].stride == (4, 4)  # the sum-pool folded in
    run = np.load(DATA / "sinabs_iaf_run.npz")
    events = EventSteps.from_counts(run["events"])
    eng = Engine(net)
    for t in range(events.n_steps):
        eng.feed(events.steps(t, t + 1))
        assert np.array_equal(eng.layer_spikes(0), run["spikes0"][t].ravel()), f"layer 0, step {t}"
        assert np.array_equal(eng.layer_spikes(1), run["spikes1"][t].ravel()), f"layer 1, step {t}"
        v = np.cumsum(run["current"][: t + 1], axis=0, dtype=np.float64)[-1]
        np.testing.assert_allclose(eng.logits * (t + 1), v, rtol=1e-6, atol=1e-6)
    assert eng.spikes[0] == run["spikes0"].sum() and eng.spikes[1] == run["spikes1"].sum()


def test_cli_nir_export_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spikecast.runtime.cli import main

    net = net_frame_deep()
    net.save(tmp_path / "net.scn")
    assert main(["nir", "export", str(tmp_path / "net.scn"), str(tmp_path / "net.nir")]) == 0
    assert main(["nir", "import", str(tmp_path / "net.nir"), "--out", str(tmp_path / "back.scn")]) == 0
    assert Network.load(tmp_path / "back.scn").sha256 == net.sha256
    argv = ["nir", "import", str(DATA / "sinabs_iaf.nir"), "--out", str(tmp_path / "s.scn")]
    assert main([*argv, "--input-kind", "events", "--classes", "x,y,z"]) == 0
    assert "output integrator" in capsys.readouterr().out
    nets.net_frame_pool3().save(tmp_path / "pool.scn")
    assert main(["nir", "export", str(tmp_path / "pool.scn"), str(tmp_path / "pool.nir")]) == 2
    assert "max-pools have no NIR primitive" in capsys.readouterr().err


def test_avg_pool_before_a_linear_layer_is_folded() -> None:
    """AvgPool2d(2) over a 4x5 map (the last column dropped) then Flatten and Affine: the
    linear layer reads the full map with each weight spread over its window / 4."""
    w0 = np.ones((2, 1, 1, 1), np.float32)
    fc = (np.arange(6 * 8).reshape(6, 8) / 8).astype(np.float32)
    conv = nir.Conv2d(
        input_shape=(4, 5), weight=w0, stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(2)
    )
    neurons = nir.IF(r=np.ones((2, 4, 5)), v_threshold=np.ones((2, 4, 5)))
    pool = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    graph = _chain_graph(
        conv,
        neurons,
        pool,
        nir.Flatten(input_type=None, start_dim=0),
        nir.Affine(weight=fc, bias=np.zeros(6)),
    )
    net = from_nir(graph)
    out = net.layers[1]
    assert out.kind == "linear" and out.in_shape == (2, 4, 5) and not out.spiking
    full = out.weight.reshape(6, 2, 4, 5)
    np.testing.assert_array_equal(full[:, :, :, 4], 0)  # the column the pool drops
    expect = fc.reshape(6, 2, 2, 2).repeat(2, axis=2).repeat(2, axis=3) / 4
    np.testing.assert_array_equal(full[:, :, :, :4], expect)


def test_export_refuses_the_membrane_readout() -> None:
    with pytest.raises(ConversionError, match=r"readout='membrane'.*reads spikes only"):
        to_nir(net_frame_deep().with_(readout="membrane"))


def test_export_refuses_burst_networks() -> None:
    with pytest.raises(ConversionError, match=r"max_spikes=3.*at most one spike per step"):
        to_nir(net_frame_deep().with_(max_spikes=3))
