"""The result of reading an event file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class Recording:
    """Events (EVENT_DTYPE, sorted by t) plus the sensor geometry they live in.

    ``fmt`` is the reader that produced it: one of ``FORMATS`` in
    :mod:`spikecast.runtime.readers`.
    """

    events: np.ndarray
    width: int
    height: int
    path: Path
    fmt: str

    def __len__(self) -> int:
        return int(self.events.size)

    @property
    def duration_us(self) -> int:
        """Sensor time from the first to the last event (0 when there are < 2 events)."""
        if self.events.size == 0:
            return 0
        return int(self.events["t"][-1]) - int(self.events["t"][0])
