"""N-MNIST ``.bin`` files (ATIS, 34x34), decoded with numpy.

One 5-byte record per event: byte 0 = x, byte 1 = y, bit 7 of byte 2 =
polarity, and (byte2 & 0x7F) << 16 | byte3 << 8 | byte4 = timestamp in us.

Memory: one event per 5 bytes, so under 10x the file size; ``max_events`` caps
the events (default: no cap beyond that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from spikecast.runtime.readers._common import (
    check_events,
    check_max_events,
    fail,
    pack_events,
    resolve_size,
    too_many,
)
from spikecast.runtime.readers.recording import Recording

NMNIST_SIZE = 34
_RECORD = 5


def decode_nmnist(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Decode N-MNIST bytes to events; checks the size only (see ``read_nmnist``)."""
    if len(data) % _RECORD:
        cut = len(data) - len(data) % _RECORD
        raise fail(path, cut, f"trailing partial record of {len(data) % _RECORD} bytes")
    b = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    t_us = (
        ((b[:, 2].astype(np.int64) & 0x7F) << 16) | (b[:, 3].astype(np.int64) << 8) | b[:, 4].astype(np.int64)
    )
    return pack_events(b[:, 0], b[:, 1], t_us, b[:, 2] >> 7)


def read_nmnist(
    path: Path | str, *, sensor_size: tuple[int, int] | None = None, max_events: int | None = None
) -> Recording:
    """Read an N-MNIST ``.bin`` file (34x34 unless ``sensor_size`` says otherwise)."""
    check_max_events(max_events)
    path = Path(path)
    data = path.read_bytes()
    if max_events is not None and len(data) // _RECORD > max_events:
        raise too_many(path, _RECORD * max_events, max_events, len(data) // _RECORD)
    events = decode_nmnist(data, path)
    width, height = resolve_size((NMNIST_SIZE, NMNIST_SIZE), sensor_size, events)
    check_events(events, path=path, width=width, height=height, offset_of=lambda i: _RECORD * i)
    return Recording(events, width, height, path, "nmnist")
