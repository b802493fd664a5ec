"""Connection settings for the MQTT publisher, with URL parsing.

``MqttSettings.from_url("mqtts://user:pass@broker:8883?device=cam0")`` is what the
CLI and config files hand over. The password never appears in ``repr`` or in
error messages; :attr:`MqttSettings.redacted_url` is the form to log.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from spikecast.ext.core.checks import is_int, is_number
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.topics import validate_name

_SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}


def _to_int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise ParameterError(f"MQTT URL option {key} must be an integer") from exc


def _to_float(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise ParameterError(f"MQTT URL option {key} must be a number") from exc


def _to_str(key: str, text: str) -> str:
    return text


# The options a URL query may set; everything else (notably the password) may not.
_QUERY_OPTIONS: dict[str, Callable[[str, str], Any]] = {
    "device": _to_str,
    "worker": _to_str,
    "client_id": _to_str,
    "ca_file": _to_str,
    "cert_file": _to_str,
    "key_file": _to_str,
    "keepalive_s": _to_int,
    "outbox_size": _to_int,
    "inbox_size": _to_int,
    "qos": _to_int,
    "reconnect_min_s": _to_float,
    "reconnect_max_s": _to_float,
    "timeout_s": _to_float,
}


def _url_fields(parts: SplitResult, port: int | None) -> dict[str, Any]:
    """Settings from the scheme, user, password, host and port of a split URL."""
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ParameterError(f"MQTT URL scheme must be mqtt or mqtts, got {scheme!r}")
    if not parts.hostname:
        raise ParameterError("MQTT URL has no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise ParameterError("MQTT URL must not have a path or fragment")
    tls, default_port = _SCHEMES[scheme]
    fields: dict[str, Any] = {
        "host": parts.hostname,
        "port": default_port if port is None else port,
        "tls": tls,
    }
    if parts.username is not None:
        fields["username"] = unquote(parts.username)
    if parts.password is not None:
        fields["password"] = unquote(parts.password)
    return fields


def _query_fields(query: str) -> dict[str, Any]:
    """Settings from a URL's query options, each known and given once."""
    fields: dict[str, Any] = {}
    for key, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        convert = _QUERY_OPTIONS.get(key)
        if convert is None:
            raise ParameterError(f"unknown MQTT URL option {key!r}")
        if key in fields:
            raise ParameterError(f"MQTT URL option {key!r} given twice")
        fields[key] = convert(key, text)
    return fields


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class MqttSettings:
    """Where and how to connect; validated on construction.

    ``outbox_size`` bounds the messages waiting for the broker (oldest dropped
    beyond it), ``inbox_size`` bounds each subscription's queue of incoming
    messages. ``timeout_s`` bounds connect, publish-acknowledge and subscribe.

    ``worker`` names this process as one of several workers of ``device``
    (docs/mqtt.md "Scaling out"): its presence and Last Will go to
    ``spikecast/<device>/workers/<worker>/status`` instead of the device's
    ``status``, its client id is ``spikecast-<device>-<worker>`` unless ``client_id``
    is given (stable, so that a reconnect takes over the old session and the old
    connection's Will comes before the new ``online``), and every message it
    publishes carries the MQTT 5 user property ``spikecast-worker: <worker>``.
    The broker sends the Will when it sees the connection close (at once when the
    process dies) or after 1.5 x ``keepalive_s`` without a packet (a hung process,
    a lost host or network).
    """

    host: str = "localhost"
    port: int = 1883
    device: str
    worker: str | None = None
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    outbox_size: int = 10_000
    inbox_size: int = 1_000
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    timeout_s: float = 10.0
    qos: int = 1

    def __post_init__(self) -> None:
        self._check_identity()
        self._check_tls()
        self._check_limits()

    def _check_identity(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ParameterError("host must be a non-empty str")
        if not is_int(self.port) or not 1 <= self.port <= 65535:
            raise ParameterError(f"port must be an int in 1..65535, got {self.port!r}")
        validate_name(self.device, what="device")
        if self.worker is not None:
            validate_name(self.worker, what="worker")
        if self.client_id is not None and (
            not isinstance(self.client_id, str) or not self.client_id
        ):
            raise ParameterError("client_id must be a non-empty str or None")
        if self.username is not None and not isinstance(self.username, str):
            raise ParameterError("username must be a str or None")
        if self.password is not None:
            if not isinstance(self.password, str):
                raise ParameterError("password must be a str or None")
            if self.username is None:
                raise ParameterError("a password needs a username")

    def _check_tls(self) -> None:
        if not isinstance(self.tls, bool):
            raise ParameterError("tls must be a bool")
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise ParameterError(f"{name} must be a non-empty path or None")
            if not self.tls:
                raise ParameterError(f"{name} is set but tls is off; use tls=True or mqtts://")
        if self.key_file is not None and self.cert_file is None:
            raise ParameterError("key_file needs cert_file")

    def _check_limits(self) -> None:
        if not is_int(self.keepalive_s) or not 1 <= self.keepalive_s <= 65535:
            raise ParameterError(f"keepalive_s must be an int in 1..65535: {self.keepalive_s!r}")
        for name in ("outbox_size", "inbox_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ParameterError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("reconnect_min_s", "reconnect_max_s", "timeout_s"):
            value = getattr(self, name)
            if not is_number(value) or not math.isfinite(value) or value <= 0:
                raise ParameterError(f"{name} must be a finite number > 0, got {value!r}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ParameterError("reconnect_max_s must be >= reconnect_min_s")
        if not is_int(self.qos) or self.qos not in (0, 1, 2):
            raise ParameterError(f"qos must be 0, 1 or 2, got {self.qos!r}")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttSettings:
        """Parse ``mqtt[s]://[user[:password]@]host[:port][?option=value&...]``.

        ``mqtts`` turns TLS on and defaults the port to 8883 (1883 for ``mqtt``).
        Query options: device, worker, client_id, ca_file, cert_file, key_file, keepalive_s,
        outbox_size, inbox_size, qos, reconnect_min_s, reconnect_max_s, timeout_s.
        Keyword ``overrides`` win over the URL. User and password are
        percent-decoded, so ``p%40ss`` means ``p@ss``.
        """
        if not isinstance(url, str):
            raise ParameterError(f"MQTT URL must be a str, got {type(url).__name__}")
        # Error messages below never quote the URL: it may carry a password.
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ParameterError("MQTT URL is malformed (bad host or port)") from exc
        fields = _url_fields(parts, port)
        fields.update(_query_fields(parts.query))
        fields.update(overrides)
        if "device" not in fields:
            raise ParameterError("MQTT settings need a device (device=... or ?device=...)")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ParameterError(f"unknown MQTT setting: {exc}") from None

    @property
    def redacted_url(self) -> str:
        """The broker address without the password, for logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "password" and value is not None:
                shown.append("password='***'")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"MqttSettings({', '.join(shown)})"

    __str__ = __repr__


__all__ = ["MqttSettings"]
