"""Event-file readers: one module per format, one entry point.

``read_events(path)`` picks the reader from the file name, else from the first
bytes (an N-MNIST binary under another name, such as ``.bs2``, is recognised by
its records), and returns a :class:`Recording` whose events are EVENT_DTYPE, sorted by
time and inside the sensor. Every reader validates before trusting anything; a
malformed file raises :class:`~spikecast.ext.core.errors.StreamError` naming
the file and the byte offset.

==========  =====================  ===========================================
fmt         files                  needs
==========  =====================  ===========================================
``nmnist``  N-MNIST ``.bin``       numpy
``aedat4``  ``.aedat4``            the ``aedat`` package (``spikecast[dvs]``)
``evt2``    Prophesee ``.raw``     numpy
``evt3``    Prophesee ``.raw``     numpy
``dat``     Prophesee ``.dat``     numpy
``npy``     ``.npy`` / ``.npz``    numpy
==========  =====================  ===========================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from spikecast.ext.core.errors import ParameterError, StreamError
from spikecast.runtime.readers._prophesee import parse_header
from spikecast.runtime.readers.aedat4 import MAGIC as AEDAT4_MAGIC
from spikecast.runtime.readers.aedat4 import read_aedat4
from spikecast.runtime.readers.dat import read_dat
from spikecast.runtime.readers.evt2 import read_evt2
from spikecast.runtime.readers.evt3 import read_evt3
from spikecast.runtime.readers.nmnist import NMNIST_SIZE, read_nmnist
from spikecast.runtime.readers.npy import read_npy
from spikecast.runtime.readers.recording import Recording

Reader = Callable[..., Recording]

READERS: dict[str, Reader] = {
    "nmnist": read_nmnist,
    "aedat4": read_aedat4,
    "evt2": read_evt2,
    "evt3": read_evt3,
    "dat": read_dat,
    "npy": read_npy,
}
FORMATS = tuple(READERS)

_BY_SUFFIX = {".bin": "nmnist", ".aedat4": "aedat4", ".dat": "dat", ".npy": "npy", ".npz": "npy"}
_SNIFF = 4096


def _raw_format(head: bytes, path: Path) -> str | None:
    """EVT 2.0 or 3.0 from a Prophesee header, None when it does not say."""
    try:
        version = parse_header(head, path).evt_version
    except StreamError:
        return None  # header longer than the sniffed bytes: the reader will decide
    return {"2.0": "evt2", "3.0": "evt3"}.get(version or "")


def _looks_like_nmnist(head: bytes, size: int) -> bool:
    """Whole 5-byte records inside 34x34 with non-decreasing timestamps (at least 8)."""
    n = min(len(head), size) // 5
    if size % 5 or n < 8:
        return False
    b = np.frombuffer(head[: 5 * n], dtype=np.uint8).reshape(n, 5).astype(np.int64)
    t = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    inside = bool((b[:, 0] < NMNIST_SIZE).all() and (b[:, 1] < NMNIST_SIZE).all())
    return inside and bool((t[1:] >= t[:-1]).all())


def detect_format(path: Path | str) -> str:
    """Name the reader for ``path`` from its suffix, else its first bytes."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]  # the reader opens it (and says if it cannot)
    with path.open("rb") as f:
        head = f.read(_SNIFF)
    if head.startswith(AEDAT4_MAGIC):
        return "aedat4"
    if head.startswith((b"\x93NUMPY", b"PK\x03\x04")):
        return "npy"
    if head.startswith(b"%"):
        fmt = _raw_format(head, path)
        if fmt is not None:
            return fmt
        if b"Data file containing" in head[:200]:
            return "dat"
    if _looks_like_nmnist(head, path.stat().st_size):
        return "nmnist"
    raise StreamError(
        f"{path}: at byte offset 0: cannot tell the event format from the name or the first "
        f"bytes; name it with --format (fmt= in Python), one of {', '.join(FORMATS)}"
    )


def read_events(
    path: Path | str,
    *,
    fmt: str | None = None,
    sensor_size: tuple[int, int] | None = None,
) -> Recording:
    """Read an event file into a :class:`Recording`.

    ``fmt`` forces a reader (one of ``FORMATS``); ``sensor_size`` = (width, height)
    overrides the geometry the file states or implies.
    """
    if fmt is None:
        fmt = detect_format(path)
    reader = READERS.get(fmt)
    if reader is None:
        raise ParameterError(f"unknown event format {fmt!r}; expected one of {FORMATS}")
    return reader(path, sensor_size=sensor_size)


__all__ = [
    "FORMATS",
    "READERS",
    "Recording",
    "detect_format",
    "read_aedat4",
    "read_dat",
    "read_events",
    "read_evt2",
    "read_evt3",
    "read_nmnist",
    "read_npy",
]
