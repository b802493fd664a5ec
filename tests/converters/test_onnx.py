"""ONNX in: ``spikecast convert --onnx`` (onnx2torch, then the same fx path as torch models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from spikecast.converters import convert
from spikecast.converters.onnx_io import import_onnx2torch, load_onnx
from spikecast.ext import CompiledNetwork, trace
from spikecast.ext.core.errors import ConversionError, ModelFileError, SpikecastError
from spikecast.ext.core.network import Network
from torch import nn

onnx = pytest.importorskip("onnx", reason="ONNX input needs the 'convert' extra")
try:
    import_onnx2torch()  # with a torchvision stand-in where torchvision cannot load
except SpikecastError:
    pytest.skip("ONNX input needs onnx2torch (the 'convert' extra)", allow_module_level=True)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 4),
    )
    bn = model[1]
    with torch.no_grad():  # non-trivial running statistics, so the fold matters
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
    return model.eval()


def calibration(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)


def export(model: nn.Module, path: Path) -> Path:
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    return path


def classes(net: Network, x: np.ndarray, steps: int = 32) -> np.ndarray:
    return trace(CompiledNetwork(net), list(x), steps).class_index[-1]


def test_exported_torch_model_converts_like_the_torch_model(tmp_path: Path) -> None:
    model = small_cnn()
    x = calibration()
    direct = convert(model, x, progress=False)
    via_onnx = convert(load_onnx(export(model, tmp_path / "m.onnx")), x, progress=False)
    assert [ly.kind for ly in via_onnx.layers] == [ly.kind for ly in direct.layers]
    for a, b in zip(direct.layers, via_onnx.layers, strict=True):
        assert a.in_shape == b.in_shape and a.out_shape == b.out_shape and a.kernel == b.kernel
        assert b.lam == pytest.approx(a.lam, rel=1e-4)
        if a.weight is not None:
            # torch's exporter folds BatchNorm in float32, spikecast in float64
            np.testing.assert_allclose(b.weight, a.weight, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(b.bias, a.bias, rtol=1e-4, atol=1e-5)
    agree = classes(direct, x[:32]) == classes(via_onnx, x[:32])
    assert agree.mean() >= 0.95


def helper_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv(2->3, k3, pad 1, stride 2) + Relu + Flatten + Gemm(transB=1), from onnx.helper."""
    rng = np.random.default_rng(1)
    arrays = {
        "W": (rng.integers(-30, 40, (3, 2, 3, 3)) / 64).astype(np.float32),
        "B": (rng.integers(-4, 8, (3,)) / 64).astype(np.float32),
        "FW": (rng.integers(-30, 40, (5, 3 * 3 * 3)) / 64).astype(np.float32),
        "FB": (rng.integers(-4, 8, (5,)) / 64).astype(np.float32),
    }
    nodes = [
        helper.make_node(
            "Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "FW", "FB"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu_gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, arrays


def test_helper_built_model_converts(tmp_path: Path) -> None:
    model, arrays = helper_model()
    path = tmp_path / "helper.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(2).random((32, 2, 5, 6), dtype=np.float32)
    net = convert(load_onnx(path), x, percentile=100.0, progress=False)
    conv, fc = net.layers
    assert conv.kind == "conv" and conv.stride == (2, 2) and conv.padding == (1, 1) and fc.kind == "linear"
    lam = conv.lam  # max-norm of the ReLU output
    w, b = torch.from_numpy(arrays["W"]), torch.from_numpy(arrays["B"])
    relu = np.maximum(torch.nn.functional.conv2d(torch.from_numpy(x), w, b, stride=2, padding=1).numpy(), 0)
    assert lam == pytest.approx(float(relu.max()), rel=1e-6)
    np.testing.assert_allclose(conv.weight, arrays["W"] / lam, rtol=1e-6)
    np.testing.assert_allclose(fc.weight, arrays["FW"] * lam, rtol=1e-6)
    np.testing.assert_array_equal(fc.bias, arrays["FB"])


def test_cli_convert_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spikecast.runtime.cli import main

    model, _ = helper_model()
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "calib.npy", np.random.default_rng(3).random((16, 2, 5, 6), dtype=np.float32))
    argv = ["convert", "--onnx", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path / "calib.npy")]
    assert main([*argv, "--out", str(tmp_path / "m.scn"), "--quiet", "--classes", "a,b,c,d,e"]) == 0
    net = Network.load(tmp_path / "m.scn")
    assert net.class_names == ("a", "b", "c", "d", "e") and len(net.layers) == 2
    assert "wrote" in capsys.readouterr().out


def test_unsupported_onnx_op_is_refused_by_name(tmp_path: Path) -> None:
    model, _ = helper_model()
    model.graph.node[1].op_type = "Sigmoid"
    onnx.save(model, str(tmp_path / "sig.onnx"))
    with pytest.raises(ConversionError, match=r"(?i)sigmoid"):
        convert(load_onnx(tmp_path / "sig.onnx"), np.zeros((2, 2, 5, 6), np.float32), progress=False)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError, match="not a valid ONNX model"):
        load_onnx(tmp_path / "junk.onnx")
