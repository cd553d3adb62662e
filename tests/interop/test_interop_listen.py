"""`enchufe listen` as the server, socat and OpenBSD nc as its clients."""

from __future__ import annotations

import base64
import os

import pytest

from .conftest import (
    DATAGRAM_KINDS,
    DOWNSTREAM_SIZE,
    FULL_DUPLEX_SIZE,
    REPLY_SIZES,
    REQUEST_SIZES,
    STREAM_KINDS,
    UPSTREAM_SIZE,
    Where,
    assert_same,
    enchufe,
    json_datagrams,
    kind_params,
    listening_address,
    located,
    nc_client,
    new_where,
    socat,
    socat_client,
    socat_transfers,
    spawn,
)

pytestmark = pytest.mark.interop


def _client_argv(program: str, where: Where, sock_dir: str) -> list[str]:
    if program == "socat":
        # -t: after stdin's EOF socat shuts the socket down and waits this long for the peer's
        # EOF (default 0.5 s).  On a stream our side may answer only after it has all the
        # client's data; a datagram socket has no EOF to wait for.
        # -x (datagrams): log every read, one per datagram, with its size.
        options = ["-t", "10"] if where.stream else ["-t", "0.1", "-x"]
        return socat(*options, "-", socat_client(where, sock_dir))
    return nc_client(where, sock_dir)


def _assert_socket_file_removed(where: Where) -> None:
    if not where.inet and not where.abstract:
        assert not os.path.exists(where.path), f"enchufe left its socket file {where.path} behind"


@pytest.mark.parametrize("first", ["client-first", "server-first"])
@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_stream_half_close(program: str, kind: str, first: str, sock_dir: str) -> None:
    """One side sends everything and half-closes; only then does the other side answer.

    client-first: the client's EOF must not end our session before we have answered.
    server-first: after our own EOF we must go on reading what the client sends.
    """
    upstream = os.urandom(UPSTREAM_SIZE)
    downstream = os.urandom(DOWNSTREAM_SIZE)
    requested = new_where(kind, sock_dir, free=False)
    with spawn(enchufe("listen", requested.enchufe()), "enchufe listen") as server:
        where = located(kind, listening_address(server), requested)
        with spawn(_client_argv(program, where, sock_dir)) as client:
            if first == "client-first":
                client.feed(upstream)  # then EOF: socat and nc -N shut the socket's write side down
                server.wait_stdout(len(upstream))
                server.feed(downstream)
            else:
                server.feed(downstream)  # then EOF: enchufe shuts the socket's write side down
                client.wait_stdout(len(downstream))
                client.feed(upstream)
            assert client.finish() == 0, client._diagnosis()
            assert server.finish() == 0, server._diagnosis()
    assert_same(server.out, upstream, f"{program} → enchufe listen")
    assert_same(client.out, downstream, f"enchufe listen → {program}")
    _assert_socket_file_removed(where)


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_datagrams_both_ways_keep_their_boundaries(program: str, kind: str, sock_dir: str) -> None:
    requests = [os.urandom(n) for n in REQUEST_SIZES]
    replies = [os.urandom(n) for n in REPLY_SIZES]
    requested = new_where(kind, sock_dir, free=False)
    with spawn(enchufe("listen", "--json", requested.enchufe()), "enchufe listen") as server:
        where = located(kind, listening_address(server), requested)
        with spawn(_client_argv(program, where, sock_dir)) as client:
            replied = 0
            for i, (request, reply) in enumerate(zip(requests, replies, strict=True)):
                client.write(request)  # one stdin read, one datagram
                server.wait_lines(i + 1)  # enchufe --json: one line per datagram
                record = json_datagrams(server.out)[i]
                assert record["size"] == len(request)
                assert_same(base64.b64decode(str(record["base64"])), request, f"datagram {i} from {program}")
                assert record["from"] is not None, "the client is bound: enchufe must see its address"
                # enchufe answers the last sender with each stdin read.
                server.write(reply)
                replied += len(reply)
                client.wait_stdout(replied)
            client.close_stdin()
            assert client.finish() == 0, client._diagnosis()
            assert server.stop() == 0, server._diagnosis()  # SIGTERM with nothing in flight
    _assert_socket_file_removed(where)
    assert len(json_datagrams(server.out)) == len(requests)
    assert_same(client.out, b"".join(replies), f"enchufe listen → {program}")
    if program == "socat":
        # socat -x logs each read: one per datagram, so the sizes are the datagram boundaries.
        assert socat_transfers(client.err, "<") == list(REPLY_SIZES)
        assert socat_transfers(client.err, ">") == list(REQUEST_SIZES)


@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_stream_both_ways_at_once(program: str, kind: str, sock_dir: str) -> None:
    """Both sides write from the start, more than the socket buffers hold: nobody deadlocks."""
    upstream = os.urandom(FULL_DUPLEX_SIZE)
    downstream = os.urandom(FULL_DUPLEX_SIZE + 4096)
    requested = new_where(kind, sock_dir, free=False)
    with spawn(enchufe("listen", requested.enchufe()), "enchufe listen") as server:
        server.feed(downstream)
        where = located(kind, listening_address(server), requested)
        with spawn(_client_argv(program, where, sock_dir)) as client:
            client.feed(upstream)
            assert client.finish() == 0, client._diagnosis()
            assert server.finish() == 0, server._diagnosis()
    assert_same(server.out, upstream, f"{program} → enchufe listen")
    assert_same(client.out, downstream, f"enchufe listen → {program}")
