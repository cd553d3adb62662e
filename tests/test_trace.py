"""The system-call narration: real calls, in lifecycle order, in the socket API's words."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator

import pytest

import enchufe
from enchufe import trace


@pytest.fixture(autouse=True)
def _never_leave_trace_on() -> Iterator[None]:
    try:
        yield
    finally:
        trace.disable()


def in_order(lines: list[str], *patterns: str) -> list[re.Match[str]]:
    """Match each regex against a whole line, each later in ``lines`` than the one before."""
    found: list[re.Match[str]] = []
    start = 0
    for pattern in patterns:
        for i in range(start, len(lines)):
            match = re.fullmatch(pattern, lines[i])
            if match:
                found.append(match)
                start = i + 1
                break
        else:
            raise AssertionError(f"no line matching {pattern!r} after line {start}:\n" + "\n".join(lines))
    return found


def test_tcp_lifecycle_is_narrated_in_order(trace_lines: list[str]) -> None:
    with enchufe.listen("tcp4://127.0.0.1:0") as listener:
        assert isinstance(listener.address, enchufe.InetAddress)
        port = listener.address.port
        with enchufe.connect(listener.address) as client, listener.accept() as server:
            assert isinstance(client.local_address, enchufe.InetAddress)
            client_port = client.local_address.port
            client.send_all(b"hello")
            assert server.recv_exactly(5) == b"hello"
            client.shutdown_write()
            assert server.recv() == b""
    L, C, S = listener.fileno(), client.fileno(), server.fileno()
    in_order(
        trace_lines,
        rf"socket\(AF_INET, SOCK_STREAM\) = fd {L}",
        rf"setsockopt\(fd {L}, SO_REUSEADDR, 1\)",
        rf"bind\(fd {L}, 127\.0\.0\.1:0\) → bound to 127\.0\.0\.1:{port}",
        rf"listen\(fd {L}, backlog=\d+\)",
        rf"socket\(AF_INET, SOCK_STREAM\) = fd {C}",
        rf"connect\(fd {C}, 127\.0\.0\.1:{port}\) = 0",
        rf"accept\(fd {L}\) = fd {S} from 127\.0\.0\.1:{client_port}",
        rf"send\(fd {C}, 5 bytes\) = 5",
        rf"recv\(fd {S}, \d+\) = 5",
        rf"shutdown\(fd {C}, SHUT_WR\)",
        rf"recv\(fd {S}, \d+\) = 0 \(EOF\)",
        rf"close\(fd {S}\)",
        rf"close\(fd {C}\)",
        rf"shutdown\(fd {L}, SHUT_RDWR\)",
        rf"close\(fd {L}\)",
    )
    # Each fd is closed exactly once.
    for fd in (L, C, S):
        assert trace_lines.count(f"close(fd {fd})") == 1


def test_tcp6_listener_says_v6only(trace_lines: list[str]) -> None:
    with enchufe.listen("tcp6://[::1]:0") as listener, enchufe.connect(listener.address) as client:
        listener.accept().close()
    assert isinstance(client.local_address, enchufe.InetAddress)
    L = listener.fileno()
    in_order(
        trace_lines,
        rf"socket\(AF_INET6, SOCK_STREAM\) = fd {L}",
        rf"setsockopt\(fd {L}, SO_REUSEADDR, 1\)",
        rf"setsockopt\(fd {L}, IPV6_V6ONLY, 1\)",
        rf"bind\(fd {L}, \[::1\]:0\) → bound to \[::1\]:\d+",
        rf"accept\(fd {L}\) = fd \d+ from \[::1\]:{client.local_address.port}",
    )


def test_unix_listener_narrates_its_file(sock_dir: str, trace_lines: list[str]) -> None:
    path = os.path.join(sock_dir, "t.sock")
    with (
        enchufe.listen(f"unix://{path}", mode=0o660) as listener,
        enchufe.connect(listener.address),
        listener.accept() as server,
    ):
        assert server.peer_credentials is not None
    L = listener.fileno()
    in_order(
        trace_lines,
        rf"socket\(AF_UNIX, SOCK_STREAM\) = fd {L}",
        # The mode is set on the socket before bind: the file is born with it (never chmod by path).
        rf"fchmod\(fd {L}, 0o660\)  # the socket file is created with it",
        rf"bind\(fd {L}, {re.escape(path)}\)",
        rf"listen\(fd {L}, backlog=\d+\)",
        rf"accept\(fd {L}\) = fd \d+ from \(unnamed\)",
        rf"getsockopt\(fd \d+, SO_PEERCRED\) = pid {os.getpid()}, uid {os.getuid()}, gid {os.getgid()}",
        rf"close\(fd {L}\)",
        rf"unlink\({re.escape(path)}\)  # our socket file, removed on close",
    )


def test_datagrams_are_narrated_with_sizes_and_senders(trace_lines: list[str]) -> None:
    with (
        enchufe.bind_datagram("udp4://127.0.0.1:0") as server,
        enchufe.connect_datagram(str(server.local_address)) as client,
    ):
        server.set_timeout(5)
        client.set_timeout(5)
        assert isinstance(server.local_address, enchufe.InetAddress)
        assert isinstance(client.local_address, enchufe.InetAddress)
        port, client_port = server.local_address.port, client.local_address.port
        client.send(b"abc")
        _, sender = server.recvfrom()
        assert sender is not None
        server.sendto(b"hello", sender)
        client.recv()
        client.send(b"x" * 100)
        with pytest.raises(enchufe.DatagramTruncated):
            server.recvfrom(max_size=10)
    S, C = server.fileno(), client.fileno()
    in_order(
        trace_lines,
        rf"socket\(AF_INET, SOCK_DGRAM\) = fd {S}",
        rf"bind\(fd {S}, 127\.0\.0\.1:0\) → bound to 127\.0\.0\.1:{port}",
        rf"socket\(AF_INET, SOCK_DGRAM\) = fd {C}",
        rf"connect\(fd {C}, 127\.0\.0\.1:{port}\) = 0",
        rf"sendto\(fd {C}, 3 bytes, connected peer\) = 3",
        rf"recvfrom\(fd {S}\) = 3 bytes from 127\.0\.0\.1:{client_port}",
        rf"sendto\(fd {S}, 5 bytes, 127\.0\.0\.1:{client_port}\) = 5",
        rf"recvfrom\(fd {C}\) = 5 bytes from 127\.0\.0\.1:{port}",
        rf"sendto\(fd {C}, 100 bytes, connected peer\) = 100",
        rf"recvfrom\(fd {S}\) = 100 bytes from 127\.0\.0\.1:{client_port} \(MSG_TRUNC: only 10 kept\)",
        rf"close\(fd {C}\)",
        rf"close\(fd {S}\)",
    )
    # A datagram socket is never set SO_REUSEADDR (that would let two servers share a port).
    assert not any("SO_REUSEADDR" in line for line in trace_lines)


def test_unbound_unix_sender_is_narrated_as_unnamed(trace_lines: list[str]) -> None:
    name = f"enc-test-trace-{os.getpid()}"
    with enchufe.bind_datagram(f"unixgram:@{name}") as server:
        server.set_timeout(5)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
            raw.sendto(b"hi", b"\0" + name.encode())
        server.recvfrom()
    in_order(
        trace_lines,
        rf"bind\(fd {server.fileno()}, @{name}\)",
        rf"recvfrom\(fd {server.fileno()}\) = 2 bytes from \(unnamed\)",
    )


def test_failing_connect_narrates_the_errno(trace_lines: list[str], sock_dir: str) -> None:
    with enchufe.listen("tcp4://127.0.0.1:0") as gone:
        address = gone.address
    assert isinstance(address, enchufe.InetAddress)
    trace_lines.clear()
    with pytest.raises(enchufe.ConnectionRefused):
        enchufe.connect(address)
    fd = int(re.fullmatch(r"socket\(AF_INET, SOCK_STREAM\) = fd (\d+)", trace_lines[0]).group(1))  # type: ignore[union-attr]
    assert trace_lines == [
        f"socket(AF_INET, SOCK_STREAM) = fd {fd}",
        f"connect(fd {fd}, 127.0.0.1:{address.port}) = -1 ECONNREFUSED (Connection refused)",
        f"close(fd {fd})",
    ]
    trace_lines.clear()
    missing = os.path.join(sock_dir, "missing.sock")
    with pytest.raises(enchufe.ConnectionRefused):
        enchufe.connect(f"unix://{missing}")
    in_order(
        trace_lines,
        r"socket\(AF_UNIX, SOCK_STREAM\) = fd \d+",
        rf"connect\(fd \d+, {re.escape(missing)}\) = -1 ENOENT \(No such file or directory\)",
        r"close\(fd \d+\)",
    )


def test_nothing_is_emitted_when_disabled() -> None:
    lines: list[str] = []
    trace.enable(lines.append)
    assert trace.enabled()
    trace.disable()
    assert not trace.enabled()
    with (
        enchufe.listen("tcp4://127.0.0.1:0") as listener,
        enchufe.connect(listener.address) as client,
        listener.accept() as server,
    ):
        client.send_all(b"x")
        server.recv()
    with enchufe.bind_datagram("udp4://127.0.0.1:0") as sock:
        sock.sendto(b"x", str(sock.local_address))
        sock.recvfrom()
    with pytest.raises(enchufe.ConnectionRefused):
        enchufe.connect(listener.address)
    trace.emit("not shown")
    assert lines == []


def test_actor_names_prefix_a_threads_lines(trace_lines: list[str]) -> None:
    with trace.actor("server"):
        trace.emit("one")
        with trace.actor("inner"):
            trace.emit("two")
        trace.emit("three")
    trace.emit("four")
    assert trace_lines == ["server  one", "inner   two", "server  three", "four"]


def test_timestamps_and_the_default_sink(capsys: pytest.CaptureFixture[str]) -> None:
    trace.enable(timestamps=True)
    trace.emit("stamped")
    trace.disable()
    err = capsys.readouterr().err
    assert re.fullmatch(r" *\d+\.\d{6} stamped\n", err), err


def test_the_default_sink_keeps_a_hostile_peer_name_on_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    """A unixgram sender named with a newline and a fake narration line: the library's own
    stderr sink escapes it, so the narration stays one call per line."""
    forged = "x\nrecvfrom(fd 99) = FORGED"
    trace.enable()
    try:
        with (
            enchufe.bind_datagram("unixgram:@enc-trace-sink-mailbox") as mailbox,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender,
        ):
            sender.bind(b"\0" + forged.encode())
            sender.sendto(b"hi", b"\0enc-trace-sink-mailbox")
            mailbox.recvfrom()
    finally:
        trace.disable()
    err = capfd.readouterr().err
    assert "FORGED" in err
    assert not any(line.startswith("recvfrom(fd 99)") for line in err.splitlines())
    assert "x\\nrecvfrom(fd 99) = FORGED" in err
