"""Layer-wise bias calibration: rates move to the ANN's, the ANN stays the model's, the
engine and the reference still agree, and convert() applies it where documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spikecast.converters import convert
from spikecast.converters.bias import META_KEY, ann_activations, calibrate_biases, spike_rates, uncalibrated
from spikecast.converters.conversion import AUTO_BIAS_STEPS, ann_logits, normalised_clips
from spikecast.converters.reference import simulate
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.network import Network
from spikecast.ext.engine import Engine
from spikecast.ext.engine import trace as engine_trace

T = 16


@pytest.fixture(scope="module")
def maxnorm(digits) -> Network:
    """λ at max-norm: its layers fire short of their ANN activations at small T."""
    return convert(digits.model, digits.x_train[:300], percentile=100.0, progress=False)


@pytest.fixture(scope="module")
def calibrated(digits, maxnorm) -> Network:
    return calibrate_biases(maxnorm, digits.x_train[300:428], T)


def channel_gaps(net: Network, target: Network, x: np.ndarray, layer: int) -> np.ndarray:
    """Per channel: mean over frames and positions of (ANN activation - θ · rate)."""
    a = ann_activations(target, torch.from_numpy(x), normalised_clips(target), cap=True)[layer].numpy()
    gap = a - net.layers[layer].threshold * spike_rates(net, x, T, layer)
    return gap.mean(axis=(0, 2, 3)) if gap.ndim == 4 else gap.mean(axis=0)


def spiking(net: Network) -> list[int]:
    return [j for j, ly in enumerate(net.layers) if ly.spiking and ly.kind != "maxpool"]


def test_each_channels_rate_moves_to_its_ann_activation(digits, maxnorm, calibrated):
    x = digits.x_test[:128]  # frames the calibration never saw
    for j in spiking(maxnorm):
        before = np.abs(channel_gaps(maxnorm, maxnorm, x, j)).mean()
        after = np.abs(channel_gaps(calibrated, maxnorm, x, j)).mean()
        assert after < 0.7 * before, (j, before, after)
    shifts = calibrated.meta[META_KEY]["shift"]
    assert sorted(int(j) for j in shifts) == spiking(maxnorm)
    for j, shift in shifts.items():  # the bias moved by exactly the recorded shift (float32)
        new, old = calibrated.layers[int(j)].bias, maxnorm.layers[int(j)].bias
        moved = np.asarray(new, np.float64) - np.asarray(old)
        np.testing.assert_allclose(moved, shift, atol=1e-6)
    assert calibrated.meta[META_KEY]["steps"] == T and calibrated.meta[META_KEY]["frames"] == 128


def test_at_t_steps_the_calibrated_logits_are_closer_to_the_anns(digits, maxnorm, calibrated):
    x = digits.x_test
    ann = ann_logits(maxnorm, x)
    plain = np.abs(simulate(maxnorm, x, T).logits[-1] - ann).mean()
    better = np.abs(simulate(calibrated, x, T).logits[-1] - ann).mean()
    assert better < 0.8 * plain, (plain, better)


def test_the_ann_is_still_the_one_the_model_came_from(digits, maxnorm, calibrated):
    with torch.no_grad():
        ref = digits.model(torch.from_numpy(digits.x_test)).numpy()
    np.testing.assert_allclose(ann_logits(calibrated, digits.x_test), ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(uncalibrated(calibrated).layers, maxnorm.layers, strict=True):
        if a.bias is not None:
            np.testing.assert_allclose(a.bias, b.bias, atol=1e-6)
    assert uncalibrated(maxnorm) is maxnorm


def test_engine_and_reference_agree_spike_for_spike(digits, calibrated):
    x = digits.x_test[:4]
    ref = simulate(calibrated, x, 30, record_spikes=True)
    assert ref.spikes is not None
    eng = Engine(calibrated)
    for b in range(len(x)):
        eng.reset()
        eng.set_frame(x[b])
        for t in range(30):
            eng.step(1)
            for j in spiking(calibrated):
                np.testing.assert_array_equal(eng.layer_spikes(j), ref.spikes[j][t, b].reshape(-1))
            # Spikes are exact; the output layer's float sums may differ in their last bit
            # (its fan-in is summed in another order: the uncalibrated network does the same).
            np.testing.assert_allclose(eng.logits, ref.logits[t, b], rtol=1e-5, atol=1e-5)


def test_the_calibration_is_in_the_file_and_its_hash(tmp_path, maxnorm, calibrated):
    path = tmp_path / "m.scn"
    calibrated.save(path)
    back = Network.load(path)
    assert back.meta[META_KEY] == calibrated.meta[META_KEY]
    assert back.sha256 == calibrated.sha256 != maxnorm.sha256


def test_refusals(digits, maxnorm, calibrated):
    with pytest.raises(ParameterError, match="calibrated already"):
        calibrate_biases(calibrated, digits.x_train[:8], T)
    with pytest.raises(ParameterError, match="steps"):
        calibrate_biases(maxnorm, digits.x_train[:8], 0)
    with pytest.raises(ParameterError, match="frames"):
        calibrate_biases(maxnorm, digits.x_train[:8, 0], T)
    with pytest.raises(ParameterError, match="analog frames"):
        calibrate_biases(maxnorm.with_(input=maxnorm.input.__class__(
            kind="events", shape=maxnorm.input.shape, dt_us=1000)), digits.x_train[:8], T)  # fmt: skip
    with pytest.raises(ParameterError, match="bias_steps"):
        convert(digits.model, digits.x_train[:100], bias_steps=-1, progress=False)
    with pytest.raises(ParameterError, match="analog frames"):
        convert(digits.model, digits.x_train[:100], bias_steps=8, input_encoding="poisson", progress=False)


def test_convert_calibrates_frames_with_a_holdout_set_by_default(digits):
    x, y = digits.x_test[:60], digits.y_test[:60]
    options = {"calibration_steps": 20, "max_spikes": 1, "percentile": 99.9, "progress": False}
    auto = convert(digits.model, digits.x_train[:300], holdout=(x, y), **options)
    assert auto.meta[META_KEY]["steps"] == AUTO_BIAS_STEPS
    assert auto.meta[META_KEY]["frames"] == 300  # every calibration frame, up to BIAS_FRAMES
    off = convert(digits.model, digits.x_train[:300], holdout=(x, y), bias_steps=0, **options)
    assert META_KEY not in off.meta
    # The table and the operating point are the calibrated network's own.
    steps = engine_trace(auto, x, 20).class_index == y[None, :]
    np.testing.assert_array_equal(auto.calibration.correct, steps)
    # A plain conversion stays Rueckauer et al.'s; an explicit T applies without a holdout.
    assert META_KEY not in convert(digits.model, digits.x_train[:300], progress=False).meta
    fixed = convert(digits.model, digits.x_train[:300], bias_steps=8, progress=False)
    assert fixed.meta[META_KEY]["steps"] == 8


def test_the_threads_do_not_change_the_calibration(digits, maxnorm, calibrated):
    two = calibrate_biases(maxnorm, digits.x_train[300:428], T, n_threads=2)
    for a, b in zip(two.layers, calibrated.layers, strict=True):
        if a.bias is not None:
            np.testing.assert_array_equal(a.bias, b.bias)
    with pytest.raises(ParameterError, match="n_threads"):
        calibrate_biases(maxnorm, digits.x_train[:8], T, n_threads=0)


class _Residual(torch.nn.Module):
    """conv - conv + skip - linear: the second block reads two layers (an extra input)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c1 = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.c3 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c3(torch.relu(self.c2(h))) + h)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("case", ["chain", "residual"])
def test_spike_rates_are_the_reference_simulators(digits, maxnorm, case):
    """Each layer runs on the network cut after it (nothing later feeds back): its rates
    are exactly the whole network's, as the dense reference simulator counts them."""
    net = maxnorm if case == "chain" else convert(_Residual(), digits.x_train[:200], percentile=100.0,
                                                  progress=False)
    if case == "residual":
        assert any(ly.inputs for ly in net.layers)  # the skip is an extra input
    x = digits.x_test[:12]
    ref = simulate(net, x, T, record_spikes=True)
    assert ref.spikes is not None
    for j in spiking(net):
        want = ref.spikes[j].sum(axis=0).reshape(len(x), *net.layers[j].out_shape) / T
        for threads in (1, 3):
            np.testing.assert_array_equal(spike_rates(net, x, T, j, n_threads=threads), want)
