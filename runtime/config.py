"""Run configuration: a TOML file, overridden by command-line flags.

Example (``deploy/spikecast.toml`` holds a full one)::

    model = "net.scn"
    source = "recordings/*.bin"        # event files, images, .npy frame stacks, "mqtt",
                                       # "udp://HOST:PORT" or "dv://HOST:PORT" (docs/sources.md)
    device = "cam0"
    stream = "main"
    realtime = false
    # view = ":8080"                   # the live viewer on http://127.0.0.1:8080/

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

    [metrics]
    interval_s = 10                    # the metrics topic
    port = 9464                        # Prometheus /metrics (needs the "metrics" extra)
    addr = "127.0.0.1"

    [homeassistant]
    discovery = true                   # Home Assistant MQTT discovery (needs [mqtt] url)
    prefix = "homeassistant"
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spikecast.ext.core.calibration import MAX_STEPS
from spikecast.ext.core.checks import check_float, check_int
from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.decision import OperatingPoint
from spikecast.runtime.limits import LiveLimits
from spikecast.runtime.mqtt.homeassistant import check_prefix
from spikecast.runtime.mqtt.settings import MqttSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POLICIES = ("reset", "window", "decay")


@dataclass(frozen=True)
class RunConfig:
    """One run: model, source, operating point, stream policy and (optionally) MQTT.

    ``mqtt`` is None for stdout mode (JSON lines, the embedded default).
    """

    model: Path
    source: str
    device: str = "spikecast"
    stream: str = "main"
    realtime: bool = False
    speed: float = 1.0
    #: A whole operating point (API use); None: the model's recommended point.
    point: OperatingPoint | None = None
    #: Fields set by flags or the config file, applied over ``point`` (or the model's).
    point_changes: Mapping[str, Any] = field(default_factory=dict)
    policy: str = "reset"
    window_ms: float = 300.0
    decay: float = 0.5
    one_per_file: bool = True
    crop: tuple[int, int, int, int] | None = None  # x0, y0, width, height on the sensor
    downsample: int = 1
    fit: bool = False  # choose crop and downsample per file from its sensor size
    fmt: str | None = None  # event file format when neither name nor content tells it
    mqtt: MqttSettings | None = None
    #: Deprecated for event streams (Mosquitto splits a stream across the group); use
    #: ``worker``. Kept for brokers that dispatch shared subscriptions by topic hash.
    shared_group: str | None = None
    #: This process is worker ``worker`` of ``device``: it decides only the live streams
    #: it owns (docs/mqtt.md, "Scaling out"). Needs ``source = "mqtt"`` and a broker.
    worker: str | None = None
    metrics_interval_s: float = 10.0
    queue_events: int = 2_000_000
    #: Prometheus ``/metrics`` on this port (0: any free one); None: no HTTP server.
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    #: Home Assistant MQTT discovery configs under ``ha_prefix`` (needs ``mqtt``).
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    #: The live viewer's ``[HOST]:PORT`` (``:8080``: 127.0.0.1:8080); None: no viewer.
    view: str | None = None
    #: A ``udp://HOST:PORT`` source: its datagram format, the sensor size it sends
    #: (None: the network input's, with a warning) and the receive buffer asked for.
    udp_format: str = "faery"
    sensor_size: tuple[int, int] | None = None
    udp_rcvbuf: int = 8 << 20
    #: What live packets and commands may cost (docs/mqtt.md, "Limits"); API only.
    limits: LiveLimits = field(default_factory=LiveLimits)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ParameterError(f"policy must be one of {POLICIES}, not {self.policy!r}")
        check_float("window_ms", self.window_ms, 0.0, lo_open=True)
        check_float("decay", self.decay, 0.0, 1.0, hi_open=True)
        check_float("speed", self.speed, 0.0, lo_open=True)
        check_int("downsample", self.downsample, 1)
        check_int("queue_events", self.queue_events, 1)
        if self.fit and (self.crop is not None or self.downsample != 1):
            raise ParameterError("--fit chooses --crop and --downsample itself; give one or the other")
        if self.fmt is not None:
            from spikecast.runtime.readers import FORMATS

            if self.fmt not in FORMATS:
                raise ParameterError(f"format must be one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if self.mqtt is not None and self.mqtt.device != self.device:
            raise ParameterError(
                f"MQTT settings are for device {self.mqtt.device!r}, the run for {self.device!r}"
            )
        self._check_monitoring()
        self._check_udp()
        self._check_worker()

    def _check_worker(self) -> None:
        if self.worker is None:
            return
        if self.mqtt is None or self.source != "mqtt":
            raise ParameterError("--worker needs --source mqtt and a broker (--mqtt)")
        if self.shared_group is not None:
            raise ParameterError("--worker and --shared-group exclude each other: a worker "
                                 "takes every packet of the device and keeps the streams it owns")
        if self.ha_discovery:
            raise ParameterError("--ha-discovery is not supported with --worker: its sensors' "
                                 "availability is the device status, which workers do not write")
        if self.mqtt.worker is None:
            object.__setattr__(self, "mqtt", replace(self.mqtt, worker=self.worker))
        elif self.mqtt.worker != self.worker:
            raise ParameterError(f"MQTT settings are for worker {self.mqtt.worker!r}, "
                                 f"the run for {self.worker!r}")

    def _check_udp(self) -> None:
        """A udp:// source's address, format, sensor size and buffer; a dv:// address."""
        from spikecast.runtime.dv import is_dv, parse_dv
        from spikecast.runtime.udp import FORMATS, is_udp, parse_size, parse_udp

        if self.udp_format not in FORMATS:
            raise ParameterError(f"udp_format must be one of {', '.join(FORMATS)}, not {self.udp_format!r}")
        if isinstance(self.sensor_size, str):
            object.__setattr__(self, "sensor_size", parse_size(self.sensor_size))
        elif self.sensor_size is not None:
            size = self.sensor_size
            if not isinstance(size, (tuple, list)) or len(size) != 2:
                raise ParameterError(f"sensor_size is WIDTHxHEIGHT or [width, height], not {size!r}")
            object.__setattr__(self, "sensor_size", parse_size(f"{size[0]}x{size[1]}"))
        check_int("udp_rcvbuf", self.udp_rcvbuf, 1024, 1 << 30)
        if is_udp(self.source):
            parse_udp(self.source)
        if is_dv(self.source):
            parse_dv(self.source)

    def _check_monitoring(self) -> None:
        """The Prometheus endpoint and Home Assistant discovery."""
        if self.metrics_port is not None:
            check_int("metrics_port", self.metrics_port, 0, 65535)
        if not isinstance(self.metrics_addr, str) or not self.metrics_addr:
            raise ParameterError(f"metrics_addr must be a host name or address, not {self.metrics_addr!r}")
        if not isinstance(self.ha_discovery, bool):
            raise ParameterError(f"ha_discovery must be true or false, not {self.ha_discovery!r}")
        if self.ha_discovery and self.mqtt is None:
            raise ParameterError(
                "--ha-discovery needs --mqtt URL (or url in [mqtt]): Home Assistant reads "
                "its discovery configs from the broker"
            )
        check_prefix(self.ha_prefix)
        if self.view is not None:
            from spikecast.runtime.view import parse_view

            parse_view(self.view)


