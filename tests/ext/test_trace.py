"""trace(): the per-step state of many samples, equal to stepping an engine by hand."""

from __future__ import annotations

import engine_nets as nets  # tests/ext is on sys.path (pytest's rootdir-less import mode)
import numpy as np
import pytest
from spikecast.ext import CompiledNetwork, Engine, EventSteps, trace
from spikecast.ext.core.errors import ParameterError


def by_hand(plan: CompiledNetwork, sample: np.ndarray | EventSteps, t: int) -> tuple[list, list, list, list]:
    eng = Engine(plan)
    cls, conf, syn, lgt = [], [], [], []
    if isinstance(sample, EventSteps):
        for k in range(t):
            if k < sample.n_steps:
                eng.feed(sample.steps(k, k + 1))
            cls.append(eng.class_index)
            conf.append(eng.confidence)
            syn.append(int(eng.synops.sum()))
            lgt.append(eng.logits)
    else:
        eng.set_frame(sample)
        for _ in range(t):
            eng.step(1)
            cls.append(eng.class_index)
            conf.append(eng.confidence)
            syn.append(int(eng.synops.sum()))
            lgt.append(eng.logits)
    return cls, conf, syn, lgt


@pytest.mark.parametrize("n_threads", [1, 2])
def test_frame_traces_equal_stepping(n_threads: int) -> None:
    net = nets.net_frame_pool3()
    plan = CompiledNetwork(net)
    x = nets.frames(net, 5)
    tr = trace(plan, x, 12, logits=True, n_threads=n_threads)
    assert tr.confidence.shape == (12, 5) and tr.logits is not None
    assert tr.logits.shape == (12, 5, net.n_classes)
    for i in range(5):
        cls, conf, syn, lgt = by_hand(plan, x[i], 12)
        assert tr.class_index[:, i].tolist() == cls and tr.synops[:, i].tolist() == syn
        np.testing.assert_array_equal(tr.confidence[:, i], np.float32(conf))
        np.testing.assert_array_equal(tr.logits[:, i], np.stack(lgt))


def test_event_traces_carry_the_last_state_after_the_stream_ends() -> None:
    net = nets.net_events_linear()
    plan = CompiledNetwork(net)
    counts = nets.event_counts(net, 9, 3)
    recs = [EventSteps.from_counts(counts[:, i][: 4 + 2 * i]) for i in range(3)]
    recs.append(EventSteps.from_counts(counts[:0, 0]))  # no steps at all
    tr = trace(plan, recs, 9)
    assert tr.n_steps.tolist() == [4, 6, 8, 0]
    for i, rec in enumerate(recs[:3]):
        cls, conf, syn, _ = by_hand(plan, rec, rec.n_steps)
        m = rec.n_steps
        assert tr.class_index[:m, i].tolist() == cls and tr.synops[:m, i].tolist() == syn
        np.testing.assert_array_equal(tr.confidence[:m, i], np.float32(conf))
        assert (tr.class_index[m:, i] == cls[-1]).all() and (tr.synops[m:, i] == syn[-1]).all()
    assert np.allclose(tr.confidence[:, 3], 1 / net.n_classes)
    assert tr.correct(np.zeros(4, int)).shape == (9, 4)


def test_trace_refuses_the_wrong_input_kind() -> None:
    with pytest.raises(ParameterError, match="EventSteps"):
        trace(nets.net_events_linear(), [np.zeros(3)], 5)
    with pytest.raises(ParameterError, match="frames"):
        trace(nets.net_frame_pool3(), [], 5)
    with pytest.raises(ParameterError, match="labels"):
        trace(nets.net_frame_pool3(), nets.frames(nets.net_frame_pool3(), 2), 3).correct([1])
