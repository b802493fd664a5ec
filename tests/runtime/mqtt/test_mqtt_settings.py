"""MqttSettings: validation, URL parsing, password hiding."""

from __future__ import annotations

import dataclasses

import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.settings import MqttSettings


def test_defaults() -> None:
    s = MqttSettings(device="cam0")
    assert (s.host, s.port, s.tls, s.qos) == ("localhost", 1883, False, 1)
    assert s.reconnect_min_s <= s.reconnect_max_s


def test_from_url_plain_and_tls() -> None:
    s = MqttSettings.from_url("mqtt://user:pass@broker.local:1884?device=cam0")
    assert (s.host, s.port, s.username, s.password, s.tls) == (
        "broker.local", 1884, "user", "pass", False,
    )
    t = MqttSettings.from_url("mqtts://broker.local", device="cam0", ca_file="/etc/ca.pem")
    assert (t.port, t.tls, t.ca_file) == (8883, True, "/etc/ca.pem")
    assert MqttSettings.from_url("mqtt://h", device="d").port == 1883


def test_from_url_options_and_overrides() -> None:
    s = MqttSettings.from_url(
        "mqtt://h:1883?device=cam0&keepalive_s=5&outbox_size=7&reconnect_min_s=0.25"
        "&reconnect_max_s=4&qos=0&client_id=edge-1",
        outbox_size=9,
    )
    assert (s.keepalive_s, s.outbox_size, s.reconnect_min_s, s.reconnect_max_s) == (5, 9, 0.25, 4)
    assert (s.qos, s.client_id) == (0, "edge-1")


def test_from_url_percent_decodes_credentials() -> None:
    s = MqttSettings.from_url("mqtt://us%40er:p%40ss%3Aw@h?device=d")
    assert (s.username, s.password) == ("us@er", "p@ss:w")


def test_ipv6_host() -> None:
    s = MqttSettings.from_url("mqtt://[::1]:1999?device=d")
    assert (s.host, s.port, s.redacted_url) == ("::1", 1999, "mqtt://[::1]:1999")


@pytest.mark.parametrize(
    "url",
    [
        "http://h?device=d",
        "mqtt://?device=d",
        "mqtt://h:99999?device=d",
        "mqtt://h:port?device=d",
        "mqtt://h/path?device=d",
        "mqtt://h?device=d&password=x",
        "mqtt://h?device=d&device=e",
        "mqtt://h?device=d&keepalive_s=soon",
        "mqtt://h",
        "mqtt://h?device=a/b",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ParameterError):
        MqttSettings.from_url(url)


def test_url_errors_never_echo_the_password() -> None:
    with pytest.raises(ParameterError) as info:
        MqttSettings.from_url("mqtt://u:hunter2@h:notaport?device=d")
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value.__cause__)


def test_password_hidden_from_repr_and_redacted_url() -> None:
    s = MqttSettings.from_url("mqtts://alice:hunter2@h?device=d")
    for text in (repr(s), str(s), s.redacted_url, repr([s])):
        assert "hunter2" not in text
    assert "password='***'" in repr(s)
    assert s.redacted_url == "mqtts://alice@h:8883"
    assert "password=None" in repr(MqttSettings(device="d"))


@pytest.mark.parametrize(
    "fields",
    [
        {"port": 0},
        {"port": True},
        {"keepalive_s": 0},
        {"keepalive_s": 1.5},
        {"outbox_size": 0},
        {"inbox_size": -1},
        {"reconnect_min_s": 0},
        {"reconnect_min_s": 2.0, "reconnect_max_s": 1.0},
        {"timeout_s": float("inf")},
        {"qos": 3},
        {"password": "x"},
        {"ca_file": "/ca.pem"},
        {"tls": True, "key_file": "/k.pem"},
        {"tls": "yes"},
        {"host": ""},
        {"client_id": ""},
    ],
)
def test_bad_values(fields: dict[str, object]) -> None:
    with pytest.raises(ParameterError):
        MqttSettings(device="cam0", **fields)  # type: ignore[arg-type]


def test_frozen() -> None:
    s = MqttSettings(device="cam0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