_MQTT_KEYS = {"url", "username", "password_env", "tls", "ca_file", "cert_file", "key_file",
              "outbox_size", "client_id", "keepalive_s", "qos"}


def mqtt_settings(url: str, device: str, options: dict[str, Any]) -> MqttSettings:
    """Settings from a broker URL (which must not carry a password) and options.

    ``options`` may hold ``password_env``: the name of an environment variable with
    the password. Secrets come from the environment only: a URL shows up in ps, shell
    history and logs.
    """
    if _url_password(url):
        raise ParameterError(
            "the MQTT URL must not carry a password; give the name of an environment "
            "variable holding it (--password-env, or password_env in [mqtt])"
        )
    opts = {k: v for k, v in options.items() if v is not None}
    env = opts.pop("password_env", None)
    if env is not None:
        opts["password"] = os.environ.get(str(env))
        if opts["password"] is None:
            raise ParameterError(f"password_env names {env}, which is not set")
    if opts.get("tls") is False:
        del opts["tls"]  # mqtts:// turns TLS on; a false flag does not turn it off
    for key in ("ca_file", "cert_file", "key_file"):
        if key in opts:
            opts[key] = str(opts[key])
    return MqttSettings.from_url(url, device=device, **opts)


def _url_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:  # malformed: MqttSettings.from_url reports it without echoing the URL
        return False


_SECTIONS = {"decision", "mqtt", "metrics", "input", "homeassistant", "limits"}
#: ``[metrics]`` and ``[homeassistant]`` keys -> RunConfig fields.
_RENAMED = {
    ("metrics", "interval_s"): "metrics_interval_s",
    ("metrics", "port"): "metrics_port",
    ("metrics", "addr"): "metrics_addr",
    ("homeassistant", "discovery"): "ha_discovery",
    ("homeassistant", "prefix"): "ha_prefix",
}


