"""Run configuration: a TOML file, overridden by command-line flags.

Example (``deploy/spikecast.toml`` holds a full one)::

    model = "net.scn"
    source = "recordings/*.bin"        # event files, images, .npy frame stacks, or "mqtt"
    device = "cam0"
    stream = "main"
    realtime = false

    [decision]
    tau = 0.9
    t_min = 5
    t_max = 200
    # target_accuracy = 0.99           # derive tau from the calibration table instead
    policy = "reset"                   # reset | window | decay
    window_ms = 300
    decay = 0.5

    [mqtt]
    url = "mqtt://broker:1883"        # absent: decisions go to stdout as JSON lines
    username = "cam0"
    password_env = "SPIKECAST_MQTT_PASSWORD"   # secrets come from the environment, never the file
    tls = false
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spikecast.converters.errors import ParameterError
from spikecast.runtime.decision import OperatingPoint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POLICIES = ("reset", "window", "decay")


@dataclass(frozen=True)
class RunConfig:
    model: Path
    source: str
    device: str = "spikecast"
    stream: str = "main"
    realtime: bool = False
    speed: float = 1.0
    point: OperatingPoint = field(default_factory=OperatingPoint)
    policy: str = "reset"
    window_ms: float = 300.0
    decay: float = 0.5
    one_per_file: bool = True
    crop: tuple[int, int, int, int] | None = None  # x0, y0, width, height on the sensor
    downsample: int = 1
    mqtt_url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    shared_group: str | None = None
    metrics_interval_s: float = 10.0
    queue_events: int = 2_000_000
    outbox_size: int = 10_000
    threads: int = 1

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ParameterError(f"policy must be one of {POLICIES}, not {self.policy!r}")
        if self.window_ms <= 0:
            raise ParameterError(f"window_ms must be positive, got {self.window_ms}")
        if not 0.0 <= self.decay < 1.0:
            raise ParameterError(f"decay must be in [0, 1), got {self.decay}")
        if self.speed <= 0:
            raise ParameterError(f"speed must be positive, got {self.speed}")
        if self.downsample < 1:
            raise ParameterError(f"downsample must be >= 1, got {self.downsample}")
        if self.queue_events < 1 or self.outbox_size < 1 or self.threads < 1:
            raise ParameterError("queue_events, outbox_size and threads must be >= 1")
        if self.mqtt_url is not None and _url_password(self.mqtt_url):
            # Secrets come from the environment only: a URL shows up in ps, shell history
            # and this dataclass's repr.
            raise ParameterError(
                "the MQTT URL must not carry a password; give the name of an environment "
                "variable holding it (--password-env, or password_env in [mqtt])"
            )


def _url_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:  # malformed: MqttSettings.from_url reports it without echoing the URL
        return False


_SECTIONS = {"decision", "mqtt", "metrics", "input"}


def load_toml(path: str | Path) -> dict[str, Any]:
    """Flatten a TOML config into RunConfig keywords (errors name the file and key)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParameterError(f"{path}: cannot read config: {exc}") from exc
    flat: dict[str, Any] = {}
    point: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in _SECTIONS:
                raise ParameterError(f"{path}: unknown section [{key}]")
            for sub, v in value.items():
                if key == "decision" and sub in ("tau", "t_min", "t_max", "target_accuracy"):
                    point[sub] = v
                elif key == "mqtt":
                    flat["mqtt_url" if sub == "url" else sub] = v
                elif key == "metrics" and sub == "interval_s":
                    flat["metrics_interval_s"] = v
                else:
                    flat[sub] = v
        else:
            flat[key] = value
    if "password" in flat:
        raise ParameterError(
            f"{path}: the MQTT password is not read from files; set password_env to the name "
            "of an environment variable holding it"
        )
    if "password_env" in flat:
        env = str(flat.pop("password_env"))
        flat["password"] = os.environ.get(env)
        if flat["password"] is None:
            raise ParameterError(f"{path}: password_env names {env}, which is not set")
    if point:
        flat["point"] = point
    known = {f.name for f in fields(RunConfig)}
    unknown = set(flat) - known
    if unknown:
        raise ParameterError(f"{path}: unknown config keys {sorted(unknown)}")
    return flat


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config; flags override it")
    p.add_argument("--model", type=Path, help="network file (.scn)")
    p.add_argument(
        "--source",
        help="event files (.bin .aedat4 .raw .dat .npy .npz; globs ok), "
        "images, 'mqtt' for live packets on spikecast/<device>/+/events",
    )
    p.add_argument("--device", help="device name in MQTT topics")
    p.add_argument("--stream", help="stream name for file sources")
    p.add_argument(
        "--mqtt",
        dest="mqtt_url",
        help="broker URL mqtt://[user@]host[:port] or mqtts://; the password comes from --password-env",
    )
    p.add_argument("--username")
    p.add_argument("--password-env", help="environment variable holding the MQTT password")
    p.add_argument("--tls", action="store_true", default=None)
    p.add_argument("--ca-file", type=Path)
    p.add_argument("--cert-file", type=Path)
    p.add_argument("--key-file", type=Path)
    p.add_argument("--shared-group", help="consume events via $share/<group>/... (scale out over workers)")
    p.add_argument("--realtime", action="store_true", default=None, help="pace file replay by sensor time")
    p.add_argument("--speed", type=float, help="replay speed factor with --realtime")
    p.add_argument("--tau", type=float)
    p.add_argument("--t-min", type=int)
    p.add_argument("--t-max", type=int)
    p.add_argument("--target-accuracy", type=float, help="derive tau from the calibration table")
    p.add_argument("--policy", choices=POLICIES)
    p.add_argument("--window-ms", type=float)
    p.add_argument("--decay", type=float)
    p.add_argument(
        "--all-decisions",
        dest="one_per_file",
        action="store_false",
        default=None,
        help="keep deciding through a whole file (default: one decision per file)",
    )
    p.add_argument("--crop", type=int, nargs=4, metavar=("X0", "Y0", "W", "H"))
    p.add_argument("--downsample", type=int)
    p.add_argument("--metrics-interval-s", type=float)
    p.add_argument("--threads", type=int)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = load_toml(args.config) if getattr(args, "config", None) else {}
    point = dict(values.pop("point", {}))
    for name in ("tau", "t_min", "t_max", "target_accuracy"):
        v = getattr(args, name, None)
        if v is not None:
            point[name] = v
    if getattr(args, "password_env", None):
        values["password"] = os.environ.get(args.password_env)
        if values["password"] is None:
            raise ParameterError(f"--password-env names {args.password_env}, which is not set")
    for f in fields(RunConfig):
        if f.name in ("point", "password"):
            continue
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = tuple(v) if isinstance(v, list) else v
    for required in ("model", "source"):
        if values.get(required) is None:
            raise ParameterError(f"--{required} is required (or set it in the config file)")
    values["model"] = Path(values["model"])
    for key in ("ca_file", "cert_file", "key_file"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    if values.get("crop") is not None:
        values["crop"] = tuple(int(v) for v in values["crop"])
    try:
        cfg = RunConfig(**values)
    except TypeError as exc:
        raise ParameterError(f"bad config: {exc}") from exc
    return replace(cfg, point=OperatingPoint().updated(point)) if point else cfg


__all__ = ["POLICIES", "RunConfig", "add_run_arguments", "config_from_args", "load_toml"]
