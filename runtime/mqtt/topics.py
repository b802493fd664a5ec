"""Topic builders and validators for the spikecast MQTT tree.

Every topic spikecast uses lives under ``spikecast/<device>/``::

    spikecast/<device>/status                 online | offline, retained (also the Last Will)
    spikecast/<device>/<stream>/decision      decision JSON, QoS 1
    spikecast/<device>/<stream>/events        binary event packets (input)
    spikecast/<device>/cmd/<command>          control (``cmd/set``)
    spikecast/<device>/config                 operating point in force, retained
    spikecast/<device>/metrics                periodic metrics
    spikecast/<device>/workers/<worker>/status   online | offline of one worker, retained
                                                 (its Last Will); the live worker set
    spikecast/<device>/workers/<worker>/metrics  periodic metrics of one worker

Device and stream names become single topic levels, so they must be non-empty and
free of ``/``, ``+``, ``#`` and NUL; anything else raises :class:`ParameterError`.
"""

from __future__ import annotations

from typing import NamedTuple

from spikecast.ext.core.errors import ParameterError

PREFIX = "spikecast"
#: MQTT caps topics at 65535 UTF-8 bytes; names are kept far shorter so every topic fits.
MAX_NAME_CHARS = 256
MAX_TOPIC_BYTES = 65535
#: ``cmd`` is reserved as a stream name: ``spikecast/<device>/cmd/#`` would otherwise
#: also match that stream's decision and events topics; ``workers`` holds the workers'
#: presence topics.
RESERVED_STREAMS = frozenset({"cmd", "workers"})
_FORBIDDEN_CHARS = ("/", "+", "#", "\x00")


class StreamTopic(NamedTuple):
    """The parts of ``spikecast/<device>/<stream>/<kind>``."""

    device: str
    stream: str
    kind: str


