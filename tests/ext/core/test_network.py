"""The Network artifact: exact round trip, and clear errors for bad files."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from spikecast.ext.core import network as network_mod
from spikecast.ext.core.errors import ModelFileError, ParameterError, SpikecastError
from spikecast.ext.core.network import (
    CalibrationTable,
    InputSpec,
    Layer,
    Network,
    UnverifiedManifestWarning,
    load_network,
)


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


def grouped_net() -> Network:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)  # 4 inputs in 2 groups
    conv = Layer("conv", "g", (4, 5, 5), (6, 3, 3), w, np.zeros(6, np.float32), (3, 3), groups=2)
    out = Layer("linear", "o", (6, 3, 3), (2,), rng.normal(size=(2, 54)).astype(np.float32), spiking=False)
    return Network(InputSpec("frame", (4, 5, 5)), (conv, out), ("a", "b"))


def test_groups_round_trip_and_old_manifests_mean_one(tmp_path: Path) -> None:
    net = grouped_net()
    assert net.manifest()["layers"][0]["groups"] == 2
    back = load_network(net.save(tmp_path / "g.scn"))
    assert back.layers[0].groups == 2 and back.sha256 == net.sha256
    assert "g2" in back.summary()
    # Ungrouped layers write no "groups" key: their manifest (and sha256) is as before.
    assert all("groups" not in ly for ly in small_net().manifest()["layers"])
    assert all(ly.groups == 1 for ly in load_network(small_net().save(tmp_path / "n.scn")).layers)


def test_groups_must_fit_the_weights() -> None:
    net = grouped_net()
    with pytest.raises(ParameterError, match="groups 3"):
        net.with_(layers=(replace(net.layers[0], groups=3), net.layers[1]))
    with pytest.raises(ParameterError, match="only a conv layer has groups"):
        net.with_(layers=(net.layers[0], replace(net.layers[1], groups=2)))


def dag_net() -> Network:
    """conv0 -> conv1 -> conv2 reading conv1 and (an identity skip) conv0 -> linear output."""
    rng = np.random.default_rng(2)

    def conv(name: str, c_in: int) -> Layer:
        w = rng.normal(size=(3, c_in, 3, 3)).astype(np.float32)
        b = np.zeros(3, np.float32)
        return Layer("conv", name, (c_in, 5, 5), (3, 5, 5), w, b, (3, 3), padding=(1, 1))

    skip = Layer("conv", "skip", (3, 5, 5), (3, 5, 5), np.eye(3, dtype=np.float32)[:, :, None, None] * 0.5)
    add = replace(conv("add", 3), inputs=(1, 0), extra=(skip,))
    out = Layer("linear", "o", (3, 5, 5), (2,), rng.normal(size=(2, 75)).astype(np.float32), spiking=False)
    return Network(InputSpec("frame", (1, 5, 5)), (conv("c0", 1), conv("c1", 3), add, out), ("a", "b"))


def test_multi_input_layers_round_trip(tmp_path: Path) -> None:
    net = dag_net()
    entry = net.manifest()["layers"][2]
    assert entry["inputs"] == [1, 0] and entry["extra"][0]["kernel"] == [1, 1]
    back = load_network(net.save(tmp_path / "dag.scn"))
    assert back.sha256 == net.sha256
    assert back.layers[2].inputs == (1, 0)
    assert np.array_equal(back.layers[2].extra[0].weight, net.layers[2].extra[0].weight)
    assert "<1,0" in back.summary()
    assert all("inputs" not in ly and "extra" not in ly for ly in small_net().manifest()["layers"])


def test_bad_inputs_are_refused() -> None:
    net = dag_net()
    add, skip = net.layers[2], net.layers[2].extra[0]
    bad = {
        "not an earlier layer": replace(add, inputs=(1, 2)),
        "-1: the input, layer 0 only": replace(add, inputs=(1, -1)),
        "need 1 extra weight sets": replace(add, extra=()),
        "without bias": replace(add, extra=(replace(skip, bias=np.zeros(3, np.float32)),)),
        "input 1: output shape": replace(add, extra=(replace(skip, out_shape=(3, 4, 4)),)),
    }
    for match, layer in bad.items():
        with pytest.raises(ParameterError, match=match):
            net.with_(layers=(*net.layers[:2], layer, net.layers[3]))
    # The network input feeds layer 0's own weights only (the engine's frame current).
    first = net.layers[0]
    twice = replace(first, inputs=(-1, -1), extra=(replace(first, bias=None),))
    with pytest.raises(ParameterError, match="layer 0 only"):
        net.with_(layers=(twice, *net.layers[1:]))


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
    with pytest.raises(ModelFileError, match=r"i\.scn: manifest field arrays"):
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


# --- hostile files (issue 11): verified before trusted -------------------------


def _edit_manifest(src: Path, dst: Path, change) -> Path:
    """Rewrite the manifest member only; the stored sha256 stays as it was."""

    def mutate(name: str, data: bytes) -> bytes:
        return _manifest_bytes(data, change) if name == "manifest.npy" else data

    _rewrite(src, dst, mutate)
    return dst


EDITS = {
    "threshold": lambda m: m["layers"][0].update(threshold=1.5),
    "lambda": lambda m: m["layers"][0].update({"lambda": 2.0}),
    "class names reversed": lambda m: m.update(class_names=m["class_names"][::-1]),
    "temperature": lambda m: m.update(temperature=2.0),
    "reset": lambda m: m.update(reset="subtract"),
    "dt_us": lambda m: m["input"].update(dt_us=1000),
    "meta": lambda m: m["meta"].update(operating_point={"tau": 0.9}),
    "input mean": lambda m: m["input"].update(mean=[0.5]),
    "v_init": lambda m: m.update(v_init=0.5),
    "evidence_steps": lambda m: m.update(evidence_steps=30.0),
    "max_spikes": lambda m: m.update(max_spikes=4),
    "max_pool": lambda m: m.update(max_pool="count"),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_manifest_edits_fail_the_sha256(tmp_path: Path, what: str) -> None:
    path = small_net().save(tmp_path / "net.scn")
    bad = _edit_manifest(path, tmp_path / "edited.scn", EDITS[what])
    with pytest.raises(ModelFileError, match=r"edited\.scn: sha256 .* modified or damaged"):
        load_network(bad)


def test_sha256_covers_every_field() -> None:
    net = small_net()
    ly0 = net.layers[0]
    variants = [
        net.with_(class_names=net.class_names[::-1]),
        net.with_(temperature=0.25),
        net.with_(reset="subtract"),
        net.with_(meta={"percentile": 99.0}),
        net.with_(input=InputSpec("events", (2, 6, 5), dt_us=501)),
        net.with_(layers=(Layer(**{**ly0.__dict__, "threshold": 1.01}), *net.layers[1:])),
        net.with_(layers=(Layer(**{**ly0.__dict__, "lam": 2.51}), *net.layers[1:])),
        net.with_(calibration=None),
        net.with_(v_init=0.5),
        net.with_(evidence_steps=30.0),
        net.with_(max_spikes=4, reset="subtract"),
        net.with_(max_pool="count"),
    ]
    hashes = {net.sha256, *(v.sha256 for v in variants)}
    assert len(hashes) == len(variants) + 1


def test_v_init_round_trips_and_is_absent_when_zero(tmp_path: Path) -> None:
    net = small_net()
    for v_init in (0.0, 0.5):
        path = net.with_(v_init=v_init).save(tmp_path / f"v{v_init}.scn")
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(np.load(io.BytesIO(zf.read("manifest.npy"))).tobytes())
        assert ("v_init" in manifest) == (v_init != 0)  # files without it keep their sha256
        back = load_network(path)
        assert back.v_init == v_init
        assert back.sha256 == net.with_(v_init=v_init).sha256
    half = net.with_(v_init=0.5)
    assert [half.initial_potential(ly) for ly in half.layers][-1] == 0.0  # the output integrator
    assert half.initial_potential(half.layers[0]) == pytest.approx(0.5 * half.layers[0].threshold)


def test_max_pool_round_trips_is_absent_when_gated_and_is_checked(tmp_path: Path) -> None:
    net = small_net()
    for mode in ("gated", "count"):
        path = net.with_(max_pool=mode).save(tmp_path / f"{mode}.scn")
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(np.load(io.BytesIO(zf.read("manifest.npy"))).tobytes())
        assert ("max_pool" in manifest) == (mode != "gated")  # gated files keep their sha256
        back = load_network(path)
        assert back.max_pool == mode and back.sha256 == net.with_(max_pool=mode).sha256
    with pytest.raises(ParameterError, match="max_pool"):
        net.with_(max_pool="or")
    assert "max-pool: count" in net.with_(max_pool="count").summary()


def test_v2_file_stores_the_network_sha256(tmp_path: Path) -> None:
    net = small_net()
    path = net.save(tmp_path / "net.scn")
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(np.load(io.BytesIO(zf.read("manifest.npy"))).tobytes())
    assert manifest["format_version"] == 2
    assert manifest["sha256"] == net.sha256 == load_network(path).sha256
    assert load_network(path).file_version == 2


def test_version_1_files_load_with_a_warning(tmp_path: Path) -> None:
    net = small_net()
    arrays = net._arrays()
    manifest = net.manifest()
    manifest.update(
        format_version=1,
        arrays={k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
        sha256=network_mod._hash_arrays(arrays),
    )
    blob = np.frombuffer(json.dumps(manifest, indent=1).encode(), np.uint8)
    np.savez_compressed(tmp_path / "v1.npz", manifest=blob, **arrays)
    with pytest.warns(UnverifiedManifestWarning, match="format-1"):
        back = load_network(tmp_path / "v1.npz")
    assert back.file_version == 1 and back.sha256 == net.sha256


def _add_member(src: Path, dst: Path, name: str, data: bytes) -> Path:
    """Append a member, even one whose name is already there (zipfile warns, we don't care)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zout.writestr(name, data)
    return dst


def test_duplicate_manifest_is_refused(tmp_path: Path) -> None:
    path = small_net().save(tmp_path / "net.scn")
    with zipfile.ZipFile(path) as zf:
        manifest = zf.read("manifest.npy")
    other = _manifest_bytes(manifest, EDITS["class names reversed"])
    bad = _add_member(path, tmp_path / "dup.scn", "manifest.npy", other)
    with pytest.raises(ModelFileError, match="appears twice"):
        load_network(bad)


@pytest.mark.parametrize("name", ["junk.npy", "notes.txt", "manifest.npy/x.npy"])
def test_unexpected_members_are_refused(tmp_path: Path, name: str) -> None:
    path = small_net().save(tmp_path / "net.scn")
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.float32))
    bad = _add_member(path, tmp_path / "extra.scn", name, buf.getvalue())
    with pytest.raises(ModelFileError, match=r"unexpected member|do not match"):
        load_network(bad)


