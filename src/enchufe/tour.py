"""The tour: for each of the six kinds, then TLS, a server and a client on loopback, narrated call by call.

Server and client run in two threads of this process.  They take turns at the points where the
socket lifecycle has an order (the server listens before the client connects, the client sends
before the server answers), so the narration reads in that order: create, bind, listen,
connect, accept, exchange, close, and for datagrams sendto/recvfrom with the sender's address.
Every line that looks like a system call is printed by the code that made the call
(:mod:`enchufe.trace`), as is every ``tls fd N:`` line of the TLS leg's handshake; the tour only
adds the lines starting with ``·``.  The TLS leg is TCP over IPv4 with a ``cert=auto`` listener and
a client that trusts it by its pin, so it needs no certificate files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import trace
from .address import MAX_UNIX_NAME, Kind, SocketAddress
from .errors import EnchufeError
from .i18n import _
from .sync import bind_datagram, connect, connect_datagram, listen
from .sync.stream import Connection

__all__ = ["TourResult", "run"]

#: No step of the tour may block longer than this: a kind that does not work fails, it never hangs.
STEP_TIMEOUT = 5.0

#: What every client sends; the server answers it in upper case.
_MESSAGE = b"hello, server: this is the client"


def _story(kind: Kind | None) -> str:
    """What a leg shows, in the lecture's pictures (a call, letters); None: the TLS leg."""
    stories = {
        Kind.TCP4: _("a telephone call over IPv4: listen, connect, accept, talk, hang up"),
        Kind.TCP6: _("the same call over IPv6"),
        Kind.UDP4: _("letters over IPv4: each datagram carries its sender's address"),
        Kind.UDP6: _("letters over IPv6"),
        Kind.UNIX: _("a call between processes on this host, through a socket file"),
        Kind.UNIXGRAM: _("letters between processes on this host; the client gets a reply address"),
    }
    if kind is None:
        return _("the IPv4 call, sealed: a handshake proves who answers, then every byte is encrypted")
    return stories[kind]


#: The label of the TLS leg, which runs over TCP/IPv4 (its ``kind``).
TLS_LABEL = "tls"


@dataclass
class TourResult:
    """How one kind fared."""

    kind: Kind
    server_address: str = ""
    sent: int = 0
    received: int = 0
    round_trip: float | None = None
    error: str | None = None
    #: True for the TLS leg (``kind`` is then the transport under it, TCP over IPv4).
    tls: bool = False
    #: The leg's header line (its family, type and story).
    header: str = ""
    #: The leg's trace events, when the tour records them (``run(record=True)``): for diagrams.
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        """The kind's label, or ``tls`` for the TLS leg."""
        return TLS_LABEL if self.tls else self.kind.label


