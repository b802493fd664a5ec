"""Converter tests against the ANN: accuracy, rate correlation (RQ1), resets, folding, refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from spikecast.converters import ConversionError, convert
from spikecast.converters.conversion import ann_logits, build_drafts
from spikecast.converters.parse import trace
from spikecast.converters.reference import simulate
from spikecast.ext.core.calibration import Calibration, point_from_meta
from spikecast.ext.core.network import SmallTableWarning, load_network
from spikecast.ext.engine import EventSteps
from spikecast.ext.engine import trace as engine_trace
from spikecast.runtime.decision import initial_point
from torch import nn


@pytest.fixture(scope="module")
def converted(digits):
    return convert(digits.model, digits.x_train, progress=False)


def ann_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def test_snn_reaches_ann_accuracy_within_one_point(digits, converted):
    ann = ann_accuracy(digits.model, digits.x_test, digits.y_test)
    res = simulate(converted, digits.x_test, 200)
    snn = res.accuracy_by_step(digits.y_test)[-1]
    assert ann > 0.95
    assert snn >= ann - 0.01, (snn, ann)


def test_normalised_ann_keeps_the_models_predictions(digits, converted):
    with torch.no_grad():
        ref = digits.model(torch.from_numpy(digits.x_test)).numpy()
    np.testing.assert_allclose(ann_logits(converted, digits.x_test), ref, atol=1e-4, rtol=1e-4)


def test_rates_times_lambda_track_relu_activations(digits, converted):
    """Rueckauer's RQ1: per-layer firing rate · λ correlates with the ANN activation."""
    n_steps = 200
    x = digits.x_test[:100]
    res = simulate(converted, x, n_steps)
    h = torch.from_numpy(x).double()
    drafts = build_drafts(trace(digits.model, torch.from_numpy(x[:1])))
    for i, (draft, layer) in enumerate(zip(drafts, converted.layers, strict=True)):
        h = draft.forward(h)
        if not layer.spiking or layer.kind == "maxpool":
            continue
        rate_lam = res.spike_counts[i].reshape(len(x), -1) / n_steps * layer.lam
        act = h.reshape(len(x), -1).numpy()
        r = np.corrcoef(rate_lam.ravel(), act.ravel())[0, 1]
        assert r >= 0.95, (layer.name, r)


def test_reset_by_subtraction_beats_reset_to_zero(digits):
    sub = convert(digits.model, digits.x_train, reset="subtract", progress=False)
    zero = convert(digits.model, digits.x_train, reset="zero", progress=False)
    for n_steps in (50,):
        a_sub = simulate(sub, digits.x_test, n_steps).accuracy_by_step(digits.y_test)[-1]
        a_zero = simulate(zero, digits.x_test, n_steps).accuracy_by_step(digits.y_test)[-1]
        assert a_sub > a_zero, (a_sub, a_zero)


def test_v_init_half_by_default_and_more_accurate_at_small_t(digits, converted):
    """v_init = 0.5 (the default) rounds the rate code to nearest: better over the first steps."""
    assert converted.v_init == 0.5 and converted.meta["v_init"] == 0.5
    classic = convert(digits.model, digits.x_train, v_init=0.0, progress=False)
    assert classic.v_init == 0.0
    n_steps = 8
    early = simulate(converted, digits.x_test, n_steps).accuracy_by_step(digits.y_test)
    early0 = simulate(classic, digits.x_test, n_steps).accuracy_by_step(digits.y_test)
    assert early.mean() > early0.mean(), (early, early0)


def test_percentile_and_max_norm_lambdas(digits):
    pct = convert(digits.model, digits.x_train, percentile=99.9, progress=False)
    mx = convert(digits.model, digits.x_train, percentile=100.0, progress=False)
    for a, b in zip(pct.layers, mx.layers, strict=True):
        if a.spiking:
            assert 0 < a.lam <= b.lam
    assert pct.layers[-1].lam == 1.0


