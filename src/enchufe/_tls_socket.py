"""OpenSSL on a socket it reads and writes itself, for a :class:`~enchufe.tlschannel.TLSChannel`
given one (the relay's terminated clients): the connection object, and a shutdown that sends
close_notify without reading the socket.

Why the shutdown needs care: OpenSSL's ``SSL_shutdown``, as Python's ``unwrap()`` calls it, sends
close_notify and then reads the socket for the peer's; TLS 1.3 lets the peer go on sending, and
what that read meets instead is dropped (``APPLICATION_DATA_AFTER_CLOSE_NOTIFY``), the
connection broken.  :func:`shutdown_caught` runs the shutdown with the socket's descriptor
pointing at a socketpair meanwhile: close_notify is caught there, for the caller to send, and
the read finds nothing.  The socketpair is one per process, so one shutdown at a time uses it,
whichever thread or API (a relay's thread, sync endpoints) makes it: two at once would each read
what the other caught.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable

__all__ = ["AVAILABLE", "on_socket", "shutdown_caught"]

#: Whether this Python has the private constructor :func:`on_socket` needs (CPython 3.7 to 3.13
#: do); without it, channels stay on memory BIOs.
AVAILABLE = hasattr(ssl.SSLContext, "_wrap_socket")


def on_socket(
    context: ssl.SSLContext, sock: socket.socket, server_side: bool, server_hostname: str | None
) -> ssl.SSLObject:
    """An ``ssl.SSLObject`` whose OpenSSL connection reads and writes ``sock`` itself.

    ``SSLContext._wrap_socket`` makes the C object an ``ssl.SSLSocket`` is built on; unlike
    ``wrap_socket`` it leaves ``sock`` as it is (its owner keeps using it: epoll, shutdown,
    close; OpenSSL never closes the descriptor).  Wrapped in an ``SSLObject``, it has the methods
    of a memory-BIO one.  ``sock`` is made non-blocking with no timeout: OpenSSL's "want read"
    and "want write" then come back at once instead of being waited for."""
    if sock.gettimeout() != 0.0:
        sock.setblocking(False)
    obj = ssl.SSLObject.__new__(ssl.SSLObject)
    obj._sslobj = context._wrap_socket(  # type: ignore[attr-defined]
        sock, server_side, server_hostname, owner=obj, session=None
    )
    return obj


def shutdown_caught(fd: int, shutdown: Callable[[], None]) -> bytes:
    """Run ``shutdown`` (an ``unwrap()`` of the connection on ``fd``) with ``fd`` pointing at a
    socketpair of this process: what it sent (close_notify), caught there.  ``fd`` is put back
    on its socket whatever happens; epoll watches the socket, not the number, and never sees
    the swap (the event loop is one thread, inside this call).  Errors of ``shutdown`` pass.
    Calls from several threads take turns (see the module)."""
    with _catching:
        catch, caught = _catcher()
        saved = os.dup(fd)
        try:
            os.dup2(catch, fd, inheritable=False)
            shutdown()
        finally:
            os.dup2(saved, fd, inheritable=False)
            os.close(saved)
        parts: list[bytes] = []
        while True:
            try:
                data = os.read(caught, 65536)
            except BlockingIOError:
                data = b""
            if not data:
                return b"".join(parts)
            parts.append(data)


#: The socketpair of each process (its two non-blocking descriptors, open while it lives): a
#: child of a fork (``--workers``) makes its own.
_catchers: dict[int, tuple[int, int]] = {}
#: Held while the socketpair is in use (see :func:`shutdown_caught`).
_catching = threading.Lock()


def _after_fork_in_child() -> None:
    """A fork's child has one thread: a lock another thread of the parent held stays held in
    it, forever.  The child's own lock, then (its socketpair comes with its first use)."""
    global _catching
    _catching = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _catcher() -> tuple[int, int]:
    pid = os.getpid()
    pair = _catchers.get(pid)
    if pair is None:
        _catchers.clear()  # a parent's, shared with it: left alone
        ends = socket.socketpair()
        for end in ends:
            end.setblocking(False)
        pair = _catchers[pid] = (ends[0].detach(), ends[1].detach())
    return pair
