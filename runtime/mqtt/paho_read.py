"""Received MQTT packets read from a user-space buffer, every complete one per wake-up.

paho-mqtt reads a packet with at least three ``recv`` system calls (its command byte,
its length bytes one at a time, then the rest), and ``loop_read`` handles one QoS 0
packet per call. aiomqtt calls ``loop_read`` once each time the event loop sees the
socket readable, so sixteen packets that arrive together cost sixteen trips through
the event loop's ``epoll`` and some fifty ``recv`` calls. On a virtual machine, where
system calls are dear, that was most of what receiving a message cost.

:func:`install` gives one paho client a reader that takes whatever the socket holds
in one ``recv`` of up to :data:`CHUNK_BYTES` and serves paho's small reads from it,
and a ``loop_read`` that handles every packet those bytes complete before it returns.
The rules that keep it exact:

- at most one real ``recv`` per ``loop_read`` call; the buffer is always empty when
  ``loop_read`` returns (it keeps handling packets until it is), so no byte waits in
  user space while the event loop waits for the socket to become readable;
- the real read is paho's own ``_sock_recv`` (TLS and websocket errors are handled
  there as before), and an end of stream (``b""``) is passed through unchanged;
- a read is never larger than the buffered bytes or than what paho asked for, so
  paho's packet state (partial packets included) is what it would be without it.

Work per wake-up is bounded: one read of at most :data:`CHUNK_BYTES`, handled in
full. It changes nothing for a paho release whose client does not have the methods
it replaces (then paho's own reading stays in use).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

#: Bytes taken from the socket per real read: many packets at once, bounded work.
CHUNK_BYTES = 65536

_NEEDED = ("_sock_recv", "_packet_read", "loop_read", "_loop_rc_handle")


class BufferedReader:
    """paho's ``_sock_recv`` served from one chunk read at a time."""

    __slots__ = ("_data", "_pos", "_read", "_reads_left", "_sock")

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._data = b""
        self._pos = 0
        self._reads_left = 0
        self._sock: object = None

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        return len(self._data) - self._pos

    def allow_read(self, sock: object) -> None:
        """One more real read may happen; a new socket (a reconnect) starts afresh."""
        if sock is not self._sock:
            self._sock, self._data, self._pos = sock, b"", 0
        self._reads_left = 1

    def recv(self, bufsize: int) -> bytes:
        pos, data = self._pos, self._data
        if pos == len(data):
            if self._reads_left <= 0:
                raise BlockingIOError  # paho: MQTT_ERR_AGAIN, wait for the socket
            self._reads_left -= 1
            data = self._read(max(CHUNK_BYTES, bufsize))  # raises as paho's read does
            if not data:
                return data  # end of stream: paho reports the connection lost
            self._data, pos = data, 0
        end = pos + bufsize
        self._pos = min(end, len(data))
        return data[pos:end]


def install(client: Any) -> bool:
    """Give one paho ``Client`` the buffered reader; False (nothing changed) when the
    client does not look as expected."""
    if not all(callable(getattr(client, name, None)) for name in _NEEDED):
        log.debug("paho client without %s: its own socket reads stay in use", _NEEDED)
        return False
    reader = BufferedReader(client._sock_recv)
    packet_read = client._packet_read
    rc_handle = client._loop_rc_handle
    again, success, no_conn = (MQTTErrorCode.MQTT_ERR_AGAIN, MQTTErrorCode.MQTT_ERR_SUCCESS,
                               MQTTErrorCode.MQTT_ERR_NO_CONN)

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:  # paho's signature; it ignores it too
        sock = client._sock
        if sock is None:
            return no_conn
        reader.allow_read(sock)
        while True:
            rc = packet_read()
            if rc > 0:
                return rc_handle(rc)  # type: ignore[no-any-return]
            if client._sock is None:
                return no_conn
            # AGAIN with bytes still buffered: paho paused inside a long packet.
            if rc == again and not reader.buffered():
                return success

    client._sock_recv = reader.recv
    client.loop_read = loop_read
    return True
