"""Which handler serves a relay's listener: chosen once, from the two addresses and the options,
so that each handler carries only what its kind of relay needs.

::

    stream LISTEN → stream TARGET (and exec:, stdio)   StreamRelay
        with --fault                                    FaultyStreamRelay (a TLS end: its
                                                        sessions are FaultyTLSStreamSessions)
        with --socks (each request names its target)   SocksRelay
    stream LISTEN → datagram TARGET (--frame)           FramedStreamRelay
        with --fault                                    FaultyFramedStreamRelay
    ``-`` (stdio) → anything                            StdioRelay (FaultyStdioRelay with --fault)
    datagram LISTEN → datagram TARGET                   DatagramRelay
        with --send-proxy                               ProxiedDatagramRelay
        with --accept-proxy (and --send-proxy)          AcceptingDatagramRelay (AcceptingProxied…)
        with --via socks5://… (UDP ASSOCIATE)           SocksDatagramRelay (with --accept-proxy:
                                                        AcceptingSocksDatagramRelay)
        with --fault                                    FaultyDatagramRelay
    datagram LISTEN → stream TARGET (--frame)           FramedDatagramRelay
        with --fault                                    FaultyFramedDatagramRelay

The datagram, framed, fault and SOCKS handlers are imported only when chosen: a relay without
them never loads them (nor compiles them, in a process without cached bytecode).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any, Protocol

from ..address import Address, InetAddress, SocketAddress, StdioAddress
from ..i18n import N_
from ..sessions import DEFAULT_IDLE_TIMEOUT
from .config import RelayConfig, config_hops
from .engine import Loop
from .events import EventSink
from .pools import Pools
from .proxying import relay_policy
from .routing import Router
from .stats import Stats
from .stream import StdioRelay, StreamRelay, TargetResolver
from .tlsfiles import TLSEnds

if TYPE_CHECKING:
    from .datagram import DatagramRelay, FramedDatagramRelay
    from .via import Via
    from .via_datagram import SocksDatagramRelay

__all__ = ["ListenerHandler", "make_handler"]


class ListenerHandler(Protocol):
    """What a relay needs from the handler of its listener (:class:`StreamRelay`,
    :class:`StdioRelay`, the datagram and framed handlers): start serving, stop accepting, cut
    what is open, release what is left."""

    @property
    def sessions(self) -> Sized: ...

    #: a one-shot relay (stdio) is over: its one session ended
    finished: bool
    #: a one-shot relay lost data (reset, target unreachable)
    failed: bool

    def start(self) -> None: ...

    def stop_accepting(self) -> None: ...

    def abort_all(self, reason: str) -> int: ...

    def close(self) -> None: ...


def make_handler(
    loop: Loop,
    pools: Pools,
    config: RelayConfig,
    listen: Address,
    target: Address,
    *,
    listener: tuple[socket.socket, SocketAddress] | None,
    resolver: TargetResolver | None,
    stats: Stats,
    events: EventSink,
    idle_timeout: float | None,
    max_conns: int,
    tls: TLSEnds | None,
    router: Router | None,
    on_listener_closed: Callable[[], None],
) -> ListenerHandler:
    """The handler of ``listener`` (bound already; ``None`` for stdio) relaying ``listen`` to
    ``target`` as ``config`` says; ``on_listener_closed`` releases the listener's socket file."""
    sock = listener[0] if listener is not None else None
    common: dict[str, Any] = {"stats": stats, "events": events, "on_listener_closed": on_listener_closed}
    if not listen.is_stream:
        assert sock is not None and resolver is not None
        return _datagram_handler(loop, sock, resolver, config, target, idle_timeout, common)
    options: dict[str, Any] = {
        **common,
        "pools": pools,
        "rules": config.rules,
        "max_conns": max_conns,
        "connect_timeout": config.connect_timeout,
        "idle_timeout": idle_timeout,
        "use_splice": config.splice,
        "target": target,
        "client_tls": tls.client if tls is not None else None,
        "target_tls": tls.target if tls is not None else None,
        "proxy_policy": relay_policy(config),
        "send_proxy": config.send_proxy,
        "via": _via(config),
    }
    if router is not None:
        options["router"] = router
    if isinstance(listen, StdioAddress):
        if config.faults is not None:
            from .faulty import FaultyStdioRelay

            return FaultyStdioRelay(loop, resolver, faults=config.faults, **options)
        return StdioRelay(loop, resolver, **options)
    assert sock is not None and listener is not None
    stream = _stream_handler(loop, sock, listener[1], resolver, config, target, options)
    if config.max_conns is None:
        stream.limit_origin = N_("the limit the fd budget sets; see --max-conns")
    return stream


