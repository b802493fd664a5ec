"""Prophesee DAT files (CD events, 8 bytes each), decoded with numpy.

Layout: a ``%`` header (see :mod:`._prophesee`), then one byte event type and
one byte event size, then records of two little-endian uint32: ``t`` in us and
a packed word with x in bits 13..0, y in bits 27..14 and polarity in bits 31..28.
Only CD files (type 0 "Event2d" or 12 "EventCD", size 8) are accepted.

expelliarmus decodes these files to the same events (the tests check it), but it
insists on a ``.dat`` suffix, returns None instead of raising and silently drops
a trailing partial record, so the format is decoded here.

Memory: one event per 8-byte record, so under 6x the file size; ``max_events``
caps the events (default: no cap beyond that).
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
from spikecast.runtime.readers._prophesee import parse_header
from spikecast.runtime.readers.recording import Recording

_CD_TYPES = (0, 12)
_RECORD = np.dtype([("t", "<u4"), ("w", "<u4")])


def read_dat(
    path: Path | str, *, sensor_size: tuple[int, int] | None = None, max_events: int | None = None
) -> Recording:
    """Read a DAT CD file; geometry from ``% Width``/``% Height``, else max + 1."""
    check_max_events(max_events)
    path = Path(path)
    data = path.read_bytes()
    header = parse_header(data, path)
    start = header.data_offset
    if len(data) < start + 2:
        raise fail(path, start, "file ends before the event type and size bytes")
    ev_type, ev_size = data[start], data[start + 1]
    if ev_type not in _CD_TYPES:
        raise fail(path, start, f"event type {ev_type} is not a CD type {_CD_TYPES}")
    if ev_size != _RECORD.itemsize:
        raise fail(path, start + 1, f"event size {ev_size}, expected {_RECORD.itemsize}")
    start += 2
    body = len(data) - start
    if body % _RECORD.itemsize:
        cut = start + body - body % _RECORD.itemsize
        raise fail(path, cut, f"trailing partial record of {body % _RECORD.itemsize} bytes")
    if max_events is not None and body // 8 > max_events:
        raise too_many(path, start + 8 * max_events, max_events, body // 8)
    rec = np.frombuffer(data, dtype=_RECORD, offset=start)
    w = rec["w"]
    polarity = w >> 28
    events = pack_events(w & 0x3FFF, (w >> 14) & 0x3FFF, rec["t"].astype(np.int64), polarity)
    width, height = resolve_size((header.width, header.height), sensor_size, events)
    if polarity.size and int(polarity.max()) > 1:
        # Checked on the raw field: pack_events keeps only its low 8 bits.
        i = int(np.argmax(polarity > 1))
        raise fail(path, start + 8 * i, f"event {i} has polarity field {int(polarity[i])}")
    check_events(events, path=path, width=width, height=height, offset_of=lambda i: start + 8 * i)
    return Recording(events, width, height, path, "dat")