def _measure(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as info:
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert info is not None


def test_zip_bomb_member_is_refused_before_decompression(tmp_path: Path) -> None:
    """A 64 MiB zero member (about 64 KiB compressed) is refused from its declared size."""
    path = small_net().save(tmp_path / "net.scn")
    zeros = np.zeros(16 << 20, np.float32)  # 64 MiB

    def bomb(name: str, data: bytes) -> bytes:
        if name == "layer0.bias.npy":
            buf = io.BytesIO()
            np.save(buf, zeros)
            return buf.getvalue()
        return data

    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp_path / "bomb.scn", "w", zipfile.ZIP_DEFLATED) as z:
        for item in zin.infolist():
            z.writestr(item.filename, bomb(item.filename, zin.read(item.filename)))
    size = (tmp_path / "bomb.scn").stat().st_size
    assert size < 1 << 20
    peak = _measure(lambda: load_network(tmp_path / "bomb.scn"))
    assert peak < 4 << 20, peak


def test_ceiling_on_decompressed_arrays(tmp_path: Path) -> None:
    path = small_net().save(tmp_path / "net.scn")
    with pytest.raises(ModelFileError, match="more than max_bytes=100"):
        load_network(path, max_bytes=100)


RANGE_EDITS = {
    "lambda": lambda m: m["layers"][0].update({"lambda": 1e39}),
    "temperature": lambda m: m.update(temperature=1e-320),
    "threshold": lambda m: m["layers"][1].update(threshold=-1.0),
    "stride": lambda m: m["layers"][1].update(stride=[0, 0]),
    "padding": lambda m: m["layers"][0].update(padding=[-1, 1]),
    "kernel": lambda m: m["layers"][0].update(kernel=[3, True]),
    "dt_us": lambda m: m["input"].update(dt_us=0),
    "shape": lambda m: m["input"].update(shape=[2, 6, 10**12]),
    "std": lambda m: m["input"].update(std=[0.0]),
    "class_names": lambda m: m.update(class_names=[1, 2, 3, 4]),
    "reset": lambda m: m.update(reset="never"),
    "meta": lambda m: m.update(meta=[1]),
    "steps": lambda m: m["calibration"].update(steps=-3),
    "in_shape": lambda m: m["layers"][2].update(in_shape="3"),
    "layers": lambda m: m.update(layers={"0": 1}),
    "input": lambda m: m["input"].update(extra=1),
    "groups": lambda m: m["layers"][0].update(groups=0),
    "v_init": lambda m: m.update(v_init=1.0),
    "evidence_steps": lambda m: m.update(evidence_steps=0.25),
    "max_spikes": lambda m: m.update(max_spikes=65),
    "max_pool": lambda m: m.update(max_pool="sum"),
}


