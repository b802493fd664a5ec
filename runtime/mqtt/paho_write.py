"""Outgoing MQTT packets written when they are published, not a loop turn or two later.

paho-mqtt queues every outgoing packet and, when an external event loop drives it,
asks that loop to watch the socket for writability (``on_socket_register_write``).
aiomqtt answers with ``call_soon_threadsafe(loop.add_writer, ...)``: the writer is
registered on the next turn of the event loop and the bytes leave on the turn after
that, once ``epoll`` reports the socket writable. While the service computes a batch
of packets on the loop, those turns wait for the batch: on the bench host
(``bench/latency.py``, 16 streams of 10 ms packets) one decision in ten waited more
than 1.5 ms between ``publish()`` and the socket.

:func:`install` gives one paho client a ``on_socket_register_write`` that writes at
once when it can, and falls back to aiomqtt's deferred write otherwise:

- only on the thread that installed it (the event loop's), and only when paho is not
  inside one of its own callbacks (paho's ``_in_callback_mutex`` is free: the same
  test paho makes before it writes directly without an event loop);
- whatever the socket does not take now (it is full: ``want_write()`` stays true) is
  left to aiomqtt's writer, registered as before;
- an exception from the write hands the packet back to aiomqtt's path, which reports
  a broken connection as it always has.

The write itself is paho's ``loop_write``, so TLS, partial writes and QoS 0 publish
callbacks behave as they do when aiomqtt's writer calls it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_NEEDED = ("loop_write", "want_write", "_in_callback_mutex", "on_socket_register_write")


def install(client: Any) -> bool:
    """Give one paho ``Client`` (aiomqtt's, already constructed) immediate writes; False
    (nothing changed) when it does not look as expected. Call it on the event loop."""
    if not all(hasattr(client, name) for name in _NEEDED):
        log.debug("paho client without %s: writes stay deferred", _NEEDED)
        return False
    deferred = client.on_socket_register_write
    if deferred is None:
        return False
    loop_thread = threading.get_ident()
    mutex = client._in_callback_mutex

    def register_write(c: Any, userdata: Any, sock: Any) -> None:
        if threading.get_ident() != loop_thread or not mutex.acquire(blocking=False):
            deferred(c, userdata, sock)
            return
        mutex.release()
        try:
            c.loop_write()
        except Exception:  # aiomqtt's writer retries it and reports the failure
            deferred(c, userdata, sock)
            return
        if c.want_write():  # the socket is full: the rest once it is writable
            deferred(c, userdata, sock)

    client.on_socket_register_write = register_write
    return True


__all__ = ["install"]
