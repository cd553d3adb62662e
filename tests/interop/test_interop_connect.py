"""`enchufe connect` and `enchufe send` as clients of socat and OpenBSD nc servers."""

from __future__ import annotations

import os

import pytest

from .conftest import (
    DATAGRAM_KINDS,
    DOWNSTREAM_SIZE,
    REPLY_SIZES,
    REQUEST_SIZES,
    STREAM_KINDS,
    UPSTREAM_SIZE,
    Proc,
    Where,
    assert_same,
    enchufe,
    kind_params,
    nc_server,
    new_where,
    socat,
    socat_server,
    socat_transfers,
    spawn,
    wait_bound,
)

pytestmark = pytest.mark.interop


def _server_argv(program: str, where: Where, replies: str = "many") -> list[str]:
    if program == "socat":
        # -t 10: after the client's EOF socat keeps sending what its stdin has, for up to 10 s.
        # -x: log every read (one per datagram) with its size.
        options = ["-t", "10"] if where.stream else ["-t", "0.1", "-x"]
        return socat(*options, socat_server(where, replies), "-")
    return nc_server(where, replies)


def _assert_server_exit(program: str, where: Where, server: Proc) -> None:
    status = server.finish()
    if program == "nc" and not where.inet and not where.stream:
        # nc -lUu ends every session with connect(fd, NULL, 0) to drop its peer, which AF_UNIX
        # refuses (EINVAL): it exits 1 whoever the client was (a plain Python client too).
        assert status == 1 and b"connect: Invalid argument" in server.err, server._diagnosis()
    else:
        assert status == 0, server._diagnosis()


@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_connect_stream(program: str, kind: str, sock_dir: str) -> None:
    upstream = os.urandom(UPSTREAM_SIZE)
    downstream = os.urandom(DOWNSTREAM_SIZE)
    where = new_where(kind, sock_dir)
    with spawn(_server_argv(program, where)) as server:
        wait_bound(where, server)
        with spawn(enchufe("connect", "--timeout", "5", where.enchufe()), "enchufe connect") as client:
            if program == "socat":
                # We send everything and half-close; socat answers only then.
                client.feed(upstream)
                server.wait_stdout(len(upstream))
                server.feed(downstream)
            else:
                # nc -l ends its session once the client's EOF has come and its queues are
                # empty, so it never answers a half-closed connection.  The other way round,
                # then: nc says everything and half-closes (-N), and we go on sending after.
                server.feed(downstream)
                client.wait_stdout(len(downstream))
                client.feed(upstream)
            assert client.finish() == 0, client._diagnosis()
            _assert_server_exit(program, where, server)
    assert_same(server.out, upstream, f"enchufe connect → {program}")
    assert_same(client.out, downstream, f"{program} → enchufe connect")


#: What an nc server says to `enchufe send`: it must have read all of it before our EOF comes
#: (see above), so it is in nc's stdin, closed, before we connect: at most a pipe's 64 KiB.
NC_ANSWER_SIZE = 48 * 1024


