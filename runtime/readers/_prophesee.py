"""The ASCII header shared by Prophesee RAW (EVT 2.0/3.0) and DAT files.

A header is a run of lines that start with ``%`` and end with ``\\n``; binary data
follows. Newer files close it with ``% end``. Sensor geometry may appear as
``% geometry 1280x720``, ``% format EVT3;height=720;width=1280`` or, in DAT
files, ``% Width 640`` / ``% Height 480``. Older files name only the camera
plugin, so a small table maps known sensor generations to their geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spikecast.runtime.readers._common import fail

_MAX_LINE = 4096
_MAX_HEADER = 1 << 20

# Older files (like the expelliarmus fixtures) name only the plugin. Longer
# names come first so "gen41" is not taken for "gen4"/"gen3".
_PLUGIN_GEOMETRY: tuple[tuple[str, int, int], ...] = (
    ("imx636", 1280, 720),
    ("gen41", 1280, 720),
    ("gen4", 1280, 720),
    ("genx320", 320, 320),
    ("gen31", 640, 480),
    ("gen3", 640, 480),
)

_FORMAT_VERSIONS = {"EVT2": "2.0", "EVT21": "2.1", "EVT3": "3.0"}


@dataclass(frozen=True)
class PropheseeHeader:
    """What the header says. ``data_offset`` is where binary data begins."""

    fields: tuple[tuple[str, str], ...]
    data_offset: int
    evt_version: str | None
    width: int | None
    height: int | None

    def get(self, key: str) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return None


def _positive(path: Path | str, offset: int, text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise fail(path, offset, f"header {what} {text!r} is not an integer in 1..65535")
    return int(text)


def _geometry(key: str, value: str, path: Path | str, at: int) -> tuple[int | None, int | None]:
    """Width and height a header line gives (None where it gives none)."""
    width: int | None = None
    height: int | None = None
    if key == "format":
        for param in value.split(";")[1:]:
            k, _, v = param.partition("=")
            if k.strip() == "width":
                width = _positive(path, at, v.strip(), "width")
            elif k.strip() == "height":
                height = _positive(path, at, v.strip(), "height")
    elif key == "geometry":
        w_text, _, h_text = value.partition("x")
        width = _positive(path, at, w_text, "width")
        height = _positive(path, at, h_text, "height")
    elif key == "Width":
        width = _positive(path, at, value, "width")
    elif key == "Height":
        height = _positive(path, at, value, "height")
    return width, height


def _header_line(data: bytes, pos: int, path: Path | str) -> tuple[str, int]:
    """The ``%`` line at pos, stripped, and the position after it."""
    if pos > _MAX_HEADER:
        raise fail(path, pos, f"header longer than {_MAX_HEADER} bytes")
    nl = data.find(b"\n", pos, pos + _MAX_LINE)
    if nl < 0:
        raise fail(path, pos, f"header line not terminated within {_MAX_LINE} bytes")
    try:
        line = data[pos + 1 : nl].decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise fail(path, pos + 1 + exc.start, "non-ASCII byte in header line") from None
    return line, nl + 1


def parse_header(data: bytes, path: Path | str) -> PropheseeHeader:
    """Parse the ``%`` lines at the start of ``data``; raise StreamError on garbage."""
    fields: list[tuple[str, str]] = []
    evt: str | None = None
    width: int | None = None
    height: int | None = None
    pos = 0
    while pos < len(data) and data[pos] == ord("%"):
        line_at = pos
        line, pos = _header_line(data, pos, path)
        if line == "end":
            break
        key, _, value = line.partition(" ")
        value = value.strip()
        fields.append((key, value))
        if key == "evt":
            evt = value
        elif key == "format":
            name = value.split(";")[0].strip()
            evt = _FORMAT_VERSIONS.get(name.upper(), name)
        w, h = _geometry(key, value, path, line_at)
        width = width if w is None else w
        height = height if h is None else h
    if width is None or height is None:
        plugin = dict(fields).get("plugin_name", "").lower()
        for tag, pw, ph in _PLUGIN_GEOMETRY:
            if tag in plugin:
                width, height = pw, ph
                break
    return PropheseeHeader(tuple(fields), pos, evt, width, height)


def check_version(header: PropheseeHeader, path: Path | str, expected: str) -> None:
    """A header that names another encoding means the wrong reader was chosen."""
    if header.evt_version is not None and header.evt_version != expected:
        raise fail(
            path, 0, f"header declares EVT {header.evt_version}, but was read as EVT {expected}"
        )
