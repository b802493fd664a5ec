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

Memory: words are decoded CHUNK_WORDS at a time (a workspace of about 0.33 MB,
carrying the decoder state across chunks); the events a file can hold are
counted first (one per EVT_ADDR_X, one per set vector bit) and allocated once at
21 bytes each. ``max_events`` caps them; by default at one event per 16-bit word,
so peak memory stays under 12x the file size plus the workspace. A file with
denser vector bursts than that is refused with a StreamError naming the count;
pass a larger ``max_events`` to read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from spikecast.runtime.readers._common import (
    CHUNK_WORDS,
    EventBuffer,
    check_events,
    check_max_events,
    fail,
    forward_fill_index,
    latest,
    resolve_size,
    wrap_counts,
)
from spikecast.runtime.readers._prophesee import PropheseeHeader, check_version, parse_header
from spikecast.runtime.readers.recording import Recording

_ADDR_Y, _ADDR_X, _VECT_BASE_X, _VECT_12, _VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
_TIME_LOW, _TIME_HIGH = 0x6, 0x8
_RESERVED = np.array([0x1, 0x9, 0xB, 0xC, 0xD], dtype=np.uint16)
# _POP[v]: set bits of v (12 bits); _NTH[v, k]: position of the k-th set bit of v.
_POP = np.array([bin(v).count("1") for v in range(4096)], dtype=np.int64)
_NTH = np.zeros((4096, 12), dtype=np.int64)
for _v in range(4096):
    _bits = [b for b in range(12) if _v >> b & 1]
    _NTH[_v, : len(_bits)] = _bits


@dataclass
class _State:
    """Decoder state carried from one chunk to the next (-1: not seen yet)."""

    high: int = -1
    wraps: int = 0
    low: int = -1
    y: int = -1
    base: int = -1
    base_p: int = 0


def _count(words: np.ndarray, start: int, path: Path | str) -> int:
    """Most events the words can give; refuse reserved word types (first one wins)."""
    total = 0
    for at in range(0, words.size, CHUNK_WORDS):
        w = words[at : at + CHUNK_WORDS]
        kind = w >> 12
        reserved = np.isin(kind, _RESERVED)
        if bool(reserved.any()):
            i = at + int(np.argmax(reserved))
            raise fail(path, start + 2 * i, f"reserved EVT 3.0 word type 0x{int(words[i] >> 12):X}")
        total += int(np.count_nonzero(kind == _ADDR_X))
        total += int(_POP[w[kind == _VECT_12] & 0xFFF].sum() + _POP[w[kind == _VECT_8] & 0xFF].sum())
    return total


def _vector_base(kind: np.ndarray, payload: np.ndarray, st: _State) -> tuple[np.ndarray, np.ndarray]:
    """x (-1: no base yet) and polarity of the vector base at every word of the chunk."""
    is_base = kind == _VECT_BASE_X
    base_at = forward_fill_index(is_base)
    at = np.maximum(base_at, 0)
    step = np.where(kind == _VECT_12, 12, np.where(kind == _VECT_8, 8, 0))
    done = np.cumsum(step) - step
    carried = st.base + done if st.base >= 0 else np.full(kind.size, -1, np.int64)
    base_x = np.where(base_at >= 0, (payload & 0x7FF)[at] + done - done[at], carried)
    base_p = np.where(base_at >= 0, (payload >> 11)[at], st.base_p)
    st.base = int(base_x[-1] + step[-1]) if base_x[-1] >= 0 else -1
    st.base_p = int(base_p[-1])
    return base_x, base_p


def _decode_chunk(
    w: np.ndarray, first: int, st: _State, out: EventBuffer, start: int, path: Path | str
) -> None:
    kind = (w >> 12).astype(np.int64)
    payload = (w & 0x0FFF).astype(np.int64)
    is_high = kind == _TIME_HIGH
    wraps = wrap_counts(payload, is_high, st.high, st.wraps)
    high = latest(payload, is_high, st.high)
    low = latest(payload, kind == _TIME_LOW, st.low)
    y = latest(payload & 0x7FF, kind == _ADDR_Y, st.y)
    base_x, base_p = _vector_base(kind, payload, st)
    st.high, st.wraps, st.low, st.y = int(high[-1]), int(wraps[-1]), int(low[-1]), int(y[-1])

    is_x = kind == _ADDR_X
    bits = np.where(kind == _VECT_12, payload, np.where(kind == _VECT_8, payload & 0xFF, 0))
    n = np.where(is_x, 1, _POP[bits]) * ((high >= 0) & (y >= 0) & (is_x | (base_x >= 0)))
    word = np.repeat(np.arange(w.size), n)
    rank = np.arange(word.size) - (np.cumsum(n) - n)[word]
    x = np.where(is_x[word], payload[word] & 0x7FF, base_x[word] + _NTH[bits[word], rank])
    if x.size and int(x.max()) > 0xFFFF:
        i = int(np.argmax(x > 0xFFFF))
        raise fail(path, start + 2 * (first + int(word[i])), f"vector runs x past 65535 ({int(x[i])})")
    p = np.where(is_x, payload >> 11, base_p)[word]
    t_us = (wraps[word] << 24) | (high[word] << 12) | np.maximum(low[word], 0)
    out.add(x, y[word], t_us, p, start + 2 * (first + word))


def decode_evt3(
    data: bytes, path: Path | str = "<bytes>", *, max_events: int | None = None
) -> tuple[np.ndarray, np.ndarray, PropheseeHeader]:
    """Decode a whole EVT 3.0 file held in memory.

    Returns (events, byte offset of the word that produced each event, header);
    the events are not yet checked against a sensor size or for timestamp order.
    """
    check_max_events(max_events)
    header = parse_header(data, path)
    check_version(header, path, "3.0")
    start = header.data_offset
    if (len(data) - start) % 2:
        raise fail(path, len(data) - 1, "trailing partial 16-bit word of 1 byte")
    words = np.frombuffer(data, dtype="<u2", offset=start)
    cap = words.size if max_events is None else max_events
    out = EventBuffer(path, _count(words, start, path), cap)
    st = _State()
    for at in range(0, words.size, CHUNK_WORDS):
        _decode_chunk(words[at : at + CHUNK_WORDS], at, st, out, start, path)
    events, offsets = out.result()
    return events, offsets, header


def read_evt3(
    path: Path | str, *, sensor_size: tuple[int, int] | None = None, max_events: int | None = None
) -> Recording:
    """Read an EVT 3.0 RAW file; geometry from the header unless ``sensor_size`` is given.

    ``max_events`` caps the events read (default: one per 16-bit word of data).
    """
    path = Path(path)
    events, offsets, header = decode_evt3(path.read_bytes(), path, max_events=max_events)
    width, height = resolve_size((header.width, header.height), sensor_size, events)
    check_events(events, path=path, width=width, height=height, offset_of=lambda i: int(offsets[i]))
    return Recording(events, width, height, path, "evt3")
