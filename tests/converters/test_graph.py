"""Graph coverage of the converter: grouped and depthwise convs, clipped activations,
pooling and flatten forms. Each new op is checked against the model (folding is exact),
then converted and simulated against the ANN on the digits data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spikecast.converters import convert
from spikecast.converters.conversion import ann_logits, build_drafts, run_drafts
from spikecast.converters.parse import trace
from spikecast.converters.reference import simulate
from torch import nn

T = 120
N_TEST = 300  # of the 497 test digits: enough to see a 2-point gap, cheap on a shared box


@pytest.fixture(scope="module")
def digits():
    """The digits split of conftest.py, without training its model."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]

    class Split:
        x_train, y_train = x[:1300], y[:1300]
        x_test, y_test = x[1300 : 1300 + N_TEST], y[1300 : 1300 + N_TEST]

    return Split


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared box
    yield
    torch.set_num_threads(threads)


def train(model: nn.Module, digits, epochs: int = 6) -> nn.Module:
    """Seeded training on the digits training split; a few seconds for these small nets."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    gen = torch.Generator().manual_seed(0)
    for _epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def accuracies(model: nn.Module, digits, n_steps: int = T) -> tuple[float, float]:
    """(ANN, SNN after n_steps) test accuracy of ``model`` converted on the training split."""
    net = convert(model, digits.x_train, progress=False)
    with torch.no_grad():
        ann = float((model(torch.from_numpy(digits.x_test)).argmax(1).numpy() == digits.y_test).mean())
    snn = float(simulate(net, digits.x_test, n_steps).accuracy_by_step(digits.y_test)[-1])
    return ann, snn


def randomise_bn(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def assert_exact(model: nn.Module, x: torch.Tensor) -> None:
    """The folded drafts and the normalised network compute what the model computes."""
    drafts = build_drafts(trace(model, x[:1]))
    h = run_drafts(drafts, x.double())[-1]
    with torch.no_grad():
        ref = model(x).double()
    assert float((h - ref).abs().max()) < 1e-5
    net = convert(model, x.numpy(), progress=False)
    want = ref.reshape(len(x), -1).numpy()
    np.testing.assert_allclose(ann_logits(net, x.numpy()), want, atol=1e-4, rtol=1e-4)


# -- grouped and depthwise convolution ----------------------------------------------


def separable(c: int = 16) -> nn.Sequential:
    """MobileNet-style: a grouped stem, then depthwise 3x3 (stride 2) + pointwise 1x1."""
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=4), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * c * 4, 10),
    )  # fmt: skip


def test_grouped_and_depthwise_convs_fold_exactly() -> None:
    torch.manual_seed(3)
    model = randomise_bn(separable())
    x = torch.rand(16, 1, 8, 8)
    assert_exact(model, x)
    net = convert(model, x.numpy(), progress=False)
    assert [ly.groups for ly in net.layers] == [1, 16, 1, 4, 1]
    assert net.layers[1].weight.shape == (16, 1, 3, 3)  # type: ignore[union-attr]


def test_depthwise_separable_net_converts_on_digits(digits) -> None:
    ann, snn = accuracies(train(separable(), digits), digits)
    assert ann > 0.93
    assert snn >= ann - 0.02, (snn, ann)


# -- clipped activations -------------------------------------------------------------


class Clips(nn.Module):
    """Every spelling of a ReLU clipped at a, one per layer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.a1 = nn.ReLU6()
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.a2 = nn.Hardtanh(0.0, 0.5)
        self.c3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.c4 = nn.Conv2d(8, 8, 1)
        self.c5 = nn.Conv2d(8, 8, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a2(self.c2(self.a1(self.c1(x))))
        x = torch.clamp(self.c3(x), 0, 0.4)
        x = torch.nn.functional.hardtanh(self.c4(x), 0.0, 0.3)
        x = self.pool(self.c5(x).relu()).clamp(min=0.0, max=0.2)  # commutes with max-pool
        x = torch.nn.functional.relu6(self.fc1(x.flatten(1)))
        return self.fc2(x)


def test_clipped_activations_parse_and_fold_exactly() -> None:
    torch.manual_seed(4)
    model = Clips().eval()
    x = torch.rand(32, 1, 8, 8) * 4
    assert_exact(model, x)
    ops = trace(model, x[:1])
    assert [op.clip for op in ops if op.kind == "relu"] == [6.0, 0.5, 0.4, 0.3, None, 0.2, 6.0]
    net = convert(model, x.numpy(), progress=False)
    clips = net.meta["clipped_activations"]
    assert clips == {"0": 6.0, "1": 0.5, "2": 0.4, "3": 0.3, "4": 0.2, "6": 6.0}
    for k, a in clips.items():
        assert 0 < net.layers[int(k)].lam <= a
    # Activations that pile up at a small clip put the percentile on it: λ = a exactly.
    assert net.layers[1].lam == 0.5 and net.layers[2].lam == 0.4


@pytest.mark.parametrize(
    ("act", "match"),
    [
        (nn.Hardtanh(), "only a clip from 0"),
        (nn.Hardtanh(-0.5, 2.0), "only a clip from 0"),
    ],
)
def test_clips_not_from_zero_are_refused(act: nn.Module, match: str) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), act, nn.Flatten(), nn.Linear(8, 2)).eval()
    with pytest.raises(Exception, match=rf"node '1' \(call_module Hardtanh\).*{match}"):
        convert(model, np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32), progress=False)


