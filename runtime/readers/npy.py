"""Event arrays saved with numpy: ``.npy`` or ``.npz``, never unpickled.

Accepted arrays: a 1-D structured array with integer (or bool for ``p``) fields
``x``, ``y``, ``t``, ``p``, or an (N, 4) integer array with columns x, y, t, p.
In an ``.npz`` the array is the ``events`` member (or the only member besides
``width``/``height``); optional integer scalars ``width`` and ``height`` give
the sensor size, else it is max + 1. Byte offsets in errors are into the
``.npy`` file, or into the member's array data for an ``.npz``.

Both are parsed here (``.npy`` headers with numpy's parser, the zip with
:mod:`zipfile`), so every failure is a StreamError. An ``.npz`` must have unique
``.npy`` members, stored or deflated; their declared sizes are checked before
anything is decompressed. A ``.npy`` header may be at most 1 kB (an event array's is
about 100 bytes). Memory: the array plus 22 bytes per event. For an
``.npz`` the members may declare at most 6x the file size (so peak memory stays
under 20x the file) unless ``max_events`` is given; ``max_events`` caps the
events of either kind of file.
"""

from __future__ import annotations

import math
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO

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

_FIELDS = ("x", "y", "t", "p")
_SIZE_KEYS = ("width", "height")
_NPZ_RATIO = 6
# numpy's header parser tokenizes the header: about 200 bytes of peak memory per header
# byte (2 MB for a garbled 10 kB one). An event array's header is ~100 bytes.
_MAX_HEADER = 1024
# What numpy's .npy header parser, zipfile and zlib raise on hostile bytes.
_ERRORS = (
    ValueError, OSError, EOFError, SyntaxError, TypeError, KeyError, IndexError, AttributeError,
    RuntimeError, OverflowError, NotImplementedError, struct.error, zlib.error, zipfile.BadZipFile,
    zipfile.LargeZipFile, tokenize.TokenError,
)  # fmt: skip


def _columns(arr: np.ndarray, path: Path, at: int) -> list[np.ndarray]:
    """Split an accepted array into x, y, t, p columns, checking kinds and ranges."""
    if arr.dtype.names is not None and arr.ndim == 1:
        missing = [f for f in _FIELDS if f not in arr.dtype.names]
        if missing:
            raise fail(path, at, f"structured array lacks fields {missing}")
        cols = [arr[f] for f in _FIELDS]
        if any(c.ndim != 1 for c in cols):
            raise fail(path, at, "structured fields x, y, t, p must be scalars")
    elif arr.dtype.names is None and arr.ndim == 2 and arr.shape[1] == 4:
        cols = [arr[:, j] for j in range(4)]
    else:
        raise fail(
            path,
            at,
            f"expected a structured event array or (N, 4) ints, got {arr.dtype} {arr.shape}",
        )
    for name, col in zip(_FIELDS, cols, strict=True):
        if col.dtype.kind not in "iub":
            raise fail(path, at, f"field {name} has dtype {col.dtype}; expected integers")
    bounds = {"x": 0xFFFF, "y": 0xFFFF, "p": 1}
    for name, col in zip(_FIELDS, cols, strict=True):
        if col.size == 0 or name == "t":
            continue
        low, high = int(col.min()), int(col.max())
        if low < 0 or high > bounds[name]:
            i = int(np.argmax((col < 0) | (col > bounds[name])))
            row = arr.dtype.itemsize * (1 if arr.ndim == 1 else 4)
            raise fail(path, at + row * i, f"event {i} has {name}={int(col[i])}, outside 0..{bounds[name]}")
    t = cols[2]
    if t.dtype.kind == "u" and t.size and int(t.max()) > np.iinfo(np.int64).max:
        raise fail(path, at, "timestamps beyond int64")
    return cols


