"""The diagram model of real runs: which calls on which lifeline, in which order, which arrows."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from enchufe import _calls, trace
from enchufe._tracefile import MemoryRecorder
from enchufe.diagram.model import Diagram, Step, build, same_address, summary
from enchufe.sync import bind_datagram, connect, connect_datagram, listen

HELLO = '33 B "hello, server: th…"'
ANSWER = '33 B "HELLO, SERVER: TH…"'

#: The server's socket options before bind(), per kind.
OPTIONS = {
    "tcp4": ["setsockopt"],
    "tcp6": ["setsockopt", "setsockopt"],
    "unix": [],
    "udp4": [],
    "udp6": ["setsockopt"],
    "unixgram": [],
}


def order(diagram: Diagram) -> list[tuple[str, str]]:
    names = {line.index: line.name for line in diagram.lifelines}
    return [(names[step.lifeline], step.call) for step in diagram.steps]


def target_text(diagram: Diagram, kind: str) -> list[str]:
    return [
        diagram.steps[a.target].text if a.target is not None else "" for a in diagram.arrows if a.kind == kind
    ]


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "unix"])
def test_stream_kinds(tour_diagrams: dict[str, Diagram], kind: str) -> None:
    diagram = tour_diagrams[kind]
    assert [(line.name, line.role) for line in diagram.lifelines] == [
        ("server", "server"),
        ("client", "client"),
    ]
    unlink = [("server", "unlink")] if kind == "unix" else []
    server_setup = [("server", c) for c in ["socket", *OPTIONS[kind], "bind", "listen"]]
    assert order(diagram) == [
        *server_setup,
        ("client", "socket"),
        ("client", "connect"),
        ("server", "accept"),
        ("client", "send"),
        ("client", "shutdown"),
        ("server", "recv"),
        ("server", "recv"),
        ("server", "send"),
        ("server", "close"),
        ("client", "recv"),
        ("client", "recv"),
        ("client", "close"),
        ("server", "shutdown"),
        ("server", "close"),
        *unlink,
    ]
    assert summary(diagram) == [
        ("connect", "client", "server", "connect"),
        ("bytes", "client", "server", HELLO),
        ("eof", "client", "server", "EOF (shutdown)"),
        ("bytes", "server", "client", ANSWER),
        ("eof", "server", "client", "EOF (close)"),
    ]
    assert [t.split("(")[0] for t in target_text(diagram, "connect")] == ["accept"]
    assert [t.split(" = ")[1] for t in target_text(diagram, "bytes")] == ["33", "33"]
    assert [t.endswith("= 0 (EOF)") for t in target_text(diagram, "eof")] == [True, True]
    accept = next(step for step in diagram.steps if step.call == "accept")
    # The tour's server accepts after the client's connect() returned: the kernel had queued it.
    assert accept.marks[0] == "passive open" and accept.marks[-1].startswith("queued ")
    assert not accept.blocked
    assert all(a.target is None or a.source < a.target for a in diagram.arrows)


@pytest.mark.parametrize("kind", ["udp4", "udp6", "unixgram"])
def test_datagram_kinds(tour_diagrams: dict[str, Diagram], kind: str) -> None:
    diagram = tour_diagrams[kind]
    assert [(line.name, line.role) for line in diagram.lifelines] == [
        ("server", "server"),
        ("client", "client"),
    ]
    reply_address = [("client", "bind")] if kind == "unixgram" else []
    unlink = [("server", "unlink")] if kind == "unixgram" else []
    assert order(diagram) == [
        *[("server", c) for c in ["socket", *OPTIONS[kind], "bind"]],
        ("client", "socket"),
        *reply_address,
        ("client", "connect"),
        ("client", "sendto"),
        ("server", "recvfrom"),
        ("server", "sendto"),
        ("client", "recvfrom"),
        ("client", "close"),
        ("server", "close"),
        *unlink,
    ]
    assert summary(diagram) == [
        ("datagram", "client", "server", HELLO),
        ("datagram", "server", "client", ANSWER),
    ]
    assert all(t.startswith("recvfrom(") for t in target_text(diagram, "datagram"))
    server = diagram.lifelines[0]
    assert server.address and server.address != "(unnamed)"


def test_tls_leg(tour_diagrams: dict[str, Diagram]) -> None:
    diagram = tour_diagrams["tls"]
    server, client = diagram.calls("server"), diagram.calls("client")
    assert server[:5] == ["socket", "setsockopt", "bind", "listen", "accept"]
    assert server[-3:] == ["close", "shutdown", "close"]
    assert client[:2] == ["socket", "connect"] and client[-1] == "close"
    tls_text = {step.text.split(": ", 1)[1] for step in diagram.steps if step.call == "tls"}
    assert {"handshake as server", "handshake as client", "agreed", "close_notify sent"} <= tls_text
    arrows = summary(diagram)
    assert arrows[0] == ("connect", "client", "server", "connect")
    first = {sender: label for kind, sender, _to, label in reversed(arrows) if kind == "bytes"}
    assert first["client"].endswith("B TLS handshake"), arrows  # the ClientHello
    assert first["server"].endswith("B TLS handshake"), arrows  # the ServerHello
    assert {(s, t) for kind, s, t, label in arrows if label.endswith("TLS data")} >= {
        ("client", "server"),
        ("server", "client"),
    }
    assert ("eof", "server", "client", "EOF (close)") in arrows


def record(body: threading.Thread, client: object) -> Diagram:
    """Run ``body`` (the server, in a thread) and ``client`` (here) with the trace recorded."""
    memory = MemoryRecorder()
    trace.record_to(memory)
    try:
        body.start()
        client()  # type: ignore[operator]
        body.join(10)
    finally:
        trace.record_to(None)
    return build(memory.events)


def first_waiting(scenario: Callable[[threading.Event], Diagram], call: str) -> Step:
    """The ``call`` step of a run of ``scenario`` in which it started 10 ms or more before its
    peer's call returned: the server thread says it is about to make the call, the client then waits 0.1 s;
    a run where the server thread was still not in its call by then (a loaded machine) is
    tried again, three runs at most."""
    for _attempt in range(3):
        diagram = scenario(threading.Event())
        step = next(step for step in diagram.steps if step.call == call)
        peer = next(s for s in diagram.steps if s.call in ("connect", "sendto"))
        if step.started is not None and step.started < peer.time - 0.01:
            return step
    pytest.fail(f"the server thread never reached {call}() before the client's call in 3 runs")


def test_an_accept_that_waits_for_connect_is_marked_blocked() -> None:
    def scenario(waiting: threading.Event) -> Diagram:
        with listen("tcp://127.0.0.1:0") as listener:

            def server() -> None:
                with trace.actor("server"):
                    waiting.set()
                    with listener.accept() as conn:
                        conn.set_timeout(10)
                        assert conn.recv() == b"x"

            def client() -> None:
                assert waiting.wait(10)
                time.sleep(0.1)  # accept() is waiting by now
                with trace.actor("client"), connect(listener.address, timeout=10) as conn:
                    conn.send_all(b"x")

            diagram = record(threading.Thread(target=server), client)
        assert summary(diagram)[:2] == [
            ("connect", "client", "server", "connect"),
            ("bytes", "client", "server", '1 B "x"'),
        ]
        return diagram

    accept = first_waiting(scenario, "accept")
    assert accept.blocked and accept.waited >= 0.01, accept
    assert next(m for m in accept.marks if m.startswith("blocked ")).endswith(
        " in accept() for the connect()"
    )
    assert not any(m.startswith("queued") for m in accept.marks)


def test_a_recvfrom_that_waits_for_the_datagram_is_marked_blocked() -> None:
    def scenario(waiting: threading.Event) -> Diagram:
        with bind_datagram("udp://127.0.0.1:0") as sock:
            sock.set_timeout(10)

            def server() -> None:
                with trace.actor("server"):
                    waiting.set()
                    assert sock.recvfrom()[0] == b"letter"

            def client() -> None:
                assert waiting.wait(10)
                time.sleep(0.1)
                with trace.actor("client"), connect_datagram(sock.local_address) as out:  # type: ignore[arg-type]
                    out.send(b"letter")

            diagram = record(threading.Thread(target=server), client)
        assert summary(diagram) == [("datagram", "client", "server", '6 B "letter"')]
        return diagram

    received = first_waiting(scenario, "recvfrom")
    assert received.blocked and received.waited >= 0.01
    assert received.marks[-1].endswith(" in recvfrom() for the datagram")


def test_peer_bytes_stay_escaped_in_the_labels() -> None:
    payload = b"a;b#c<d>\n\x1b[31m\xff" + b"z" * 40
    with listen("tcp://127.0.0.1:0") as listener:

        def server() -> None:
            with trace.actor("server"), listener.accept() as conn:
                conn.set_timeout(10)
                while conn.recv():
                    pass

        def client() -> None:
            with trace.actor("client"), connect(listener.address, timeout=10) as conn:
                conn.send_all(payload)
                conn.shutdown_write()

        diagram = record(threading.Thread(target=server), client)
    (label,) = [a.label for a in diagram.arrows if a.kind == "bytes"]
    assert label == f'{len(payload)} B "a;b#c<d>\\n\\x1b[31…"', label
    assert label.isprintable()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("127.0.0.1:9000", "127.0.0.1:9000", True),
        ("0.0.0.0:9000", "127.0.0.1:9000", True),
        ("[::]:9000", "[::1]:9000", True),
        ("[::ffff:127.0.0.1]:9000", "127.0.0.1:9000", True),
        ("127.0.0.1:9000", "127.0.0.2:9000", False),
        ("0.0.0.0:9000", "127.0.0.1:9001", False),
        ("/tmp/a.sock", "/tmp/a.sock", True),
        ("/tmp/a.sock", "/tmp/b.sock", False),
        ("@name", "@name", True),
    ],
)
def test_same_address(a: str, b: str, same: bool) -> None:
    assert same_address(a, b) is same
    assert same_address(b, a) is same


def test_two_clients_of_one_server_are_two_lifelines() -> None:
    with listen("tcp://127.0.0.1:0") as listener:

        def server() -> None:
            with trace.actor("server"):
                for _ in range(2):
                    with listener.accept() as conn:
                        conn.set_timeout(10)
                        conn.send_all(conn.recv().upper())

        def clients() -> None:
            for name in ("alice", "bob"):
                with trace.actor(name), connect(listener.address, timeout=10) as conn:
                    conn.set_timeout(10)
                    conn.send_all(name.encode())
                    assert conn.recv() == name.upper().encode()

        diagram = record(threading.Thread(target=server), clients)
    assert [line.name for line in diagram.lifelines] == ["server", "alice", "bob"]
    arrows = [(kind, s, t, label) for kind, s, t, label in summary(diagram) if kind != "eof"]
    assert arrows == [
        ("connect", "alice", "server", "connect"),
        ("bytes", "alice", "server", '5 B "alice"'),
        ("bytes", "server", "alice", '5 B "ALICE"'),
        ("connect", "bob", "server", "connect"),
        ("bytes", "bob", "server", '3 B "bob"'),
        ("bytes", "server", "bob", '3 B "BOB"'),
    ]


def test_unnamed_unix_clients_are_matched_in_connect_order(sock_dir: str) -> None:
    """Both unix clients are "(unnamed)": the accepted sockets go to them in the order they
    connected (the backlog's), not the order their sockets were made."""
    path = f"{sock_dir}/order.sock"
    memory = MemoryRecorder()
    with listen(f"unix://{path}") as listener:
        trace.record_to(memory)
        try:
            with trace.actor("early"):
                early = _calls.new_socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with trace.actor("late"):
                late = _calls.new_socket(socket.AF_UNIX, socket.SOCK_STREAM)
                _calls.connect(late, path)  # the socket made second connects first
            with trace.actor("early"):
                _calls.connect(early, path)
            with trace.actor("server"), listener.accept() as first, listener.accept() as second:
                for sock, name in ((late, "late"), (early, "early")):
                    with trace.actor(name):
                        _calls.send(sock, name.encode())
                        _calls.close(sock)
                first.set_timeout(10)
                second.set_timeout(10)
                assert first.recv() == b"late" and second.recv() == b"early"
        finally:
            trace.record_to(None)
    diagram = build(memory.events)
    arrows = [(kind, s, t, label) for kind, s, t, label in summary(diagram) if kind in ("connect", "bytes")]
    assert arrows == [
        ("connect", "late", "server", "connect"),
        ("connect", "early", "server", "connect"),
        ("bytes", "late", "server", '4 B "late"'),
        ("bytes", "early", "server", '5 B "early"'),
    ]
    for arrow in diagram.arrows:
        if arrow.kind == "bytes" and arrow.target is not None:
            assert diagram.steps[arrow.target].event["data"] == diagram.steps[arrow.source].event["data"]
