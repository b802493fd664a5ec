"""Username/password authentication against a real broker with a password file."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mqtt_testkit import make_decision, recording_subscriber, settings_for
from spikecast.ext.core.errors import PublishError
from spikecast.runtime.mqtt import MqttPublisher, MqttSettings
from spikecast.runtime.mqtt.topics import decision_topic

if TYPE_CHECKING:
    from conftest import MosquittoBroker

    BrokerFactory = Callable[..., MosquittoBroker]

DECISIONS = decision_topic("cam0", "s0")
PASSWORD = "c0rrect-h0rse"


@pytest.fixture
def auth_broker(mosquitto_factory: BrokerFactory, tmp_path: Path) -> MosquittoBroker:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not found; cannot make a password file")
    password_file = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(password_file), "edge", PASSWORD], check=True, timeout=10)
    return mosquitto_factory([f"password_file {password_file}"], anonymous=False)


async def test_publishes_with_username_and_password(
    auth_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host, port = auth_broker.host, auth_broker.port
    url = f"mqtt://edge:{PASSWORD}@{host}:{port}?device=cam0&reconnect_min_s=0.05"
    settings = MqttSettings.from_url(url, reconnect_max_s=0.2, timeout_s=3.0)
    async with recording_subscriber(
        host, port, DECISIONS, username="edge", password=PASSWORD
    ) as sub:
        async with MqttPublisher(settings) as pub:
            await pub.wait_connected(5)
            await pub.publish(DECISIONS, make_decision(1).to_dict())
            assert await pub.flush(5)
            assert PASSWORD not in repr(pub) and PASSWORD not in repr(settings)
        await sub.wait_count(1, 5)
    assert sub.payloads == [make_decision(1).to_json().encode()]
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_reported_not_logged(
    auth_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = settings_for(auth_broker, username="edge", password="not-it")
    async with MqttPublisher(wrong, flush_timeout_s=0) as pub:
        with pytest.raises(PublishError, match="not connected"):
            await pub.wait_connected(1)
        error = pub.stats().last_error
        assert error is not None and "authori" in error.lower()
    assert "not-it" not in caplog.text and "not-it" not in repr(wrong)
