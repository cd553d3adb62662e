"""Ready-made servers: echo and chat, for every kind, as handlers for ``serve``."""

from .chat import ChatRoom
from .echo import echo_datagram, echo_stream

__all__ = ["ChatRoom", "echo_datagram", "echo_stream"]
