"""From trace events to a sequence diagram: lifelines, the calls on them, the arrows between them.

An event is one traced call as :mod:`enchufe._tracefile` writes it (a dict: ``pid``, ``actor``,
``fd``, ``call``, ``args``, ``result``, ``size``, ``local``, ``peer``, ``monotonic``,
``started``…).  Events from several processes are merged by their monotonic time (one clock for
the whole host).  A lifeline is a process, or an actor inside one (the tour's server and client
threads); the one that listens or accepts, or whose first transfer is a receive, is a server.

The arrows are found, not assumed:

- a connection joins the ``connect()`` whose (local, peer) addresses are an ``accept()``'s
  (peer, local); unix clients are unnamed, so those match in order of arrival;
- bytes go from each ``send()`` to the ``recv()`` on the other end that got their first byte,
  counted along the stream; the end of a side (``shutdown(SHUT_WR)`` or ``close()``) goes to the
  ``recv() = 0`` that saw the EOF;
- a datagram goes from a ``sendto()`` to the ``recvfrom()`` whose socket has the destination
  address and which names the sender's address (a wildcard bind matches any host of its port).

A receiving call that started before its arrow's sender returned is marked blocked in that
call, with the time it waited; one whose lifeline made no call between the sender's call and
its own (it waited in poll(), or for the user) is marked as having waited that long.  An
``accept()`` that came after its client's ``connect()`` returned is also marked queued: the
kernel completed the connection on its own, from the backlog.

The words (lifeline names, marks, labels, and the narration's words in each call's text, see
:func:`enchufe.trace.localized`) are in the language current when the diagram is built; the
calls, constants and addresses are as traced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import trace
from ..i18n import _
from . import words
from .sockets import STREAM_IN, STREAM_OUT, Socket, follow

__all__ = ["Arrow", "Diagram", "Lifeline", "Step", "blocked", "build", "same_address", "summary"]

Event = Mapping[str, Any]

#: How many characters of a payload an arrow shows.
PREVIEW = 18
#: Waits shorter than this are scheduling, not the other side: not marked.
MIN_WAIT = 0.001


@dataclass
class Lifeline:
    """A process (or an actor in one): a column of the diagram."""

    index: int
    pid: int
    actor: str
    role: str = "client"
    name: str = ""
    #: The server's listening or bound address; a client's own address once it has one.
    address: str = ""


@dataclass
class Step:
    """One system call on its lifeline."""

    index: int
    lifeline: int
    call: str
    text: str
    time: float
    started: float | None
    event: Event
    #: What the diagram says beside the call: "blocked 12.0 ms", "queued 0.3 ms", "EOF"…
    marks: list[str] = field(default_factory=list)
    #: How long the lifeline waited for its peer before this call returned, in seconds; 0 when
    #: it did not wait; ``blocked`` when it waited inside this call.
    waited: float = 0.0
    blocked: bool = False
    #: When the lifeline's previous call returned (None for its first).
    after: float | None = None
    #: The mark that says how long it waited (one of ``marks``), "" when it did not wait.
    wait_mark: str = ""


@dataclass
class Arrow:
    """Something that went from one lifeline to another: ``connect``, ``bytes``, ``datagram``
    or ``eof``.  ``target`` is None when no call on the other side took it (an EOF never read,
    a datagram lost or sent to a process that was not traced)."""

    kind: str
    source: int
    target: int | None
    size: int = 0
    label: str = ""


@dataclass
class Diagram:
    title: str
    lifelines: list[Lifeline]
    steps: list[Step]
    arrows: list[Arrow]

    def calls(self, lifeline: str) -> list[str]:
        """The call names on the lifeline called ``lifeline``, in order (for tests and readers)."""
        index = next(line.index for line in self.lifelines if line.name == lifeline)
        return [step.call for step in self.steps if step.lifeline == index]


def build(events: Iterable[Event], title: str = "") -> Diagram:
    """The diagram of ``events`` (any order; notes and events without a process are left out)."""
    shown = [e for e in events if e.get("call") not in (None, "note") and "pid" in e]
    shown.sort(key=_when)
    lifelines: dict[tuple[int, str], Lifeline] = {}
    steps: list[Step] = []
    last: dict[int, float] = {}
    for event in shown:
        key = (int(event["pid"]), str(event.get("actor") or ""))
        line = lifelines.setdefault(key, Lifeline(len(lifelines), key[0], key[1]))
        step = _step(len(steps), line.index, event)
        step.after = last.get(line.index)
        last[line.index] = step.time
        steps.append(step)
    sockets = follow(steps)
    columns = list(lifelines.values())
    _name(columns, steps, sockets)
    arrows = _connections(sockets) + _datagrams(sockets)
    arrows.sort(key=lambda a: a.source)
    return Diagram(title, columns, steps, arrows)


def _when(event: Event) -> float:
    """Where a call goes in the merged order.  A call that sends goes where it started: its
    bytes (or its SYN) left during the call, and the receiver may have said so before the
    sender returned.  Any other call goes where it returned, when what it waited for came."""
    started = event.get("started")
    if started is not None and event.get("call") in ("send", "sendto", "write", "connect"):
        return float(started)
    return float(event.get("monotonic", 0.0))


def _step(index: int, lifeline: int, event: Event) -> Step:
    line = trace.localized(str(event.get("line", event.get("call"))))
    if event.get("call") == "tls":
        text = str(event.get("text", ""))
        line = f"tls fd {event.get('fd')}: {text.split(':', 1)[0]}"
    started = event.get("started")
    return Step(
        index,
        lifeline,
        str(event["call"]),
        line,
        float(event.get("monotonic", 0.0)),
        float(started) if started is not None else None,
        event,
    )


def _name(lifelines: list[Lifeline], steps: list[Step], sockets: list[Socket]) -> None:
    """Each lifeline's role, address and name; the servers first."""
    for line in lifelines:
        line.role = _role([s.call for s in steps if s.lifeline == line.index])
        line.address = words.address(_address(line, sockets))
    lifelines.sort(key=lambda line: (line.role != "server", line.index))
    counts = {role: sum(line.role == role for line in lifelines) for role in ("server", "client")}
    several = len({line.pid for line in lifelines}) > 1
    seen = {"server": 0, "client": 0}
    for line in lifelines:
        seen[line.role] += 1
        numbered = words.role_name(line.role, seen[line.role] if counts[line.role] > 1 else None)
        if several:
            numbered = _("{name} (pid {pid})").format(name=numbered, pid=line.pid)
        line.name = words.actor_name(line.actor) if line.actor else numbered