@pytest.mark.parametrize("what", sorted(RANGE_EDITS))
def test_out_of_range_fields_name_the_field(tmp_path: Path, what: str) -> None:
    path = small_net().save(tmp_path / "net.scn")
    bad = _edit_manifest(path, tmp_path / "r.scn", RANGE_EDITS[what])
    with pytest.raises(ModelFileError, match=rf"r\.scn: manifest field .*{what}"):
        load_network(bad)


def _raw_manifest(src: Path, dst: Path, text: bytes) -> Path:
    def mutate(name: str, data: bytes) -> bytes:
        if name != "manifest.npy":
            return data
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(text, np.uint8))
        return buf.getvalue()

    _rewrite(src, dst, mutate)
    return dst


@pytest.mark.parametrize(
    "text, match",
    [
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"format": "spikecast-network", "format_version": 2, "temperature": NaN}', "not valid JSON"),
        (
            b'{"format": "spikecast-network", "format_version": 2, "meta": '
            + b'{"a":' * 40
            + b"1"
            + b"}" * 41,
            "nested deeper",
        ),
        (b'{"format": "spikecast-network", "format_version": 2}', "missing keys"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_hostile_manifest_text(tmp_path: Path, text: bytes, match: str) -> None:
    path = small_net().save(tmp_path / "net.scn")
    bad = _raw_manifest(path, tmp_path / "m.scn", text)
    with pytest.raises(ModelFileError, match=match):
        load_network(bad)


def test_in_memory_networks_are_range_checked() -> None:
    net = small_net()
    ly0 = net.layers[0]
    with pytest.raises(ParameterError, match="lambda"):
        net.with_(layers=(Layer(**{**ly0.__dict__, "lam": 1e39}), *net.layers[1:]))
    with pytest.raises(ParameterError, match="stride"):
        net.with_(layers=(Layer(**{**ly0.__dict__, "stride": (0, 1)}), *net.layers[1:]))
    with pytest.raises(ParameterError, match="temperature"):
        net.with_(temperature=1e-320)
    for bad in (-0.25, 1.0, float("nan"), "0.5"):
        with pytest.raises(ParameterError, match="v_init"):
            net.with_(v_init=bad)
    with pytest.raises(ParameterError, match="meta"):
        net.with_(meta={"x": float("nan")})
    deep: dict = {}
    for _ in range(100):
        deep = {"d": deep}
    with pytest.raises(ParameterError, match="nested deeper"):
        net.with_(meta=deep)


def _rewrite_with(src: Path, dst: Path, compression: int) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_fuzzed_model_files_raise_only_model_file_errors(tmp_path: Path, compression: int) -> None:
    """Mutated bytes of a saved network: only ModelFileError may escape. Stored (not
    deflated) members let the mutations reach the manifest text and .npy headers."""
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    saved = small_net().save(tmp_path / "net.scn")
    _rewrite_with(saved, tmp_path / "c.scn", compression)
    good = (tmp_path / "c.scn").read_bytes()
    target = tmp_path / "fuzz.scn"

    @seed(11)
    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        edits=st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=8),
        cut=st.one_of(st.none(), st.integers(0, len(good))),
    )
    def run(edits: list[tuple[int, int]], cut: int | None) -> None:
        data = bytearray(good)
        for at, value in edits:
            data[at] = value
        target.write_bytes(bytes(data[:cut]))
        try:
            load_network(target)
        except ModelFileError:
            pass
        except SpikecastError as exc:  # pragma: no cover - the policy is ModelFileError only
            raise AssertionError(f"not a ModelFileError: {exc!r}") from exc

    run()


