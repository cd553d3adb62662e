"""TLS over TCP turns Nagle off on both ends.

The handshake's last flight is small; with Nagle on, the first write after it waits for that
flight's ACK, which Linux delays by about 40 ms: every request/response exchange over a fresh
TLS connection started 40 ms late (seen in the tour: 41-44 ms against 0.2 ms).  Checked by
the socket option, not by timing.
"""

from __future__ import annotations

import socket
import threading

import pytest

import enchufe
from enchufe.sync import Connection


def _nodelay(conn: Connection) -> int:
    return conn.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest.mark.parametrize("host", ["127.0.0.1"])
def test_both_ends_of_a_tls_connection_over_tcp_have_nagle_off(host: str) -> None:
    with enchufe.listen(f"tls://{host}:0?cert=auto") as listener:
        accepted: list[Connection] = []

        def accept() -> None:
            conn = listener.accept()
            accepted.append(conn)
            conn.handshake()  # a TLSConnection

        thread = threading.Thread(target=accept)
        thread.start()
        url = f"tls://{host}:{listener.address.port}?pin={listener.tls_pin}"  # type: ignore[union-attr]
        with enchufe.connect(url) as client:
            thread.join(10)
            (server,) = accepted
            with server:
                assert _nodelay(client) and _nodelay(server)


def test_a_plain_tcp_connection_keeps_the_default() -> None:
    with enchufe.listen("tcp://127.0.0.1:0") as listener, enchufe.connect(listener.address) as client:
        assert not _nodelay(client)
