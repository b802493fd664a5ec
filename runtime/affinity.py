"""Stream affinity: each live stream belongs to exactly one worker of a device.

Several workers (``spikecast run --source mqtt --worker NAME``) of one device each
subscribe to every event topic of the device and to the presence topics of all
workers (``spikecast/<device>/workers/+/status``, retained, ``online``/``offline``;
a worker's Last Will sets its own to ``offline``). Every worker computes the owner of
a stream from the live worker set by rendezvous (highest-random-weight) hashing: the
worker with the highest ``hash(worker, stream)`` owns it. All workers see the same
retained presence messages in the same order, so they agree on the owner without
talking to each other; a worker that leaves moves only its own streams (to the
survivors, spread evenly), and one that joins takes only the streams it now wins.

A worker drops the packets of streams it does not own before decoding them: a
cached lookup by topic (see :meth:`Membership.owns_topic`). Plain MQTT, no broker
plugin; the price is bandwidth: every worker receives every packet of the device
(docs/mqtt.md, "Scaling out").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from spikecast.ext.core.errors import ParameterError
from spikecast.runtime.mqtt.topics import validate_name

ONLINE = b"online"

# The owner cache holds at most this many topics; beyond it, it starts afresh (a flood
# of made-up stream names costs a hash each, never memory).
_CACHE_TOPICS = 65_536


def weight(worker: str, stream: str) -> int:
    """The rendezvous weight of ``stream`` on ``worker``: 64 bits of BLAKE2b, the same on
    every machine and Python (no ``hash()`` randomisation)."""
    digest = hashlib.blake2b(f"{worker}\x00{stream}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(stream: str, workers: Iterable[str]) -> str:
    """The worker that owns ``stream`` among ``workers``: the highest weight (ties, which
    need a 64-bit collision, go to the greater name)."""
    best: tuple[int, str] | None = None
    for w in workers:
        key = (weight(w, stream), w)
        if best is None or key > best:
            best = key
    if best is None:
        raise ParameterError("no workers to own a stream")
    return best[1]


def stream_of_events_topic(topic: str) -> str | None:
    """The stream level of ``spikecast/<device>/<stream>/events`` (unvalidated: the
    packet's own checks come later, for owned streams only); None for another shape."""
    parts = topic.split("/")
    return parts[2] if len(parts) == 4 else None


class Membership:
    """The live worker set as this worker sees it, and which streams it owns.

    ``apply()`` takes each presence message (retained ones at subscription included).
    Until this worker has seen its own ``online`` since the last (re)connect it does
    not know the set (``ready`` is False): the retained presence of the others comes
    in the same burst as its own, so after its own it knows them all.
    """

    def __init__(self, me: str) -> None:
        self.me = validate_name(me, what="worker")
        self.online: set[str] = set()
        #: Workers seen leaving (and not back): whose streams a new stream may come from.
        self.departed: set[str] = set()
        self.ready = False
        self.changes = 0  # membership changes seen
        self._owned: dict[str, bool] = {}  # events topic -> owned by me

    def reset(self) -> None:
        """After a reconnect: the broker sends the retained presence again."""
        self.online.clear()
        self.ready = False
        self._owned.clear()

    def workers(self) -> frozenset[str]:
        """The live workers, this one included."""
        return frozenset(self.online | {self.me})

    def apply(self, worker: str, payload: bytes) -> bool:
        """One presence message; True if the live worker set changed."""
        up = payload == ONLINE
        if worker == self.me:
            if up:
                self.ready = True
            return False  # this worker is always in its own set
        if up == (worker in self.online):
            return False
        if up:
            self.online.add(worker)
            self.departed.discard(worker)
        else:
            self.online.discard(worker)
            self.departed.add(worker)
        self.changes += 1
        self._owned.clear()
        return True

    def owns(self, stream: str) -> bool:
        return owner(stream, self.workers()) == self.me

    def owns_topic(self, topic: str) -> bool:
        """Whether this worker owns the stream of an events topic: one dict lookup once
        the topic has been seen (the cache is cleared on every membership change). A
        topic that is not ``spikecast/<device>/<stream>/events`` counts as owned, so the
        packet's own checks reject it and count it."""
        hit = self._owned.get(topic)
        if hit is not None:
            return hit
        stream = stream_of_events_topic(topic)
        mine = stream is None or self.owns(stream)
        if len(self._owned) >= _CACHE_TOPICS:
            self._owned.clear()
        self._owned[topic] = mine
        return mine

    def taken_over(self, stream: str) -> bool:
        """True if ``stream`` would belong to a worker that has left: a new stream of
        this worker that moved here on failover."""
        if not self.departed:
            return False
        return owner(stream, self.workers() | self.departed) in self.departed


__all__ = ["Membership", "owner", "stream_of_events_topic", "weight"]
