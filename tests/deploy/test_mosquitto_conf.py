"""deploy/mosquitto.conf refuses anonymous clients and takes users from a password file;
deploy/mosquitto-dev.conf allows anonymous clients on loopback only. Real brokers."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _root_conftest() -> object:
    """tests/conftest.py by path: a plain ``import conftest`` may find another folder's."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("spikecast_tests_root_conftest", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ROOT = _root_conftest()
_free_port = _ROOT._free_port  # type: ignore[attr-defined]
find_mosquitto = _ROOT.find_mosquitto  # type: ignore[attr-defined]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HOST = "127.0.0.1"


def directives(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def local_copy(src: Path, dst: Path, port: int, passwd: Path | None) -> Path:
    """The config as shipped, with only the port (and the password file's path) changed."""
    out = []
    for words in directives(src):
        if words[0] == "listener":
            words = ["listener", str(port), HOST]
        elif words[0] == "password_file" and passwd is not None:
            words = ["password_file", str(passwd)]
        out.append(" ".join(words))
    if os.geteuid() == 0:
        out.append("user root")
    dst.write_text("\n".join(out) + "\n")
    return dst


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[object]:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("no mosquitto binary")
    procs: list[subprocess.Popen[bytes]] = []

    def start(conf: Path, port: int) -> None:
        log = (tmp_path / f"{conf.stem}.log").open("wb")
        procs.append(subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log))
        for _ in range(200):
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                return
            except OSError:
                if procs[-1].poll() is not None:
                    text = (tmp_path / f"{conf.stem}.log").read_text()
                    raise AssertionError(f"mosquitto exited: {text}") from None
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    yield start
    for p in procs:
        p.terminate()
        p.wait(5)


async def connects(port: int, username: str | None = None, password: str | None = None) -> bool:
    import aiomqtt

    try:
        async with aiomqtt.Client(HOST, port, username=username, password=password, timeout=5):
            return True
    except aiomqtt.MqttError:
        return False


def test_the_deploy_config_requires_a_login(tmp_path: Path, start_broker) -> None:  # type: ignore[no-untyped-def]
    conf = DEPLOY / "mosquitto.conf"
    words = directives(conf)
    assert ["allow_anonymous", "false"] in words
    assert any(w[0] == "password_file" for w in words)
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        pytest.skip("no mosquitto_passwd")
    passwd = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(passwd), "cam0", "s3cret"], check=True)
    port = _free_port(HOST)
    start_broker(local_copy(conf, tmp_path / "deploy.conf", port, passwd), port)
    assert not asyncio.run(connects(port)), "an anonymous client was let in"
    assert not asyncio.run(connects(port, "cam0", "wrong"))
    assert not asyncio.run(connects(port, "nobody", "s3cret"))
    assert asyncio.run(connects(port, "cam0", "s3cret"))


def test_the_dev_config_is_anonymous_on_loopback_only(tmp_path: Path, start_broker) -> None:  # type: ignore[no-untyped-def]
    conf = DEPLOY / "mosquitto-dev.conf"
    listeners = [w for w in directives(conf) if w[0] == "listener"]
    assert listeners and all(w[2:] == ["127.0.0.1"] for w in listeners), listeners
    assert ["allow_anonymous", "true"] in directives(conf)
    port = _free_port(HOST)
    start_broker(local_copy(conf, tmp_path / "dev.conf", port, None), port)
    assert asyncio.run(connects(port))


def test_the_example_service_config_logs_in_with_a_password_from_the_environment() -> None:
    text = (DEPLOY / "spikecast.toml").read_text()
    assert 'username = "cam0"' in text and 'password_env = "SPIKECAST_MQTT_PASSWORD"' in text
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "SPIKECAST_MQTT_PASSWORD" in compose and "./passwd:/mosquitto/config/passwd:ro" in compose


def test_the_workers_compose_runs_named_workers_of_one_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import shlex

    from spikecast.runtime.config import add_run_arguments, config_from_args

    text = (DEPLOY / "compose.workers.yaml").read_text()
    assert "SPIKECAST_MQTT_PASSWORD" in text and "./passwd:/mosquitto/config/passwd:ro" in text
    entry = next(line for line in text.splitlines() if line.strip().startswith("entrypoint:"))
    shell = entry.split('"-c", "', 1)[1].rsplit('"]', 1)[0].replace('\\"', '"')
    # The command the shell runs, with $HOSTNAME as the container would give it.
    argv = shlex.split(shell.replace("$$HOSTNAME", "3f2a9c1d7e4b"))[2:]
    argv[argv.index("--config") + 1] = str(DEPLOY / "spikecast.toml")
    monkeypatch.setenv("SPIKECAST_MQTT_PASSWORD", "x")
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    cfg = config_from_args(p.parse_args(argv[1:]))
    assert cfg.worker == "3f2a9c1d7e4b" and cfg.source == "mqtt" and cfg.mqtt is not None
    assert cfg.mqtt.worker == "3f2a9c1d7e4b" and cfg.mqtt.keepalive_s == 10
    # Every worker receives every packet: the broker must not drop a busy one's QoS 0.
    assert ["max_queued_messages", "100000"] in directives(DEPLOY / "mosquitto.conf")