def _via(config: RelayConfig) -> Via | None:
    """--via: the proxies a stream target is reached through (None without)."""
    hops = config_hops(config)
    if not hops:
        return None
    from .via import Via

    return Via(hops)


def _datagram_handler(
    loop: Loop,
    sock: socket.socket,
    resolver: TargetResolver,
    config: RelayConfig,
    target: Address,
    idle_timeout: float | None,
    common: dict[str, Any],
) -> ListenerHandler:
    from .datagram import DatagramRelay, FramedDatagramRelay
    from .proxying_datagram import ProxiedDatagramRelay

    kind: type[DatagramRelay | FramedDatagramRelay | SocksDatagramRelay]
    kind = FramedDatagramRelay if target.is_stream else DatagramRelay
    kind = ProxiedDatagramRelay if config.send_proxy else kind  # chosen once, as faults
    if config.accept_proxy:  # the config allows it only for a datagram TARGET reached directly
        from .accepting_datagram import AcceptingDatagramRelay, AcceptingProxiedDatagramRelay

        kind = AcceptingProxiedDatagramRelay if config.send_proxy else AcceptingDatagramRelay
        common = {**common, "proxy_policy": relay_policy(config)}
    via = _via(config)
    if via is not None:  # the config allows it only for a udp:// TARGET, without faults (PROXY v2)
        from .via_datagram import SocksDatagramRelay

        assert isinstance(target, InetAddress)
        kind = SocksDatagramRelay
        if config.accept_proxy:
            from .accepting_datagram import AcceptingSocksDatagramRelay

            kind = AcceptingSocksDatagramRelay
        common = {**common, "via": via, "target": target, "send_proxy": bool(config.send_proxy)}
    if config.faults is not None:  # chosen once here: a relay without faults never looks
        if target.is_stream:
            from .faulty_tunnel import FaultyFramedDatagramRelay

            kind = FaultyFramedDatagramRelay
        else:
            from .faulty_datagram import FaultyDatagramRelay

            kind = FaultyDatagramRelay
        common = {**common, "faults": config.faults}
    return kind(
        loop,
        sock,
        resolver,
        max_sessions=config.max_sessions,
        idle_timeout=idle_timeout or DEFAULT_IDLE_TIMEOUT,
        max_datagram=config.max_datagram,
        connect_timeout=config.connect_timeout,
        **common,
    )


def _stream_handler(
    loop: Loop,
    sock: socket.socket,
    local: SocketAddress,
    resolver: TargetResolver | None,
    config: RelayConfig,
    target: Address,
    options: dict[str, Any],
) -> StreamRelay:
    if not target.is_stream:
        if config.faults is not None:  # chosen once here, as below
            from .faulty_framed import FaultyFramedStreamRelay

            return FaultyFramedStreamRelay(
                loop, sock, resolver, max_datagram=config.max_datagram, faults=config.faults, **options
            )
        from .framed import FramedStreamRelay

        return FramedStreamRelay(loop, sock, resolver, max_datagram=config.max_datagram, **options)
    if config.faults is not None:  # chosen once here: a relay without faults never looks
        from .faulty import FaultyStreamRelay

        return FaultyStreamRelay(loop, sock, resolver, local=local, faults=config.faults, **options)
    if config.socks is not None:  # a SOCKS server: each client's request names its target
        from .socks import SocksRelay

        return SocksRelay(loop, sock, config.socks, local=local, **options)
    return StreamRelay(loop, sock, resolver, local=local, **options)