class ClampMin(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1.0, 1.0)


def test_clamp_from_nonzero_is_refused_naming_the_node() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), ClampMin(), nn.Flatten(), nn.Linear(8, 2)).eval()
    with pytest.raises(Exception, match=r"Tensor.clamp.*only a clip from 0"):
        convert(model, np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32), progress=False)


def relu6_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU6(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


def test_relu6_net_rates_track_the_clipped_activation_on_digits(digits) -> None:
    model = train(relu6_net(), digits)
    net = convert(model, digits.x_train, progress=False)
    x = digits.x_test[:100]
    res = simulate(net, x, T)
    h = torch.from_numpy(x).double()
    drafts = build_drafts(trace(model, torch.from_numpy(x[:1])))
    assert [d.clip for d in drafts] == [6.0, None, 6.0, None]
    for i, (draft, layer) in enumerate(zip(drafts, net.layers, strict=True)):
        h = draft.forward(h)  # min(relu, 6) for the clipped layers
        if not layer.spiking or layer.kind == "maxpool":
            continue
        rate_lam = res.spike_counts[i].reshape(len(x), -1) / T * layer.lam
        r = np.corrcoef(rate_lam.ravel(), h.reshape(len(x), -1).numpy().ravel())[0, 1]
        assert r >= 0.95, (layer.name, r)
    ann, snn = accuracies(model, digits)
    assert ann > 0.93
    assert snn >= ann - 0.02, (snn, ann)


# -- pooling and flatten forms -------------------------------------------------------


class PoolNet(nn.Module):
    """conv -> ReLU -> ``pool`` -> ``head``: the pooling under test, then the layer it folds into."""

    def __init__(self, pool: nn.Module, head: nn.Module, flat: str = "none") -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.pool, self.head, self.flat = pool, head, flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.c1(x)))
        if self.flat == "flatten":
            x = torch.flatten(x, 1)
        elif self.flat == "view":
            x = x.view(x.size(0), -1)
        elif self.flat == "reshape":
            x = x.reshape(x.shape[0], -1)
        elif self.flat == "torch.reshape":
            x = torch.reshape(x, (x.shape[0], -1))
        elif self.flat == "method":
            x = x.flatten(1)
        return self.head(x)


class Mean(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "method":
            return x.mean((2, 3))
        return torch.mean(x, dim=[-2, -1], keepdim=True)


def _linear_head(n: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 3))


def _conv_head(c: int = 4, k: int = 3, p: int = 1) -> nn.Module:
    return nn.Conv2d(c, 5, k, padding=p)


POOLS = {
    # general AvgPool2d into a Linear: always exact (W·P)
    "k3s2p1_linear": (nn.AvgPool2d(3, 2, 1), _linear_head(4 * 16), "none"),
    "k3s2p1_exclude_pad_ceil_linear": (
        nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), _linear_head(4 * 25), "none",
    ),
    "k2s1_divisor_linear": (nn.AvgPool2d(2, 1, divisor_override=3), _linear_head(4 * 49), "flatten"),
    # into a conv where exact
    "k2s2_conv_p1": (nn.AvgPool2d(2), _conv_head(), "none"),
    "k2s1_conv_p0": (nn.AvgPool2d(2, 1), _conv_head(p=0), "none"),
    "k3s2p1_conv_p0": (nn.AvgPool2d(3, 2, 1), _conv_head(p=0), "none"),
    "k2s2p1_conv_p1": (nn.AvgPool2d(2, 2, 1), _conv_head(), "none"),
    # global average pooling and flatten forms
    "adaptive1_view": (nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3), "view"),
    "adaptive2_reshape": (nn.AdaptiveAvgPool2d(2), nn.Linear(16, 3), "reshape"),
    "adaptive1_conv1x1": (nn.AdaptiveAvgPool2d(1), _conv_head(k=1, p=0), "none"),
    "adaptive3_uneven_linear": (nn.AdaptiveAvgPool2d(3), nn.Linear(36, 3), "flatten"),
    "adaptive_upsample_linear": (nn.AdaptiveAvgPool2d((11, 9)), nn.Linear(4 * 99, 3), "view"),
    "mean_method": (Mean("method"), nn.Linear(4, 3), "none"),
    "torch_mean_keepdim": (Mean("function"), nn.Linear(4, 3), "torch.reshape"),
    "flatten_method": (nn.AvgPool2d(2), nn.Linear(64, 3), "method"),
}


