"""Limits on live input: what one packet, one command and one device may cost.

Live packets and commands come from the network, so every one is checked against
these limits before it touches any state. A packet over a limit is dropped and
counted by cause (:data:`~spikecast.runtime.mqtt.metrics.CAUSES`); a command over a
limit is refused and counted by cause; neither ever ends the service. The values
are documented in docs/mqtt.md ("Limits").

The time jump is the one limit that does not drop anything: a packet more than
``max_jump_us`` of sensor time ahead of or behind its stream (a sensor restart, a
clock reset, a hostile ``t0_us``) closes the stream's current segment, which
decides on what it holds, and starts a fresh one at the packet's time.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikecast.ext.core.checks import check_float, check_int
from spikecast.ext.core.errors import StreamError
from spikecast.runtime.packets import HEADER, HEADER_SIZE, MAGIC, packet_size


@dataclass(frozen=True)
class LiveLimits:
    """What the live service accepts (see docs/mqtt.md, "Limits")."""

    #: A packet's ``t0_us`` more than this ahead of or behind its stream starts a
    #: fresh segment at the packet's time (60 s of sensor time).
    max_jump_us: int = 60_000_000
    #: Steps one packet may span from its ``t0_us`` to its last event.
    max_packet_steps: int = 10_000
    #: Events in one packet (9 MB of payload).
    max_packet_events: int = 1_000_000
    #: ``t0_us`` must lie in [0, max_t0_us): 2**53 us (285 years) keeps every sensor
    #: time exact as a JSON number.
    max_t0_us: int = 2**53
    #: Live streams of the device at once; a packet of a new stream beyond it is dropped.
    max_streams: int = 1_024
    #: A stream without packets for this long (wall clock) is closed: its pending
    #: decision is made and its state freed.
    idle_timeout_s: float = 60.0
    #: ``t_max`` a cmd/set may ask for (steps): a bound on the work of one decision.
    max_t_max: int = 10_000
    #: Bytes of one command payload.
    max_command_bytes: int = 4_096
    #: Decisions :attr:`Service.decisions` keeps (the newest).
    decision_history: int = 10_000

    def __post_init__(self) -> None:
        check_int("max_jump_us", self.max_jump_us, 1)
        check_int("max_packet_steps", self.max_packet_steps, 1)
        check_int("max_packet_events", self.max_packet_events, 0, 0xFFFFFFFF)
        check_int("max_t0_us", self.max_t0_us, 1, 2**62)
        check_int("max_streams", self.max_streams, 1)
        check_float("idle_timeout_s", self.idle_timeout_s, 0.0, lo_open=True)
        check_int("max_t_max", self.max_t_max, 1)
        check_int("max_command_bytes", self.max_command_bytes, 2)
        check_int("decision_history", self.decision_history, 0)

    def check_size(self, payload: bytes | bytearray | memoryview) -> None:
        """Refuse a packet whose header claims more events than allowed, before decoding."""
        if len(payload) < HEADER_SIZE or bytes(payload[:4]) != MAGIC:
            return  # the decoder names what is wrong with it
        n = HEADER.unpack_from(payload, 0)[5]
        if n > self.max_packet_events or len(payload) > packet_size(self.max_packet_events):
            raise LimitError("packets_too_many_events",
                             f"{n} events, more than the limit of {self.max_packet_events}")

    def check_packet(self, t0_us: int, last_us: int | None, dt_us: int) -> None:
        """Refuse a decoded packet whose time is out of range or that spans too many steps."""
        if not 0 <= t0_us < self.max_t0_us:
            raise LimitError("packets_bad_time", f"t0_us {t0_us} outside [0, {self.max_t0_us})")
        if last_us is not None and (last_us - t0_us) // dt_us >= self.max_packet_steps:
            raise LimitError(
                "packets_too_long",
                f"events span {last_us - t0_us} us from t0_us, more than the limit of "
                f"{self.max_packet_steps} steps of {dt_us} us",
            )


class LimitError(StreamError):
    """Live input over a :class:`LiveLimits` limit; ``cause`` is its drop cause."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


__all__ = ["LimitError", "LiveLimits"]
