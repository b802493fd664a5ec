"""The no-broker embedded default: one JSON line per decision on a text stream.

Lines are flushed one by one so a pipe (``spikecast ... | jq .label``) sees each
decision as soon as it is made. Only decision topics are written unless
``all_topics`` is set: status, config and metrics are broker concepts, and
mixing them in would break consumers that expect one decision per line.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TextIO

from spikecast.ext.core.errors import ParameterError, PublishError
from spikecast.runtime.mqtt.base import PayloadLike, PublisherStats, check_qos, encode_payload
from spikecast.runtime.mqtt.topics import validate_publish_topic

_DECISION_SUFFIX = "/decision"


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


class StdoutPublisher:
    """Writes decisions as JSON lines to ``stream`` (default: ``sys.stdout``)."""

    def __init__(self, stream: TextIO | None = None, *, all_topics: bool = False) -> None:
        self._stream = stream
        self._all_topics = all_topics
        self._open = False
        self._enqueued = 0
        self._sent = 0

    async def __aenter__(self) -> StdoutPublisher:
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        try:
            self._out().flush()
        except OSError as err:
            raise PublishError(f"cannot flush decision stream: {err}") from err

    def _out(self) -> TextIO:
        # Looked up on use, not at construction, so redirected stdout is honoured.
        return self._stream if self._stream is not None else sys.stdout

    def _line(self, topic: str, data: bytes) -> str | None:
        is_decision = topic.endswith(_DECISION_SUFFIX)
        if not is_decision and not self._all_topics:
            return None
        try:
            value: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
            if is_decision:
                raise ParameterError(f"decision payload on {topic!r} is not JSON") from None
        if is_decision:
            # Re-encoded so the line is compact and cannot hold a raw newline.
            return _compact(value)
        if value is not None:
            return _compact({"topic": topic, "payload": value})
        try:
            return _compact({"topic": topic, "payload": data.decode("utf-8")})
        except UnicodeDecodeError:
            return _compact({"topic": topic, "payload_b64": base64.b64encode(data).decode()})

    async def publish(
        self,
        topic: str,
        payload: PayloadLike,
        *,
        qos: int | None = None,
        retain: bool = False,
    ) -> None:
        """Write one line now (qos and retain mean nothing on a stream)."""
        if not self._open:
            raise PublishError("StdoutPublisher.publish() outside 'async with'")
        validate_publish_topic(topic)
        if qos is not None:
            check_qos(qos)
        if isinstance(payload, Mapping) and topic.endswith(_DECISION_SUFFIX):
            # Our own compact JSON (json.dumps escapes newlines): no decode and re-encode.
            line: str | None = encode_payload(payload).decode("utf-8")
        else:
            line = self._line(topic, encode_payload(payload))
        if line is None:
            # Not a decision and not asked for: deliberately not written nor counted.
            return
        out = self._out()
        try:
            out.write(line + "\n")
            out.flush()
        except OSError as err:
            raise PublishError(f"cannot write decision line: {err}") from err
        self._enqueued += 1
        self._sent += 1

    def stats(self) -> PublisherStats:
        return PublisherStats(
            connected=self._open,
            reconnects=0,
            enqueued=self._enqueued,
            sent=self._sent,
            dropped=0,
            pending=0,
        )


__all__ = ["StdoutPublisher"]
