"""The versioned decision payload (``v: 1``) sent on ``.../<stream>/decision``.

The v1 schema is closed: a payload with unknown or missing keys is invalid, and
any new field bumps ``v``. Example::

    {"v":1,"device":"cam0","stream":"left","seq":17,"label":"7","class_index":7,
     "confidence":0.93,"expected_accuracy":0.991,
     "topk":[{"label":"7","class_index":7,"confidence":0.93}, ...],
     "steps":24,"exit":"confident","sensor_t0_us":1200000,"sensor_t1_us":1224000,
     "sensor_t_us":1224000,"latency_ms":1.8,"synops":153210,"model_sha256":"ab12..."}

``sensor_t0_us``/``sensor_t1_us`` are the sensor-time span the decision covers;
``sensor_t_us`` repeats its end for consumers that read one time (docs/mqtt.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from spikecast.ext.core.checks import is_int, is_number
from spikecast.ext.core.errors import ParameterError
from spikecast.ext.core.exits import DECISION_EXITS, ExitReason
from spikecast.runtime.mqtt.topics import validate_name

PAYLOAD_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOPK_KEYS = frozenset({"label", "class_index", "confidence"})
DECISION_KEYS = frozenset(
    {
        "v",
        "device",
        "stream",
        "seq",
        "label",
        "class_index",
        "confidence",
        "expected_accuracy",
        "topk",
        "steps",
        "exit",
        "sensor_t0_us",
        "sensor_t1_us",
        "sensor_t_us",
        "latency_ms",
        "synops",
        "model_sha256",
    }
)


def _is_real(value: object) -> bool:
    return is_number(value) and math.isfinite(float(value))  # type: ignore[arg-type]


def _probability_errors(where: str, value: object) -> list[str]:
    if not _is_real(value):
        return [f"{where}: expected a finite number, got {value!r}"]
    if not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        return [f"{where}: {value!r} is outside [0, 1]"]
    return []


def _count_errors(where: str, value: object, minimum: int) -> list[str]:
    if not is_int(value):
        return [f"{where}: expected an int, got {value!r}"]
    if value < minimum:  # type: ignore[operator]
        return [f"{where}: {value!r} is below {minimum}"]
    return []


def _topk_errors(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        return [f"topk: expected a non-empty list, got {value!r}"]
    errors: list[str] = []
    previous = math.inf
    for i, entry in enumerate(value):
        where = f"topk[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != _TOPK_KEYS:
            errors.append(f"{where}: expected keys {sorted(_TOPK_KEYS)}, got {entry!r}")
            continue
        if not isinstance(entry["label"], str):
            errors.append(f"{where}.label: expected a str")
        errors += _count_errors(f"{where}.class_index", entry["class_index"], 0)
        conf_errors = _probability_errors(f"{where}.confidence", entry["confidence"])
        errors += conf_errors
        if not conf_errors:
            if entry["confidence"] > previous:
                errors.append("topk: confidences must not increase")
            previous = entry["confidence"]
    return errors


def _identity_errors(p: Mapping[str, Any]) -> list[str]:
    """device, stream, seq, label, class index, confidence and top-k."""
    errors: list[str] = []
    for name in ("device", "stream"):
        try:
            validate_name(p[name], what=name)
        except ParameterError as exc:
            errors.append(str(exc))
    errors += _count_errors("seq", p["seq"], 0)
    if not isinstance(p["label"], str):
        errors.append("label: expected a str")
    errors += _count_errors("class_index", p["class_index"], 0)
    errors += _probability_errors("confidence", p["confidence"])
    if p["expected_accuracy"] is not None:
        errors += _probability_errors("expected_accuracy", p["expected_accuracy"])
    topk_errors = _topk_errors(p["topk"])
    errors += topk_errors
    if not topk_errors and (
        p["topk"][0]["class_index"] != p["class_index"] or p["topk"][0]["label"] != p["label"]
    ):
        errors.append("topk[0] must be the decided class (label and class_index)")
    return errors


def _span_errors(p: Mapping[str, Any]) -> list[str]:
    """steps, exit and the sensor-time span."""
    errors = _count_errors("steps", p["steps"], 1)
    if p["exit"] not in DECISION_EXITS:
        errors.append(f"exit: expected one of {list(DECISION_EXITS)}, got {p['exit']!r}")
    span_errors = _count_errors("sensor_t0_us", p["sensor_t0_us"], 0)
    span_errors += _count_errors("sensor_t1_us", p["sensor_t1_us"], 0)
    span_errors += _count_errors("sensor_t_us", p["sensor_t_us"], 0)
    errors += span_errors
    if not span_errors:
        if p["sensor_t1_us"] < p["sensor_t0_us"]:
            errors.append("sensor_t1_us must be >= sensor_t0_us")
        if p["sensor_t_us"] != p["sensor_t1_us"]:
            errors.append("sensor_t_us must equal sensor_t1_us (the end of the span)")
    return errors


def _cost_errors(p: Mapping[str, Any]) -> list[str]:
    """latency, SynOps and the model hash."""
    errors: list[str] = []
    if not _is_real(p["latency_ms"]) or p["latency_ms"] < 0:
        errors.append(f"latency_ms: expected a finite number >= 0, got {p['latency_ms']!r}")
    errors += _count_errors("synops", p["synops"], 0)
    sha = p["model_sha256"]
    if not isinstance(sha, str) or _SHA256.fullmatch(sha) is None:
        errors.append("model_sha256: expected 64 lowercase hex digits")
    return errors


def decision_payload_errors(payload: object) -> list[str]:
    """Every way ``payload`` (a parsed JSON object) breaks the v1 schema; [] if valid."""
    if not isinstance(payload, Mapping):
        return [f"payload: expected a JSON object, got {type(payload).__name__}"]
    keys = set(payload)
    errors: list[str] = []
    if keys - DECISION_KEYS:
        errors.append(f"payload: unknown keys {sorted(keys - DECISION_KEYS)}")
    if DECISION_KEYS - keys:
        errors.append(f"payload: missing keys {sorted(DECISION_KEYS - keys)}")
        return errors
    if payload["v"] != PAYLOAD_VERSION or not is_int(payload["v"]):
        return [*errors, f"v: unsupported payload version {payload['v']!r} (this reader knows 1)"]
    return errors + _identity_errors(payload) + _span_errors(payload) + _cost_errors(payload)


def validate_decision_payload(payload: object) -> None:
    """Raise ParameterError listing every problem if ``payload`` is not a valid v1 decision."""
    errors = decision_payload_errors(payload)
    if errors:
        raise ParameterError("invalid decision payload: " + "; ".join(errors))


@dataclasses.dataclass(frozen=True, slots=True)
class TopK:
    """One ranked class of a decision."""

    label: str
    class_index: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_index": self.class_index, "confidence": self.confidence}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """One published classification; invalid field values raise ParameterError.

    ``check=False`` skips that validation, for the one caller whose every field comes
    from typed engine results (``DecisionContext.decision``, a decision's own cost on
    every file and live step); its output is held to the schema by the tests."""

    device: str
    stream: str
    seq: int
    label: str
    class_index: int
    confidence: float
    expected_accuracy: float | None
    topk: tuple[TopK, ...]
    steps: int
    exit: ExitReason
    sensor_t0_us: int
    sensor_t1_us: int
    latency_ms: float
    synops: int
    model_sha256: str
    v: int = PAYLOAD_VERSION
    check: dataclasses.InitVar[bool] = True

    def __post_init__(self, check: bool) -> None:
        if not check:
            return
        # A list passed for topk is frozen into a tuple so the Decision stays immutable.
        if isinstance(self.topk, list):
            object.__setattr__(self, "topk", tuple(self.topk))
        if not all(isinstance(t, TopK) for t in self.topk):
            raise ParameterError("invalid decision: topk entries must be TopK")
        validate_decision_payload(self.to_dict())

    @property
    def sensor_t_us(self) -> int:
        """The end of the covered sensor-time span."""
        return self.sensor_t1_us

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "device": self.device,
            "stream": self.stream,
            "seq": self.seq,
            "label": self.label,
            "class_index": self.class_index,
            "confidence": self.confidence,
            "expected_accuracy": self.expected_accuracy,
            "topk": [t.to_dict() for t in self.topk],
            "steps": self.steps,
            "exit": self.exit,
            "sensor_t0_us": self.sensor_t0_us,
            "sensor_t1_us": self.sensor_t1_us,
            "sensor_t_us": self.sensor_t_us,
            "latency_ms": self.latency_ms,
            "synops": self.synops,
            "model_sha256": self.model_sha256,
        }

    def to_json(self) -> str:
        """Compact JSON, one line."""
        return json.dumps(
            self.to_dict(), separators=(",", ":"), allow_nan=False, ensure_ascii=False
        )

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Decision:
        validate_decision_payload(payload)
        fields = {k: v for k, v in payload.items() if k not in ("v", "sensor_t_us", "topk")}
        topk = tuple(
            TopK(label=t["label"], class_index=t["class_index"], confidence=float(t["confidence"]))
            for t in payload["topk"]
        )
        return cls(topk=topk, **fields)

    @classmethod
    def from_json(cls, text: str | bytes) -> Decision:
        """Parse and validate; malformed JSON or schema violations raise ParameterError."""
        try:
            payload = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ParameterError(f"invalid decision payload: not JSON ({exc})") from exc
        if not isinstance(payload, dict):
            raise ParameterError("invalid decision payload: expected a JSON object")
        return cls.from_dict(payload)


__all__ = [
    "DECISION_EXITS",
    "DECISION_KEYS",
    "PAYLOAD_VERSION",
    "Decision",
    "ExitReason",
    "TopK",
    "decision_payload_errors",
    "validate_decision_payload",
]
