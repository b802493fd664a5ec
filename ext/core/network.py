"""The Network artifact: a converted spiking network as plain arrays plus a JSON manifest.

One file (a zip written by :func:`numpy.savez_compressed`), no pickle anywhere: it
loads with ``allow_pickle=False``. The manifest carries a format version, the layers
in order (kind, shapes, kernel, stride, padding, λ, threshold), the input spec,
class names, the calibration table and a sha256 over every array.

Weights are kept in torch's layout: conv ``(C_out, C_in, kh, kw)``, linear
``(out, in)`` where ``in`` indexes the previous layer's output flattened in
``(C, H, W)`` order. The engine re-lays them out for scatter when it compiles.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from spikecast.ext.core.errors import ModelFileError, ParameterError

FORMAT_NAME = "spikecast-network"
FORMAT_VERSION = 1

LayerKind = Literal["conv", "linear", "maxpool"]
ResetMode = Literal["subtract", "zero"]
InputKind = Literal["frame", "events"]
InputEncoding = Literal["analog", "poisson"]


@dataclass(frozen=True)
class InputSpec:
    """What the first layer consumes.

    Frames: a raw image ``r`` (H, W) or (C, H, W) becomes the network input
    ``x = (r * scale - mean[c]) / std[c]``, which is what the ANN was trained on.
    Events: per-step event counts per (polarity channel, y, x) binned over ``dt_us``;
    ``shape[0]`` is 2 (OFF, ON channels) or 1 (polarities merged).
    """

    kind: InputKind
    shape: tuple[int, int, int]
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    encoding: InputEncoding = "analog"
    dt_us: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in ("frame", "events"):
            raise ParameterError(f"input kind must be 'frame' or 'events', not {self.kind!r}")
        if self.encoding not in ("analog", "poisson"):
            raise ParameterError(f"input encoding must be 'analog' or 'poisson', not {self.encoding!r}")
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ParameterError(f"input shape must be (C, H, W) with positive sizes, not {self.shape}")
        c = self.shape[0]
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, c):
                raise ParameterError(f"input {name} needs 1 or {c} values, got {len(vals)}")
        if any(s <= 0 for s in self.std):
            raise ParameterError(f"input std must be positive, got {self.std}")
        if self.kind == "events" and (self.shape[0] not in (1, 2) or self.dt_us < 1):
            raise ParameterError(
                f"event input needs 1 or 2 polarity channels and dt_us >= 1, "
                f"got {self.shape[0]} channels, dt_us={self.dt_us}"
            )

    @property
    def merge_polarity(self) -> bool:
        return self.kind == "events" and self.shape[0] == 1

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Map a raw frame (H, W), (C, H, W) or a batch (B, C, H, W) to network input, float32."""
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.shape[-3:] != self.shape:
            raise ParameterError(f"frame shape {x.shape} does not match the network input {self.shape}")
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        out: np.ndarray = ((x * np.float32(self.scale) - mean) / std).astype(np.float32)
        return out


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of the spiking network.

    ``spiking`` is False only for the last layer, the non-spiking output integrator.
    ``lam`` is λ_l, the activation scale the layer was normalised by, so that
    ``rate * lam`` estimates the ANN activation.
    """

    kind: LayerKind
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    lam: float = 1.0
    threshold: float = 1.0
    spiking: bool = True

    @property
    def n_neurons(self) -> int:
        return int(np.prod(self.out_shape))

    def check(self, where: str) -> None:
        """Raise ParameterError if shapes, weights and geometry disagree."""
        expect: tuple[int, ...]
        if self.kind == "maxpool":
            if self.weight is not None or self.bias is not None:
                raise ParameterError(f"{where}: a maxpool layer has no weights")
            expect = _pool_out(self.in_shape, self.kernel, self.stride, self.padding)
        elif self.kind == "conv":
            if self.weight is None or self.weight.ndim != 4:
                raise ParameterError(f"{where}: conv weight must be 4-D (C_out, C_in, kh, kw)")
            c_out, c_in, kh, kw = self.weight.shape
            if len(self.in_shape) != 3 or self.in_shape[0] != c_in or (kh, kw) != self.kernel:
                raise ParameterError(
                    f"{where}: conv weight {self.weight.shape} does not fit input {self.in_shape} "
                    f"and kernel {self.kernel}"
                )
            _, h, w = _pool_out(self.in_shape, self.kernel, self.stride, self.padding)
            expect = (c_out, h, w)
        elif self.kind == "linear":
            if self.weight is None or self.weight.ndim != 2:
                raise ParameterError(f"{where}: linear weight must be 2-D (out, in)")
            if self.weight.shape[1] != int(np.prod(self.in_shape)):
                raise ParameterError(
                    f"{where}: linear weight {self.weight.shape} does not fit input {self.in_shape}"
                )
            expect = (int(self.weight.shape[0]),)
        else:
            raise ParameterError(f"{where}: unknown layer kind {self.kind!r}")
        if tuple(self.out_shape) != tuple(expect):
            raise ParameterError(f"{where}: output shape {self.out_shape} should be {expect}")
        if self.bias is not None and self.bias.shape != (self.out_shape[0],):
            raise ParameterError(f"{where}: bias shape {self.bias.shape} should be ({self.out_shape[0]},)")
        if not (self.threshold > 0 and np.isfinite(self.threshold)):
            raise ParameterError(f"{where}: threshold must be positive and finite, got {self.threshold}")
        if not (self.lam > 0 and np.isfinite(self.lam)):
            raise ParameterError(f"{where}: lambda must be positive and finite, got {self.lam}")
        for arr in (self.weight, self.bias):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ParameterError(f"{where}: weights contain NaN or infinity")


def _pool_out(
    in_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ParameterError(f"a 2-D layer needs a (C, H, W) input, got {in_shape}")
    c, h, w = in_shape
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ParameterError(f"kernel {kernel} with padding {padding} does not fit input {in_shape}")
    return (c, oh, ow)


@dataclass(frozen=True, eq=False)
class CalibrationTable:
    """Per-step confidence and correctness of a held-out set, recorded at conversion.

    ``confidence[t-1, n]`` is c(t) of held-out sample n and ``correct[t-1, n]``
    whether the argmax of z(t) was its label. Any early-exit rule (τ, t_min, t_max)
    can be replayed exactly on it; see :mod:`spikecast.runtime.decision`.
    """

    confidence: np.ndarray  # (T, N) float32
    correct: np.ndarray  # (T, N) bool

    def __post_init__(self) -> None:
        if self.confidence.ndim != 2 or self.confidence.shape != self.correct.shape:
            raise ParameterError(
                f"calibration confidence {self.confidence.shape} and correct {self.correct.shape} "
                "must both be (T, N)"
            )

    @property
    def n_steps(self) -> int:
        return int(self.confidence.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.confidence.shape[1])


@dataclass(frozen=True, eq=False)
class Network:
    """A converted spiking network: layers in order, input spec, classes, calibration."""

    input: InputSpec
    layers: tuple[Layer, ...]
    class_names: tuple[str, ...]
    reset: ResetMode = "subtract"
    temperature: float = 1.0
    calibration: CalibrationTable | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    # -- structure -----------------------------------------------------------------
    def check(self) -> None:
        """Validate the whole chain; raise ParameterError naming the layer."""
        if not self.layers:
            raise ParameterError("a network needs at least one layer")
        if self.reset not in ("subtract", "zero"):
            raise ParameterError(f"reset must be 'subtract' or 'zero', not {self.reset!r}")
        if not (self.temperature > 0):
            raise ParameterError(f"temperature must be positive, got {self.temperature}")
        shape: tuple[int, ...] = self.input.shape
        for i, layer in enumerate(self.layers):
            where = f"layer {i} ({layer.name})"
            if layer.kind == "linear":
                if int(np.prod(layer.in_shape)) != int(np.prod(shape)):
                    raise ParameterError(f"{where}: input size {layer.in_shape} != previous output {shape}")
            elif tuple(layer.in_shape) != tuple(shape):
                raise ParameterError(f"{where}: input shape {layer.in_shape} != previous output {shape}")
            layer.check(where)
            last = i == len(self.layers) - 1
            if layer.spiking == last:
                raise ParameterError(f"{where}: only the last layer is the non-spiking output integrator")
            shape = layer.out_shape
        if self.layers[0].kind == "maxpool":
            raise ParameterError("the first layer must be conv or linear, not maxpool")
        if self.layers[-1].kind == "maxpool":
            raise ParameterError("the last layer must be conv or linear, not maxpool")
        n_out = self.layers[-1].n_neurons
        if len(self.class_names) != n_out:
            raise ParameterError(f"{len(self.class_names)} class names for {n_out} outputs")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def sha256(self) -> str:
        """sha256 over every array (weights, biases, calibration), in a fixed order."""
        return _hash_arrays(self._arrays())

    def with_(self, **changes: Any) -> Network:
        """A copy with some fields replaced (the dataclass is frozen)."""
        return replace(self, **changes)

    def summary(self) -> str:
        """Human-readable table of layers, shapes, λ, neuron counts and input spec."""
        spec = self.input
        if spec.kind == "frame":
            inp = (
                f"frame {spec.shape} scale={spec.scale:g} mean={list(spec.mean)} "
                f"std={list(spec.std)} encoding={spec.encoding}"
            )
        else:
            pol = "merged" if spec.merge_polarity else "OFF/ON channels"
            inp = f"events {spec.shape} ({pol}), dt={spec.dt_us} us"
        lines = [
            f"input: {inp}",
            f"reset: {self.reset}   temperature: {self.temperature:g}   classes: {self.n_classes}",
            f"{'#':>2}  {'kind':<8}{'name':<16}{'in':<16}{'out':<16}{'k/s/p':<14}"
            f"{'lambda':>10}{'theta':>7}{'neurons':>9}",
        ]
        total = 0
        for i, ly in enumerate(self.layers):
            geo = "" if ly.kind == "linear" else f"{ly.kernel[0]}/{ly.stride[0]}/{ly.padding[0]}"
            kind = ly.kind if ly.spiking else f"{ly.kind}*"
            n = ly.n_neurons if ly.kind != "maxpool" else 0
            total += n
            lines.append(
                f"{i:>2}  {kind:<8}{ly.name[:15]:<16}{_fmt(ly.in_shape):<16}{_fmt(ly.out_shape):<16}"
                f"{geo:<14}{ly.lam:>10.4g}{ly.threshold:>7.3g}{n:>9}"
            )
        lines.append(f"neurons: {total}   (* = non-spiking output integrator)")
        if self.calibration is not None:
            c = self.calibration
            lines.append(f"calibration table: {c.n_samples} held-out samples x {c.n_steps} steps")
        lines.append(f"sha256: {self.sha256}")
        return "\n".join(lines)

    # -- persistence ---------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for i, ly in enumerate(self.layers):
            if ly.weight is not None:
                arrays[f"layer{i}.weight"] = np.ascontiguousarray(ly.weight, dtype=np.float32)
            if ly.bias is not None:
                arrays[f"layer{i}.bias"] = np.ascontiguousarray(ly.bias, dtype=np.float32)
        if self.calibration is not None:
            arrays["calibration.confidence"] = np.ascontiguousarray(
                self.calibration.confidence, dtype=np.float32
            )
            arrays["calibration.correct"] = np.ascontiguousarray(self.calibration.correct, dtype=bool)
        return arrays

    def manifest(self) -> dict[str, Any]:
        spec = self.input
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "input": {
                "kind": spec.kind,
                "shape": list(spec.shape),
                "scale": spec.scale,
                "mean": list(spec.mean),
                "std": list(spec.std),
                "encoding": spec.encoding,
                "dt_us": spec.dt_us,
            },
            "layers": [
                {
                    "kind": ly.kind,
                    "name": ly.name,
                    "in_shape": list(ly.in_shape),
                    "out_shape": list(ly.out_shape),
                    "kernel": list(ly.kernel),
                    "stride": list(ly.stride),
                    "padding": list(ly.padding),
                    "lambda": ly.lam,
                    "threshold": ly.threshold,
                    "spiking": ly.spiking,
                    "has_weight": ly.weight is not None,
                    "has_bias": ly.bias is not None,
                }
                for ly in self.layers
            ],
            "class_names": list(self.class_names),
            "reset": self.reset,
            "temperature": self.temperature,
            "calibration": None
            if self.calibration is None
            else {"steps": self.calibration.n_steps, "samples": self.calibration.n_samples},
            "meta": dict(self.meta),
        }

    def save(self, path: str | Path) -> Path:
        """Write the network to one file (conventionally ``.scn``); return the path."""
        path = Path(path)
        arrays = self._arrays()
        manifest = self.manifest()
        manifest["arrays"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()}
        manifest["sha256"] = _hash_arrays(arrays)
        blob = np.frombuffer(json.dumps(manifest, indent=1).encode("utf-8"), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, manifest=blob, **arrays)  # type: ignore[arg-type]
        path.write_bytes(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Network:
        """Load and verify a network file; raise ModelFileError naming the file and problem."""
        return load_network(path)


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _hash_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_network(path: str | Path) -> Network:
    """Load a ``.scn`` file written by :meth:`Network.save`, checking everything."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read network file: {exc}") from exc
    if not data.startswith(b"PK"):
        raise ModelFileError(f"{path}: not a spikecast network file (no zip header at byte 0)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated network file: {exc}") from exc
    if "manifest" not in arrays:
        raise ModelFileError(f"{path}: no manifest inside; not a spikecast network file")
    try:
        manifest = json.loads(arrays.pop("manifest").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: manifest does not describe a {FORMAT_NAME} file")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: manifest has no integer format_version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: file format version {version} is newer than this spikecast reads "
            f"({FORMAT_VERSION}); upgrade spikecast"
        )
    if version < 1:
        raise ModelFileError(f"{path}: invalid format_version {version}")
    digest = _hash_arrays(arrays)
    if digest != manifest.get("sha256"):
        raise ModelFileError(
            f"{path}: sha256 of the weights is {digest}, manifest says {manifest.get('sha256')}: "
            "the file was modified or damaged"
        )
    try:
        return _from_manifest(manifest, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: inconsistent manifest: {exc}") from exc


def _from_manifest(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Network:
    inp = manifest["input"]
    spec = InputSpec(
        kind=inp["kind"],
        shape=(int(inp["shape"][0]), int(inp["shape"][1]), int(inp["shape"][2])),
        scale=float(inp["scale"]),
        mean=tuple(float(v) for v in inp["mean"]),
        std=tuple(float(v) for v in inp["std"]),
        encoding=inp["encoding"],
        dt_us=int(inp["dt_us"]),
    )
    layers = []
    for i, d in enumerate(manifest["layers"]):
        layers.append(
            Layer(
                kind=d["kind"],
                name=str(d["name"]),
                in_shape=tuple(int(v) for v in d["in_shape"]),
                out_shape=tuple(int(v) for v in d["out_shape"]),
                weight=arrays[f"layer{i}.weight"] if d["has_weight"] else None,
                bias=arrays[f"layer{i}.bias"] if d["has_bias"] else None,
                kernel=(int(d["kernel"][0]), int(d["kernel"][1])),
                stride=(int(d["stride"][0]), int(d["stride"][1])),
                padding=(int(d["padding"][0]), int(d["padding"][1])),
                lam=float(d["lambda"]),
                threshold=float(d["threshold"]),
                spiking=bool(d["spiking"]),
            )
        )
    calib = None
    if manifest.get("calibration") is not None:
        calib = CalibrationTable(
            confidence=arrays["calibration.confidence"], correct=arrays["calibration.correct"]
        )
    return Network(
        input=spec,
        layers=tuple(layers),
        class_names=tuple(str(c) for c in manifest["class_names"]),
        reset=manifest["reset"],
        temperature=float(manifest["temperature"]),
        calibration=calib,
        meta=dict(manifest.get("meta") or {}),
    )


__all__ = [
    "FORMAT_VERSION",
    "CalibrationTable",
    "InputSpec",
    "Layer",
    "Network",
    "load_network",
]
