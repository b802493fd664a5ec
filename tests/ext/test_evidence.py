"""The evidence rule (Network.evidence_steps): c(t) = max softmax(z(t)·t/(t_e·T))."""

from __future__ import annotations

from pathlib import Path

import engine_nets as nets  # tests/ext is on sys.path
import numpy as np
import pytest
from spikecast.ext import Engine, EventSteps
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import Network, softmax_confidence


def test_rate_and_evidence_rules_on_known_logits() -> None:
    z = np.array([[2.0, 0.0, 0.0]], np.float32)
    rate = softmax_confidence(z, 40.0, 1.0)
    assert rate[0] == pytest.approx(np.exp(2) / (np.exp(2) + 2))
    # At t = t_e the rules agree; later the evidence rule is more confident, earlier less.
    assert softmax_confidence(z, 10.0, 1.0, 10.0)[0] == pytest.approx(rate[0])
    assert softmax_confidence(z, 40.0, 1.0, 10.0)[0] == pytest.approx(np.exp(8) / (np.exp(8) + 2))
    assert softmax_confidence(z, 5.0, 1.0, 10.0)[0] == pytest.approx(np.exp(1) / (np.exp(1) + 2))
    # Per-step divisors broadcast over a (T, N, K) trace.
    zz = np.repeat(z[None], 3, axis=0)
    got = softmax_confidence(zz, np.array([[5.0], [10.0], [40.0]]), 1.0, 10.0)
    assert got.shape == (3, 1) and got[0, 0] < got[1, 0] < got[2, 0]


def test_probabilities_peak_at_the_confidence() -> None:
    net = nets.net_events_conv_out().with_(evidence_steps=3.0, temperature=0.5)
    z = np.array([0.3, -0.2, 0.1], np.float32)[: net.n_classes]
    p = net.probabilities(z, 7.0)
    assert p.sum() == pytest.approx(1.0)
    assert p.max() == pytest.approx(float(net.confidence(z, 7.0)))


@pytest.mark.parametrize("bad", [0.5, -1.0, float("nan"), 2e6, "10"])
def test_bad_evidence_steps_are_refused(bad: object) -> None:
    with pytest.raises(ParameterError, match="evidence_steps"):
        nets.net_events_conv_out().with_(evidence_steps=bad)


def test_evidence_steps_round_trip_and_change_the_hash(tmp_path: Path) -> None:
    net = nets.net_events_conv_out()
    ev = net.with_(evidence_steps=25.0)
    assert "evidence_steps" not in net.manifest()  # old files keep their hash
    assert ev.sha256 != net.sha256
    back = Network.load(ev.save(tmp_path / "ev.scn"))
    assert back.evidence_steps == 25.0 and back.sha256 == ev.sha256
    assert back.exit_signal == "evidence/25" and net.exit_signal == "rate"
    assert "exit signal: evidence/25" in back.summary()


def test_engine_exits_where_the_evidence_rule_says() -> None:
    net = nets.net_events_conv_out().with_(evidence_steps=6.0)
    counts = nets.event_counts(net, 24, 1, seed=3)[:, 0]
    ev = EventSteps.from_counts(counts)
    eng = Engine(net)
    full = eng.run(ev, t_max=24)
    eng.reset()
    confs = []
    for t in range(24):
        eng.feed(ev.steps(t, t + 1))
        confs.append(eng.confidence)
        assert eng.confidence == pytest.approx(float(net.confidence(eng.logits, float(t + 1))), rel=1e-12)
    tau = float(np.median(confs))
    want = 1 + int(np.argmax(np.asarray(confs) >= tau))
    eng.reset()
    res = eng.run(ev, t_max=24, tau=tau, t_min=1)
    assert res.steps == want and res.exit == "confident"
    assert full.t_eff == 24.0


def test_tau_one_never_decides_even_where_c_rounds_to_one() -> None:
    # Under the evidence rule the summed margins grow without bound, so c(t) reaches
    # exactly 1.0 in double; τ = 1 must still mean "run to t_max", in the engine and in
    # the table replay alike.
    from spikecast.ext.core.calibration import TAU_GRID, decision_steps

    net = nets.net_events_conv_out().with_(evidence_steps=1.0, temperature=1e-6)
    counts = nets.event_counts(net, 24, 1, seed=3)[:, 0]
    eng = Engine(net)
    res = eng.run(EventSteps.from_counts(counts), t_max=24, tau=1.0, t_min=1)
    assert res.exit == "max_steps" and res.steps == 24
    eng.reset()
    eng.run(EventSteps.from_counts(counts), t_max=24)
    assert eng.confidence == 1.0  # the case the rule has to refuse
    table = np.ones((24, 3), np.float32)
    np.testing.assert_array_equal(decision_steps(table, 1.0, 1, 24), [24, 24, 24])
    assert max(TAU_GRID) < 1.0