def test_an_unterminated_npy_header_is_a_model_file_error(tmp_path: Path) -> None:
    """numpy's header parser raises tokenize.TokenError (not a ValueError) on a header
    dict that never closes; found by bench/fuzz.py, it escaped load_network."""
    src = small_net().save(tmp_path / "net.scn")
    dst = tmp_path / "bad.scn"

    def cut(name: str, data: bytes) -> bytes:
        if name != "manifest.npy":
            return data
        # Keep magic, version and header length; the header text loses its closing brace.
        header = data[10 : 10 + struct.unpack_from("<H", data, 8)[0]]
        return data[:10] + header.replace(b"}", b" ") + data[10 + len(header) :]

    _rewrite(src, dst, cut)
    with pytest.raises(ModelFileError):
        load_network(dst)


def test_ann_macs_count_every_weight_at_every_output_position() -> None:
    net = small_net()
    expect = 0
    for ly in net.layers:
        if ly.kind == "conv":
            expect += ly.weight.size * ly.out_shape[1] * ly.out_shape[2]
        elif ly.kind == "linear":
            expect += ly.weight.size
    assert net.ann_macs == expect > 0
    assert sum(ly.macs for ly in net.layers) == net.ann_macs


def test_summary_warns_when_the_table_cannot_bound_the_default() -> None:
    net = small_net()
    small = {"tau": 0.99, "t_min": 1, "t_max": 20, "lost_upper": 0.008, "tolerance": 0.005}
    text = net.with_(meta={"operating_point": small}).summary()
    assert "too few to bound what the recommended point gives away within 0.5% (bound 0.8%" in text
    for point in ({**small, "lost_upper": 0.004}, {**small, "lost_upper": None}, "0.99", None):
        assert "too few to bound" not in net.with_(meta={"operating_point": point}).summary()


def test_summary_shows_the_lambda_percentile_and_the_recommended_point() -> None:
    net = small_net()
    point = {"tau": 0.93, "t_min": 2, "t_max": 300, "accuracy": 0.976, "mean_steps": 8.4,
             "plateau_accuracy": 0.977}
    choice = {"candidates": {"99": {}, "99.5": {}, "99.9": {}, "100": {}}, "chosen": 99.0}
    meta = {"operating_point": point, "percentile": 99.0, "percentile_choice": choice}
    text = net.with_(meta=meta).summary()
    assert "lambda percentile: 99 (chosen on the holdout table of 99, 99.5, 99.9, 100)" in text
    assert "recommended point: tau=0.93 t_min=2 t_max=300: 97.60% on the table after 8.4 mean steps " \
           "(plateau 97.70%)" in text
    bare = {"tau": 0.9, "t_min": 1, "t_max": 20}
    text = net.with_(meta={"operating_point": bare, "percentile": 99.9}).summary()
    assert "lambda percentile: 99.9\n" in text and "recommended point: tau=0.9 t_min=1 t_max=20\n" in text
    text = net.with_(meta={}).summary()
    assert "percentile" not in text and "recommended" not in text
