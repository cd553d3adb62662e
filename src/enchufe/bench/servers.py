"""bench's own servers, run in a process of their own: ``python -m enchufe.bench.servers``.

A measurement's client and server never share a Python thread, nor here even a process: the
client would otherwise wait for the GIL while the server holds it, and both halves of every
round trip would be timed through one interpreter.  :mod:`.process` starts this module as a
child and tells it what to serve.

Roles, each a plain blocking loop (one thread per connection, ``recv_into`` a buffer
allocated once) so that the server costs as little as Python allows:

=========  ========  =========================================================  ================
role       kinds     does                                                       for
=========  ========  =========================================================  ================
sink       stream    read and discard until EOF, then close                     throughput
echo       stream    send back every byte until EOF, then close                 latency
close      stream    accept, close at once                                      connection rate
echo       datagram  send each datagram back to its sender                      latency
count      datagram  count datagrams by sequence number (:mod:`.sequence`)      datagram rate
lib-sink   stream    as sink, through enchufe's Connection (TLS or not)          TLS throughput
lib-echo   stream    as echo, through enchufe's Connection                       TLS ping-pong
lib-close  stream    handshake (TLS), then close                                handshakes/s
=========  ========  =========================================================  ================

The ``lib-`` roles serve ``tls://``/``tls+unix:`` addresses (``cert=auto``: the start answer
carries the ``pin``) and, for the same measure without TLS, the plain address: both go through
the library's connection object, so the ratio between them is the cost of TLS alone.

Control: one JSON object per line on stdin, one answer per line on stdout::

    {"op": "start", "role": "sink", "address": "tcp://127.0.0.1:0"}
        → {"ok": true, "id": 1, "address": "tcp://127.0.0.1:41234"}
    {"op": "counts", "id": 3, "token": 1234}
        → {"ok": true, "received": 9000, "duplicates": 0, "reordered": 0, "foreign": 0}
    {"op": "stop", "id": 1}    → {"ok": true}

A failure answers ``{"ok": false, "error": "…", "usage": false}``, the error in the language
given as the first argument (the parent's, so that its user reads it).  At EOF on stdin every
server stops (unix socket files are removed) and the process exits; SIGINT is ignored, so a
Ctrl-C meant for the parent does not kill the servers before the parent has cleaned up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from ..address import parse
from ..errors import EnchufeError, UsageError
from ..i18n import _, set_language
from ..sync import bind_datagram, listen
from ..sync.datagram import DatagramSocket
from ..sync.stream import Connection, Listener
from .sequence import HEADER, HEADER_SIZE, MAGIC, Counts, SequenceBook

__all__ = ["main"]

#: Bytes one ``recv_into`` may take: a few loopback segments at once, so a fast sender is drained
#: in few system calls.
BUFFER_SIZE = 256 * 1024

#: Seconds the accept loop waits after a failed accept() before the next one.
ACCEPT_ERROR_PAUSE = 0.01

#: A client that stops reading its echoes cannot stall a server thread for longer than this.
SEND_TIMEOUT = 5.0


def _send_timeout(sock: socket.socket) -> None:
    from .loops import set_kernel_timeouts

    set_kernel_timeouts(sock, recv=None, send=SEND_TIMEOUT)


class _StreamServer:
    def __init__(self, listener: Listener, role: str) -> None:
        self.listener = listener
        self.role = role
        self.thread = threading.Thread(target=self._accept_loop, name=f"bench-{role}-accept", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _accept_loop(self) -> None:
        accept = self.listener.socket.accept
        handler = self._sink if self.role == "sink" else self._echo
        close_at_once = self.role == "close"
        while True:
            try:
                conn, _peer = accept()
            except OSError:
                if self.listener.closed:
                    return
                # ECONNABORTED: that client left; EMFILE and the like: out of descriptors for
                # now.  Either way the next may come; pause so that a lasting error never spins.
                time.sleep(ACCEPT_ERROR_PAUSE)
                continue
            if close_at_once:
                conn.close()
                continue
            threading.Thread(target=handler, args=(conn,), name=f"bench-{self.role}", daemon=True).start()

    @staticmethod
    def _sink(conn: socket.socket) -> None:
        buffer = bytearray(BUFFER_SIZE)
        recv_into = conn.recv_into
        with contextlib.suppress(OSError), conn:
            while recv_into(buffer):
                pass

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _send_timeout(conn)
        buffer = bytearray(BUFFER_SIZE)
        view = memoryview(buffer)
        recv_into, sendall = conn.recv_into, conn.sendall
        with contextlib.suppress(OSError), conn:
            while n := recv_into(buffer):
                sendall(view[:n])

    def counts(self, token: int) -> Counts:
        raise UsageError(_("a {role} server does not count datagrams").format(role=self.role))

    def stop(self) -> None:
        self.listener.close()  # wakes accept(); removes a unix socket file
        self.thread.join(2.0)


class _LibraryServer(_StreamServer):
    """The ``lib-`` roles: accept() gives the library's connection, whose handshake (TLS) runs
    in the connection's own thread, never in the accept loop."""

    def _accept_loop(self) -> None:
        handler = {"lib-sink": self._lib_sink, "lib-echo": self._lib_echo}.get(self.role, self._lib_close)
        while True:
            try:
                conn = self.listener.accept()
            except (OSError, EnchufeError):
                if self.listener.closed:
                    return
                time.sleep(ACCEPT_ERROR_PAUSE)
                continue
            threading.Thread(target=handler, args=(conn,), name=f"bench-{self.role}", daemon=True).start()

    @staticmethod
    def _lib_sink(conn: Connection) -> None:
        with contextlib.suppress(OSError, EnchufeError), conn:
            conn.set_timeout(SEND_TIMEOUT)
            while conn.recv(BUFFER_SIZE):
                pass

    @staticmethod
    def _lib_echo(conn: Connection) -> None:
        with contextlib.suppress(OSError, EnchufeError), conn:
            if conn.socket.family in (socket.AF_INET, socket.AF_INET6):
                conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.set_timeout(SEND_TIMEOUT)
            while data := conn.recv(BUFFER_SIZE):
                conn.send_all(data)

    @staticmethod
    def _lib_close(conn: Connection) -> None:
        with contextlib.suppress(OSError, EnchufeError), conn:
            conn.set_timeout(SEND_TIMEOUT)
            conn.handshake()