class _Turns:
    """Hand-offs between the server and client threads, each bounded by STEP_TIMEOUT."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.failed: str | None = None

    def _event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def done(self, name: str) -> None:
        self._event(name).set()

    def wait(self, name: str) -> None:
        if not self._event(name).wait(STEP_TIMEOUT):
            raise TimeoutError(
                _("the other side did not get to {step} within {seconds} s").format(
                    step=repr(name), seconds=f"{STEP_TIMEOUT:g}"
                )
            )
        if self.failed:
            raise RuntimeError(_("the other side failed"))


def _actor(role: str) -> AbstractContextManager[None]:
    """``trace.actor`` for the tour's ``server`` or ``client`` thread: named in the user's
    language, both names padded to one width so that their calls line up."""
    names = {"server": _("server"), "client": _("client")}
    width = max(len(name) for name in names.values())
    return trace.actor(role, names[role].ljust(width))


def _addresses(folder: str) -> dict[Kind, str]:
    return {
        Kind.TCP4: "tcp://127.0.0.1:0",
        Kind.TCP6: "tcp://[::1]:0",
        Kind.UDP4: "udp://127.0.0.1:0",
        Kind.UDP6: "udp://[::1]:0",
        Kind.UNIX: f"unix://{folder}/stream.sock",
        Kind.UNIXGRAM: f"unixgram://{folder}/datagram.sock",
    }


def _stream(address: str, turns: _Turns, result: TourResult, note: Callable[[str], None]) -> None:
    ready: list[SocketAddress] = []

    def server() -> None:
        with _actor("server"):
            note(_("the server creates a socket, binds it to an address and listens (passive)"))
            with listen(address) as listener:
                ready.append(listener.address)
                result.server_address = str(listener.address)
                turns.done("listening")
                turns.wait("connected")
                with listener.accept() as conn:
                    conn.set_timeout(STEP_TIMEOUT)
                    turns.done("accepted")
                    turns.wait("sent")
                    note(_("the server reads until EOF, then answers and hangs up"))
                    conn.send_all(_read_to_eof(conn).upper())
                turns.done("answered")
                turns.wait("client closed")

    def client() -> bytes:
        note(_("the client creates its own socket and connects (active); the kernel queues it"))
        with connect(ready[0], timeout=STEP_TIMEOUT) as conn:
            conn.set_timeout(STEP_TIMEOUT)
            turns.done("connected")
            turns.wait("accepted")
            note(_("the client sends, then half-closes: shutdown(SHUT_WR) means 'I am done'"))
            return _ask(conn, turns, result)

    _play(server, client, turns, "listening")


def _tls(address: str, turns: _Turns, result: TourResult, note: Callable[[str], None]) -> None:
    """The stream exchange again, over TLS: the client's connect() returns once the handshake is
    done, so the server accepts while the client connects (their handshake lines interleave)."""
    ready: list[str] = []

    def server() -> None:
        with _actor("server"):
            note(_("the server listens as over TCP; cert=auto makes a throwaway self-signed certificate"))
            with listen(address) as listener:
                note(
                    _(
                        "the client will trust that certificate by its pin, the SHA-256 of its public key: "
                        "{pin}"
                    ).format(pin=listener.tls_pin)
                )
                port = listener.address.port  # type: ignore[union-attr]
                ready.append(f"tls://127.0.0.1:{port}?pin={listener.tls_pin}")
                result.server_address = str(listener.address)
                turns.done("listening")
                with listener.accept() as conn:
                    conn.set_timeout(STEP_TIMEOUT)
                    conn.handshake()
                    turns.done("accepted")
                    turns.wait("sent")
                    note(
                        _("the server reads until the client's close_notify, then answers and sends its own")
                    )
                    conn.send_all(_read_to_eof(conn).upper())
                turns.done("answered")
                turns.wait("client closed")

    def client() -> bytes:
        note(
            _(
                "the client connects, then shakes hands: it offers TLS versions (ClientHello); the server "
                "answers with its certificate and signs the exchange with its key; the client checks the "
                "key against the pin (no CA, no files); both derive the same secret keys"
            )
        )
        with connect(ready[0], timeout=STEP_TIMEOUT) as conn:
            conn.set_timeout(STEP_TIMEOUT)
            info = conn.tls
            if info is not None:
                note(
                    _(
                        "agreed {version} with {cipher}: from here every record is encrypted and sealed"
                    ).format(version=info.version, cipher=info.cipher)
                )
            turns.done("connected")
            turns.wait("accepted")
            note(
                _(
                    "the client sends, then half-closes with close_notify, TLS's signed 'I am done' "
                    "(a TCP close without it reads as truncated, not as EOF)"
                )
            )
            return _ask(conn, turns, result)

    _play(server, client, turns, "listening")


def _read_to_eof(conn: Connection) -> bytes:
    data = b""
    while chunk := conn.recv():
        data += chunk
    return data


def _ask(conn: Connection, turns: _Turns, result: TourResult) -> bytes:
    """The client's half of a stream exchange: send the message, end this side, read the
    answer until the server's EOF; timed from the first byte sent to that EOF."""
    started = time.perf_counter()
    conn.send_all(_MESSAGE)
    conn.shutdown_write()
    result.sent = len(_MESSAGE)
    turns.done("sent")
    turns.wait("answered")
    answer = _read_to_eof(conn)
    result.round_trip = time.perf_counter() - started
    result.received = len(answer)
    return answer


def _datagram(address: str, turns: _Turns, result: TourResult, note: Callable[[str], None]) -> None:
    ready: list[SocketAddress] = []

    def server() -> None:
        with _actor("server"):
            note(_("the server creates a datagram socket and binds it: a mailbox, no listen()"))
            with bind_datagram(address) as sock:
                sock.set_timeout(STEP_TIMEOUT)
                ready.append(sock.local_address)  # type: ignore[arg-type]
                result.server_address = str(sock.local_address)
                turns.done("bound")
                turns.wait("sent")
                note(_("recvfrom() tells the server who wrote; it answers to that address"))
                data, sender = sock.recvfrom()
                if sender is None:
                    raise RuntimeError(_("the datagram came without a sender address"))
                sock.sendto(data.upper(), sender)
                turns.done("answered")
                turns.wait("client closed")

    def client() -> bytes:
        note(_("the client's connect() only sets a default destination: nothing is sent yet"))
        with connect_datagram(ready[0]) as sock:
            sock.set_timeout(STEP_TIMEOUT)
            started = time.perf_counter()
            sock.send(_MESSAGE)
            result.sent = len(_MESSAGE)
            turns.done("sent")
            turns.wait("answered")
            answer = sock.recv()
            result.round_trip = time.perf_counter() - started
            result.received = len(answer)
        return answer

    _play(server, client, turns, "bound")


