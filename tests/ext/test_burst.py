"""Burst coding (Network.max_spikes): up to B spikes per neuron and step."""

from __future__ import annotations

import engine_nets as nets  # tests/ext is on sys.path
import numpy as np
import pytest
from spikecast.ext import Engine, EventSteps
from spikecast.ext.core.errors import ParameterError


def test_a_neuron_emits_floor_v_over_theta_spikes_up_to_b() -> None:
    # One linear layer with a constant drive of 2.5 θ per step from its bias: it fires
    # 2 spikes, keeps 0.5, then 3 (0.5 + 2.5), keeps 0, ... capped at B = 2: 2, 2, 2.
    from spikecast.ext.core.network import InputSpec, Layer, Network

    w1 = np.zeros((1, 2), np.float32)
    hidden = Layer("linear", "h", (2,), (1,), weight=w1, bias=np.full(1, 2.5, np.float32))
    out = Layer("linear", "o", (1,), (2,), weight=np.array([[1.0], [0.0]], np.float32), spiking=False)
    base = Network(InputSpec("events", (2, 1, 1)), (hidden, out), ("a", "b"))
    ev = EventSteps.from_counts(np.zeros((4, 2, 1, 1), np.int64))
    for b, want in ((3, [2, 3, 2, 3]), (2, [2, 2, 2, 2]), (1, [1, 1, 1, 1])):
        eng = Engine(base.with_(max_spikes=b))
        got = []
        for t in range(4):
            eng.feed(ev.steps(t, t + 1))
            got.append(int(eng.layer_spikes(0)[0]))
            assert len(eng.spiked(0)) == got[-1]  # a burst neuron once per spike
        assert got == want, b
        assert int(eng.spikes[0]) == sum(want)


def test_burst_needs_reset_by_subtraction_and_a_sane_b() -> None:
    net = nets.net_events_conv_out(reset="subtract")
    with pytest.raises(ParameterError, match="reset='subtract'"):
        net.with_(reset="zero", max_spikes=2)
    for bad in (0, 65, 2.5):
        with pytest.raises(ParameterError, match="max_spikes"):
            net.with_(max_spikes=bad)
    assert "max spikes/step: 4" in net.with_(max_spikes=4).summary()