_POINT_KEYS = ("tau", "t_min", "t_max", "target_accuracy")


def _section_key(path: Path, section: str, key: str, value: Any, out: dict[str, dict[str, Any]]) -> None:
    """Place one ``[section] key = value`` into the flat, point or mqtt keywords."""
    if section == "decision" and key in _POINT_KEYS:
        out["point"][key] = value
    elif section == "limits":
        out["limits"][key] = value
    elif section == "mqtt":
        if key == "password":
            raise ParameterError(
                f"{path}: the MQTT password is not read from files; set password_env "
                "to the name of an environment variable holding it"
            )
        if key not in _MQTT_KEYS:
            raise ParameterError(f"{path}: unknown key {key!r} in [mqtt]")
        out["mqtt"][key] = value
    elif (section, key) in _RENAMED:
        out["flat"][_RENAMED[section, key]] = value
    elif section == "homeassistant":
        raise ParameterError(f"{path}: unknown key {key!r} in [homeassistant]")
    else:
        out["flat"][key] = value


def live_limits(path: Path, values: dict[str, Any]) -> LiveLimits:
    """The [limits] section: LiveLimits fields (docs/mqtt.md, "Limits")."""
    known = {f.name for f in fields(LiveLimits)}
    unknown = set(values) - known
    if unknown:
        raise ParameterError(f"{path}: unknown keys {sorted(unknown)} in [limits]; use {sorted(known)}")
    try:
        return LiveLimits(**values)
    except ParameterError as exc:
        raise ParameterError(f"{path}: [limits]: {exc}") from exc


