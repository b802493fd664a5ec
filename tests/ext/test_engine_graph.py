"""Torchvision-shaped networks, converted, then run spike-exact on the engine against the
reference simulator.

torchvision itself is not a dependency (and its wheels pin a torch), so the models are
written out here with torchvision's structure at reduced width, on 32x32 inputs:
vgg11_bn (conv-BN-ReLU, max-pools, AdaptiveAvgPool2d(7) of a 1x1 map, a dropout
classifier), resnet18 (residual sums with identity and projection skips, a padded
max-pool) and mobilenet_v2's first stages (ReLU6, depthwise 3x3, linear bottlenecks and
their residual sums, global average pooling). After conversion
the weights are rounded to multiples of 2^-8 (and frames too), so every sum is exact in
float32 and the engine must reproduce the reference bit for bit, as in test_engine.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'convert' extra)")

from spikecast.converters import convert  # noqa: E402
from spikecast.converters.conversion import ann_logits  # noqa: E402
from spikecast.converters.reference import simulate  # noqa: E402
from spikecast.ext import Engine  # noqa: E402
from spikecast.ext.core.network import Network  # noqa: E402

nn = torch.nn
T = 12
Q = 1.0 / 256.0


def vgg11_bn(div: int = 16, num_classes: int = 10) -> nn.Module:
    """torchvision.models.vgg11_bn with every width divided by ``div``."""
    cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out = int(v) // div
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out

    class VGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            hidden = 4096 // div
            self.classifier = nn.Sequential(
                nn.Linear(c * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return self.classifier(x)

    return VGG()


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def resnet18(div: int = 8, num_classes: int = 10) -> nn.Module:
    """torchvision.models.resnet18 with every width divided by ``div``: 7x7/2 stem, a
    3x3/2 max-pool with padding 1, four stages of two BasicBlocks (identity skips, and
    1x1 stride-2 projections where the shape changes), global average pooling, fc."""
    w = [64 // div, 128 // div, 256 // div, 512 // div]

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w[0])
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages, c = [], w[0]
            for i, cout in enumerate(w):
                stride = 1 if i == 0 else 2
                stages.append(nn.Sequential(BasicBlock(c, cout, stride), BasicBlock(cout, cout, 1)))
                c = cout
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(c, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


class InvertedResidual(nn.Module):
    """torchvision.models.mobilenetv2.InvertedResidual: expand 1x1 (ReLU6), depthwise 3x3
    (ReLU6), project 1x1 with no activation (the linear bottleneck), plus x when the
    shape allows."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += _cbr(inp, hidden, 1)
        layers += [*_cbr(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(oup)]  # fmt: skip
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


def _cbr(cin: int, cout: int, k: int = 3, s: int = 1, g: int = 1) -> list[nn.Module]:
    """Conv2dNormActivation with ReLU6."""
    return [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=g, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True)]  # fmt: skip


#: torchvision's (t, c, n, s) for mobilenet_v2; the test uses the first four stages.
MOBILENET_V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip


def mobilenet_v2(div: int = 4, num_classes: int = 10, n_stages: int = 4) -> nn.Module:
    """torchvision.models.mobilenet_v2 with widths divided by ``div`` and its first
    ``n_stages`` stages: residual sums of linear bottlenecks, which have no activation, so
    the residual stream is not a spiking layer; the 1x1 convs that read it compose its
    weight sets into their own."""
    settings = MOBILENET_V2_SETTINGS[:n_stages]
    c = 32 // div
    feats: list[nn.Module] = [*_cbr(3, c, 3, 2)]
    for t, ch, n, s in settings:
        for i in range(n):
            feats.append(InvertedResidual(c, ch // div, s if i == 0 else 1, t))
            c = ch // div
    feats += _cbr(c, 1280 // div, 1)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280 // div, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


def _randomise_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.6)
                m.bias.uniform_(0.0, 0.3)  # keep units alive through the depth
    return model.eval()


def _quantised(net: Network) -> Network:
    """The network with weights and biases rounded to multiples of 2^-8."""

    def rnd(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (np.round(np.asarray(a) / Q) * Q).astype(np.float32)

    return net.with_(layers=tuple(replace(ly, weight=rnd(ly.weight), bias=rnd(ly.bias)) for ly in net.layers))


def _frames(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 3, 32, 32)) * Q).astype(np.float32)


def _convert_and_compare(model: nn.Module, n_calib: int, n_samples: int) -> Network:
    """Convert ``model`` (checking the normalised ANN against it), round its weights to
    2^-8 and check the engine against the reference spike for spike; return the network."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calib = _frames(n_calib)
        net = convert(model, calib, progress=False)
        with torch.no_grad():
            ref_logits = model(torch.from_numpy(calib)).numpy()
        np.testing.assert_allclose(ann_logits(net, calib), ref_logits, atol=1e-3, rtol=1e-3)
        net = _quantised(net)
        x = _frames(n_samples, seed=1)
        ref = simulate(net, x, T, record_spikes=True)
    finally:
        torch.set_num_threads(threads)
    assert ref.spikes is not None
    eng = Engine(net)
    spiking = [i for i, ly in enumerate(net.layers) if ly.spiking]
    for b in range(len(x)):
        eng.reset()
        eng.set_frame(x[b])
        for t in range(T):
            eng.step()
            for lay in spiking:
                want = ref.spikes[lay][t, b].reshape(-1)
                assert np.array_equal(eng.layer_spikes(lay), want), f"sample {b} step {t + 1} layer {lay}"
            np.testing.assert_array_equal(eng.logits, ref.logits[t, b])
        np.testing.assert_array_equal(eng.synops, ref.synops[b].astype(np.int64))
    # Not trivial: every spiking layer spikes, but not always.
    for lay in spiking:
        assert 0 < ref.spikes[lay].mean() < 1, (lay, ref.spikes[lay].mean())
    return net


@pytest.mark.parametrize(
    "build", [vgg11_bn, resnet18, mobilenet_v2], ids=["vgg11_bn", "resnet18", "mobilenet_v2"]
)
def test_torchvision_shaped_nets_convert_and_run_spike_exact(build) -> None:
    torch.manual_seed(1)
    net = _convert_and_compare(_randomise_bn(build()), n_calib=32, n_samples=2)
    if build is resnet18:  # 8 residual sums: 5 identity skips, 3 projections
        sums = [ly for ly in net.layers if ly.extra]
        assert len(sums) == 8 and sum(ly.extra[0].stride == (2, 2) for ly in sums) == 3
    if build is mobilenet_v2:
        assert sum(ly.groups > 1 for ly in net.layers) == 10  # the depthwise convs
        assert sum(len(ly.extra) for ly in net.layers) > 0  # residual streams composed in


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [lambda: resnet18(div=1, num_classes=1000), lambda: mobilenet_v2(div=1, num_classes=1000, n_stages=7)],
    ids=["resnet18_full", "mobilenet_v2_full"],
)
def test_full_width_torchvision_nets_run_spike_exact(build) -> None:
    """torchvision's full widths and 1000 classes (mobilenet_v2: all seven stages), one
    32x32 sample, a few seconds. vgg11_bn's 25088x4096 classifier (800 MB in float64)
    is left to the reduced-width test."""
    torch.manual_seed(2)
    _convert_and_compare(_randomise_bn(build()), n_calib=8, n_samples=1)
