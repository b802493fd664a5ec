"""Event arrays saved with numpy: ``.npy`` or ``.npz``, never unpickled.

Accepted arrays: a 1-D structured array with integer (or bool for ``p``) fields
``x``, ``y``, ``t``, ``p``, or an (N, 4) integer array with columns x, y, t, p.
In an ``.npz`` the array is the ``events`` member (or the only member besides
``width``/``height``); optional integer scalars ``width`` and ``height`` give
the sensor size, else it is max + 1. Byte offsets in errors are into the
``.npy`` file, or into the member's array data for an ``.npz``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from spikecast.runtime.readers._common import check_events, fail, pack_events, resolve_size
from spikecast.runtime.readers.recording import Recording

_FIELDS = ("x", "y", "t", "p")
_SIZE_KEYS = ("width", "height")


def _columns(arr: np.ndarray, path: Path, at: int) -> list[np.ndarray]:
    """Split an accepted array into x, y, t, p columns, checking kinds and ranges."""
    if arr.dtype.names is not None and arr.ndim == 1:
        missing = [f for f in _FIELDS if f not in arr.dtype.names]
        if missing:
            raise fail(path, at, f"structured array lacks fields {missing}")
        cols = [arr[f] for f in _FIELDS]
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
            raise fail(
                path, at + row * i, f"event {i} has {name}={int(col[i])}, outside 0..{bounds[name]}"
            )
    t = cols[2]
    if t.dtype.kind == "u" and t.size and int(t.max()) > np.iinfo(np.int64).max:
        raise fail(path, at, "timestamps beyond int64")
    return cols


def _load(path: Path) -> tuple[np.ndarray, tuple[int | None, int | None], int]:
    """(array, stated (width, height), byte offset of the array data)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise fail(path, 0, f"not a readable .npy/.npz without pickle: {exc}") from None
    if isinstance(loaded, np.ndarray):
        # A .npy holds its data at the end, after a header of variable length.
        return loaded, (None, None), path.stat().st_size - loaded.nbytes
    with loaded:
        names = list(loaded.files)
        key = "events" if "events" in names else None
        others = [n for n in names if n not in _SIZE_KEYS]
        if key is None and len(others) == 1:
            key = others[0]
        if key is None:
            raise fail(path, 0, f"npz has no 'events' member (members: {names})")
        try:
            arr = loaded[key]
            size: list[int | None] = []
            for k in _SIZE_KEYS:
                v = loaded[k] if k in names else None
                if v is not None and (v.shape != () or v.dtype.kind not in "iu"):
                    raise fail(path, 0, f"npz member {k!r} must be an integer scalar")
                size.append(None if v is None else int(v))
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise fail(path, 0, f"npz member unreadable: {exc}") from None
    for k, v in zip(_SIZE_KEYS, size, strict=True):
        if v is not None and not 0 < v <= 0xFFFF:
            raise fail(path, 0, f"npz {k}={v} is outside 1..65535")
    return arr, (size[0], size[1]), 0


def read_npy(path: Path | str, *, sensor_size: tuple[int, int] | None = None) -> Recording:
    """Read events from ``.npy``/``.npz`` (see the module docstring for the layouts)."""
    path = Path(path)
    arr, stated, at = _load(path)
    x, y, t_us, p = _columns(arr, path, at)
    events = pack_events(x, y, t_us.astype(np.int64), p.astype(np.uint8))
    width, height = resolve_size(stated, sensor_size, events)
    row = arr.dtype.itemsize * (1 if arr.ndim == 1 else 4)
    check_events(events, path=path, width=width, height=height, offset_of=lambda i: at + row * i)
    return Recording(events, width, height, path, "npy")
