"""Topic builders and validators."""

from __future__ import annotations

import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt import topics


def test_builders_produce_the_documented_tree() -> None:
    assert topics.status_topic("cam0") == "spikecast/cam0/status"
    assert topics.decision_topic("cam0", "left") == "spikecast/cam0/left/decision"
    assert topics.events_topic("cam0", "left") == "spikecast/cam0/left/events"
    assert topics.events_filter("cam0") == "spikecast/cam0/+/events"
    assert (
        topics.shared_events_filter("workers", "cam0")
        == "$share/workers/spikecast/cam0/+/events"
    )
    assert topics.cmd_topic("cam0") == "spikecast/cam0/cmd/set"
    assert topics.cmd_filter("cam0") == "spikecast/cam0/cmd/#"
    assert topics.config_topic("cam0") == "spikecast/cam0/config"
    assert topics.metrics_topic("cam0") == "spikecast/cam0/metrics"


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "x\x00y", "n" * 257, 3, None])
def test_bad_names_are_refused(bad: object) -> None:
    with pytest.raises(ParameterError):
        topics.validate_name(bad)
    with pytest.raises(ParameterError):
        topics.decision_topic("cam0", bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        topics.status_topic(bad)  # type: ignore[arg-type]


def test_errors_are_value_errors_and_name_the_field() -> None:
    with pytest.raises(ValueError, match="device"):
        topics.status_topic("a/b")
    with pytest.raises(ParameterError, match="share group"):
        topics.shared_events_filter("g+", "cam0")


def test_cmd_is_reserved_as_a_stream_name() -> None:
    # spikecast/<device>/cmd/# would otherwise swallow that stream's decisions.
    with pytest.raises(ParameterError, match="reserved"):
        topics.decision_topic("cam0", "cmd")


def test_unicode_names_are_allowed() -> None:
    assert topics.decision_topic("kamera-ü", "größe") == "spikecast/kamera-ü/größe/decision"


def test_parse_stream_topic_round_trips() -> None:
    parsed = topics.parse_stream_topic(topics.events_topic("cam0", "left"))
    assert parsed == topics.StreamTopic(device="cam0", stream="left", kind="events")
    for bad in ("spikecast/cam0/status", "other/cam0/s/events", "spikecast/cam0/s/x"):
        with pytest.raises(ParameterError):
            topics.parse_stream_topic(bad)


def test_publish_topic_validation() -> None:
    assert topics.validate_publish_topic("spikecast/cam0/s/decision")
    for bad in ("", "a/+/b", "a/#", "$SYS/x", "a\x00"):
        with pytest.raises(ParameterError):
            topics.validate_publish_topic(bad)


def test_topic_filter_validation() -> None:
    for good in ("a/#", "#", "a/+/b", "+", "$share/g/a/+/events", topics.cmd_filter("d")):
        assert topics.validate_topic_filter(good) == good
    for bad in ("a/#/b", "a#", "a/b+", "$share/g", "$share/g+/a", ""):
        with pytest.raises(ParameterError):
            topics.validate_topic_filter(bad)