def _read_array(
    f: IO[bytes], size: int, path: Path, what: str, max_events: int | None
) -> tuple[np.ndarray, int]:
    """(array, byte offset of its data) from a .npy stream of ``size`` bytes; never unpickles."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise fail(path, 6, f"{what}: unsupported .npy version {version}")
    read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
    shape, fortran, dtype = read_header(f, max_header_size=_MAX_HEADER)
    at = f.tell()
    if dtype.hasobject:
        raise fail(path, 0, f"{what}: holds Python objects, not readable without pickle")
    nbytes = dtype.itemsize * math.prod(shape)
    if at + nbytes != size:
        raise fail(path, at, f"{what}: header says {nbytes} bytes of {dtype} {shape}, {size - at} follow")
    if max_events is not None and shape and shape[0] > max_events:
        raise too_many(path, at, max_events, shape[0])
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise fail(path, at + len(data), f"{what}: data cut short")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return arr, at


def _npz_members(zf: zipfile.ZipFile, path: Path, limit: int | None) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in members:
            raise fail(path, info.header_offset, f"npz member {name[:80]!r} is not a unique .npy array")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise fail(
                path, info.header_offset, f"npz member {name[:80]!r} uses compression {info.compress_type}"
            )
        members[name[:-4]] = info
    total = sum(i.file_size for i in members.values())
    if limit is not None and total > limit:
        raise fail(
            path, 0, f"npz members declare {total} bytes, more than {_NPZ_RATIO}x the file; pass max_events"
        )
    return members


def _load_npz(path: Path, max_events: int | None) -> tuple[np.ndarray, tuple[int | None, int | None], int]:
    limit = None if max_events is not None else _NPZ_RATIO * path.stat().st_size + 65536
    with zipfile.ZipFile(path) as zf:
        members = _npz_members(zf, path, limit)
        names = list(members)
        others = [n for n in names if n not in _SIZE_KEYS]
        key = "events" if "events" in names else (others[0] if len(others) == 1 else None)
        if key is None:
            raise fail(path, 0, f"npz has no 'events' member (members: {names[:8]})")
        size: list[int | None] = []
        for k in _SIZE_KEYS:
            if k not in members:
                size.append(None)
                continue
            with zf.open(members[k]) as f:
                v, _ = _read_array(f, members[k].file_size, path, f"npz member {k!r}", None)
            if v.shape != () or v.dtype.kind not in "iu" or not 0 < int(v) <= 0xFFFF:
                raise fail(path, 0, f"npz member {k!r} must be an integer scalar in 1..65535")
            size.append(int(v))
        with zf.open(members[key]) as f:
            arr, _ = _read_array(f, members[key].file_size, path, f"npz member {key!r}", max_events)
    return arr, (size[0], size[1]), 0


def _load(path: Path, max_events: int | None) -> tuple[np.ndarray, tuple[int | None, int | None], int]:
    """(array, stated (width, height), byte offset of the array data)."""
    try:
        with path.open("rb") as f:
            magic = f.read(6)
            f.seek(0)
            if magic == b"\x93NUMPY":
                arr, at = _read_array(f, path.stat().st_size, path, ".npy", max_events)
                return arr, (None, None), at
        return _load_npz(path, max_events)
    except _ERRORS as exc:
        raise fail(path, 0, f"not a readable .npy/.npz without pickle: {type(exc).__name__}: {exc}") from None


def read_npy(
    path: Path | str, *, sensor_size: tuple[int, int] | None = None, max_events: int | None = None
) -> Recording:
    """Read events from ``.npy``/``.npz`` (see the module docstring for the layouts)."""
    check_max_events(max_events)
    path = Path(path)
    arr, stated, at = _load(path, max_events)
    x, y, t_us, p = _columns(arr, path, at)
    events = pack_events(x, y, t_us, p)
    width, height = resolve_size(stated, sensor_size, events)
    row = arr.dtype.itemsize * (1 if arr.ndim == 1 else 4)
    check_events(events, path=path, width=width, height=height, offset_of=lambda i: at + row * i)
    return Recording(events, width, height, path, "npy")