class _DatagramServer:
    def __init__(self, sock: DatagramSocket, role: str) -> None:
        self.sock = sock
        self.role = role
        self.book = SequenceBook()
        self.stopping = False
        body = self._count if role == "count" else self._echo
        self.thread = threading.Thread(target=body, name=f"bench-{role}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _count(self) -> None:
        # The fast path: a datagram of the same measurement as the one before goes straight to
        # that measurement's tracker; anything else goes through the book.  No lock: counts()
        # reads a few integers under the GIL, at worst one datagram out of date.
        buffer = bytearray(BUFFER_SIZE)
        view = memoryview(buffer)
        recv_into, unpack, book = self.sock.socket.recv_into, HEADER.unpack_from, self.book
        minimum = HEADER_SIZE
        current, feed_current = -1, None
        while not self.stopping:
            try:
                n = recv_into(buffer)
            except OSError:
                continue
            if n >= minimum:
                magic, token, seq = unpack(buffer, 0)
                if token == current and magic == MAGIC and feed_current is not None:
                    feed_current(seq)
                    continue
                if magic == MAGIC:
                    tracker = book.tracker(token)
                    current, feed_current = token, tracker.feed_sequence
                    feed_current(seq)
                    continue
            book.feed(view[:n])  # not ours: counted as foreign

    def _echo(self) -> None:
        raw = self.sock.socket
        _send_timeout(raw)
        buffer = bytearray(BUFFER_SIZE)
        view = memoryview(buffer)
        recvfrom_into, sendto = raw.recvfrom_into, raw.sendto
        while not self.stopping:
            try:
                n, sender = recvfrom_into(buffer)
                if sender:  # an unbound unix sender cannot be answered
                    sendto(view[:n], sender)
            except OSError:
                continue  # a client gone away (ECONNREFUSED, ENOENT): the others go on

    def counts(self, token: int) -> Counts:
        if self.role != "count":
            raise UsageError(_("a {role} server does not count datagrams").format(role=self.role))
        return self.book.counts(token)

    def stop(self) -> None:
        self.stopping = True
        # shutdown() wakes a thread blocked in recv (it then reads nothing); close() would not.
        with contextlib.suppress(OSError):
            self.sock.socket.shutdown(socket.SHUT_RDWR)
        self.thread.join(2.0)
        self.sock.close()  # removes a unix socket file


_ROLES = {
    "sink": True,
    "echo": None,
    "close": True,
    "count": False,
    "lib-sink": True,
    "lib-echo": True,
    "lib-close": True,
}  # role → stream only / datagram only / both


def start(role: str, address_text: str) -> _StreamServer | _DatagramServer:
    """Bind a server of ``role`` and start its threads; its real address is its ``address``."""
    if role not in _ROLES:
        raise UsageError(
            _("unknown role {role}; one of {roles}").format(role=repr(role), roles=", ".join(_ROLES))
        )
    address = parse(address_text)
    stream = bool(getattr(address, "is_stream", True))
    wanted = _ROLES[role]
    if wanted is not None and wanted != stream:
        if wanted:
            message = _("a {role} server needs a stream address, not {address}")
        else:
            message = _("a {role} server needs a datagram address, not {address}")
        raise UsageError(message.format(role=role, address=address))
    server: _StreamServer | _DatagramServer
    if role.startswith("lib-"):
        server = _LibraryServer(listen(address), role)
    elif getattr(address, "is_tls", False):
        raise UsageError(
            _("a {role} server reads the raw socket; TLS addresses take the lib- roles").format(role=role)
        )
    else:
        server = (
            _StreamServer(listen(address), role) if stream else _DatagramServer(bind_datagram(address), role)
        )
    server.start()
    return server


def _address_of(server: _StreamServer | _DatagramServer) -> str:
    if isinstance(server, _StreamServer):
        return str(server.listener.address)
    return str(server.sock.local_address)


def _answer(
    servers: dict[int, _StreamServer | _DatagramServer], request: dict[str, Any], next_id: int
) -> dict[str, Any]:
    op = request.get("op")
    if op == "start":
        server = start(str(request["role"]), str(request["address"]))
        servers[next_id] = server
        pin = server.listener.tls_pin if isinstance(server, _StreamServer) else None
        return {"ok": True, "id": next_id, "address": _address_of(server), "pin": pin}
    server_id = int(request.get("id", -1))
    if server_id not in servers:
        raise UsageError(_("no server {id}").format(id=server_id))
    if op == "counts":
        counts = servers[server_id].counts(int(request["token"]))
        return {"ok": True, **counts.__dict__}
    if op == "stop":
        servers.pop(server_id).stop()
        return {"ok": True}
    raise UsageError(_("unknown op {op}").format(op=repr(op)))


def main() -> None:
    """Serve the control protocol on stdin/stdout until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_language(sys.argv[1] if len(sys.argv) > 1 else None)
    servers: dict[int, _StreamServer | _DatagramServer] = {}
    next_id = 1
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                reply = _answer(servers, json.loads(line), next_id)
                next_id += 1
            except EnchufeError as exc:
                reply = {"ok": False, "error": str(exc), "usage": isinstance(exc, UsageError)}
            except (ValueError, KeyError, TypeError) as exc:
                error = _("bad request {request}: {error}").format(request=repr(line.strip()), error=exc)
                reply = {"ok": False, "error": error, "usage": True}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        for server in servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        sys.stdout.flush()
        os._exit(0)  # daemon threads may sit in accept()/recv(); nothing of theirs needs saving


if __name__ == "__main__":
    main()