def load_toml(path: str | Path) -> dict[str, Any]:
    """Flatten a TOML config into RunConfig keywords (errors name the file and key)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParameterError(f"{path}: cannot read config: {exc}") from exc
    out: dict[str, dict[str, Any]] = {"flat": {}, "point": {}, "mqtt": {}, "limits": {}}
    for key, value in raw.items():
        if not isinstance(value, dict):
            out["flat"][key] = value
            continue
        if key not in _SECTIONS:
            raise ParameterError(f"{path}: unknown section [{key}]")
        for sub, v in value.items():
            _section_key(path, key, sub, v, out)
    flat = out["flat"]
    if "password" in flat or "password_env" in flat:
        raise ParameterError(
            f"{path}: MQTT credentials belong in [mqtt]: password_env names an environment "
            "variable holding the password (the password itself is never read from files)"
        )
    for name in ("point", "mqtt"):
        if out[name]:
            flat[name] = out[name]
    if out["limits"]:
        flat["limits"] = live_limits(path, out["limits"])
    unknown = set(flat) - {f.name for f in fields(RunConfig)}
    if unknown:
        raise ParameterError(f"{path}: unknown config keys {sorted(unknown)}")
    return flat


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config; flags override it")
    p.add_argument("--model", type=Path, help="network file (.scn)")
    p.add_argument(
        "--source",
        help="event files (.bin .aedat4 .raw .dat .npy .npz; globs ok), a directory of "
        "them, images, 'mqtt' for live packets on spikecast/<device>/+/events, "
        "udp://HOST:PORT to listen for UDP events (faery or SPIF; see --udp-format), "
        "dv://HOST:PORT to connect to a DV/dv-processing network stream (the dv extra)",
    )
    p.add_argument(
        "--udp-format",
        choices=("faery", "faery-compact", "spif"),
        help="datagrams of a udp:// source: faery's t64_x16_y16_on8 records (default), "
        "faery's t32_x16_y15_on1 (faery-compact), or SPIF/aestream 32-bit words",
    )
    p.add_argument(
        "--sensor-size",
        metavar="WxH",
        help="sensor size of a udp:// source (UDP does not say it; default: the network "
        "input's, with a warning); checked like a file's (--fit, --crop, --downsample). "
        "A dv:// source states its own",
    )
    p.add_argument(
        "--udp-rcvbuf",
        type=int,
        metavar="BYTES",
        help="receive buffer asked for a udp:// source (default 8 MiB; the kernel may "
        "grant less, the log says what it got)",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        metavar="FMT",
        help="event file format when neither the name nor the content tells it: "
        "nmnist, aedat4, evt2, evt3, dat, npy",
    )
    p.add_argument("--device", help="device name in MQTT topics")
    p.add_argument("--stream", help="stream name for file, udp:// and dv:// sources")
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
    p.add_argument(
        "--worker",
        metavar="NAME",
        help="run as worker NAME of the device: every worker gets every packet and decides only "
        "the streams it owns (rendezvous hashing over the live workers; docs/mqtt.md 'Scaling out')",
    )
    p.add_argument(
        "--keepalive-s",
        type=int,
        help="MQTT keepalive (default 30): the broker sends a hung worker's Last Will after "
        "1.5 x this without a packet",
    )
    p.add_argument(
        "--shared-group",
        help="deprecated for event streams: $share/<group>/... is only right on a broker that "
        "dispatches by topic hash (EMQX hash_topic); Mosquitto splits a stream. Use --worker",
    )
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
    p.add_argument(
        "--crop", type=int, nargs=4, metavar=("X0", "Y0", "W", "H"), help="sensor region to use"
    )
    p.add_argument("--downsample", type=int, help="divide sensor coordinates by K (after --crop)")
    p.add_argument(
        "--fit",
        action="store_true",
        default=None,
        help="a sensor bigger than the network input: use its largest centred region of the "
        "input's shape, downsampled to fit (the --crop/--downsample a refusal suggests)",
    )
    p.add_argument("--metrics-interval-s", type=float)
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (needs the 'metrics' extra: "
        "pip install 'spikecast[metrics]')",
    )
    p.add_argument("--metrics-addr", help="address the metrics endpoint binds (default 127.0.0.1)")
    p.add_argument(
        "--ha-discovery",
        action="store_true",
        default=None,
        help="publish Home Assistant MQTT discovery configs (label, confidence, latency "
        "sensors per stream); removed on a clean exit. Needs --mqtt",
    )
    p.add_argument(
        "--view",
        metavar="[HOST]:PORT",
        help="serve a live page (event frames, decisions, latency) on http://HOST:PORT/; "
        ":8080 binds 127.0.0.1, 0.0.0.0:8080 every interface",
    )
    p.add_argument("--ha-prefix", help="Home Assistant discovery prefix (default homeassistant)")
    p.add_argument(
        "--queue-events",
        type=int,
        help="bound on queued events (default 2,000,000): live packets beyond it are shed "
        "and counted; file sources wait instead",
    )


def _flags(args: argparse.Namespace, names: dict[str, str], into: dict[str, Any]) -> dict[str, Any]:
    """``into`` with every flag in ``names`` (argparse dest -> key) that was given."""
    for flag, key in names.items():
        v = getattr(args, flag, None)
        if v is not None:
            into[key] = tuple(v) if isinstance(v, list) else v
    return into


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = load_toml(args.config) if getattr(args, "config", None) else {}
    point = _flags(args, {k: k for k in _POINT_KEYS}, dict(values.pop("point", {})))
    mqtt = _flags(args, _MQTT_FLAGS, dict(values.pop("mqtt", {})))
    plain = {f.name: f.name for f in fields(RunConfig) if f.name not in ("point", "point_changes", "mqtt")}
    _flags(args, plain, values)
    for required in ("model", "source"):
        if values.get(required) is None:
            raise ParameterError(f"--{required} is required (or set it in the config file)")
    values["model"] = Path(values["model"])
    if values.get("crop") is not None:
        values["crop"] = tuple(int(v) for v in values["crop"])
    url = mqtt.pop("url", None)
    if url is not None:
        values["mqtt"] = mqtt_settings(str(url), values.get("device", "spikecast"), mqtt)
    elif mqtt:
        raise ParameterError(f"MQTT options {sorted(mqtt)} need a broker URL (--mqtt or url in [mqtt])")
    try:
        cfg = RunConfig(**values)
    except TypeError as exc:
        raise ParameterError(f"bad config: {exc}") from exc
    if point:
        OperatingPoint(t_max=MAX_STEPS).updated(point)  # bad values fail here, before the model loads
        cfg = replace(cfg, point_changes=point)
    return cfg


#: CLI flags (argparse dests) that fill MqttSettings, and their [mqtt] keys.
_MQTT_FLAGS = {"mqtt_url": "url", "username": "username", "password_env": "password_env",
               "tls": "tls", "ca_file": "ca_file", "cert_file": "cert_file", "key_file": "key_file",
               "keepalive_s": "keepalive_s"}


__all__ = ["POLICIES", "RunConfig", "add_run_arguments", "config_from_args", "load_toml", "mqtt_settings"]