def test_bn_folding_changes_outputs_less_than_1e5():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, stride=2, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 5 * 5, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        nn.Linear(12, 4),
    )
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.rand(16, 2, 10, 10)
    drafts = build_drafts(trace(model, x[:1]))
    h = x.double()
    for d in drafts:
        h = d.forward(h)
    with torch.no_grad():
        ref = model(x).double()
    assert float((h - ref).abs().max()) < 1e-5
    assert len(drafts) == 3  # both BNs folded away


class FunctionalNet(nn.Module):
    """Ordinary forward code: F.relu, view, avg-pool folded into the next conv."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.relu(self.c1(x))
        x = self.pool(x)
        x = self.c2(x).relu()
        x = self.gap(x)
        x = x.view(x.size(0), -1)
        return torch.softmax(self.fc(x), dim=1)


def test_forward_code_and_avgpool_folding_are_exact():
    torch.manual_seed(2)
    model = FunctionalNet().eval()
    x = torch.rand(8, 1, 8, 8)
    net = convert(model, x.numpy(), progress=False)
    assert [ly.kind for ly in net.layers] == ["conv", "conv", "linear"]
    assert net.layers[1].kernel == (6, 6) and net.layers[1].stride == (2, 2)
    with torch.no_grad():
        ref = torch.log(model(x)).numpy()
    got = torch.log_softmax(torch.from_numpy(ann_logits(net, x.numpy())), dim=1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_calibration_from_a_dataloader_and_holdout_table(digits):
    ds = torch.utils.data.TensorDataset(torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train))
    loader = torch.utils.data.DataLoader(ds, batch_size=100)
    net = convert(
        digits.model,
        loader,
        holdout=(digits.x_test[:50], digits.y_test[:50]),
        calibration_steps=30,
        progress=False,
    )
    assert net.calibration is not None
    assert net.calibration.confidence.shape == (30, 50)
    assert net.meta["calibration_samples"] == len(digits.x_train)
    # The table is exactly what the engine's trace gives, and the model recommends a point.
    tr = engine_trace(net, digits.x_test[:50], 30)
    np.testing.assert_array_equal(net.calibration.confidence, tr.confidence)
    np.testing.assert_array_equal(net.calibration.correct, tr.correct(digits.y_test[:50]))
    rec = Calibration(net.calibration).recommend()
    assert net.meta["operating_point"] == rec.as_dict()


def test_recommended_point_round_trips_through_the_model_file(digits, tmp_path):
    net = convert(digits.model, digits.x_train[:200], holdout=(digits.x_test[:80], digits.y_test[:80]),
                  calibration_steps=25, progress=False)
    back = load_network(net.save(tmp_path / "net.scn"))
    choice = initial_point(back, Calibration(back.calibration))
    assert choice.source == "model" and choice.point == point_from_meta(net.meta)
    assert back.meta["operating_point"]["plateau_accuracy"] == Calibration(net.calibration).plateau_accuracy


def test_event_networks_get_a_table_from_recordings(digits):
    # An event network's holdout: one EventSteps per recording, with its label.
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    rng = np.random.default_rng(0)
    calib = rng.random((64, 2, 8, 8)).astype(np.float32)
    net = convert(model, calib, input_kind="events", progress=False)
    recs = [EventSteps.from_counts(rng.poisson(0.3, (12 + k, 2, 8, 8))) for k in range(6)]
    labels = rng.integers(0, 3, 6)
    out = convert(model, calib, input_kind="events", holdout=(recs, labels), calibration_steps=15,
                  progress=False)
    assert out.calibration is not None and out.calibration.confidence.shape == (15, 6)
    np.testing.assert_array_equal(out.calibration.correct, engine_trace(out, recs, 15).correct(labels))
    tr = engine_trace(net, recs, 15)
    assert "operating_point" in out.meta
    # Event networks keep one spike per step: bursts did not decide sooner in sensor time.
    assert out.max_spikes == 1 and "max_spikes_choice" not in out.meta
    assert net.v_init == 0.0  # event input: membranes start at 0 unless asked (bench/lowlatency.py)
    # Under the evidence rule too, though c(t) past a recording's end is its last step's
    # (the table replays what the engine would do), not recomputed with a later t.
    ev = convert(model, calib, input_kind="events", evidence_steps=4.0, holdout=(recs, labels),
                 calibration_steps=15, progress=False)
    np.testing.assert_allclose(ev.calibration.confidence, engine_trace(ev, recs, 15).confidence, rtol=1e-6)
    half = convert(model, calib, input_kind="events", v_init=0.5, progress=False)
    assert half.v_init == 0.5 and not np.array_equal(engine_trace(half, recs, 15).confidence, tr.confidence)
    with pytest.raises(ValueError, match="EventSteps"):
        convert(model, calib, input_kind="events", holdout=(calib[:6], labels), progress=False)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.c(x) + x, 1))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(8, 2)), "Sigmoid.*nn.ReLU"),
        (
            nn.Sequential(nn.Conv2d(1, 2, 2, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)),
            "dilated convolutions",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2)),
            "BatchNorm must directly follow",
        ),
        (
            nn.Sequential(
                nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(2, 2)
            ),
            "ceil_mode=False",
        ),
        (
            nn.Sequential(
                nn.Conv2d(1, 2, 1), nn.ReLU(), nn.AvgPool2d(3, stride=1), nn.Conv2d(2, 2, 3, padding=1),
                nn.ReLU(), nn.Flatten(), nn.Linear(8, 2),
            ),
            "cannot be folded into conv '3' exactly",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2), nn.ReLU()),
            "output layer has a ReLU",
        ),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)), "without ReLU"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 2)), "Tanh"),
        (
            nn.Sequential(
                nn.Conv2d(1, 2, 3), nn.ReLU(), nn.LayerNorm([2, 2, 2]), nn.Flatten(), nn.Linear(8, 2)
            ),
            "LayerNorm",
        ),
        (Residual(), r"node .add.: a sum needs layer outputs.*not the network input"),
    ],
)
def test_unsupported_ops_are_refused_with_the_node_and_fix(model, match):
    x = np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32)
    with pytest.raises(ConversionError, match=match):
        convert(model.eval(), x, progress=False)


def test_refusal_names_the_node():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.Flatten(), nn.Linear(8, 2)).eval()
    with pytest.raises(ConversionError, match=r"node '1' \(call_module GELU\)"):
        convert(model, np.zeros((2, 1, 4, 4), np.float32), progress=False)


def test_parameter_errors_are_value_errors(digits):
    with pytest.raises(ValueError, match="percentile"):
        convert(digits.model, digits.x_train, percentile=0, progress=False)
    with pytest.raises(ValueError, match="reset"):
        convert(digits.model, digits.x_train, reset="hard", progress=False)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="v_init"):
            convert(digits.model, digits.x_train, v_init=bad, progress=False)


def test_calibration_data_of_the_wrong_shape_are_refused_with_the_fix(digits):
    flat = digits.x_train.reshape(len(digits.x_train), -1)
    with pytest.raises(ValueError, match=r"got \(1300, 64\); flat vectors: pass them as images"):
        convert(digits.model, flat, progress=False)
    with pytest.raises(ValueError, match=r"got \(1300, 8, 8\); images without a channel axis: "
                                         r"pass x\[:, None\], shape \(1300, 1, 8, 8\)"):
        convert(digits.model, digits.x_train[:, 0], progress=False)
    with pytest.raises(ValueError, match="calibration data are empty"):
        convert(digits.model, digits.x_train[:0], progress=False)


def test_the_holdout_tables_do_not_depend_on_the_threads(digits):
    kw = {"holdout": (digits.x_test[:60], digits.y_test[:60]), "calibration_steps": 20,
          "percentile": 99.9, "progress": False}
    one = convert(digits.model, digits.x_train[:200], n_threads=1, **kw)
    assert convert(digits.model, digits.x_train[:200], n_threads=3, **kw).sha256 == one.sha256
    with pytest.raises(ValueError, match="n_threads"):
        convert(digits.model, digits.x_train[:200], n_threads=0, **kw)


def test_a_holdout_too_small_for_a_safe_default_is_warned_about(digits):
    kw = {"calibration_steps": 20, "percentile": 99.9, "progress": False}
    with pytest.warns(SmallTableWarning, match=r"its 60 held-out samples are too few to bound what the "
                                               r"recommended point gives away within 0.5%"):
        net = convert(digits.model, digits.x_train[:200], holdout=(digits.x_test[:60], digits.y_test[:60]),
                      **kw)
    assert "its 60 held-out samples are too few" in net.summary()
    # Its recommended point is still the default, with the same warning for the user.
    choice = initial_point(net, Calibration(net.calibration))
    assert choice.source == "model" and "its 60 held-out samples are too few" in (choice.warning or "")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallTableWarning)  # enough samples: no warning
        big = (digits.x_train[:400], digits.y_train[:400])
        convert(digits.model, digits.x_train[:200], holdout=big, **kw)


def test_raw_pixels_with_an_input_scale_are_refused(digits):
    raw = np.round(digits.x_train * 16)  # whole numbers 0..16, what the sensor gives
    with pytest.raises(ValueError, match=r"look like raw sensor values \(whole numbers up to 16\) "
                                         r"while input_scale=0.0625"):
        convert(digits.model, raw, input_scale=1 / 16, progress=False)
    with pytest.raises(ValueError, match=r"holdout data look like raw sensor values"):
        convert(digits.model, raw / 16, input_scale=1 / 16, holdout=(raw[:50], digits.y_train[:50]),
                calibration_steps=5, progress=False)  # fmt: skip
    # What the model takes (raw * scale) converts; so do raw values with no scale to undo.
    convert(digits.model, raw / 16, input_scale=1 / 16, progress=False)
    convert(digits.model, raw, progress=False)


def test_percentile_sample_stays_bounded_and_unbiased() -> None:
    from spikecast.converters.conversion import _Sample

    sample = _Sample(cap=1000, gen=torch.Generator().manual_seed(0))
    for _ in range(50):
        sample.add(torch.rand(500))
    assert sample.size <= 2000
    assert abs(sample.percentile(50) - 0.5) < 0.05
    assert abs(sample.percentile(99.9) - 0.999) < 0.01


def test_choose_percentile_picks_the_earliest_at_no_cost_to_the_plateau() -> None:
    from spikecast.converters.conversion import choose_percentile

    def sc(plateau: float, steps: float) -> dict[str, float]:
        return {"plateau_accuracy": plateau, "mean_steps": steps}

    # 99 decides earliest but gives away 1 pt of plateau: not eligible; 99.5 is.
    assert choose_percentile({99.0: sc(0.97, 5), 99.5: sc(0.979, 8), 99.9: sc(0.98, 12),
                              100.0: sc(0.98, 30)}) == 99.5
    # Everything within 0.5 pt: the fewest steps wins.
    assert choose_percentile({99.0: sc(0.994, 3.8), 99.9: sc(0.995, 6.0)}) == 99.0
    # A tie in steps goes to the larger percentile (less clipping).
    assert choose_percentile({99.0: sc(0.99, 10), 99.9: sc(0.99, 10)}) == 99.9
    with pytest.raises(ValueError, match="no percentile"):
        choose_percentile({})


def test_percentile_by_default_is_chosen_on_the_holdout(digits):
    from spikecast.converters.conversion import AUTO_PERCENTILES, choose_percentile

    x, y = digits.x_test[:60], digits.y_test[:60]
    plain = convert(digits.model, digits.x_train[:300], progress=False)
    assert plain.meta["percentile"] == 99.9 and "percentile_choice" not in plain.meta
    auto = convert(digits.model, digits.x_train[:300], holdout=(x, y), calibration_steps=20, progress=False)
    choice = auto.meta["percentile_choice"]
    assert sorted(float(p) for p in choice["candidates"]) == sorted(AUTO_PERCENTILES)
    scores = {float(p): v for p, v in choice["candidates"].items()}
    assert choice["chosen"] == choose_percentile(scores) == auto.meta["percentile"]
    # The chosen network is the one an explicit percentile gives, table and all.
    same = convert(digits.model, digits.x_train[:300], percentile=choice["chosen"], holdout=(x, y),
                   calibration_steps=20, max_spikes=auto.max_spikes, progress=False)
    assert [ly.lam for ly in same.layers] == [ly.lam for ly in auto.layers]
    np.testing.assert_array_equal(same.calibration.confidence, auto.calibration.confidence)
    assert same.meta["operating_point"] == auto.meta["operating_point"]
    # Each candidate's score is its own table's recommendation.
    for p, v in scores.items():
        net = convert(digits.model, digits.x_train[:300], percentile=p, holdout=(x, y), readout="spikes",
                      calibration_steps=20, max_spikes=auto.max_spikes, progress=False)  # as scored
        assert net.meta["operating_point"]["mean_steps"] == v["mean_steps"]


def test_choose_max_spikes_picks_the_least_work_at_no_cost_to_the_plateau() -> None:
    from spikecast.converters.conversion import choose_max_spikes

    def sc(plateau: float, work: float | None) -> dict[str, float]:
        return {"plateau_accuracy": plateau, **({"mean_work": work} if work is not None else {})}

    # Bursts decide in less work here, at the same plateau.
    assert choose_max_spikes({1: sc(0.86, 9e8), 4: sc(0.864, 4e8)}) == 4
    # Less work but a plateau 1 pt lower: not eligible.
    assert choose_max_spikes({1: sc(0.87, 9e8), 4: sc(0.86, 1e8)}) == 1
    # Equal work goes to fewer spikes per step; so does work that was not counted.
    assert choose_max_spikes({1: sc(0.9, 5e6), 4: sc(0.9, 5e6)}) == 1
    assert choose_max_spikes({1: sc(0.9, None), 4: sc(0.9, 1.0)}) == 1
    with pytest.raises(ValueError, match="no burst size"):
        choose_max_spikes({})


def test_burst_size_by_default_is_chosen_on_the_holdout_for_frames(digits):
    from spikecast.converters.conversion import AUTO_MAX_SPIKES, choose_max_spikes
    from spikecast.ext.core.calibration import decision_steps
    from spikecast.ext.engine import trace

    x, y = digits.x_test[:60], digits.y_test[:60]
    auto = convert(digits.model, digits.x_train[:300], holdout=(x, y), calibration_steps=20, progress=False)
    choice = auto.meta["max_spikes_choice"]
    assert sorted(int(b) for b in choice["candidates"]) == sorted(AUTO_MAX_SPIKES)
    scores = {int(b): v for b, v in choice["candidates"].items()}
    assert choice["chosen"] == choose_max_spikes(scores) == auto.max_spikes
    assert f"spikes per step: up to {auto.max_spikes}" in auto.summary()
    # Each candidate's work is its own recommended point's, on the holdout run.
    for b, v in scores.items():
        net = convert(digits.model, digits.x_train[:300], holdout=(x, y), calibration_steps=20,
                      max_spikes=b, readout="spikes", progress=False)  # as scored
        assert "max_spikes_choice" not in net.meta and net.max_spikes == b
        point = net.meta["operating_point"]
        assert point["mean_steps"] == v["mean_steps"]
        steps = decision_steps(net.calibration.confidence, point["tau"], point["t_min"], point["t_max"])
        synops = trace(net, x, 20).synops[steps - 1, np.arange(len(x))]
        assert v["mean_synops"] == pytest.approx(synops.mean())
        neurons = sum(ly.n_neurons for ly in net.layers if ly.kind != "maxpool")
        assert v["mean_work"] == pytest.approx(synops.mean() + steps.mean() * neurons)
    # Without a holdout set there is nothing to choose on: one spike per step.
    assert convert(digits.model, digits.x_train[:300], progress=False).max_spikes == 1


def test_choose_evidence_steps_picks_the_earliest_and_ties_to_the_rate_rule() -> None:
    from spikecast.converters.conversion import choose_evidence_steps

    def sc(steps: float) -> dict[str, float]:
        return {"mean_steps": steps}

    assert choose_evidence_steps({0.0: sc(90), 20.0: sc(60), 50.0: sc(61)}) == 20.0
    assert choose_evidence_steps({0.0: sc(5), 20.0: sc(5), 50.0: sc(5)}) == 0.0  # a tie: the rate rule
    assert choose_evidence_steps({20.0: sc(7), 50.0: sc(7)}) == 50.0
    with pytest.raises(ValueError, match="no exit signal"):
        choose_evidence_steps({})


def test_exit_signal_by_default_is_chosen_on_the_holdout(digits, tmp_path):
    from spikecast.converters.conversion import AUTO_EVIDENCE_STEPS

    x, y = digits.x_test[:60], digits.y_test[:60]
    plain = convert(digits.model, digits.x_train[:300], progress=False)
    assert plain.evidence_steps == 0.0 and "exit_signal_choice" not in plain.meta
    auto = convert(digits.model, digits.x_train[:300], percentile=99.9, holdout=(x, y), calibration_steps=20,
                   progress=False)
    choice = auto.meta["exit_signal_choice"]
    assert len(choice["candidates"]) == len(AUTO_EVIDENCE_STEPS) and choice["chosen"] == auto.exit_signal
    best = min(v["mean_steps"] for v in choice["candidates"].values())
    assert auto.meta["operating_point"]["mean_steps"] == best
    # Each candidate's score is what an explicit conversion with that signal recommends,
    # and its table is what the engine computes under that rule.
    # (With the read-out and burst size the auto conversion chose: it scored the signals
    # under them.)
    for e in AUTO_EVIDENCE_STEPS:
        net = convert(digits.model, digits.x_train[:300], percentile=99.9, evidence_steps=e, holdout=(x, y),
                      calibration_steps=20, readout=auto.readout, max_spikes=auto.max_spikes, progress=False)
        name = "rate" if e == 0 else f"evidence/{e:g}"
        assert net.exit_signal == name and "exit_signal_choice" not in net.meta
        assert net.meta["operating_point"]["mean_steps"] == choice["candidates"][name]["mean_steps"]
        np.testing.assert_allclose(net.calibration.confidence, engine_trace(net, x, 20).confidence, rtol=1e-6)
    back = load_network(auto.save(tmp_path / "auto.scn"))
    assert back.evidence_steps == auto.evidence_steps and back.meta["exit_signal_choice"] == choice


def test_burst_conversion_divides_hidden_lambdas_and_keeps_the_ann(digits):
    x = digits.x_test[:200]
    plain = convert(digits.model, digits.x_train[:500], progress=False)
    burst = convert(digits.model, digits.x_train[:500], max_spikes=4, progress=False)
    assert burst.max_spikes == 4 and burst.meta["max_spikes"] == 4 and plain.max_spikes == 1
    for a, b in zip(plain.layers[:-1], burst.layers[:-1], strict=True):
        assert b.lam == pytest.approx(a.lam / 4)
    assert burst.layers[-1].lam == plain.layers[-1].lam
    # The same ANN underneath: only the spike code changes.
    np.testing.assert_allclose(ann_logits(burst, x), ann_logits(plain, x), rtol=1e-4, atol=1e-4)
    # Finer resolution: closer to the ANN after a few steps (3: by 4-6 both agree on
    # 99.5-100% of these inputs), with bursts on the way.
    want = ann_logits(plain, x).argmax(1)
    r_plain = simulate(plain, x, 6)
    r_burst = simulate(burst, x, 6, record_spikes=True)
    agree = [float((r.logits[2].argmax(1) == want).mean()) for r in (r_plain, r_burst)]
    assert agree[1] > agree[0]
    assert max(int(s.max()) for s in r_burst.spikes[:-1] if s.size) > 1
    with pytest.raises(ValueError, match="max_spikes"):
        convert(digits.model, digits.x_train[:50], max_spikes=2, reset="zero", progress=False)


def test_max_pools_pass_the_max_count_by_default(digits):
    x = digits.x_test[:200]
    count = convert(digits.model, digits.x_train[:500], progress=False)
    gated = convert(digits.model, digits.x_train[:500], max_pool="gated", progress=False)
    assert count.max_pool == "count" and gated.max_pool == "gated"
    # Only the pool's spike rule differs: the same ANN, the same λs.
    assert [a.lam for a in count.layers] == [b.lam for b in gated.layers]
    want = ann_logits(count, x).argmax(1)
    agree = {
        n.max_pool: float((simulate(n, x, 4).logits[-1].argmax(1) == want).mean()) for n in (count, gated)
    }
    assert agree["count"] >= agree["gated"] >= 0.9
    with pytest.raises(ValueError, match="max_pool"):
        convert(digits.model, digits.x_train[:50], max_pool="or", progress=False)
    # A network without a max-pool records the default mode, so its file is unchanged.
    no_pool = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    assert convert(no_pool, digits.x_train[:50], progress=False).max_pool == "gated"


def test_choose_readout_compares_at_equal_accuracy() -> None:
    from spikecast.converters.conversion import choose_readout

    def sc(steps: float | None) -> dict[str, float | None]:
        return {"plateau_accuracy": 0.97, "equal_accuracy_steps": steps}

    assert choose_readout({"spikes": sc(60), "membrane": sc(49)}) == "membrane"
    assert choose_readout({"spikes": sc(60), "membrane": sc(None)}) == "spikes"  # never reaches it
    assert choose_readout({"spikes": sc(50), "membrane": sc(50)}) == "spikes"  # a tie
    with pytest.raises(ValueError, match="no read-out"):
        choose_readout({"membrane": sc(None)})


def test_event_networks_weigh_both_readouts_on_the_holdout(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 3))  # fmt: skip
    rng = np.random.default_rng(1)
    calib = rng.random((64, 2, 8, 8)).astype(np.float32)
    recs = [EventSteps.from_counts(rng.poisson(0.3, (14 + k, 2, 8, 8))) for k in range(8)]
    labels = rng.integers(0, 3, 8)
    kw = {"input_kind": "events", "holdout": (recs, labels), "calibration_steps": 15, "percentile": 99.9,
          "progress": False}
    auto = convert(model, calib, **kw)
    choice = auto.meta["readout_choice"]
    assert set(choice["candidates"]) == {"spikes", "membrane"} and choice["chosen"] == auto.readout
    # Each candidate's score is what an explicit conversion with that read-out recommends,
    # and its table is what the engine computes with it.
    for r in ("spikes", "membrane"):
        net = convert(model, calib, readout=r, **kw)
        assert net.readout == r and "readout_choice" not in net.meta
        assert net.meta["operating_point"]["mean_steps"] == choice["candidates"][r]["mean_steps"]
        cal = Calibration(net.calibration)
        point = cal.choose(choice["target_accuracy"], 15)
        steps = choice["candidates"][r]["equal_accuracy_steps"]
        assert steps == (None if point is None else cal.stats(point.tau, point.t_min, 15).mean_steps)
        np.testing.assert_array_equal(net.calibration.correct, engine_trace(net, recs, 15).correct(labels))
    back = load_network(auto.save(tmp_path / "auto.scn"))
    assert back.readout == auto.readout and back.meta["readout_choice"] == choice
    assert f"read-out: {auto.readout} (chosen on the holdout table of spikes, membrane" in back.summary()
    # Without a holdout set, the spike read-out unless asked; frames weigh both too.
    assert convert(model, calib, input_kind="events", progress=False).readout == "spikes"
    assert convert(model, calib, readout="membrane", progress=False).readout == "membrane"
    frames = convert(model, calib, holdout=(calib[:20], rng.integers(0, 3, 20)), calibration_steps=10,
                     max_spikes=1, bias_steps=0, percentile=99.9, progress=False)
    assert set(frames.meta["readout_choice"]["candidates"]) == {"spikes", "membrane"}
    # A network the membrane read-out cannot read keeps the spike read-out, with no choice.
    conv_out = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 6))
    plain = convert(conv_out, calib, **kw)
    assert plain.readout == "spikes" and "readout_choice" not in plain.meta


def test_membrane_readout_is_refused_for_a_conv_output():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 6))
    calib = np.random.default_rng(2).random((16, 2, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="linear output layer"):
        convert(model, calib, readout="membrane", progress=False)
    with pytest.raises(ValueError, match="readout must be one of"):
        convert(model, calib, readout="voltage", progress=False)
