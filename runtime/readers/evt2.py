"""Prophesee EVT 2.0 RAW files, decoded with numpy.

After the ``%`` header come little-endian 32-bit words; the top 4 bits are the type:

==========  =====  ==========================================================
CD_OFF      0x0    ts[27:22] (6 low bits of time), x[21:11], y[10:0]; polarity 0
CD_ON       0x1    same, polarity 1
TIME_HIGH   0x8    bits[27:0] = time >> 6
EXT_TRIGGER 0xA    skipped
OTHERS      0xE    skipped
CONTINUED   0xF    skipped
==========  =====  ==========================================================

Any other type is reserved and makes the file malformed. t = TIME_HIGH << 6 | ts;
a TIME_HIGH that decreases means the 34-bit counter wrapped. CD words before the
first TIME_HIGH have no time base and are dropped.

expelliarmus decodes these files to the same events (the tests check that field for
field), but it returns None instead of raising on bad input and cannot say where a
file is broken, so validation and decoding are done here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from spikecast.runtime.readers._common import (
    check_events,
    fail,
    forward_fill_index,
    pack_events,
    resolve_size,
)
from spikecast.runtime.readers._prophesee import PropheseeHeader, check_version, parse_header
from spikecast.runtime.readers.recording import Recording

_CD_OFF, _CD_ON, _TIME_HIGH = 0x0, 0x1, 0x8
_KNOWN_TYPES = np.array([0x0, 0x1, 0x8, 0xA, 0xE, 0xF], dtype=np.uint32)


def decode_evt2(
    data: bytes, path: Path | str = "<bytes>"
) -> tuple[np.ndarray, np.ndarray, PropheseeHeader]:
    """Decode a whole EVT 2.0 file held in memory.

    Returns (events, byte offset of each event's word, header); the events are not
    yet checked against a sensor size or for timestamp order.
    """
    header = parse_header(data, path)
    check_version(header, path, "2.0")
    start = header.data_offset
    body = len(data) - start
    if body % 4:
        cut = start + body - body % 4
        raise fail(path, cut, f"trailing partial 32-bit word of {body % 4} bytes")
    words = np.frombuffer(data, dtype="<u4", offset=start)
    kind = words >> 28
    unknown = ~np.isin(kind, _KNOWN_TYPES)
    if bool(unknown.any()):
        i = int(np.argmax(unknown))
        raise fail(path, start + 4 * i, f"reserved EVT 2.0 word type 0x{int(kind[i]):X}")

    is_high = kind == _TIME_HIGH
    high = (words & 0x0FFFFFFF).astype(np.int64)
    high_at = forward_fill_index(is_high)
    # A decrease between consecutive TIME_HIGH words is a wrap of the 28-bit field.
    high_words = high[is_high]
    wraps = np.zeros(words.size, dtype=np.int64)
    if high_words.size > 1:
        loop = np.concatenate(([0], np.cumsum(np.diff(high_words) < 0)))
        wraps[is_high] = loop
        wraps = wraps[np.maximum(high_at, 0)]
    cd = np.flatnonzero(((kind == _CD_OFF) | (kind == _CD_ON)) & (high_at >= 0))
    w = words[cd]
    time_high = high[high_at[cd]] + (wraps[cd] << 28)
    t_us = (time_high << 6) | ((w >> 22) & 0x3F).astype(np.int64)
    events = pack_events((w >> 11) & 0x7FF, w & 0x7FF, t_us, kind[cd])
    return events, start + 4 * cd, header


def read_evt2(path: Path | str, *, sensor_size: tuple[int, int] | None = None) -> Recording:
    """Read an EVT 2.0 RAW file; geometry from the header unless ``sensor_size`` is given."""
    path = Path(path)
    data = path.read_bytes()
    events, offsets, header = decode_evt2(data, path)
    width, height = resolve_size((header.width, header.height), sensor_size, events)
    check_events(
        events,
        path=path,
        width=width,
        height=height,
        offset_of=lambda i: int(offsets[i]),
    )
    return Recording(events, width, height, path, "evt2")
