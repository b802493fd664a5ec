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

Memory: at most one event per 32-bit word; CD words are counted first and their
events allocated once at 21 bytes each (under 6x the file size), then words are
decoded CHUNK_WORDS at a time (a fixed workspace of a few hundred kB). ``max_events``
caps the events (default: no cap beyond the file's word count).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from spikecast.runtime.readers._common import (
    CHUNK_WORDS,
    EventBuffer,
    check_events,
    check_max_events,
    fail,
    latest,
    resolve_size,
    too_many,
    wrap_counts,
)
from spikecast.runtime.readers._prophesee import PropheseeHeader, check_version, parse_header
from spikecast.runtime.readers.recording import Recording

_CD_OFF, _CD_ON, _TIME_HIGH = 0x0, 0x1, 0x8
_KNOWN_TYPES = np.array([0x0, 0x1, 0x8, 0xA, 0xE, 0xF], dtype=np.uint32)


def _count(words: np.ndarray, start: int, path: Path | str) -> int:
    """CD words (an upper bound on events); refuse reserved word types (first one wins)."""
    total = 0
    for at in range(0, words.size, CHUNK_WORDS):
        kind = words[at : at + CHUNK_WORDS] >> 28
        unknown = ~np.isin(kind, _KNOWN_TYPES)
        if bool(unknown.any()):
            i = int(np.argmax(unknown))
            raise fail(path, start + 4 * (at + i), f"reserved EVT 2.0 word type 0x{int(kind[i]):X}")
        total += int(np.count_nonzero(kind <= _CD_ON))
    return total


def decode_evt2(
    data: bytes, path: Path | str = "<bytes>", *, max_events: int | None = None
) -> tuple[np.ndarray, np.ndarray, PropheseeHeader]:
    """Decode a whole EVT 2.0 file held in memory.

    Returns (events, byte offset of each event's word, header); the events are not
    yet checked against a sensor size or for timestamp order.
    """
    check_max_events(max_events)
    header = parse_header(data, path)
    check_version(header, path, "2.0")
    start = header.data_offset
    body = len(data) - start
    if body % 4:
        cut = start + body - body % 4
        raise fail(path, cut, f"trailing partial 32-bit word of {body % 4} bytes")
    words = np.frombuffer(data, dtype="<u4", offset=start)
    bound = _count(words, start, path)
    if max_events is not None and bound > max_events:
        raise too_many(path, start, max_events, bound)
    out = EventBuffer(path, bound, bound)
    last_high, wraps = -1, 0
    for at in range(0, words.size, CHUNK_WORDS):
        w = words[at : at + CHUNK_WORDS]
        kind = w >> 28
        is_high = kind == _TIME_HIGH
        value = (w & 0x0FFFFFFF).astype(np.int64)
        # A decrease between consecutive TIME_HIGH words is a wrap of the 28-bit field.
        wrap = wrap_counts(value, is_high, last_high, wraps)
        high = latest(value, is_high, last_high)
        last_high, wraps = int(high[-1]), int(wrap[-1])
        cd = np.flatnonzero((kind <= _CD_ON) & (high >= 0))
        wc = w[cd]
        t_us = ((high[cd] + (wrap[cd] << 28)) << 6) | ((wc >> 22) & 0x3F).astype(np.int64)
        out.add((wc >> 11) & 0x7FF, wc & 0x7FF, t_us, kind[cd], start + 4 * (at + cd))
    events, offsets = out.result()
    return events, offsets, header


def read_evt2(
    path: Path | str, *, sensor_size: tuple[int, int] | None = None, max_events: int | None = None
) -> Recording:
    """Read an EVT 2.0 RAW file; geometry from the header unless ``sensor_size`` is given."""
    path = Path(path)
    data = path.read_bytes()
    events, offsets, header = decode_evt2(data, path, max_events=max_events)
    width, height = resolve_size((header.width, header.height), sensor_size, events)
    check_events(
        events,
        path=path,
        width=width,
        height=height,
        offset_of=lambda i: int(offsets[i]),
    )
    return Recording(events, width, height, path, "evt2")
