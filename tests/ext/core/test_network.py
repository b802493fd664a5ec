"""The Network artifact: exact round trip, and clear errors for bad files."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from spikecast.ext.core.errors import ModelFileError, ParameterError
from spikecast.ext.core.network import CalibrationTable, InputSpec, Layer, Network, load_network


def small_net(with_calibration: bool = True) -> Network:
    rng = np.random.default_rng(0)
    layers = (
        Layer(
            "conv",
            "c1",
            (2, 6, 5),
            (3, 3, 3),
            rng.normal(size=(3, 2, 3, 3)).astype(np.float32),
            rng.normal(size=3).astype(np.float32),
            (3, 3),
            (2, 2),
            (1, 1),
            lam=2.5,
        ),
        Layer("maxpool", "p1", (3, 3, 3), (3, 1, 1), kernel=(2, 2), stride=(2, 2), lam=2.5),
        Layer(
            "linear",
            "fc",
            (3, 1, 1),
            (4,),
            rng.normal(size=(4, 3)).astype(np.float32),
            np.zeros(4, np.float32),
            spiking=False,
        ),
    )
    calib = CalibrationTable(rng.random((7, 5)).astype(np.float32), rng.random((7, 5)) > 0.5)
    return Network(
        InputSpec("events", (2, 6, 5), dt_us=500),
        layers,
        ("a", "b", "c", "d"),
        reset="zero",
        temperature=0.5,
        calibration=calib if with_calibration else None,
        meta={"percentile": 99.9},
    )


def test_round_trip_is_exact(tmp_path: Path) -> None:
    net = small_net()
    path = net.save(tmp_path / "net.scn")
    back = load_network(path)
    assert back.manifest() == net.manifest()
    assert back.sha256 == net.sha256
    for a, b in zip(net.layers, back.layers, strict=True):
        for x, y in ((a.weight, b.weight), (a.bias, b.bias)):
            assert (x is None and y is None) or np.array_equal(x, y)
    assert back.calibration is not None and net.calibration is not None
    assert np.array_equal(back.calibration.confidence, net.calibration.confidence)
    assert np.array_equal(back.calibration.correct, net.calibration.correct)
    assert back.input == net.input


def test_summary_lists_layers_lambdas_and_input(tmp_path: Path) -> None:
    text = small_net().summary()
    assert "events (2, 6, 5)" in text and "dt=500 us" in text
    assert "maxpool" in text and "2.5" in text and "neurons: 31" in text


def _rewrite(src: Path, dst: Path, mutate) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, mutate(item.filename, data))


def _manifest_bytes(data: bytes, change) -> bytes:
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    manifest = json.loads(arr.tobytes())
    change(manifest)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(manifest).encode(), np.uint8))
    return buf.getvalue()


def test_truncated_file(tmp_path: Path) -> None:
    path = small_net().save(tmp_path / "net.scn")
    bad = tmp_path / "trunc.scn"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"trunc\.scn: corrupt or truncated"):
        load_network(bad)


def test_not_a_network(tmp_path: Path) -> None:
    bad = tmp_path / "x.scn"
    bad.write_bytes(b"hello world")
    with pytest.raises(ModelFileError, match="no zip header"):
        load_network(bad)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_network(tmp_path / "missing.scn")


def test_tampered_weights_fail_the_sha256(tmp_path: Path) -> None:
    path = small_net().save(tmp_path / "net.scn")

    def flip(name: str, data: bytes) -> bytes:
        if name == "layer0.weight.npy":
            b = bytearray(data)
            b[-1] ^= 0x01
            return bytes(b)
        return data

    _rewrite(path, tmp_path / "t.scn", flip)
    with pytest.raises(ModelFileError, match="sha256"):
        load_network(tmp_path / "t.scn")


def test_future_version_is_refused(tmp_path: Path) -> None:
    path = small_net().save(tmp_path / "net.scn")

    def bump(name: str, data: bytes) -> bytes:
        if name == "manifest.npy":
            return _manifest_bytes(data, lambda m: m.update(format_version=99))
        return data

    _rewrite(path, tmp_path / "f.scn", bump)
    with pytest.raises(ModelFileError, match="version 99 is newer"):
        load_network(tmp_path / "f.scn")


def test_inconsistent_manifest_names_the_file(tmp_path: Path) -> None:
    path = small_net().save(tmp_path / "net.scn")

    def wrong_shape(name: str, data: bytes) -> bytes:
        if name == "manifest.npy":
            return _manifest_bytes(data, lambda m: m["layers"][2].update(out_shape=[5]))
        return data

    _rewrite(path, tmp_path / "i.scn", wrong_shape)
    with pytest.raises(ModelFileError, match=r"i\.scn: inconsistent manifest"):
        load_network(tmp_path / "i.scn")


def test_pickled_arrays_are_never_loaded(tmp_path: Path) -> None:
    path = small_net(with_calibration=False).save(tmp_path / "net.scn")

    def pickle_it(name: str, data: bytes) -> bytes:
        if name == "layer0.bias.npy":
            buf = io.BytesIO()
            np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
            return buf.getvalue()
        return data

    _rewrite(path, tmp_path / "p.scn", pickle_it)
    with pytest.raises(ModelFileError):
        load_network(tmp_path / "p.scn")


def test_invalid_networks_are_refused() -> None:
    net = small_net()
    with pytest.raises(ParameterError, match="class names"):
        net.with_(class_names=("a",))
    bad = Layer("linear", "fc", (3, 1, 1), (4,), np.full((4, 3), np.nan, np.float32), None, spiking=False)
    with pytest.raises(ParameterError, match="NaN"):
        net.with_(layers=(*net.layers[:2], bad))
    with pytest.raises(ValueError, match="polarity"):
        InputSpec("events", (3, 4, 4))


def test_runtime_and_loader_import_without_torch(tmp_path: Path) -> None:
    path = small_net().save(tmp_path / "net.scn")
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name == "tonic":
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import spikecast.runtime, spikecast.converters, spikecast.ext
        from spikecast.ext.core.network import load_network
        net = load_network({str(path)!r})
        print(net.n_classes, "torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "False"]
