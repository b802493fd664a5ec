"""The engine on a real converted network (arbitrary float weights, not exact).

A small CNN trained on sklearn's digits and converted with the converter: the engine
must agree with the dense reference on the class of >= 99.9% of samples and on
SynOps within 0.1%.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'convert' extra)")
datasets = pytest.importorskip("sklearn.datasets", reason="needs scikit-learn (the 'dev' extra)")

from spikecast.converters import convert  # noqa: E402
from spikecast.converters.reference import simulate  # noqa: E402
from spikecast.ext import CompiledNetwork, run_batch  # noqa: E402

T = 40


def _digits_cnn() -> tuple[Any, np.ndarray, np.ndarray]:
    """Trains in seconds, seeded: conv-BN-ReLU, max-pool, conv-BN-ReLU, avg-pool, FC. A few
    epochs suffice: the check is engine against reference, not accuracy."""
    nn = torch.nn
    torch.manual_seed(0)
    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[:1300]), torch.from_numpy(y[:1300])
    gen = torch.Generator().manual_seed(0)
    for _epoch in range(4):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return model, x[:1300], x[1300:]


@pytest.fixture(scope="module")
def converted() -> tuple[object, np.ndarray]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared CI box
    try:
        model, x_train, x_test = _digits_cnn()
        return convert(model, x_train, progress=False), x_test
    finally:
        torch.set_num_threads(threads)


def test_converted_digits_agree_with_reference(converted: tuple[object, np.ndarray]) -> None:
    net, x = converted
    ref = simulate(net, x, T)  # type: ignore[arg-type]
    res = run_batch(CompiledNetwork(net), x, T, n_threads=2)  # type: ignore[arg-type]
    assert np.all(res.steps == T)
    assert len(np.unique(res.class_index)) >= 5  # a working classifier, not a constant
    agreement = float((res.class_index == ref.logits[-1].argmax(axis=1)).mean())
    assert agreement >= 0.999, agreement
    ref_syn = ref.synops.sum(axis=0)
    eng_syn = res.synops.sum(axis=0).astype(np.float64)
    assert ref_syn.sum() > 0
    np.testing.assert_allclose(eng_syn, ref_syn, rtol=1e-3)
    # The logits stay close too (float rounding only nudges single spikes).
    assert float(np.abs(res.logits - ref.logits[-1]).mean()) < 0.05
