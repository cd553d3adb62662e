"""TLS records that arrive glued to others reach the far side at once (relay/tls_pump.py).

The TLS pumps read a socket again only when the channel may hold nothing more (a short read
drained the socket): records that came in the same segment as the handshake's last flight, or
as each other, must not wait there for bytes that may never come.  The peers here drive their
TLS over memory BIOs, so that what they send glued goes out in one ``sendall``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable

from enchufe.relay import RelayConfig
from tests.tls import conftest as tls_conftest

from .conftest import IO_TIMEOUT, STEP, Target, dial, relay_thread
from .test_tls_relay import _answer_after_eof, _terminating

#: PEM files of one trustme CA (tests/tls/conftest.py)
pem = tls_conftest.pem


def _handshake(
    sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
) -> None:
    """Drive ``tls``'s handshake over ``sock``; what it makes last stays in ``outgoing``."""
    while True:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            data = sock.recv(65536)
            assert data, "the peer closed during the handshake"
            incoming.write(data)


def _read_to_close_notify(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO) -> bytes:
    got = b""
    while True:
        try:
            data = tls.read(65536)
        except ssl.SSLWantReadError:
            raw = sock.recv(65536)
            assert raw, f"a TCP EOF without close_notify after {got!r}"
            incoming.write(raw)
            continue
        except ssl.SSLZeroReturnError:
            return got
        if not data:
            return got
        got += data


def test_a_request_and_close_notify_glued_to_the_clients_finished_go_through(pem: dict[str, str]) -> None:
    # One segment: the client's Finished, "request", close_notify.  The relay's handshake takes
    # it all in; the request and the EOF must still reach the target, and the answer come back.
    with Target("tcp://127.0.0.1:0", _answer_after_eof) as target, _terminating(pem, target.address) as relay:
        context = ssl.create_default_context(cafile=pem["ca"])
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with dial(relay.address) as sock:
            sock.settimeout(STEP)
            _handshake(sock, tls, incoming, outgoing)
            tls.write(b"request")
            with contextlib.suppress(ssl.SSLWantReadError):  # queued; the relay's comes later
                tls.unwrap()
            sock.sendall(outgoing.read())
            assert _read_to_close_notify(sock, tls, incoming) == b"answer:request"
        assert target.wait_results(1) == [b"request"]


def _banner_glued_to_finished(pem: dict[str, str]) -> Callable[[socket.socket], bytes]:
    def serve(conn: socket.socket) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # the server's Finished comes last
        context.load_cert_chain(pem["server"])
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        _handshake(conn, tls, incoming, outgoing)
        tls.write(b"banner")
        conn.sendall(outgoing.read())  # the Finished and the banner in one segment
        rest = b""
        while data := conn.recv(65536):  # until the relay goes
            rest += data
        return rest

    return serve


def test_a_servers_banner_glued_to_its_finished_reaches_the_client_unasked(pem: dict[str, str]) -> None:
    # A server that speaks first (SMTPS, IMAPS) may send its greeting with its Finished (TLS
    # 1.2): the relay's handshake takes it in, and must pass it on before the client says a word.
    with Target("tcp://127.0.0.1:0", _banner_glued_to_finished(pem)) as target:
        tls_target = f"tls://{target.address.split('://', 1)[1]}?ca={pem['ca']}"
        with relay_thread(RelayConfig("tcp://127.0.0.1:0", tls_target)) as relay, dial(relay.address) as sock:
            sock.settimeout(IO_TIMEOUT / 3)
            assert sock.recv(64) == b"banner"
