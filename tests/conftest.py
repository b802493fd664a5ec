"""Shared pytest fixtures.

``mosquitto`` starts a real Mosquitto broker on a free loopback port for one test;
``mosquitto_factory`` makes brokers with extra configuration (auth, TLS,
persistence). Both skip the test only when no ``mosquitto`` binary exists.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

_MOSQUITTO_FALLBACK = "/usr/sbin/mosquitto"


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH, else the Debian location, else None."""
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    if os.access(_MOSQUITTO_FALLBACK, os.X_OK):
        return _MOSQUITTO_FALLBACK
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class MosquittoBroker:
    """One mosquitto process on a fixed loopback port; ``stop()``/``start()`` restart it."""

    host = "127.0.0.1"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        extra_config: Sequence[str] = (),
        *,
        anonymous: bool = True,
        persistence: bool = False,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port(self.host)
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
        ]
        if persistence:
            # Sessions and queued QoS>0 messages survive stop()/start() in this folder.
            lines.append(f"persistence_location {workdir}/")
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to the 'mosquitto' user and then be
            # unable to write its database into our root-owned temporary folder.
            lines.append("user root")
        lines.extend(extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker (same port as before) and wait until it accepts connections."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited early:\n{self.log_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto did not accept on port {self.port} within {timeout_s} s"
                    ) from None
                time.sleep(0.02)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL if it lingers)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """``make(extra_config=(), *, anonymous=True, persistence=False)`` -> started broker."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("no mosquitto binary on PATH or at /usr/sbin/mosquitto")
    brokers: list[MosquittoBroker] = []

    def make(
        extra_config: Sequence[str] = (),
        *,
        anonymous: bool = True,
        persistence: bool = False,
    ) -> MosquittoBroker:
        workdir = tmp_path / f"mosquitto-{len(brokers)}"
        workdir.mkdir()
        broker = MosquittoBroker(
            binary, workdir, extra_config, anonymous=anonymous, persistence=persistence
        )
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A running anonymous, non-persistent broker: ``host``, ``port``, ``stop()``, ``start()``."""
    return mosquitto_factory()