@pytest.mark.parametrize("case", sorted(POOLS))
def test_pooling_and_flatten_forms_fold_exactly(case: str) -> None:
    pool, head, flat = POOLS[case]
    torch.manual_seed(5)
    model = PoolNet(pool, head, flat).eval()
    assert_exact(model, torch.rand(8, 2, 8, 8))


def test_gap_net_converts_and_runs_on_the_engine(digits) -> None:
    """A general AvgPool2d folded into a conv and global average pooling into the classifier;
    the engine agrees with the reference on the class (float weights: not bit-exact)."""
    from spikecast.ext import CompiledNetwork, run_batch

    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(3, 2, 1),
        nn.Conv2d(16, 32, 3, padding=0), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    model = train(model, digits, epochs=10)
    ann, snn = accuracies(model, digits)
    assert ann > 0.9
    assert snn >= ann - 0.02, (snn, ann)
    net = convert(model, digits.x_train, progress=False)
    ref = simulate(net, digits.x_test[:100], 40)
    res = run_batch(CompiledNetwork(net), digits.x_test[:100], 40, n_threads=1)
    assert float((res.class_index == ref.logits[-1].argmax(1)).mean()) >= 0.99


@pytest.mark.parametrize(
    ("pool", "head", "match"),
    [
        (nn.AvgPool2d(3, 1), _conv_head(), "cannot be folded into conv"),
        (nn.AdaptiveAvgPool2d(3), _conv_head(), "uneven windows"),
        (Mean("bad"), nn.Linear(4, 3), None),
    ],
)
def test_inexact_pools_are_refused(pool: nn.Module, head: nn.Module, match: str | None) -> None:
    from spikecast.converters import ConversionError

    if match is None:  # a mean over channels is not a pool

        class ChannelMean(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x.mean(1)

        pool, head, match = ChannelMean(), nn.Linear(64, 3), r"call_method mean.*spatial dims"
    model = PoolNet(pool, head, "flatten" if isinstance(head, nn.Linear) else "none").eval()
    with pytest.raises(ConversionError, match=match):
        convert(model, np.random.default_rng(0).random((4, 2, 8, 8), dtype=np.float32), progress=False)


# -- residual sums and concatenation -------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x)),
    the skip an identity or a 1x1-conv + BN projection."""

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


def resnet(width: int = 16) -> nn.Module:
    """A small ResNet: stem, an identity-skip block, a projection-skip block (stride 2),
    global average pooling, a classifier."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10),
    )  # fmt: skip


