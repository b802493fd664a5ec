"""The live binary event packet, as published on ``spikecast/<device>/<stream>/events``.

Version 1, all integers little-endian, no padding. A 22-byte header::

    offset  size  type  field
    0       4     -     magic  b"SCEV"
    4       1     u8    version  (1)
    5       1     u8    flags    bit 0: END (t1_us follows); bits 1-7 reserved, rejected
    6       2     u16   width    sensor width in pixels, >= 1
    8       2     u16   height   sensor height in pixels, >= 1
    10      4     u32   count    number of events n
    14      8     i64   t0_us    sensor time of the packet origin, microseconds

With the END flag, 8 more header bytes (the header is then h = 30 bytes, else h = 22)::

    22      8     i64   t1_us    the packet's end: t0_us <= t1_us, every event t < t1_us

then four column blocks, each n entries long, in this order::

    h           2n   u16[n]  x       0 <= x < width
    h + 2n      2n   u16[n]  y       0 <= y < height
    h + 4n      4n   u32[n]  dt_us   t = t0_us + dt_us, non-decreasing
    h + 8n      n    u8[n]   p       polarity, 0 (OFF) or 1 (ON)

The packet is exactly h + 9n bytes. ``t1_us`` says "nothing more before t1_us": the
packet carries its own watermark, so a sender that cuts packets at step boundaries
completes every step of a packet with that one message (without it, the last step
waits for the next packet, or for an empty watermark packet). Columns (not packed records) let the
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
from spikecast.ext.binning import scev_decode
from spikecast.ext.core.errors import ParameterError, StreamError

MAGIC = b"SCEV"
VERSION = 1
HEADER = struct.Struct("<4sBBHHIq")
HEADER_SIZE = HEADER.size  # 22
BYTES_PER_EVENT = 9
FLAG_END = 0x01  # t1_us follows the header
END = struct.Struct("<q")
END_HEADER_SIZE = HEADER_SIZE + END.size  # 30
MAX_SPAN_US = 0xFFFFFFFF
_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass(frozen=True, eq=False)
class Packet:
    """A decoded packet: EVENT_DTYPE events (absolute ``t``) and the sensor size."""

    events: np.ndarray
    width: int
    height: int
    t0_us: int
    t1_us: int | None = None  # the packet's end (END flag), else None

    @property
    def watermark_us(self) -> int:
        """How far the packet says the sensor's time has got: ``t1_us`` if it has one,
        else ``t0_us`` (the newest event may be later still)."""
        return self.t0_us if self.t1_us is None else self.t1_us


def packet_size(count: int, *, end: bool = False) -> int:
    """Bytes in a version-1 packet holding ``count`` events (``end``: with t1_us)."""
    return (END_HEADER_SIZE if end else HEADER_SIZE) + BYTES_PER_EVENT * count


def _bad(offset: int, problem: str) -> StreamError:
    return StreamError(f"event packet: at byte offset {offset}: {problem}")


def encode_packet(  # noqa: C901  (one check per rule of the format, each with its message)
    events: np.ndarray, width: int, height: int, *, t0_us: int | None = None,
    t1_us: int | None = None,
) -> bytes:
    """Encode sorted events into a version-1 packet.

    ``t0_us`` defaults to the first event's time (0 for an empty packet). ``t1_us``
    (optional) is the packet's end, after every event: it sets the END flag, and the
    packet completes every step before it. Bad arguments raise
    :class:`~spikecast.ext.core.errors.ParameterError`.
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
    if t1_us is not None and not (max(t0, int(t[-1]) + 1 if n else t0) <= int(t1_us) <= t0 + MAX_SPAN_US):
        raise ParameterError(f"t1_us {t1_us} must be after every event and within t0_us + 0..{MAX_SPAN_US}")
    end = t1_us is not None
    out = bytearray(packet_size(n, end=end))
    HEADER.pack_into(out, 0, MAGIC, VERSION, FLAG_END if end else 0, width, height, n, t0)
    if end:
        END.pack_into(out, HEADER_SIZE, int(t1_us))  # type: ignore[arg-type]
    body = np.frombuffer(out, dtype=np.uint8, offset=END_HEADER_SIZE if end else HEADER_SIZE)
    body[: 2 * n].view("<u2")[:] = x
    body[2 * n : 4 * n].view("<u2")[:] = y
    body[4 * n : 8 * n].view("<u4")[:] = t - t0
    body[8 * n :] = p
    return bytes(out)


