"""Echo: every byte (stream) or datagram (datagram kinds) goes back to where it came from."""

from __future__ import annotations

from ..aio.serve import Datagram
from ..aio.stream import Connection


async def echo_stream(conn: Connection) -> None:
    """Send back every byte; after the client's EOF, once all is echoed, the server closes."""
    while data := await conn.recv():
        await conn.send_all(data)


async def echo_datagram(datagram: Datagram) -> None:
    """Send each datagram back to its sender, boundaries kept."""
    await datagram.reply(datagram.data)
