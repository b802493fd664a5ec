"""AEDAT 4.0 files (iniVation DV), decoded by the optional ``aedat`` package.

Layout checked here before ``aedat`` sees the file, so a broken file is reported
with a byte offset:

* bytes 0..13: magic ``#!AER-DAT4.0\\r\\n``;
* u32 header length H at 14, then H bytes of a FlatBuffers ``IOHeader`` (file
  identifier ``IOHE``): compression, dataTablePosition (int64, -1 if none) and
  the XML stream description;
* from 18 + H up to the data table (or the end of the file): packets, each an
  i32 stream id, a u32 payload size and that many (compressed) payload bytes.

Events come from the event stream with the lowest id; width and height from its
``sizeX``/``sizeY`` in the header.

Every failure is a StreamError, including the ``PanicException`` the aedat
package raises on some malformed packets (it derives from BaseException).
Memory: the file (1x) plus 26 bytes per event; ``max_events`` caps the events
(default: one per 2 bytes of file, so under 14x the file size). A single packet
is decompressed by aedat before it can be counted.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
from spikecast.ext.core.errors import SpikecastError
from spikecast.ext.core.events import EVENT_DTYPE
from spikecast.runtime.readers._common import (
    check_events,
    check_max_events,
    fail,
    resolve_size,
    too_many,
)
from spikecast.runtime.readers.recording import Recording

MAGIC = b"#!AER-DAT4.0\r\n"
_HEADER_AT = len(MAGIC) + 4


def _data_table_position(data: bytes, path: Path) -> int:
    """Read IOHeader.dataTablePosition from the FlatBuffers header (bounds-checked).

    Also checks that the stream description (field 2, infoNode) is UTF-8: the aedat
    package aborts the whole process (a panic across the FFI boundary) on one that is not.
    """
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    hdr = data[_HEADER_AT : _HEADER_AT + length]

    def u(fmt: str, at: int) -> int:
        if at < 0 or at + struct.calcsize(fmt) > len(hdr):
            raise fail(path, _HEADER_AT + max(at, 0), "IOHeader field points outside the header")
        return int(struct.unpack_from(fmt, hdr, at)[0])

    if hdr[4:8] != b"IOHE":
        raise fail(path, _HEADER_AT + 4, f"IOHeader identifier {hdr[4:8]!r}, expected b'IOHE'")
    table = u("<I", 0)
    vtable = table - u("<i", table)
    vt_size = u("<H", vtable)
    # Field k lives at vtable + 4 + 2 * k when the vtable has it (offset 0: absent).
    info = u("<H", vtable + 8) if vt_size >= 10 else 0
    if info:
        at = table + info + u("<I", table + info)
        n = u("<I", at)
        if at + 4 + n > len(hdr):
            raise fail(path, _HEADER_AT + at, "IOHeader description runs past the header")
        try:
            hdr[at + 4 : at + 4 + n].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(path, _HEADER_AT + at + 4 + exc.start,
                       "IOHeader description is not UTF-8") from None
    # Field 1 (dataTablePosition).
    if vt_size < 8:
        return -1
    field = u("<H", vtable + 6)
    return -1 if field == 0 else u("<q", table + field)


def _packets(data: bytes, path: Path) -> list[tuple[int, int]]:
    """Walk packet headers; return (byte offset, stream id) of every packet."""
    if data[: len(MAGIC)] != MAGIC:
        raise fail(path, 0, f"magic {data[: len(MAGIC)]!r}, expected {MAGIC!r}")
    if len(data) < _HEADER_AT:
        raise fail(path, len(MAGIC), "file ends inside the header length")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    pos = _HEADER_AT + length
    if pos > len(data):
        raise fail(path, len(MAGIC), f"header of {length} bytes runs past the end of the file")
    table_at = _data_table_position(data, path)
    if 0 <= table_at < pos:
        raise fail(path, _HEADER_AT, f"data table position {table_at} lies inside the header")
    # A truncated file loses its data table too: walk to what is there, so the
    # error names the packet that was cut rather than the missing table.
    end = len(data) if table_at < 0 else min(table_at, len(data))
    packets: list[tuple[int, int]] = []
    while pos < end:
        if pos + 8 > end:
            raise fail(path, pos, f"packet header cut short ({end - pos} of 8 bytes)")
        stream_id, size = struct.unpack_from("<iI", data, pos)
        if stream_id < 0:
            raise fail(path, pos, f"negative stream id {stream_id}")
        if pos + 8 + size > end:
            raise fail(path, pos, f"packet declares {size} bytes, only {end - pos - 8} remain")
        packets.append((pos, stream_id))
        pos += 8 + size
    if table_at > len(data):
        raise fail(path, len(data), f"file ends before its data table at byte {table_at}")
    return packets


def _decoder(path: Path) -> Any:
    try:
        import aedat
    except ImportError as exc:
        raise SpikecastError(
            "reading AEDAT4 needs the 'aedat' package: pip install 'spikecast[dvs]'"
        ) from exc
    return aedat.Decoder(str(path))


def _is_panic(exc: BaseException) -> bool:
    """The aedat package's pyo3 PanicException (a BaseException), not ^C or exit."""
    return type(exc).__name__ == "PanicException"