def validate_name(name: object, *, what: str = "name") -> str:
    """Return ``name`` if it can be one topic level; raise ParameterError otherwise."""
    if not isinstance(name, str):
        raise ParameterError(f"{what} must be a str, got {type(name).__name__}")
    if not name:
        raise ParameterError(f"{what} must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ParameterError(f"{what} is longer than {MAX_NAME_CHARS} characters")
    bad = [c for c in _FORBIDDEN_CHARS if c in name]
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ParameterError(f"{what} {name!r} contains {shown}; topic levels cannot")
    return name


def as_stream_name(name: str) -> str:
    """``name`` made a valid stream level: '/', '+', '#' and NUL become '_', it is cut to
    MAX_NAME_CHARS, and an empty or reserved name gets a trailing '_'."""
    for c in _FORBIDDEN_CHARS:
        name = name.replace(c, "_")
    name = name[:MAX_NAME_CHARS]
    if not name or name in RESERVED_STREAMS:
        name = (name + "_")[:MAX_NAME_CHARS]
    return name


def _stream(stream: object) -> str:
    name = validate_name(stream, what="stream")
    if name in RESERVED_STREAMS:
        raise ParameterError(f"stream name {name!r} is reserved")
    return name


def _base(device: object) -> str:
    return f"{PREFIX}/{validate_name(device, what='device')}"


def status_topic(device: str) -> str:
    """``spikecast/<device>/status``: online/offline, retained, and the Last Will."""
    return f"{_base(device)}/status"


def decision_topic(device: str, stream: str) -> str:
    """``spikecast/<device>/<stream>/decision``."""
    return f"{_base(device)}/{_stream(stream)}/decision"


def events_topic(device: str, stream: str) -> str:
    """``spikecast/<device>/<stream>/events``: where event packets for a stream arrive."""
    return f"{_base(device)}/{_stream(stream)}/events"


def events_filter(device: str) -> str:
    """``spikecast/<device>/+/events``: the event packets of every stream of a device."""
    return f"{_base(device)}/+/events"


def shared_events_filter(group: str, device: str) -> str:
    """``$share/<group>/spikecast/<device>/+/events``: MQTT 5 shared subscription.

    Every worker subscribed with the same group gets a share of the packets, so
    several machines can take load from one broker. A stream's state lives in one
    worker, so this is only correct where the broker sends every message of one
    topic to the same member (dispatch by topic hash); a broker that hands out
    messages in turn splits a stream across workers (docs/mqtt.md, "Scaling out").
    """
    return f"$share/{validate_name(group, what='share group')}/{events_filter(device)}"


def cmd_topic(device: str, command: str = "set") -> str:
    """``spikecast/<device>/cmd/<command>``; ``cmd/set`` changes the operating point."""
    return f"{_base(device)}/cmd/{validate_name(command, what='command')}"


def cmd_filter(device: str) -> str:
    """``spikecast/<device>/cmd/#``: every command for a device."""
    return f"{_base(device)}/cmd/#"


def config_topic(device: str) -> str:
    """``spikecast/<device>/config``: the operating point in force, retained."""
    return f"{_base(device)}/config"


def metrics_topic(device: str) -> str:
    """``spikecast/<device>/metrics``: periodic metrics."""
    return f"{_base(device)}/metrics"


def worker_status_topic(device: str, worker: str) -> str:
    """``spikecast/<device>/workers/<worker>/status``: one worker's presence, retained;
    ``online`` on connect, ``offline`` on exit and as its Last Will."""
    return f"{_base(device)}/workers/{validate_name(worker, what='worker')}/status"


def worker_metrics_topic(device: str, worker: str) -> str:
    """``spikecast/<device>/workers/<worker>/metrics``: one worker's periodic metrics."""
    return f"{_base(device)}/workers/{validate_name(worker, what='worker')}/metrics"


def workers_filter(device: str) -> str:
    """``spikecast/<device>/workers/+/status``: the presence of every worker of a device."""
    return f"{_base(device)}/workers/+/status"


def parse_worker_topic(topic: str) -> str:
    """The worker of ``spikecast/<device>/workers/<worker>/status``."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != PREFIX or parts[2] != "workers" or parts[4] != "status":
        raise ParameterError(f"{topic!r} is not a spikecast/<device>/workers/<worker>/status topic")
    return validate_name(parts[3], what="worker")


def parse_stream_topic(topic: str) -> StreamTopic:
    """Split ``spikecast/<device>/<stream>/<kind>`` (kind: decision or events)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != PREFIX or parts[3] not in ("decision", "events"):
        raise ParameterError(f"{topic!r} is not a spikecast/<device>/<stream>/<kind> topic")
    device = validate_name(parts[1], what="device")
    return StreamTopic(device=device, stream=_stream(parts[2]), kind=parts[3])


def _check_length(topic: str, what: str) -> None:
    if not topic:
        raise ParameterError(f"{what} must not be empty")
    if "\x00" in topic:
        raise ParameterError(f"{what} {topic!r} contains NUL")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise ParameterError(f"{what} is longer than {MAX_TOPIC_BYTES} bytes")


def validate_publish_topic(topic: object) -> str:
    """Return ``topic`` if a client may publish to it (no wildcards, no ``$`` prefix)."""
    if not isinstance(topic, str):
        raise ParameterError(f"topic must be a str, got {type(topic).__name__}")
    _check_length(topic, "topic")
    if "+" in topic or "#" in topic:
        raise ParameterError(f"topic {topic!r} contains a wildcard; publish needs a plain topic")
    if topic.startswith("$"):
        raise ParameterError(f"topic {topic!r} starts with '$', which is reserved for the broker")
    return topic


def validate_topic_filter(topic_filter: object) -> str:
    """Return ``topic_filter`` if it is a valid subscription (wildcards, ``$share``)."""
    if not isinstance(topic_filter, str):
        raise ParameterError(f"topic filter must be a str, got {type(topic_filter).__name__}")
    _check_length(topic_filter, "topic filter")
    levels = topic_filter.split("/")
    if levels[0] == "$share":
        if len(levels) < 3:
            raise ParameterError(f"{topic_filter!r}: shared form is $share/<group>/<filter>")
        validate_name(levels[1], what="share group")
        levels = levels[2:]
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ParameterError(f"{topic_filter!r}: '#' must be a whole, last level")
        if "+" in level and level != "+":
            raise ParameterError(f"{topic_filter!r}: '+' must be a whole level")
    return topic_filter


__all__ = [
    "PREFIX",
    "RESERVED_STREAMS",
    "StreamTopic",
    "as_stream_name",
    "cmd_filter",
    "cmd_topic",
    "config_topic",
    "decision_topic",
    "events_filter",
    "events_topic",
    "metrics_topic",
    "parse_stream_topic",
    "parse_worker_topic",
    "shared_events_filter",
    "status_topic",
    "validate_name",
    "validate_publish_topic",
    "validate_topic_filter",
    "worker_metrics_topic",
    "worker_status_topic",
    "workers_filter",
]