def _play(server: Callable[[], None], client: Callable[[], bytes], turns: _Turns, ready: str) -> None:
    """Run ``server`` in a thread and, once it says ``ready``, ``client`` in this one; the
    client's answer must be the message in upper case."""
    thread = threading.Thread(target=_guard(server, turns), name="tour-server")
    thread.start()
    try:
        turns.wait(ready)
        with _actor("client"):
            answer = client()
            turns.done("client closed")
        if answer != _MESSAGE.upper():
            raise RuntimeError(
                _("the answer was {answer}, expected {expected}").format(
                    answer=repr(answer), expected=repr(_MESSAGE.upper())
                )
            )
    finally:
        thread.join(STEP_TIMEOUT * 4)


def _guard(body: Callable[[], None], turns: _Turns) -> Callable[[], None]:
    def run() -> None:
        try:
            body()
        except (EnchufeError, OSError, RuntimeError) as exc:
            turns.failed = _("server: {error}").format(error=exc)

    return run


def _socket_folder() -> str:
    """A private folder for the socket files, short enough for sun_path even with a long TMPDIR."""
    folder = tempfile.mkdtemp(prefix="enchufe-tour-")
    paths = [a.split("://", 1)[1] for a in _addresses(folder).values() if a.startswith("unix")]
    if max(len(os.fsencode(path)) for path in paths) <= MAX_UNIX_NAME:
        return folder
    os.rmdir(folder)
    return tempfile.mkdtemp(prefix="enchufe-tour-", dir="/tmp")


_Exchange = Callable[[str, _Turns, TourResult, Callable[[str], None]], None]


def _legs(folder: str) -> list[tuple[str, _Exchange, str, TourResult]]:
    """Each leg's header, exchange, server address and (empty) result: the six kinds, then TLS."""
    legs: list[tuple[str, _Exchange, str, TourResult]] = []
    for kind, address in _addresses(folder).items():
        header = f"{kind.family.name}, {kind.type.name}: {_story(kind)}"
        legs.append((header, _stream if kind.is_stream else _datagram, address, TourResult(kind)))
    tls_header = f"AF_INET, SOCK_STREAM, TLS: {_story(None)}"
    legs.append((tls_header, _tls, "tls://127.0.0.1:0?cert=auto", TourResult(Kind.TCP4, tls=True)))
    return legs


def _recording(record: bool) -> Callable[[], list[dict[str, Any]]]:
    """With ``record``, keep every call's event in memory (beside any recorder already there,
    such as ``--trace-file``'s); returns what gives the events so far."""
    if not record:
        return list
    from ._tracefile import MemoryRecorder

    memory = MemoryRecorder()
    previous = trace.current_recorder()

    def both(item: trace.Record) -> None:
        memory(item)
        if previous is not None:
            previous(item)

    trace.record_to(both)
    return lambda: memory.events


def run(out: TextIO, *, record: bool = False) -> list[TourResult]:
    """Run the tour, writing the narration and the summary table to ``out``; with ``record``,
    each result also keeps its leg's trace events (for :mod:`enchufe.diagram`)."""
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            out.write(line + "\n")
            out.flush()

    def note(text: str) -> None:
        trace.emit(f"· {text}")

    previous = trace.current_sink()
    previous_recorder = trace.current_recorder()
    events = _recording(record)
    folder = _socket_folder()
    results: list[TourResult] = []
    write(_("enchufe tour: a server and a client for each kind of socket, then TLS, on this machine only."))
    write(_("Every line with parentheses is a system call, printed as it returns."))
    trace.enable(write)
    try:
        for header, exchange, address, result in _legs(folder):
            write("")
            write(f"== {result.label}: {header}")
            result.header = header
            first = len(events())
            turns = _Turns()
            try:
                exchange(address, turns, result, note)
            except (EnchufeError, OSError, RuntimeError) as exc:
                result.error = turns.failed or str(exc)
            if result.error is None and turns.failed:
                result.error = turns.failed
            if result.error:
                write("   " + _("FAILED: {error}").format(error=result.error))
            result.events = events()[first:]
            results.append(result)
    finally:
        if previous is None:
            trace.disable()
        else:
            trace.enable(previous)
        trace.record_to(previous_recorder)
        shutil.rmtree(folder, ignore_errors=True)
    write("")
    write(summary(results))
    return results


def summary(results: list[TourResult]) -> str:
    """The table: kind, server address, bytes each way, round-trip time, result."""
    header = (
        _("kind"),
        _("server address"),
        _("client→server"),
        _("server→client"),
        _("round trip"),
        _("result"),
    )
    rows = [header]
    for r in results:
        rtt = _("{ms} ms").format(ms=f"{r.round_trip * 1e3:.2f}") if r.round_trip is not None else "-"
        rows.append(
            (
                r.label,
                r.server_address or "-",
                _("{size} B").format(size=r.sent),
                _("{size} B").format(size=r.received),
                rtt,
                _("ok") if r.ok else _("FAILED"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 3, 4}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    passed = sum(r.ok for r in results)
    lines.append("")
    lines.append(
        _("{passed} of {total} kinds worked.").format(passed=passed, total=len(results))
        + ("" if passed == len(results) else " " + _("See the FAILED lines above."))
    )
    return "\n".join(lines)