def _decode(
    path: Path, packets: list[tuple[int, int]], cap: int
) -> tuple[dict[str, Any], list[np.ndarray], list[int]]:
    """(event stream info, event chunks, byte offset of each chunk's packet)."""
    chunks: list[np.ndarray] = []
    chunk_offsets: list[int] = []
    done = total = 0
    try:
        decoder = _decoder(path)
        streams = {int(k): v for k, v in decoder.id_to_stream().items() if v.get("type") == "events"}
        if not streams:
            raise fail(path, _HEADER_AT, "no event stream in the header")
        sid = min(streams)
        ours = [off for off, s in packets if s == sid]
        for packet in decoder:
            done += 1
            if packet.get("stream_id") == sid and "events" in packet:
                at = ours[len(chunks)] if len(chunks) < len(ours) else -1
                total += int(packet["events"].size)
                if total > cap:
                    raise too_many(path, at, cap)
                chunk_offsets.append(at)
                chunks.append(_convert(packet["events"], path, at))
    except SpikecastError:
        raise
    except BaseException as exc:
        if not (_is_panic(exc) or isinstance(exc, (RuntimeError, OSError, ValueError, TypeError, KeyError))):
            raise
        where = packets[done][0] if done < len(packets) else _HEADER_AT
        raise fail(
            path, where, f"aedat could not decode packet {done}: {type(exc).__name__}: {exc}"
        ) from None
    return streams[sid], chunks, chunk_offsets


def _convert(raw: np.ndarray, path: Path, at: int) -> np.ndarray:
    names = raw.dtype.names or ()
    if not all(k in names for k in ("t", "x", "y", "on")):
        raise fail(path, at, f"event packet has fields {names}, expected t, x, y, on")
    if raw.size and (int(raw["t"].max()) > np.iinfo(np.int64).max or int(raw["t"].min()) < 0):
        raise fail(path, at, "timestamp outside int64")
    if raw.size and (int(raw["x"].min()) < 0 or int(raw["y"].min()) < 0):
        raise fail(path, at, "negative event coordinate")
    events = np.empty(raw.size, dtype=EVENT_DTYPE)
    events["x"], events["y"] = raw["x"], raw["y"]
    events["t"], events["p"] = raw["t"].astype(np.int64), raw["on"]
    return events


def _stated_size(info: dict[str, Any], path: Path) -> tuple[int | None, int | None]:
    w, h = info.get("width"), info.get("height")
    for v in (w, h):
        if v is not None and not (isinstance(v, int) and 0 < v <= 0xFFFF):
            raise fail(path, _HEADER_AT, f"event stream size {v!r} is not an integer in 1..65535")
    return w, h


def read_aedat4(
    path: Path | str, *, sensor_size: tuple[int, int] | None = None, max_events: int | None = None
) -> Recording:
    """Read the first event stream of an AEDAT 4.0 file (``max_events``: see the module doc)."""
    check_max_events(max_events)
    path = Path(path)
    data = path.read_bytes()
    packets = _packets(data, path)
    cap = len(data) // 2 if max_events is None else max_events
    del data
    info, chunks, chunk_offsets = _decode(path, packets, cap)
    events = np.concatenate(chunks) if chunks else np.zeros(0, dtype=EVENT_DTYPE)
    width, height = resolve_size(_stated_size(info, path), sensor_size, events)
    # Event i came from the packet whose cumulative count first exceeds i.
    ends = np.cumsum([c.size for c in chunks])
    check_events(
        events,
        path=path,
        width=width,
        height=height,
        offset_of=lambda i: chunk_offsets[int(np.searchsorted(ends, i, side="right"))],
    )
    return Recording(events, width, height, path, "aedat4")
