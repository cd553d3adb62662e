"""enchufe for asyncio: the sync API name for name, with ``await``.

::

    import enchufe.aio as aio

    async def main() -> None:
        async with await aio.listen("tcp://127.0.0.1:0") as listener:
            async with await aio.connect(listener.address) as client:
                server = await listener.accept()
                await client.send_all(b"hi")

    aio.run(main())          # uvloop when installed, plain asyncio otherwise

Sending returns once the kernel took the bytes (no unbounded write buffer).  Cancelling
``connect`` closes the socket it opened.  Host names are resolved in the loop's executor.
"""

# No ``from __future__ import annotations`` here: it would add a public name, ``annotations``.
from . import datagram, serve, stream
from ._open import bind_datagram, connect, connect_datagram, listen, new_event_loop, run
from .datagram import DatagramSocket
from .stream import Connection, Listener, TLSConnection

#: Exactly the public names of the package (a test checks ``dir()`` against it): the endpoint
#: classes (a TLS address gives a ``TLSConnection``), the openers, the loop helpers, and the
#: submodules.
__all__ = [
    "Connection",
    "DatagramSocket",
    "Listener",
    "TLSConnection",
    "bind_datagram",
    "connect",
    "connect_datagram",
    "datagram",
    "listen",
    "new_event_loop",
    "run",
    "serve",
    "stream",
]