def _role(calls: list[str]) -> str:
    """A server listens or accepts (a relay's forked workers accept on their parent's
    listener), or its first transfer is a receive."""
    if "listen" in calls or "accept" in calls:
        return "server"
    first = next((call for call in calls if call in ("sendto", "recvfrom", "send", "recv")), "")
    return "server" if first in ("recvfrom", "recv") else "client"


def _address(line: Lifeline, sockets: list[Socket]) -> str:
    """A server's listening (or receiving) address; a client's own first address."""
    mine = [s for s in sockets if s.lifeline == line.index and s.local]
    listening = [s for s in mine if s.listening or (s.stream is False and line.role == "server")]
    chosen = listening or mine
    return chosen[0].local if chosen else ""


# ---------------------------------------------------------------------------- matching


def same_address(a: str, b: str) -> bool:
    """Whether two described addresses name the same socket: equal, or the same port with a
    wildcard host on one side (0.0.0.0, [::]); IPv4-mapped IPv6 is its IPv4 address."""
    a, b = _plain(a), _plain(b)
    if a == b:
        return True
    host_a, _, port_a = a.rpartition(":")
    host_b, _, port_b = b.rpartition(":")
    wildcards = ("0.0.0.0", "[::]")
    return bool(port_a) and port_a == port_b and (host_a in wildcards or host_b in wildcards)


