"""Prophesee EVT 3.0 RAW files, decoded with numpy following the format spec.

After the ``%`` header come little-endian 16-bit words; the top 4 bits are the type
and the low 12 bits the payload:

=============  =====  =======================================================
EVT_ADDR_Y     0x0    y = payload[10:0] (bit 11: master/slave, ignored)
EVT_ADDR_X     0x2    one CD event at x = payload[10:0], polarity payload[11]
VECT_BASE_X    0x3    vector base: x = payload[10:0], polarity payload[11]
VECT_12        0x4    bit i of payload[11:0] set -> event at base + i; base += 12
VECT_8         0x5    bit i of payload[7:0] set -> event at base + i; base += 8
TIME_LOW       0x6    time[11:0]
CONTINUED_4    0x7    skipped
TIME_HIGH      0x8    time[23:12]
EXT_TRIGGER    0xA    skipped
OTHERS         0xE    skipped
CONTINUED_12   0xF    skipped
=============  =====  =======================================================

t = TIME_HIGH << 12 | TIME_LOW, using the latest of each; a TIME_HIGH lower than
the one before is a wrap of the 24-bit time base (+2**24 us). Types 0x1, 0x9,
0xB, 0xC and 0xD are reserved and make the file malformed. Events seen before
the first TIME_HIGH, EVT_ADDR_Y or (for vectors) VECT_BASE_X have no defined
state and are dropped.

Not expelliarmus: its 1.1.12 decoder takes every TIME_LOW decrease as a wrap and
stretches the 8.8 ms fixture to 53.9 ms, which the file's own TIME_HIGH words
rule out. Every step below is a vectorised "latest value of X so far" or a
cumulative sum, so there is no per-word Python loop.
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

_ADDR_Y, _ADDR_X, _VECT_BASE_X, _VECT_12, _VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
_TIME_LOW, _TIME_HIGH = 0x6, 0x8
_RESERVED = np.array([0x1, 0x9, 0xB, 0xC, 0xD], dtype=np.uint16)


def _latest(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latest value where mask was True, whether there was one) for every word."""
    at = forward_fill_index(mask)
    return values[np.maximum(at, 0)], at >= 0


def _vector_events(
    payload: np.ndarray, words: np.ndarray, base: np.ndarray, n_bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand vector words into (word index, bit position, x) per set bit."""
    bits = (payload[words, None] >> np.arange(n_bits, dtype=np.uint16)) & 1
    row, col = np.nonzero(bits)
    return words[row], col, base[words[row]] + col


def decode_evt3(
    data: bytes, path: Path | str = "<bytes>"
) -> tuple[np.ndarray, np.ndarray, PropheseeHeader]:
    """Decode a whole EVT 3.0 file held in memory.

    Returns (events, byte offset of the word that produced each event, header);
    the events are not yet checked against a sensor size or for timestamp order.
    """
    header = parse_header(data, path)
    check_version(header, path, "3.0")
    start = header.data_offset
    if (len(data) - start) % 2:
        raise fail(path, len(data) - 1, "trailing partial 16-bit word of 1 byte")
    words = np.frombuffer(data, dtype="<u2", offset=start)
    kind = words >> 12
    payload = (words & 0x0FFF).astype(np.int64)
    reserved = np.isin(kind, _RESERVED)
    if bool(reserved.any()):
        i = int(np.argmax(reserved))
        raise fail(path, start + 2 * i, f"reserved EVT 3.0 word type 0x{int(kind[i]):X}")

    # Time base: the latest TIME_HIGH and TIME_LOW, plus wraps of TIME_HIGH.
    is_high = kind == _TIME_HIGH
    high, has_time = _latest(payload, is_high)
    low, has_low = _latest(payload, kind == _TIME_LOW)
    low = np.where(has_low, low, 0)
    wrap_step = np.zeros(words.size, dtype=np.int64)
    high_idx = np.flatnonzero(is_high)
    if high_idx.size > 1:
        wrap_step[high_idx[1:]] = np.diff(payload[high_idx]) < 0
    t_us = (np.cumsum(wrap_step) << 24) | (high << 12) | low

    y, has_y = _latest(payload & 0x7FF, kind == _ADDR_Y)

    # Vector base: x and polarity of the latest VECT_BASE_X, advanced by 12 or 8
    # for every vector word since then.
    is_base = kind == _VECT_BASE_X
    base_at = forward_fill_index(is_base)
    step = np.where(kind == _VECT_12, 12, np.where(kind == _VECT_8, 8, 0))
    done_before = np.cumsum(step) - step
    base_x = (
        (payload & 0x7FF)[np.maximum(base_at, 0)]
        + done_before
        - done_before[np.maximum(base_at, 0)]
    )
    base_p = (payload >> 11)[np.maximum(base_at, 0)]
    has_base = base_at >= 0

    single = np.flatnonzero(kind == _ADDR_X)
    w12, c12, x12 = _vector_events(payload, np.flatnonzero(kind == _VECT_12), base_x, 12)
    w8, c8, x8 = _vector_events(payload, np.flatnonzero(kind == _VECT_8), base_x, 8)
    word = np.concatenate((single, w12, w8))
    x = np.concatenate((payload[single] & 0x7FF, x12, x8))
    p = np.concatenate((payload[single] >> 11, base_p[w12], base_p[w8]))
    is_vector = np.concatenate((np.zeros(single.size, bool), np.ones(w12.size + w8.size, bool)))
    # Stream order: by word, then by bit within a vector word.
    order = np.argsort(word * 16 + np.concatenate((np.zeros_like(single), c12, c8)), kind="stable")
    word, x, p, is_vector = word[order], x[order], p[order], is_vector[order]
    keep = has_time[word] & has_y[word] & (has_base[word] | ~is_vector)
    word, x, p = word[keep], x[keep], p[keep]
    if x.size and int(x.max()) > 0xFFFF:
        i = int(np.argmax(x > 0xFFFF))
        raise fail(path, start + 2 * int(word[i]), f"vector runs x past 65535 ({int(x[i])})")
    events = pack_events(x, y[word], t_us[word], p)
    return events, start + 2 * word, header


def read_evt3(path: Path | str, *, sensor_size: tuple[int, int] | None = None) -> Recording:
    """Read an EVT 3.0 RAW file; geometry from the header unless ``sensor_size`` is given."""
    path = Path(path)
    events, offsets, header = decode_evt3(path.read_bytes(), path)
    width, height = resolve_size((header.width, header.height), sensor_size, events)
    check_events(events, path=path, width=width, height=height, offset_of=lambda i: int(offsets[i]))
    return Recording(events, width, height, path, "evt3")