def _check_header(
    data: bytes | bytearray | memoryview,
) -> tuple[int, int, int, int, int | None]:
    """Validate the header against the packet's size; return width, height, n, t0, t1."""
    size = len(data)
    if size < HEADER_SIZE:
        raise _bad(size, f"packet ends inside the {HEADER_SIZE}-byte header ({size} bytes)")
    magic, version, flags, width, height, n, t0 = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise _bad(0, f"magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise _bad(4, f"version {version}, this decoder reads version {VERSION}")
    if flags & ~FLAG_END:
        raise _bad(5, f"reserved flags 0x{flags & ~FLAG_END:02X} set")
    end = bool(flags & FLAG_END)
    if end and size < END_HEADER_SIZE:
        raise _bad(size, f"packet ends inside the {END_HEADER_SIZE}-byte header with END ({size} bytes)")
    if width == 0:
        raise _bad(6, "width 0")
    if height == 0:
        raise _bad(8, "height 0")
    want = packet_size(n, end=end)
    if size != want:
        raise _bad(min(size, want), f"{size} bytes, but {n} events need exactly {want}")
    if t0 > _INT64_MAX - MAX_SPAN_US:
        raise _bad(14, f"t0_us {t0} leaves no room for event times in int64")
    t1: int | None = END.unpack_from(data, HEADER_SIZE)[0] if end else None
    if t1 is not None and not t0 <= t1 <= t0 + MAX_SPAN_US:
        raise _bad(HEADER_SIZE, f"t1_us {t1} outside t0_us + 0..{MAX_SPAN_US}")
    return width, height, n, t0, t1


def _check_columns(
    x: np.ndarray, y: np.ndarray, dt: np.ndarray, p: np.ndarray, width: int, height: int,
    h: int = HEADER_SIZE,
) -> None:
    """Raise at the first event outside the sensor, back in time, or with a bad polarity
    (``h``: the header size, where the columns start)."""
    n = len(x)
    if int(x.max()) >= width:
        i = int(np.argmax(x >= width))
        raise _bad(h + 2 * i, f"event {i} x={int(x[i])} outside width {width}")
    if int(y.max()) >= height:
        i = int(np.argmax(y >= height))
        raise _bad(h + 2 * n + 2 * i, f"event {i} y={int(y[i])} outside height {height}")
    back = dt[1:] < dt[:-1]
    if bool(back.any()):
        i = int(np.argmax(back)) + 1
        raise _bad(
            h + 4 * n + 4 * i,
            f"event {i} time goes back ({int(dt[i - 1])} -> {int(dt[i])} us after t0)",
        )
    if int(p.max()) > 1:
        i = int(np.argmax(p > 1))
        raise _bad(h + 8 * n + i, f"event {i} polarity {int(p[i])}")


def decode_packet(data: bytes | bytearray | memoryview) -> Packet:
    """Decode and fully validate one packet; raise StreamError on any violation."""
    width, height, n, t0, t1 = _check_header(data)
    h = HEADER_SIZE if t1 is None else END_HEADER_SIZE
    buf = memoryview(data)
    events = scev_decode(buf[h:], n, width, height, t0)  # one compiled pass: check and copy
    if events is None:
        x = np.frombuffer(buf, dtype="<u2", count=n, offset=h)
        y = np.frombuffer(buf, dtype="<u2", count=n, offset=h + 2 * n)
        dt = np.frombuffer(buf, dtype="<u4", count=n, offset=h + 4 * n)
        p = np.frombuffer(buf, dtype=np.uint8, count=n, offset=h + 8 * n)
        _check_columns(x, y, dt, p, width, height, h)  # finds and names the first violation
        raise _bad(h, "invalid event columns")  # unreachable: the line above raises
    if n and t1 is not None and (last_us := int(events["t"][-1])) >= t1:
        raise _bad(h + 4 * n + 4 * (n - 1), f"event {n - 1} at t0_us + {last_us - t0} us is not "
                   f"before t1_us = t0_us + {t1 - t0}")
    return Packet(events, int(width), int(height), int(t0), None if t1 is None else int(t1))


__all__ = [
    "BYTES_PER_EVENT",
    "END_HEADER_SIZE",
    "FLAG_END",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "Packet",
    "decode_packet",
    "encode_packet",
    "packet_size",
]
