"""The membrane read-out (Network.readout = "membrane"): the output weights applied to
N + (V − v_init·θ)/θ of the output's source layer, through ReLU and the max-pools
between. Spike-exactness against the reference is in test_engine.py (the *_membrane
cases); here: what the model file, the checks, decay and the spikes do with it."""

from __future__ import annotations

from pathlib import Path

import engine_nets as nets  # tests/ext is on sys.path
import numpy as np
import pytest
from spikecast.ext import Engine, EventSteps
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import Network

reference = pytest.importorskip("spikecast.converters.reference", reason="the reference needs torch")
torch = pytest.importorskip("torch")


def test_readout_round_trips_changes_the_hash_and_shows_in_the_summary(tmp_path: Path) -> None:
    net = nets.net_frame_pool3()
    mem = net.with_(readout="membrane")
    assert "readout" not in net.manifest()  # earlier files keep their hash
    assert mem.manifest()["readout"] == "membrane" and mem.sha256 != net.sha256
    back = Network.load(mem.save(tmp_path / "m.scn"))
    assert back.readout == "membrane" and back.sha256 == mem.sha256
    assert "read-out: membrane" in back.summary() and "read-out" not in net.summary()
    assert mem.readout_source() == 3  # fc3 feeds the output directly


def test_readout_source_walks_back_through_stacked_pools() -> None:
    assert nets.net_frame_pool_pool().readout_source() == 0  # conv0 -> pool -> pool -> out


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (nets.net_events_conv_out(reset="subtract"), "linear output layer"),
        (nets.net_frame_pool3(reset="zero"), "reset='subtract'"),
    ],
    ids=["conv-output", "reset-zero"],
)
def test_membrane_readout_is_refused_where_it_does_not_apply(net: Network, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        net.with_(readout="membrane")


def test_an_unknown_readout_is_refused() -> None:
    with pytest.raises(ParameterError, match="readout must be one of"):
        nets.net_frame_pool3().with_(readout="potential")


def test_the_spikes_are_the_same_only_the_logits_change() -> None:
    net = nets.net_wide(kind="events").with_(v_init=0.5)
    counts = nets.event_counts(net, 20, 1, seed=4)[:, 0]
    ev = EventSteps.from_counts(counts)
    a, b = Engine(net), Engine(net.with_(readout="membrane"))
    changed = 0
    for t in range(20):
        a.feed(ev.steps(t, t + 1))
        b.feed(ev.steps(t, t + 1))
        for lay in range(len(net.layers) - 1):
            assert np.array_equal(a.layer_spikes(lay), b.layer_spikes(lay))
        changed += int(not np.array_equal(a.logits, b.logits))
    assert changed > 10


def _readout_by_hand(net: Network, counts: np.ndarray, v: np.ndarray, t_eff: float) -> np.ndarray:
    """z = λ (W·P(ReLU(E)) + b·t_eff)/t_eff from the source's integrated input E, in float64."""
    import torch.nn.functional as F

    u = torch.relu(torch.as_tensor(counts + v, dtype=torch.float64))
    for pool in net.layers[net.readout_source() + 1 : -1]:
        u = F.max_pool2d(u, pool.kernel, pool.stride, pool.padding)
    out = net.layers[-1]
    z = u.reshape(u.shape[0], -1) @ torch.as_tensor(out.weight, dtype=torch.float64).T
    z = z + torch.as_tensor(out.bias, dtype=torch.float64) * t_eff
    return (out.lam * z / t_eff).numpy()[0]


def test_decay_scales_the_integrated_input_it_reads() -> None:
    # decay(f) turns the source's integrated input E into f·E (and t_eff into f·t_eff):
    # after more steps the read-out is λ(W·P(ReLU(f·E_then + E_since)) + b·t_eff)/t_eff.
    net = nets.net_frame_pool_pool().with_(readout="membrane", max_pool="count", v_init=0.5)
    src = net.readout_source()
    x = nets.frames(net, 1, seed=2)
    run = reference._DenseRun(net, torch.as_tensor(x), 1, False, torch.device("cpu"))
    v0 = net.initial_potential(net.layers[src])
    eng = Engine(net)
    eng.set_frame(x[0])
    for f in (0.0, 0.5):
        eng.reset()
        eng.set_frame(x[0])
        run = reference._DenseRun(net, torch.as_tensor(x), 1, False, torch.device("cpu"))
        for _ in range(9):
            eng.step()
            run.step(torch.as_tensor(x))
        e_then = (run.counts[src] + (run.v[src] - v0)).double().numpy()
        v_then = run.v[src].double().numpy()
        n_then = run.counts[src].double().numpy()
        eng.decay(f)
        for _ in range(6):
            eng.step()
            run.step(torch.as_tensor(x))
        e_since = (run.counts[src].double().numpy() - n_then) + (run.v[src].double().numpy() - v_then)
        want = _readout_by_hand(net, f * e_then + e_since, np.zeros_like(e_since), f * 9 + 6)
        np.testing.assert_allclose(eng.logits, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
def test_a_call_that_skips_intermediate_readouts_ends_in_the_same_state(readout: str) -> None:
    # run_steps reads out only where the exit rule looks (t >= t_min, τ < 1) and after
    # the last step; the state it ends in is that of reading out after every step.
    net = nets.net_wide(kind="events").with_(readout=readout, v_init=0.5)
    counts = nets.event_counts(net, 30, 1, seed=6)[:, 0]
    ev = EventSteps.from_counts(counts)
    one, many = Engine(net), Engine(net)
    assert one.feed(ev) == 30
    for t in range(30):
        many.feed(ev.steps(t, t + 1))
    assert one.logits.tobytes() == many.logits.tobytes()
    assert (one.confidence, one.class_index) == (many.confidence, many.class_index)
    # Before t_min nothing is read out; from t_min on the rule decides where it would have.
    confs = []
    many.reset()
    for t in range(30):
        many.feed(ev.steps(t, t + 1))
        confs.append(many.confidence)
    tau = sorted(confs[10:])[len(confs[10:]) // 2]
    want = 11 + int(np.argmax(np.asarray(confs[10:]) >= tau))
    one.reset()
    res = one.run(ev, t_max=30, tau=tau, t_min=11)
    assert res.steps == want and res.exit == "confident"