def _plain(address: str) -> str:
    if address.startswith("[::ffff:") and "." in address:
        host, _, port = address[len("[::ffff:") :].partition("]:")
        return f"{host}:{port}"
    return address


def _connections(sockets: list[Socket]) -> list[Arrow]:
    """Connect arrows for the accepted sockets, then each connection's bytes and EOFs."""
    clients = [s for s in sockets if s.stream and not s.listening and s.opened and s.opened.call != "accept"]
    # In connect order: unnamed unix clients all match, and the backlog hands them out in that order.
    clients.sort(key=lambda c: c.opened.index if c.opened else 0)
    arrows: list[Arrow] = []
    for server in sockets:
        client = _client_of(server, clients)
        if client is None or server.opened is None or client.opened is None:
            continue
        clients.remove(client)
        arrows.append(Arrow("connect", client.opened.index, server.opened.index, label="connect"))
        client.opened.marks.append(_("active open"))
        _opened(server.opened, client.opened)
        for sender, receiver in ((client, server), (server, client)):
            arrows += _bytes(sender, receiver)
            arrows += _eof(sender, receiver)
    return arrows


def _client_of(server: Socket, clients: list[Socket]) -> Socket | None:
    """The first client whose (local, peer) is the accepted socket's (peer, local)."""
    if server.opened is None or server.opened.call != "accept":
        return None
    for client in clients:
        if same_address(client.local, server.peer) and same_address(client.peer, server.local):
            return client
    return None


def _opened(accept: Step, connect: Step) -> None:
    accept.marks.append(_("passive open"))
    _waited(accept, connect, "connect()")
    queued = (accept.started if accept.started is not None else accept.time) - connect.time
    if queued >= 0:  # else accept() was there first, if only for a moment
        accept.marks.append(_("queued {ms} ms in the backlog").format(ms=f"{queued * 1e3:.1f}"))


def _bytes(sender: Socket, receiver: Socket) -> list[Arrow]:
    """One arrow per send(), to the recv() that got its first byte."""
    reads: list[tuple[int, Step]] = []
    total = 0
    for step in receiver.steps:
        size = step.event.get("size")
        if step.call in STREAM_IN and isinstance(size, int) and size > 0:
            reads.append((total, step))
            total += size
    arrows = []
    offset = 0
    for step in sender.steps:
        size = step.event.get("size")
        if step.call not in STREAM_OUT or not isinstance(size, int) or size <= 0:
            continue
        target = next((read for start, read in reversed(reads) if start <= offset), None)
        if offset >= total:
            target = None
        offset += size
        arrows.append(Arrow("bytes", step.index, target.index if target else None, size, _label(step, size)))
        if target is not None:
            _waited(target, step, "bytes")
    return arrows


def _eof(sender: Socket, receiver: Socket) -> list[Arrow]:
    """The end of the sender's side: its first shutdown(SHUT_WR|SHUT_RDWR) or close(), to the
    receiver's recv() = 0."""
    end = next(
        (s for s in sender.steps if s.call == "close" or (s.call == "shutdown" and "SHUT_RD)" not in s.text)),
        None,
    )
    if end is None:
        return []
    seen = next((s for s in receiver.steps if s.call in STREAM_IN and s.event.get("size") == 0), None)
    end.marks.append(_("end of data (FIN)") if ":" in sender.local else _("end of data"))
    if seen is not None:
        seen.marks.append(_("EOF"))
        _waited(seen, end, "EOF")
    label = _("EOF ({call})").format(call=end.call)
    return [Arrow("eof", end.index, seen.index if seen else None, label=label)]