class DenseNet(nn.Module):
    """DenseNet-style (post-activation): each conv reads the concatenation of all earlier
    feature maps; a max-pool of a concatenation; a classifier over a concatenation."""

    def __init__(self, g: int = 8) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, g, 3, padding=1)
        self.c2 = nn.Conv2d(g, g, 3, padding=1)
        self.c3 = nn.Conv2d(2 * g, g, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(g)
        self.pool = nn.MaxPool2d(2)
        self.c4 = nn.Conv2d(3 * g, 2 * g, 1)
        self.fc = nn.Linear(2 * g * 16 + 3 * g * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        c = torch.relu(self.bn3(self.c3(torch.cat([a, b], dim=1))))
        p = self.pool(torch.cat((a, b, c), 1))
        d = torch.relu(self.c4(p))
        return self.fc(torch.cat([d, p], 1).flatten(1))


def test_residual_blocks_fold_exactly() -> None:
    torch.manual_seed(6)
    model = randomise_bn(resnet(8))
    x = torch.rand(8, 1, 8, 8)
    assert_exact(model, x)
    net = convert(model, x.numpy(), progress=False)
    kinds = [(ly.kind, ly.inputs, [e.kernel for e in ly.extra]) for ly in net.layers]
    assert kinds == [
        ("conv", (), []),
        ("conv", (), []),
        ("conv", (1, 0), [(1, 1)]),  # conv2 + the identity skip from the stem
        ("conv", (), []),
        ("conv", (3, 2), [(1, 1)]),  # conv2 + the 1x1 stride-2 projection of the block input
        ("linear", (), []),
    ]
    # λ: the skip arrives on the destination's scale, an identity weighing λ_src / λ_dst.
    skip = net.layers[2].extra[0].weight
    ratio = net.layers[0].lam / net.layers[2].lam
    np.testing.assert_allclose(skip[:, :, 0, 0], np.eye(8) * ratio, rtol=1e-6)
    assert net.layers[4].extra[0].stride == (2, 2)


def test_concatenations_fold_exactly() -> None:
    torch.manual_seed(7)
    model = randomise_bn(DenseNet())
    x = torch.rand(8, 1, 8, 8)
    assert_exact(model, x)
    net = convert(model, x.numpy(), progress=False)
    assert [ly.inputs for ly in net.layers] == [(), (), (0, 1), (0,), (1,), (2,), (3, 4, 5), (6, 3, 4, 5)]
    assert [ly.kind for ly in net.layers[3:6]] == ["maxpool"] * 3  # the pool of a concatenation, per part


@pytest.mark.parametrize("build", [resnet, DenseNet], ids=["resnet", "densenet"])
def test_residual_and_dense_nets_convert_on_digits(build, digits) -> None:
    ann, snn = accuracies(train(build(), digits), digits)
    assert ann > 0.93
    assert snn >= ann - 0.02, (snn, ann)


class Unconvertible(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.c1 = nn.Conv2d(1, 2, 3, padding=1)
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(32, 2)
        self.fc64 = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        fc = self.fc64
        if self.how == "cat_dim2":
            y = torch.cat([a, a], dim=2)
        elif self.how == "cat_affine":
            y = torch.cat([a, self.c2(a)], dim=1)
        elif self.how == "scaled_add":
            y, fc = torch.add(a, self.c2(a), alpha=2), self.fc
        else:
            y, fc = a + 1.0, self.fc
        return fc(torch.relu(y).flatten(1))


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("cat_dim2", r"node 'cat' \(call_function cat\).*only a concatenation of channels"),
        ("cat_affine", r"node 'cat': concatenation of 'c2', a layer without ReLU"),
        ("scaled_add", r"node 'add' \(call_function add\).*no alpha"),
        ("constant", r"node 'add' \(call_function add\).*no constants"),
    ],
)
def test_unsupported_joins_are_refused_with_the_node_and_fix(how: str, match: str) -> None:
    from spikecast.converters import ConversionError

    model = Unconvertible(how).eval()
    with pytest.raises(ConversionError, match=match):
        convert(model, np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32), progress=False)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1, depthwise 3x3 (ReLU6), project 1x1 without an
    activation (a linear bottleneck), plus x when the shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, t: int) -> None:
        super().__init__()
        hid = inp * t
        self.res = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(),
            nn.Conv2d(hid, oup, 1, bias=False), nn.BatchNorm2d(oup),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.res else self.conv(x)


def mobilenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        InvertedResidual(16, 16, 1, 2), InvertedResidual(16, 16, 1, 2), InvertedResidual(16, 24, 2, 2),
        InvertedResidual(24, 24, 1, 2),
        nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def test_linear_bottlenecks_compose_exactly() -> None:
    """The residual stream (sums of projections, never activated) is no layer: each 1x1
    conv that reads it gets one weight set per spiking layer that feeds the stream."""
    torch.manual_seed(8)
    model = randomise_bn(mobilenet())
    x = torch.rand(8, 1, 8, 8)
    assert_exact(model, x)
    net = convert(model, x.numpy(), progress=False)
    # Block 2's expansion reads block 1's depthwise layer (through its projection) and
    # the stem (the identity skip): two inputs; block 3's reads three.
    n_inputs = [len(ly.extra) + 1 for ly in net.layers if ly.kind == "conv" and ly.kernel == (1, 1)]
    assert n_inputs[:4] == [1, 2, 3, 1]


def test_mobilenet_style_net_converts_on_digits(digits) -> None:
    ann, snn = accuracies(train(mobilenet(), digits), digits)
    assert ann > 0.9
    assert snn >= ann - 0.03, (snn, ann)


class TwoReaders(nn.Module):
    """One conv output read twice (through a BatchNorm and directly): folding the BN
    into one reader must not change the other."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(8 * 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(torch.relu(self.c1(x)))
        return self.fc(torch.cat([torch.relu(self.bn(y)), torch.relu(y)], 1).flatten(1))


def test_a_value_with_two_readers_folds_exactly() -> None:
    torch.manual_seed(9)
    assert_exact(randomise_bn(TwoReaders()), torch.rand(8, 1, 8, 8))
