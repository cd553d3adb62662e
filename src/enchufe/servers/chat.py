"""Chat: every message from one client goes to all the others, never back to the sender.

Streams are line-oriented: each line goes out prefixed with the sender's name (``--raw``
forwards bytes unchanged, like ncat's broker mode).  Datagram peers join by sending and leave
after the idle timeout; each datagram goes to the other peers, prefixed likewise.

A slow client never stalls the others: what waits to be sent to it is bounded, and a client
whose backlog passes the bound is dropped with a log line.  A datagram peer that does not read
loses the datagrams that do not fit in its queue (as UDP would lose them), said once in the log
per episode; the others keep receiving.  (A unix datagram client *connected* to the server holds
the server's send buffer with what it leaves unread: the kernel then makes every send wait, so
while it neither reads nor leaves, datagrams to everyone are dropped after a short wait.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field

from .._serving import log
from ..address import InetAddress, SocketAddress
from ..aio.serve import Datagram, deliver
from ..aio.stream import Connection
from ..errors import EnchufeError

#: Bytes waiting for one client before it counts as not reading and is dropped: room for a
#: burst of chat, far too little for a client to make the server hold much memory.
DEFAULT_QUEUE_LIMIT = 1 << 20

#: Longest line accepted from a client; a longer one ends that client's session.
MAX_LINE = 65536


@dataclass(eq=False)
class _Member:
    conn: Connection
    name: str
    queue: collections.deque[bytes] = field(default_factory=collections.deque)
    queued: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False


@dataclass
class ChatRoom:
    """The chat handlers; one room per server."""

    raw: bool = False
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    members: list[_Member] = field(default_factory=list)
    dropped: int = 0
    _unnamed: int = 0

    def _name_of(self, conn: Connection) -> str:
        peer = conn.peer_address
        if isinstance(peer, InetAddress):
            name = str(peer).split("://", 1)[1]
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
        log.info("%s joined (%d in the room)", member.name, len(self.members))
        writer = asyncio.create_task(self._write(member))
        try:
            while not member.dropped:
                if self.raw:
                    data = await conn.recv()
                else:
                    data = await conn.recv_until(b"\n", max_bytes=MAX_LINE)
                    if data and not data.endswith(b"\n"):
                        data += b"\n"  # the last line before EOF
                if not data:
                    break
                self._broadcast(member, data if self.raw else member.name.encode() + b": " + data)
        finally:
            self.members.remove(member)
            member.dropped = True
            member.wake.set()
            with contextlib.suppress(asyncio.CancelledError, EnchufeError):
                await writer
            log.info("%s left (%d in the room)", member.name, len(self.members))

    def _broadcast(self, sender: _Member, message: bytes) -> None:
        for other in self.members:
            if other is sender or other.dropped:
                continue
            if other.queued + len(message) > self.queue_limit:
                self._drop(other)
                continue
            other.queue.append(message)
            other.queued += len(message)
            other.wake.set()

    def _drop(self, member: _Member) -> None:
        member.dropped = True
        self.dropped += 1
        log.warning("dropped %s: not reading (%d bytes waiting)", member.name, member.queued)
        member.conn.close()  # wakes its reader and writer; they end and leave the room

    async def _write(self, member: _Member) -> None:
        while not member.dropped:
            if not member.queue:
                member.wake.clear()
                await member.wake.wait()
                continue
            message = member.queue.popleft()
            member.queued -= len(message)
            await member.conn.send_all(message)

    async def datagram(self, datagram: Datagram) -> None:
        """Handler for datagram kinds: forward to every other peer seen within the idle timeout."""
        sender = datagram.sender
        if sender is None:
            log.info("ignored a datagram from an unbound unix socket: it cannot be answered")
            return
        if datagram.new_peer:
            log.info("%s joined", sender)
        name = str(sender).split("://", 1)[-1]
        message = datagram.data if self.raw else name.encode() + b": " + datagram.data
        for session in datagram.peers or ():
            peer: SocketAddress = session.peer
            if peer == sender:
                continue
            if await deliver(datagram.socket, message, peer):
                session.state.pop("dropping", None)
                continue
            # A unix peer whose queue is full does not read: it loses this datagram rather
            # than hold up the room.  Said once per episode, not once per datagram.
            self.dropped += 1
            if not session.state.get("dropping"):
                session.state["dropping"] = True
                log.warning("dropped datagrams for %s: not reading", peer)
