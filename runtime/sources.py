"""The files a ``--source`` names: one file, a glob, or a directory (its files).

A directory means its files of a type the network can take, in name order: event
recordings (by suffix, or recognised by their first bytes, such as an N-MNIST
binary named ``.bs2``) for an event network, images and ``.npy`` stacks for a frame
network. Other entries (``labels.csv``, hidden files, subdirectories) are skipped
and listed, never read. A glob's matches are all read, except directories.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from spikecast.ext.core.errors import ParameterError, StreamError

EVENT_SUFFIXES = {".bin", ".bs2", ".aedat4", ".raw", ".dat", ".npy", ".npz", ".evt2", ".evt3"}
FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm"}


@dataclass(frozen=True)
class Sources:
    """The files to read, the directory entries skipped, and whether one file was named
    (its read errors end the run; in a set of files they are counted and skipped)."""

    paths: list[Path]
    skipped: list[Path] = field(default_factory=list)
    single: bool = False


def _recognised(path: Path) -> bool:
    from spikecast.runtime.readers import detect_format

    try:
        detect_format(path)
    except (OSError, StreamError):
        return False
    return True


def _takes(path: Path, kind: str) -> bool:
    if not path.is_file() or path.name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if kind == "frame":
        return suffix in FRAME_SUFFIXES or suffix == ".npy"
    return suffix in EVENT_SUFFIXES or _recognised(path)


def _directory(path: Path, kind: str) -> Sources:
    entries = sorted(path.iterdir(), key=lambda p: p.name)  # one directory: the names order it
    takes = [_takes(p, kind) for p in entries]
    taken = [p for p, t in zip(entries, takes, strict=True) if t]
    if not taken:
        raise StreamError(f"{path}: directory holds no {'frame' if kind == 'frame' else 'event'} files")
    return Sources(taken, [p for p, t in zip(entries, takes, strict=True) if not t])


def stream_name(stem: str, prefix: str = "main") -> str:
    """The stream a file's decisions carry: its stem (after ``prefix-`` unless the
    prefix is "main"), made a valid topic level (``topics.as_stream_name``)."""
    from spikecast.runtime.mqtt.topics import as_stream_name

    return as_stream_name(stem if prefix == "main" else f"{prefix}-{stem}")


def list_sources(source: str, kind: str = "events") -> Sources:
    """The files of ``source`` for a network taking ``kind`` ("events" or "frame")."""
    if any(ch in source for ch in "*?["):
        matched = [Path(p) for p in sorted(glob.glob(source))]
        files = [p for p in matched if not p.is_dir()]
        if not files:
            raise StreamError(f"source {source!r} matches no files")
        return Sources(files, [p for p in matched if p.is_dir()])
    path = Path(source)
    if path.is_dir():
        return _directory(path, kind)
    if not path.exists():
        raise StreamError(f"{path}: no such file")
    return Sources([path], single=True)



@dataclass(frozen=True)
class HostPort:
    """``SCHEME://HOST:PORT`` of a network source (``[::1]`` for IPv6); subclasses name
    the scheme and the lowest port they accept."""

    host: str
    port: int
    scheme: ClassVar[str] = ""
    label: ClassVar[str] = ""  # "A UDP source": the start of the parse error
    min_port: ClassVar[int] = 1

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @classmethod
    def matches(cls, source: object) -> bool:
        return isinstance(source, str) and source.startswith(f"{cls.scheme}://")

    @classmethod
    def parse(cls, source: str) -> HostPort:
        rest = source[len(cls.scheme) + 3 :] if cls.matches(source) else ""
        host, sep, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not cls.min_port <= int(port) <= 65535:
            raise ParameterError(f"{cls.label} is {cls.scheme}://HOST:PORT, not {source!r}")
        return cls(host, int(port))


__all__ = ["EVENT_SUFFIXES", "FRAME_SUFFIXES", "HostPort", "Sources", "list_sources"]