@pytest.mark.parametrize("wait_reply", [False, True], ids=["no-reply", "wait-reply"])
@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_send_stream(program: str, kind: str, wait_reply: bool, sock_dir: str) -> None:
    upstream = os.urandom(UPSTREAM_SIZE)
    downstream = os.urandom(DOWNSTREAM_SIZE if program == "socat" else NC_ANSWER_SIZE)
    where = new_where(kind, sock_dir)
    flags = ["--wait-reply"] if wait_reply else []
    with spawn(_server_argv(program, where)) as server:
        wait_bound(where, server)
        if program == "nc":
            server.write(downstream)
            server.close_stdin()
        with spawn(enchufe("send", *flags, where.enchufe()), "enchufe send") as client:
            client.feed(upstream)
            server.wait_stdout(len(upstream))
            if program == "socat":
                # Our data, then our EOF, then socat's answer.  Without --wait-reply the answer
                # is read and dropped: closing with unread data would reset the connection.
                server.feed(downstream)
            assert client.finish() == 0, client._diagnosis()
            _assert_server_exit(program, where, server)
    assert_same(server.out, upstream, f"enchufe send → {program}")
    assert_same(client.out, downstream if wait_reply else b"", f"{program} → enchufe send")


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_connect_datagrams(program: str, kind: str, sock_dir: str) -> None:
    where = new_where(kind, sock_dir)
    requests = [os.urandom(n) for n in REQUEST_SIZES]
    replies = [os.urandom(n) for n in REPLY_SIZES]
    if program == "socat" and not where.inet:
        # socat has no unix datagram address that goes on talking with its first sender:
        # UNIX-RECVFROM takes one datagram and may send any number back.
        requests = requests[:1]
    with spawn(_server_argv(program, where)) as server:
        wait_bound(where, server)
        argv = enchufe("connect", "--timeout", "0.3", where.enchufe())
        with spawn(argv, "enchufe connect") as client:
            received = replied = 0
            for i, reply in enumerate(replies):
                if i < len(requests):
                    client.write(requests[i])  # one stdin read, one datagram
                    received += len(requests[i])
                    server.wait_stdout(received)
                server.write(reply)
                replied += len(reply)
                client.wait_stdout(replied)
            client.close_stdin()  # then replies are awaited for --timeout seconds
            assert client.finish() == 0, client._diagnosis()
            server.close_stdin()
            _assert_server_exit(program, where, server)
    assert_same(server.out, b"".join(requests), f"enchufe connect → {program}")
    assert_same(client.out, b"".join(replies), f"{program} → enchufe connect")
    if program == "socat":
        assert socat_transfers(server.err, ">") == [len(r) for r in requests]
        assert socat_transfers(server.err, "<") == list(REPLY_SIZES)


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_send_datagram_wait_reply(program: str, kind: str, sock_dir: str) -> None:
    where = new_where(kind, sock_dir)
    request, reply = os.urandom(REQUEST_SIZES[-1]), os.urandom(REPLY_SIZES[0])
    with spawn(_server_argv(program, where, replies="one")) as server:
        wait_bound(where, server)
        with spawn(enchufe("send", "--wait-reply", where.enchufe()), "enchufe send") as client:
            client.feed(request)
            server.wait_stdout(len(request))
            server.write(reply)
            assert client.finish() == 0, client._diagnosis()
            server.close_stdin()
            _assert_server_exit(program, where, server)
    assert_same(server.out, request, f"enchufe send → {program}")
    assert_same(client.out, reply, f"{program} → enchufe send --wait-reply")
    if program == "socat":
        assert socat_transfers(server.err, ">") == [len(request)]


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_send_datagrams(program: str, kind: str, sock_dir: str) -> None:
    """Two `enchufe send`, one from stdin and one from its argument: two datagrams."""
    where = new_where(kind, sock_dir)
    binary = os.urandom(REQUEST_SIZES[1])
    text = "hola, ¿qué tal?"
    with spawn(_server_argv(program, where, replies="none")) as server:
        wait_bound(where, server)
        with spawn(enchufe("send", where.enchufe()), "enchufe send") as first:
            first.feed(binary)
            assert first.finish() == 0, first._diagnosis()
        server.wait_stdout(len(binary))
        with spawn(enchufe("send", where.enchufe(), text), "enchufe send") as second:
            second.close_stdin()
            assert second.finish() == 0, second._diagnosis()
        server.wait_stdout(len(binary) + len(text.encode()))
        server.stop()  # a receive-only server never ends by itself: no EOF on a datagram socket
    assert_same(server.out, binary + text.encode(), f"enchufe send → {program}")
    assert first.out == second.out == b""
    if program == "socat":
        assert socat_transfers(server.err, ">") == [len(binary), len(text.encode())]
