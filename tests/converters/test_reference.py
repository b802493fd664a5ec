"""The reference simulator on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spikecast.converters.reference import count_maxpool, fanout, gated_maxpool, simulate
from spikecast.ext.core.network import InputSpec, Layer, Network


def one_neuron_net(bias: float, reset: str = "subtract") -> Network:
    layers = (
        Layer("linear", "h", (1, 1, 1), (1,), np.array([[0.0]], np.float32), np.array([bias], np.float32)),
        Layer(
            "linear",
            "o",
            (1,),
            (2,),
            np.array([[1.0], [0.0]], np.float32),
            np.zeros(2, np.float32),
            spiking=False,
        ),
    )
    return Network(InputSpec("frame", (1, 1, 1)), layers, ("on", "off"), reset=reset)  # type: ignore[arg-type]


def test_if_neuron_with_constant_current_fires_at_its_rate() -> None:
    res = simulate(one_neuron_net(0.25), np.zeros((1, 1, 1, 1), np.float32), 12, record_spikes=True)
    assert res.spikes is not None
    train = res.spikes[0][:, 0, 0]
    assert train.tolist() == [0, 0, 0, 1] * 3  # V reaches 1.0 every 4th step
    # z(t) = λ_L V_L / t: the output integrates the spikes, 3 over 12 steps
    assert res.logits[-1, 0].tolist() == pytest.approx([0.25, 0.0])
    assert res.synops[0].tolist() == [0, 2 * 3]  # analog input: 0; each hidden spike drives 2 synapses


def test_reset_to_zero_loses_the_charge_above_threshold() -> None:
    sub = simulate(one_neuron_net(0.6, "subtract"), np.zeros((1, 1, 1, 1), np.float32), 10)
    zero = simulate(one_neuron_net(0.6, "zero"), np.zeros((1, 1, 1, 1), np.float32), 10)
    assert sub.spike_counts[0].sum() == 6  # rate 0.6 exactly
    assert zero.spike_counts[0].sum() == 5  # fires every second step: the 0.2 excess is lost


def test_gated_maxpool_passes_the_winner_and_breaks_ties_to_the_lowest_index() -> None:
    layer = Layer("maxpool", "p", (1, 2, 2), (1, 1, 1), kernel=(2, 2), stride=(2, 2))
    counts = torch.tensor([[[[2.0, 3.0], [3.0, 1.0]]]])
    # tie between flat 1 and 2: flat 1 wins; only its spike passes
    assert gated_maxpool(torch.tensor([[[[0.0, 0.0], [1.0, 0.0]]]]), counts, layer).item() == 0
    assert gated_maxpool(torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]), counts, layer).item() == 1


def test_count_maxpool_keeps_the_window_count_at_the_max_of_its_inputs() -> None:
    """A window's spikes sum to its largest input count at every step. The gate passes one
    more each time an input ties the largest count and wins the tie on its lower index."""
    layer = Layer("maxpool", "p", (1, 1, 2), (1, 1, 1), kernel=(1, 2), stride=(1, 2))
    # b spikes at step 1, a at 2 (ties b, wins on index), b at 3 and 4.
    trains = [(0.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 1.0)]
    counts = torch.zeros(1, 1, 1, 2)
    got_count, got_gated, largest = [], [], []
    for a, b in trains:
        s = torch.tensor([[[[a, b]]]])
        before = counts.clone()
        counts += s
        got_count.append(count_maxpool(counts, before, layer).item())
        got_gated.append(gated_maxpool(s, counts, layer).item())
        largest.append(counts.max().item())
    assert np.cumsum(got_count).tolist() == largest == [1, 1, 2, 3]
    assert got_gated == [1, 1, 1, 1]  # the tie at step 2 passed a spike: 4 for a max of 3
    # Two inputs of one window reaching the new maximum in one step: one spike, not two.
    both = torch.tensor([[[[1.0, 1.0]]]])
    c3 = torch.tensor([[[[3.0, 3.0]]]])
    assert count_maxpool(c3 + both, c3, layer).item() == 1
    # A burst input raising the maximum by 3 passes 3 spikes.
    assert count_maxpool(c3 + torch.tensor([[[[0.0, 3.0]]]]), c3, layer).item() == 3
    # Padding never counts: a padded window's max is its real inputs'.
    padded = Layer("maxpool", "p", (1, 1, 2), (1, 1, 2), kernel=(1, 2), stride=(1, 2), padding=(0, 1))
    c0 = torch.zeros(1, 1, 1, 2)
    assert count_maxpool(c0 + both, c0, padded).tolist() == [[[[1.0, 1.0]]]]


def test_fanout_is_border_aware() -> None:
    layer = Layer(
        "conv", "c", (1, 3, 3), (2, 2, 2), np.ones((2, 1, 3, 3), np.float32), None, (3, 3), (2, 2), (1, 1)
    )
    f = fanout(layer)[0]
    # output rows 0, 1 read input rows -1..1 and 1..3: row 1 is read by both
    assert f.tolist() == [[2, 4, 2], [4, 8, 4], [2, 4, 2]]


def test_event_input_counts_each_event_once() -> None:
    layers = (
        Layer(
            "conv",
            "c",
            (2, 2, 2),
            (1, 2, 2),
            np.full((1, 2, 1, 1), 0.5, np.float32),
            np.zeros(1, np.float32),
            (1, 1),
        ),
        Layer(
            "linear",
            "o",
            (1, 2, 2),
            (2,),
            np.ones((2, 4), np.float32),
            np.zeros(2, np.float32),
            spiking=False,
        ),
    )
    net = Network(InputSpec("events", (2, 2, 2)), layers, ("a", "b"))
    x = np.zeros((1, 1, 2, 2, 2), np.float32)
    x[0, 0, 1, 0, 1] = 2  # two ON events at (y=0, x=1) in one step
    res = simulate(net, x, 1, record_spikes=True)
    assert res.spikes is not None
    assert res.spikes[0][0, 0, 0].tolist() == [[0, 1], [0, 0]]
    assert res.synops[0, 0] == 2  # two events x fan-out 1


def test_bad_inputs_raise_value_errors() -> None:
    net = one_neuron_net(0.5)
    with pytest.raises(ValueError, match="frames must be"):
        simulate(net, np.zeros((1, 2, 1, 1), np.float32), 5)
    with pytest.raises(ValueError, match="NaN"):
        simulate(net, np.full((1, 1, 1, 1), np.nan, np.float32), 5)
    with pytest.raises(ValueError, match="n_steps"):
        simulate(net, np.zeros((1, 1, 1, 1), np.float32), 0)