def _datagrams(sockets: list[Socket]) -> list[Arrow]:
    sends = [
        (sock, step)
        for sock in sockets
        for step in sock.steps
        if step.call == "sendto" and not step.event.get("error")
    ]
    sends.sort(key=lambda pair: pair[1].index)
    arrows = []
    for sock in sockets:
        for step in sock.steps:
            if step.call != "recvfrom" or step.event.get("error"):
                continue
            match = next((pair for pair in sends if _delivered(pair, sock, step)), None)
            if match is not None:
                sends.remove(match)
                arrows.append(_datagram(match[1], step))
    arrows += [_datagram(step, None) for _sock, step in sends]
    return arrows


def _delivered(sent: tuple[Socket, Step], sock: Socket, received: Step) -> bool:
    sender, step = sent
    source = str(step.event.get("local") or sender.local)
    destination = str(step.event.get("peer") or sender.peer)
    here = str(received.event.get("local") or sock.local)
    return (
        step.event.get("size") == received.event.get("size")
        and same_address(destination, here)
        and same_address(source, str(received.event.get("peer", "")))
    )


def _datagram(sent: Step, received: Step | None) -> Arrow:
    size = int(sent.event.get("size") or 0)
    if received is not None:
        _waited(received, sent, "datagram")
    return Arrow("datagram", sent.index, received.index if received else None, size, _label(sent, size))


def _waited(receiver: Step, sender: Step, what: str) -> None:
    """Mark ``receiver`` blocked if it started before ``sender`` returned, or waiting if its
    lifeline's previous call returned before then (once per step).  ``what`` it waited for:
    ``connect()``, ``bytes``, ``EOF`` or ``datagram``."""
    if receiver.waited:
        return
    inside = receiver.started is not None and receiver.started < sender.time
    if inside and receiver.started is not None and receiver.time - receiver.started >= MIN_WAIT:
        receiver.waited = receiver.time - receiver.started
        receiver.blocked = True
        mark = words.wait_mark(what, inside=True).format(
            ms=f"{receiver.waited * 1e3:.1f}", call=receiver.call
        )
    elif receiver.after is not None and sender.time - receiver.after >= MIN_WAIT:
        receiver.waited = sender.time - receiver.after
        mark = words.wait_mark(what, inside=False).format(ms=f"{receiver.waited * 1e3:.1f}")
    else:
        return
    receiver.marks.append(mark)
    receiver.wait_mark = mark


def _label(step: Step, size: int) -> str:
    """``33 B "hello, server: th…"``: the size and the first characters, as escaped in the event."""
    data = str(step.event.get("data") or "")
    kind = words.tls_record(data[:4]) if data.startswith("\\x1") and data[4:8] == "\\x03" else None
    if kind:
        return _("{size} B {record}").format(size=size, record=kind)
    if not data:
        return _("{size} B").format(size=size)
    return _('{size} B "{preview}"').format(size=size, preview=_shortened(data))


_ESCAPE_OR_CHAR = re.compile(r"\\(?:x..|u....|U........|.)|.", re.DOTALL)


def _shortened(text: str) -> str:
    """At most PREVIEW characters of escaped text, never cutting an escape (``\\x1b``) in two."""
    if len(text) <= PREVIEW:
        return text
    kept = ""
    for token in _ESCAPE_OR_CHAR.findall(text):
        if len(kept) + len(token) > PREVIEW - 1:
            break
        kept += token
    return kept + "…"


def blocked(diagram: Diagram) -> list[Step]:
    """The steps that waited for the other side."""
    return [step for step in diagram.steps if step.waited]


def lifeline_of(diagram: Diagram, step: int) -> str:
    """The name of the lifeline that made step number ``step``."""
    index = diagram.steps[step].lifeline
    return next(line.name for line in diagram.lifelines if line.index == index)


def summary(diagram: Diagram) -> list[tuple[str, str, str, str]]:
    """Each arrow as (kind, from, to, label): what tests and readers compare."""
    return [
        (
            a.kind,
            lifeline_of(diagram, a.source),
            lifeline_of(diagram, a.target) if a.target is not None else "",
            a.label,
        )
        for a in diagram.arrows
    ]
