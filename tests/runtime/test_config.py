"""RunConfig: TOML files, command-line overrides, secrets only from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import pytest
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.config import RunConfig, add_run_arguments, config_from_args, load_toml
from spikecast.runtime.mqtt.settings import MqttSettings
from spikecast.runtime.service import make_publisher

SECRET = "s3cr3t-Pa55"


def parse(*argv: str) -> RunConfig:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return config_from_args(p.parse_args(list(argv)))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spikecast.toml"
    path.write_text(text)
    return path


TOML = """
model = "net.scn"
source = "mqtt"
device = "cam0"

[decision]
tau = 0.9
t_min = 5
t_max = 300
policy = "window"
window_ms = 250

[mqtt]
url = "mqtt://broker:1883"
username = "cam0"
password_env = "SPIKECAST_TEST_PASSWORD"

[metrics]
interval_s = 2.5
"""


def test_toml_sections_flatten_into_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIKECAST_TEST_PASSWORD", SECRET)
    cfg = parse("--config", str(write(tmp_path, TOML)))
    assert cfg.model == Path("net.scn") and cfg.source == "mqtt" and cfg.device == "cam0"
    assert cfg.point is None and cfg.point_changes == {"tau": 0.9, "t_min": 5, "t_max": 300}
    assert (cfg.policy, cfg.window_ms, cfg.metrics_interval_s) == ("window", 250, 2.5)
    assert cfg.mqtt is not None
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.device) == ("broker", 1883, "cam0")
    assert (cfg.mqtt.username, cfg.mqtt.password) == ("cam0", SECRET)


def test_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIKECAST_TEST_PASSWORD", SECRET)
    path = write(tmp_path, TOML)
    cfg = parse(
        "--config",
        str(path),
        "--tau",
        "0.5",
        "--device",
        "cam9",
        "--policy",
        "reset",
        "--all-decisions",
        "--crop",
        "1",
        "2",
        "30",
        "31",
        "--realtime",
    )
    assert cfg.point_changes == {"tau": 0.5, "t_min": 5, "t_max": 300}  # only tau overridden
    assert (cfg.device, cfg.policy, cfg.one_per_file, cfg.realtime) == (
        "cam9",
        "reset",
        False,
        True,
    )
    assert cfg.crop == (1, 2, 30, 31) and cfg.window_ms == 250


def test_flags_alone_and_required_fields() -> None:
    cfg = parse("--model", "m.scn", "--source", "x/*.bin", "--target-accuracy", "0.97")
    assert cfg.point_changes == {"target_accuracy": 0.97} and cfg.mqtt is None
    with pytest.raises(ParameterError, match="--source is required"):
        parse("--model", "m.scn")
    with pytest.raises(ParameterError, match="tau must be in"):
        parse("--model", "m.scn", "--source", "mqtt", "--tau", "1.5")
    with pytest.raises(ParameterError, match="window_ms"):
        parse("--model", "m.scn", "--source", "mqtt", "--window-ms", "0")


def test_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"spikecast\.toml: unknown section \[camera\]"):
        load_toml(write(tmp_path, "[camera]\nx = 1\n"))
    with pytest.raises(ParameterError, match=r"spikecast\.toml: unknown config keys \['colour'\]"):
        load_toml(write(tmp_path, 'model = "m"\ncolour = "red"\n'))
    with pytest.raises(ParameterError, match=r"spikecast\.toml: cannot read config"):
        load_toml(write(tmp_path, "model = \n"))


def test_password_only_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPIKECAST_TEST_PASSWORD", raising=False)
    with pytest.raises(ParameterError, match="SPIKECAST_TEST_PASSWORD, which is not set"):
        parse("--config", str(write(tmp_path, TOML)))
    # Not from the file...
    for text in (f'[mqtt]\npassword = "{SECRET}"\n', f'password = "{SECRET}"\n'):
        with pytest.raises(ParameterError, match="password_env") as err:
            load_toml(write(tmp_path, text))
        assert SECRET not in str(err.value)
    # ...nor from the broker URL, in a file or a flag.
    with pytest.raises(ParameterError, match="must not carry a password") as err:
        parse("--model", "m", "--source", "mqtt", "--mqtt", f"mqtt://cam0:{SECRET}@broker:1883")
    assert SECRET not in str(err.value)
    with pytest.raises(ParameterError, match="must not carry a password"):
        parse(
            "--config",
            str(
                write(
                    tmp_path, f'model = "m"\nsource = "mqtt"\n[mqtt]\nurl = "mqtt://u:{SECRET}@b"\n'
                )
            ),
        )
    # From the environment, by --password-env.
    monkeypatch.setenv("MY_PW", SECRET)
    cfg = parse(
        "--model",
        "m",
        "--source",
        "mqtt",
        "--mqtt",
        "mqtt://broker",
        "--username",
        "u",
        "--password-env",
        "MY_PW",
    )
    assert cfg.mqtt is not None and cfg.mqtt.password == SECRET


async def test_password_never_shows_in_repr_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MY_PW", SECRET)
    cfg = parse(
        "--model",
        "m",
        "--source",
        "mqtt",
        "--mqtt",
        "mqtt://127.0.0.1:1?reconnect_min_s=0.02&reconnect_max_s=0.05",
        "--username",
        "u",
        "--password-env",
        "MY_PW",
    )
    pub = make_publisher(cfg)
    for text in (repr(cfg), str(cfg), repr(pub), repr(getattr(pub, "settings", None))):
        assert SECRET not in text
    caplog.set_level(logging.DEBUG)
    async with pub:  # port 1 refuses: the connection errors are logged
        await asyncio.sleep(0.3)
    assert "127.0.0.1" in caplog.text and SECRET not in caplog.text


def test_decay_policy_is_accepted_from_cli_and_toml(tmp_path: Path) -> None:
    cli = parse("--model", "m", "--source", "mqtt", "--policy", "decay", "--decay", "0.25")
    assert cli.policy == "decay" and cli.decay == 0.25
    toml = parse(
        "--config",
        str(write(tmp_path, 'model = "m"\nsource = "mqtt"\n[decision]\npolicy = "decay"\ndecay = 0.5\n')),
    )
    assert toml.policy == "decay" and toml.decay == 0.5
    with pytest.raises(ParameterError, match=r"decay must be in \[0.0, 1.0\)"):
        RunConfig(model=Path("m"), source="mqtt", policy="decay", decay=1.0)


def test_other_bad_values_are_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="policy must be one of"):
        RunConfig(model=Path("m"), source="mqtt", policy="sometimes")
    with pytest.raises(ParameterError, match="decay must be in"):
        RunConfig(model=Path("m"), source="mqtt", decay=1.0)
    with pytest.raises(ParameterError, match="queue_events"):
        RunConfig(model=Path("m"), source="mqtt", queue_events=0)
    with pytest.raises(ParameterError, match="need a broker URL"):
        parse("--model", "m", "--source", "mqtt", "--username", "u")
    with pytest.raises(ParameterError, match="device"):
        RunConfig(model=Path("m"), source="mqtt", device="a", mqtt=MqttSettings(device="b"))


def test_metrics_endpoint_and_home_assistant_from_toml_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIKECAST_TEST_PASSWORD", SECRET)
    extra = '\nport = 9464\naddr = "0.0.0.0"\n\n[homeassistant]\ndiscovery = true\nprefix = "site/ha"\n'
    cfg = parse("--config", str(write(tmp_path, TOML + extra)))
    assert (cfg.metrics_port, cfg.metrics_addr, cfg.metrics_interval_s) == (9464, "0.0.0.0", 2.5)
    assert (cfg.ha_discovery, cfg.ha_prefix) == (True, "site/ha")
    cfg = parse("--model", "m.scn", "--source", "mqtt", "--mqtt", "mqtt://b:1883", "--metrics-port",
                "0", "--metrics-addr", "::1", "--ha-discovery", "--ha-prefix", "ha2")
    assert (cfg.metrics_port, cfg.metrics_addr, cfg.ha_discovery, cfg.ha_prefix) == (0, "::1", True, "ha2")
    plain = parse("--model", "m.scn", "--source", "x")
    assert (plain.metrics_port, plain.metrics_addr) == (None, "127.0.0.1")
    assert (plain.ha_discovery, plain.ha_prefix) == (False, "homeassistant")


def test_metrics_and_home_assistant_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="--ha-discovery needs --mqtt"):
        parse("--model", "m.scn", "--source", "x", "--ha-discovery")
    with pytest.raises(ParameterError, match=r"metrics_port must be in \[0, 65535\]"):
        parse("--model", "m.scn", "--source", "x", "--metrics-port", "70000")
    path = write(tmp_path, 'model = "m"\nsource = "x"\n[homeassistant]\nenabled = true\n')
    with pytest.raises(ParameterError, match=r"unknown key 'enabled' in \[homeassistant\]"):
        load_toml(path)
    path = write(tmp_path, 'model = "m"\nsource = "x"\n[homeassistant]\ndiscovery = "yes"\n')
    with pytest.raises(ParameterError, match="ha_discovery must be true or false"):
        parse("--config", str(path))
