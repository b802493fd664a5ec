"""The live binary event packet, as published on ``spikecast/<device>/<stream>/events``.

Version 1, all integers little-endian, no padding. A 22-byte header::

    offset  size  type  field
    0       4     -     magic  b"SCEV"
    4       1     u8    version  (1)
    5       1     u8    flags    (0; every bit reserved, a set bit is rejected)
    6       2     u16   width    sensor width in pixels, >= 1
    8       2     u16   height   sensor height in pixels, >= 1
    10      4     u32   count    number of events n
    14      8     i64   t0_us    sensor time of the packet origin, microseconds

then four column blocks, each n entries long, in this order::

    22          2n   u16[n]  x       0 <= x < width
    22 + 2n     2n   u16[n]  y       0 <= y < height
    22 + 4n     4n   u32[n]  dt_us   t = t0_us + dt_us, non-decreasing
    22 + 8n     n    u8[n]   p       polarity, 0 (OFF) or 1 (ON)

The packet is exactly 22 + 9n bytes. Columns (not packed records) let the
decoder take each field with one ``frombuffer`` and keep every block aligned to
its element size. A packet spans at most 2**32 - 1 us (about 71 minutes).

``decode_packet`` checks every rule above and raises
:class:`~spikecast.ext.core.errors.StreamError` naming the byte offset of the
first violation, so the service can drop and count a bad packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from spikecast.ext.binning import scev_columns_ok
from spikecast.ext.core.errors import ParameterError, StreamError
from spikecast.ext.core.events import EVENT_DTYPE

MAGIC = b"SCEV"
VERSION = 1
HEADER = struct.Struct("<4sBBHHIq")
HEADER_SIZE = HEADER.size  # 22
BYTES_PER_EVENT = 9
MAX_SPAN_US = 0xFFFFFFFF
_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass(frozen=True, eq=False)
class Packet:
    """A decoded packet: EVENT_DTYPE events (absolute ``t``) and the sensor size."""

    events: np.ndarray
    width: int
    height: int
    t0_us: int


def packet_size(count: int) -> int:
    """Bytes in a version-1 packet holding ``count`` events."""
    return HEADER_SIZE + BYTES_PER_EVENT * count


def _bad(offset: int, problem: str) -> StreamError:
    return StreamError(f"event packet: at byte offset {offset}: {problem}")


def encode_packet(
    events: np.ndarray, width: int, height: int, *, t0_us: int | None = None
) -> bytes:
    """Encode sorted events into a version-1 packet.

    ``t0_us`` defaults to the first event's time (0 for an empty packet). Bad
    arguments raise :class:`~spikecast.ext.core.errors.ParameterError`.
    """
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int | np.integer) or not 0 < int(v) <= 0xFFFF:
            raise ParameterError(f"{name} must be an int in 1..65535, got {v!r}")
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    if not isinstance(events, np.ndarray) or not {"x", "y", "t", "p"} <= set(names):
        raise ParameterError("events must be a structured array with fields x, y, t, p")
    n = int(events.size)
    x, y, p = events["x"], events["y"], events["p"]
    t = events["t"].astype(np.int64, copy=False)
    start = int(t[0]) if n else 0
    t0 = start if t0_us is None else int(t0_us)
    if n:
        if int(x.min()) < 0 or int(x.max()) >= width:
            raise ParameterError(f"event x outside 0..{width - 1}")
        if int(y.min()) < 0 or int(y.max()) >= height:
            raise ParameterError(f"event y outside 0..{height - 1}")
        if int(p.min()) < 0 or int(p.max()) > 1:
            raise ParameterError("event polarity must be 0 or 1")
        if bool(np.any(t[1:] < t[:-1])):
            raise ParameterError("events must be sorted by t")
        if start < t0 or int(t[-1]) - t0 > MAX_SPAN_US:
            raise ParameterError(
                f"events span {t0}..{int(t[-1])} us, not within t0_us + 0..{MAX_SPAN_US}"
            )
    if n > 0xFFFFFFFF:
        raise ParameterError(f"{n} events do not fit one packet")
    out = bytearray(packet_size(n))
    HEADER.pack_into(out, 0, MAGIC, VERSION, 0, width, height, n, t0)
    body = np.frombuffer(out, dtype=np.uint8, offset=HEADER_SIZE)
    body[: 2 * n].view("<u2")[:] = x
    body[2 * n : 4 * n].view("<u2")[:] = y
    body[4 * n : 8 * n].view("<u4")[:] = t - t0
    body[8 * n :] = p
    return bytes(out)


def _check_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """Validate the header against the packet's size; return width, height, n, t0."""
    size = len(data)
    if size < HEADER_SIZE:
        raise _bad(size, f"packet ends inside the {HEADER_SIZE}-byte header ({size} bytes)")
    magic, version, flags, width, height, n, t0 = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise _bad(0, f"magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise _bad(4, f"version {version}, this decoder reads version {VERSION}")
    if flags:
        raise _bad(5, f"reserved flags 0x{flags:02X} set")
    if width == 0:
        raise _bad(6, "width 0")
    if height == 0:
        raise _bad(8, "height 0")
    if size != packet_size(n):
        at = min(size, packet_size(n))
        raise _bad(at, f"{size} bytes, but {n} events need exactly {packet_size(n)}")
    if t0 > _INT64_MAX - MAX_SPAN_US:
        raise _bad(14, f"t0_us {t0} leaves no room for event times in int64")
    return width, height, n, t0


def _check_columns(
    x: np.ndarray, y: np.ndarray, dt: np.ndarray, p: np.ndarray, width: int, height: int
) -> None:
    """Raise at the first event outside the sensor, back in time, or with a bad polarity."""
    n = len(x)
    if int(x.max()) >= width:
        i = int(np.argmax(x >= width))
        raise _bad(HEADER_SIZE + 2 * i, f"event {i} x={int(x[i])} outside width {width}")
    if int(y.max()) >= height:
        i = int(np.argmax(y >= height))
        raise _bad(
            HEADER_SIZE + 2 * n + 2 * i, f"event {i} y={int(y[i])} outside height {height}"
        )
    back = dt[1:] < dt[:-1]
    if bool(back.any()):
        i = int(np.argmax(back)) + 1
        raise _bad(
            HEADER_SIZE + 4 * n + 4 * i,
            f"event {i} time goes back ({int(dt[i - 1])} -> {int(dt[i])} us after t0)",
        )
    if int(p.max()) > 1:
        i = int(np.argmax(p > 1))
        raise _bad(HEADER_SIZE + 8 * n + i, f"event {i} polarity {int(p[i])}")


def decode_packet(data: bytes | bytearray | memoryview) -> Packet:
    """Decode and fully validate one packet; raise StreamError on any violation."""
    width, height, n, t0 = _check_header(data)
    buf = memoryview(data)
    x = np.frombuffer(buf, dtype="<u2", count=n, offset=HEADER_SIZE)
    y = np.frombuffer(buf, dtype="<u2", count=n, offset=HEADER_SIZE + 2 * n)
    dt = np.frombuffer(buf, dtype="<u4", count=n, offset=HEADER_SIZE + 4 * n)
    p = np.frombuffer(buf, dtype=np.uint8, count=n, offset=HEADER_SIZE + 8 * n)
    if n and not scev_columns_ok(buf[HEADER_SIZE:], n, width, height):  # one compiled pass
        _check_columns(x, y, dt, p, width, height)  # finds and names the first violation
        raise _bad(HEADER_SIZE, "invalid event columns")  # unreachable: the line above raises
    events = np.empty(n, dtype=EVENT_DTYPE)
    events["x"] = x
    events["y"] = y
    events["t"] = dt
    events["t"] += t0
    events["p"] = p
    return Packet(events, int(width), int(height), int(t0))


__all__ = [
    "BYTES_PER_EVENT",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "Packet",
    "decode_packet",
    "encode_packet",
    "packet_size",
]
