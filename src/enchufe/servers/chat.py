"""Chat: every message from one client goes to all the others, never back to the sender.

Streams are line-oriented: each line goes out prefixed with the sender's name (``--raw``
forwards bytes unchanged, like ncat's broker mode).  Datagram peers join by sending and leave
after the idle timeout; each datagram goes to the other peers, prefixed likewise.

A talker cannot starve the others: what waits to be sent to each member is bounded, and when a
member's backlog is full the talker's lines wait (the server stops reading from it, so the
kernel's flow control slows it down) until that member takes some.  Only a member that takes
nothing for :data:`DEFAULT_DROP_AFTER` seconds with a full backlog counts as not reading: it is
dropped with a log line, and told why in a last line before its connection closes.  A datagram
peer that does not read loses the datagrams that do not fit in its queue (as UDP would lose
them), said once in the log per episode; the others keep receiving.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field

from .._serving import log
from .._text import one_line, printable
from ..address import InetAddress, SocketAddress, UnixAddress
from ..aio.serve import Datagram, deliver
from ..aio.stream import Connection
from ..errors import EnchufeError, MessageTooLarge, NetworkError, ProtocolError
from ..i18n import _

#: Bytes waiting for one client before the talkers wait for it: room for a burst of chat, far
#: too little for a client to make the server hold much memory.
DEFAULT_QUEUE_LIMIT = 1 << 20

#: Seconds a member may leave its full backlog untouched before it is dropped as not reading.
#: Meanwhile the room waits for it, so this is also the longest stall one dead client causes.
DEFAULT_DROP_AFTER = 5.0

#: Seconds a dropped member gets to read what was already sent to it and the line saying why,
#: before its connection is closed anyway.
GOODBYE_TIMEOUT = 10.0

#: Longest line accepted from a client; a longer one ends that client's session.
MAX_LINE = 65536

#: Bytes of one talker's input handled between two chances for the other tasks to run: lines
#: already buffered are handled without waiting for the socket, so without this a talker with
#: megabytes buffered would hold the loop until every backlog is full.
YIELD_EVERY = 64 * 1024


@dataclass(eq=False)
class _Member:
    conn: Connection
    name: str
    queue: collections.deque[bytes] = field(default_factory=collections.deque)
    queued: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set whenever the writer hands a message to the kernel: the member is reading.
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    #: Sent after what is already on its way, then the connection closes (set when dropped).
    goodbye: bytes = b""
    reader: asyncio.Task[None] | None = None


@dataclass
class ChatRoom:
    """The chat handlers; one room per server."""

    raw: bool = False
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    drop_after: float = DEFAULT_DROP_AFTER
    goodbye_timeout: float = GOODBYE_TIMEOUT
    members: list[_Member] = field(default_factory=list)
    dropped: int = 0
    _unnamed: int = 0

    def _name_of(self, conn: Connection) -> str:
        peer = conn.peer_address
        if isinstance(peer, InetAddress):
            name = str(peer).split("://", 1)[1]
        elif isinstance(peer, UnixAddress) and conn.proxy_header is not None:
            # A unix client a proxy named: its credentials would be the proxy's, its name is its own
            # (escaped: it reaches the other members' screens).
            name = printable(f"@{peer.name}" if peer.abstract else peer.name)
        else:
            creds = conn.peer_credentials
            if creds is not None:
                name = f"pid{creds.pid}"
            else:
                self._unnamed += 1
                name = f"user{self._unnamed}"
        # Two clients of one process share a pid: number the later ones, so that every
        # member of the room has a name of its own.
        taken = {member.name for member in self.members}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}#{n}"
        return unique

    async def stream(self, conn: Connection) -> None:
        """Handler for stream kinds."""
        member = _Member(conn, self._name_of(conn))
        self.members.append(member)
        log.info(
            _("{name} joined ({count} in the room)").format(
                name=printable(member.name), count=len(self.members)
            )
        )
        writer = asyncio.create_task(self._write(member))
        reader = member.reader = asyncio.create_task(self._read(member))
        try:
            await asyncio.wait({reader})  # ends at EOF, on an error, or cancelled by a drop
            if member.dropped:
                with contextlib.suppress(TimeoutError, EnchufeError):
                    async with asyncio.timeout(self.goodbye_timeout):
                        await writer  # what was on its way, then the reason, then we close
            elif not reader.cancelled() and (error := reader.exception()) is not None:
                raise error  # the server logs and counts it
        finally:
            self._leave(member)
            for task in (reader, writer):
                task.cancel()
            await asyncio.wait({reader, writer})
            for task in (reader, writer):
                if not task.cancelled():
                    task.exception()  # retrieved: already raised above, or not worth a word
            log.info(
                _("{name} left ({count} in the room)").format(
                    name=printable(member.name), count=len(self.members)
                )
            )

    async def _read(self, member: _Member) -> None:
        conn = member.conn
        since_yield = 0
        while True:
            if self.raw:
                data = await conn.recv()
            else:
                try:
                    data = await conn.recv_until(b"\n", max_bytes=MAX_LINE)
                except ProtocolError:
                    log.warning(
                        _("{name} sent a line longer than {limit} bytes: disconnected").format(
                            name=printable(member.name), limit=MAX_LINE
                        )
                    )
                    raise
                if data and not data.endswith(b"\n"):
                    data += b"\n"  # the last line before EOF
            if not data:
                return
            await self._broadcast(member, data if self.raw else member.name.encode() + b": " + data)
            since_yield += len(data)
            if since_yield >= YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)

    async def _broadcast(self, sender: _Member, message: bytes) -> None:
        for other in list(self.members):
            if other is sender:
                continue
            # A full backlog makes the talker wait for this member (an empty one takes even an
            # oversized message: the limit bounds what waits, it does not refuse lines).
            while not other.dropped and other.queued and other.queued + len(message) > self.queue_limit:
                other.progress.clear()
                try:
                    async with asyncio.timeout(self.drop_after):
                        await other.progress.wait()
                except TimeoutError:
                    self._drop(other)
            if other.dropped:
                continue
            other.queue.append(message)
            other.queued += len(message)
            other.wake.set()

    def _drop(self, member: _Member) -> None:
        if member.dropped:
            return
        waiting = member.queued
        self.dropped += 1
        log.warning(
            _("dropped {name}: not reading ({count} bytes waiting, none taken for {seconds} s)").format(
                name=printable(member.name), count=waiting, seconds=f"{self.drop_after:g}"
            )
        )
        member.dropped = True
        member.queue.clear()
        member.queued = 0
        member.goodbye = (
            _(
                "enchufe chat: you were disconnected: you did not read for {seconds} s "
                "while {count} bytes waited for you"
            ).format(seconds=f"{self.drop_after:g}", count=waiting)
            + "\n"
        ).encode()
        member.wake.set()
        if member.reader is not None:
            member.reader.cancel()  # it reads no more: its handler says goodbye and closes

    def _leave(self, member: _Member) -> None:
        if member in self.members:
            self.members.remove(member)
        member.dropped = True
        member.wake.set()
        member.progress.set()  # talkers waiting for its backlog stop waiting: it is gone

    async def _write(self, member: _Member) -> None:
        try:
            while True:
                if member.queue:
                    message = member.queue.popleft()
                    member.queued -= len(message)
                    await member.conn.send_all(message)
                    member.progress.set()
                elif member.dropped:
                    if member.goodbye:
                        await member.conn.send_all(member.goodbye)
                    return
                else:
                    member.wake.clear()
                    await member.wake.wait()
        except EnchufeError as exc:  # reset, or gone: it leaves the room at once
            log.info("%s: %s", printable(member.name), one_line(str(exc)))  # nothing to translate
            self._leave(member)
            if member.reader is not None:
                member.reader.cancel()

    async def datagram(self, datagram: Datagram) -> None:
        """Handler for datagram kinds: forward to every other peer seen within the idle timeout."""
        sender, back = datagram.sender, datagram.reply_address
        if sender is None or back is None:
            log.info(_("ignored a datagram from an unbound unix socket: it cannot be answered"))
            return
        if datagram.new_peer:
            log.info(_("{name} joined").format(name=printable(str(sender))))
        # The sender chose its name (a unix path or abstract name): escaped, so that a newline in
        # it cannot put a line of its own choosing before the others.
        name = printable(str(sender).split("://", 1)[-1])
        message = datagram.data if self.raw else name.encode() + b": " + datagram.data
        for session in datagram.peers or ():
            peer: SocketAddress = session.peer  # behind a proxy, its socket for that client
            if peer == back:
                continue
            try:
                delivered = await deliver(datagram.socket, message, peer)
            except MessageTooLarge as exc:
                # Too large for anyone (the name made it so): the others get nothing of it.
                log.warning(
                    _("{name}: not forwarded: {error}").format(
                        name=printable(str(sender)), error=one_line(str(exc))
                    )
                )
                return
            except NetworkError as exc:
                # It cannot be reached any more (a unix peer that removed its socket file):
                # it leaves the room, and the peers after it still get the message.
                log.warning(
                    _("{name} left: {error}").format(
                        name=printable(str(session.name)), error=one_line(str(exc))
                    )
                )
                if datagram.peers is not None:
                    datagram.peers.remove(peer)
                continue
            if delivered:
                session.state.pop("dropping", None)
                continue
            # A unix peer whose queue is full does not read: it loses this datagram rather
            # than hold up the room.  Said once per episode, not once per datagram.
            self.dropped += 1
            if not session.state.get("dropping"):
                session.state["dropping"] = True
                log.warning(
                    _("dropped datagrams for {name}: not reading").format(name=printable(str(session.name)))
                )
