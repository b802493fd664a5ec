"""The v1 decision payload: round trip and validation."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from mqtt_testkit import SHA, make_decision
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.payload import (
    DECISION_KEYS,
    Decision,
    TopK,
    decision_payload_errors,
    validate_decision_payload,
)


def test_round_trip_and_required_fields() -> None:
    d = make_decision(5)
    text = d.to_json()
    assert "\n" not in text and " " not in text
    payload = json.loads(text)
    assert set(payload) == DECISION_KEYS
    assert {"v", "device", "stream", "seq", "label", "class_index", "confidence",
            "expected_accuracy", "topk", "steps", "exit", "sensor_t_us", "latency_ms",
            "synops", "model_sha256"} <= set(payload)  # DESIGN's minimum
    assert payload["v"] == 1 and payload["sensor_t_us"] == payload["sensor_t1_us"] == 5999
    assert payload["topk"][0] == {"label": "seven", "class_index": 7, "confidence": 0.9}
    assert Decision.from_json(text) == d
    assert Decision.from_json(text.encode()) == d
    validate_decision_payload(payload)


def test_expected_accuracy_may_be_null_and_topk_list_is_frozen() -> None:
    d = dataclasses.replace(make_decision(0), expected_accuracy=None, exit="end_of_stream")
    assert Decision.from_json(d.to_json()).expected_accuracy is None
    e = Decision(**{**_fields(make_decision(0)), "topk": [TopK("seven", 7, 0.9)]})
    assert isinstance(e.topk, tuple)


def _fields(d: Decision) -> dict[str, Any]:
    return {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}


def _payload(**changes: Any) -> dict[str, Any]:
    payload = make_decision(3).to_dict()
    payload.update(changes)
    return payload


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"v": 2}, "version"),
        ({"seq": -1}, "seq"),
        ({"seq": 1.0}, "seq"),
        ({"seq": True}, "seq"),
        ({"confidence": 1.5}, "confidence"),
        ({"confidence": float("nan")}, "confidence"),
        ({"expected_accuracy": -0.1}, "expected_accuracy"),
        ({"exit": "timeout"}, "exit"),
        ({"steps": 0}, "steps"),
        ({"sensor_t0_us": 10_000}, "sensor_t1_us"),
        ({"sensor_t_us": 1}, "sensor_t_us"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"synops": 1.5}, "synops"),
        ({"model_sha256": "AB" * 32}, "model_sha256"),
        ({"model_sha256": "ab"}, "model_sha256"),
        ({"device": "a/b"}, "device"),
        ({"topk": []}, "topk"),
        ({"topk": [{"label": "seven", "class_index": 7}]}, "topk"),
        ({"topk": [{"label": "one", "class_index": 1, "confidence": 0.9}]}, "topk[0]"),
        (
            {"topk": [{"label": "seven", "class_index": 7, "confidence": 0.5},
                      {"label": "one", "class_index": 1, "confidence": 0.6}]},
            "increase",
        ),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_invalid_payloads_are_named(changes: dict[str, Any], problem: str) -> None:
    payload = _payload(**changes)
    errors = decision_payload_errors(payload)
    assert errors and any(problem in e for e in errors), errors
    with pytest.raises(ParameterError, match="invalid decision payload"):
        validate_decision_payload(payload)


def test_missing_keys_and_non_objects() -> None:
    payload = _payload()
    del payload["latency_ms"]
    assert any("missing keys ['latency_ms']" in e for e in decision_payload_errors(payload))
    assert decision_payload_errors([1, 2]) != []
    for text in ("not json", "[1]", b"\xff\xfe"):
        with pytest.raises(ParameterError):
            Decision.from_json(text)


def test_invalid_decision_cannot_be_built() -> None:
    with pytest.raises(ParameterError):
        dataclasses.replace(make_decision(0), confidence=2.0)
    with pytest.raises(ParameterError):
        dataclasses.replace(make_decision(0), v=2)
    with pytest.raises(ParameterError):
        Decision(**{**_fields(make_decision(0)), "topk": [("seven", 7, 0.9)]})


def test_to_json_refuses_nothing_valid() -> None:
    d = Decision(
        device="d", stream="s", seq=0, label="x", class_index=0, confidence=1, expected_accuracy=1,
        topk=(TopK("x", 0, 1.0),), steps=1, exit="max_steps", sensor_t0_us=0, sensor_t1_us=0,
        latency_ms=0, synops=0, model_sha256=SHA,
    )
    assert Decision.from_json(d.to_json()).to_dict() == d.to_dict()
