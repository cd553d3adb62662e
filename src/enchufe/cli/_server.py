"""What every server command shares (echo, chat, listen, recv, relay): the server options with
one range each, --mode, running an asyncio server until a stop signal, and ``-v`` lines for
each connection or peer."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

from ..i18n import _
from ._common import STOP_SIGNALS, F, event, peer_name, reporting, settings, setup_logging
from ._numbers import MAX_BACKLOG, BoundedInt, FiniteFloat

if TYPE_CHECKING:
    from .._proxypolicy import ProxyPolicy

# An octal file mode as chmod takes it: ASCII octal digits only (no "0o", "+", "_" or "٣").
_MODE_TEXT = re.compile(r"[0-7]{1,4}", re.ASCII)


def server_options(
    *,
    max_conns: int | None,
    max_conns_help: str,
    idle_help: str,
    drain_timeout: float,
    drain_help: str = "On SIGTERM, SIGINT or SIGHUP, seconds to let open connections finish before "
    "cutting them.",
    mode_help: str = "Permissions of a unix socket file, e.g. 660.",
    backlog_help: str | None = None,
) -> Callable[[F], F]:
    """--max-conns, --idle-timeout, --mode, --drain-timeout (and --backlog with ``backlog_help``):
    the options every server command takes, with one range each.

    The defaults come from the library, passed in by each command (a server's and the relay's
    differ); ``max_conns=None`` means the command works the limit out itself, which its help
    says.  Ranges and messages are the same for every command.
    """
    options = [
        click.option(
            "--max-conns",
            type=BoundedInt(1),
            default=max_conns,
            show_default=max_conns is not None,
            help=max_conns_help,
        ),
        click.option("--idle-timeout", type=FiniteFloat(0, min_open=True), default=None, help=idle_help),
        mode_option(mode_help),
        drain_option(drain_timeout, drain_help),
    ]
    if backlog_help is not None:
        options.append(backlog_option(backlog_help))

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def serving_options() -> Callable[[F], F]:
    """:func:`server_options` with the defaults of the library's serve loops (echo, chat)."""
    from .._serving import DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_CONNECTIONS
    from ..sessions import DEFAULT_IDLE_TIMEOUT

    return server_options(
        max_conns=DEFAULT_MAX_CONNECTIONS,
        max_conns_help="Clients at once (datagram: peers remembered); extra ones are closed at once.",
        idle_help="Close a client idle this many seconds (datagram peers: forgotten, default "
        f"{DEFAULT_IDLE_TIMEOUT:g}).",
        drain_timeout=DEFAULT_DRAIN_TIMEOUT,
    )


def proxy_options(*, streams: bool = True) -> Callable[[F], F]:
    """--accept-proxy, --trusted-proxy CIDR (repeatable) and --proxy-timeout S of a server, read
    by :func:`proxy_settings`; ``streams=False`` for a datagram-only command (recv): no
    --proxy-timeout, which only a stream's header waits for."""
    from .._proxypolicy import DEFAULT_PROXY_TIMEOUT, DEFAULT_TRUSTED

    dropped = "Datagrams without one, or not from a trusted proxy, are dropped."
    accept = (
        "Stream: every client starts with a PROXY protocol header (v1 or v2, as HAProxy's send-proxy "
        "sends it); its client address counts as the peer's. A client without a valid header, or "
        "not from a trusted proxy, is closed. Datagram: a v2 header before each datagram (as relay "
        "--send-proxy v2 sends it), taken off; the client it names is the sender, and replies go "
        f"back to the proxy. {dropped}"
        if streams
        else "Every datagram starts with a PROXY protocol v2 header (as relay --send-proxy v2 sends "
        f"it), taken off; the client it names is the sender. {dropped}"
    )
    options = [
        click.option("--accept-proxy", is_flag=True, help=accept),
        click.option(
            "--trusted-proxy",
            "trusted_proxy",
            multiple=True,
            metavar="CIDR",
            help="With --accept-proxy: the proxies a header is taken from (repeatable; default "
            f"{', '.join(DEFAULT_TRUSTED)}; unix peers always).",
        ),
    ]
    if streams:
        options.append(
            click.option(
                "--proxy-timeout",
                type=FiniteFloat(0, min_open=True),
                default=DEFAULT_PROXY_TIMEOUT,
                show_default=True,
                help="With --accept-proxy, on a stream: seconds a proxy has to send its whole header.",
            )
        )

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def proxy_settings(
    target: Any, accept_proxy: bool, trusted_proxy: tuple[str, ...], proxy_timeout: float
) -> dict[str, Any]:
    """The server options of :func:`proxy_options`, checked: UsageError for --trusted-proxy or
    --proxy-timeout without --accept-proxy, and for --proxy-timeout on a datagram address (a
    datagram's header comes whole, with it: there is nothing to wait for)."""
    from .._proxypolicy import parse_trusted
    from ..errors import UsageError
    from ._common import given

    if not accept_proxy:
        for name, option in (("trusted_proxy", "--trusted-proxy"), ("proxy_timeout", "--proxy-timeout")):
            if given(name):
                message = _("{option} applies with --accept-proxy (the peers that send a PROXY header)")
                raise UsageError(message.format(option=option))
        return {}
    if not target.is_stream and given("proxy_timeout"):
        raise UsageError(
            _(
                "--proxy-timeout is how long a stream client has to send its PROXY header; on "
                "{address} each datagram brings its own"
            ).format(address=target)
        )
    for text in trusted_proxy:
        parse_trusted(text)  # a bad one is refused before anything is bound
    return {"accept_proxy": True, "trusted_proxies": trusted_proxy, "proxy_timeout": proxy_timeout}


def policy_of(proxy: dict[str, Any]) -> ProxyPolicy | None:
    """The ProxyPolicy of the options :func:`proxy_settings` checked (``None``: no header)."""
    from .._proxypolicy import ProxyPolicy

    if not proxy:
        return None
    return ProxyPolicy.make(proxy["trusted_proxies"], proxy["proxy_timeout"])


def mode_option(help: str) -> Callable[[F], F]:
    """--mode OCTAL, read by :func:`parse_mode`."""
    return click.option("--mode", metavar="OCTAL", default=None, help=help)


def drain_option(default: float, help: str) -> Callable[[F], F]:
    """--drain-timeout S: 0 cuts at once; ``default`` is the library's."""
    return click.option("--drain-timeout", type=FiniteFloat(0), default=default, show_default=True, help=help)


def backlog_option(help: str) -> Callable[[F], F]:
    """--backlog N of a stream listener: ``None`` when not given (the library's default)."""
    return click.option("--backlog", type=BoundedInt(1, MAX_BACKLOG), default=None, help=help)


def run_server(server: Any, drain_timeout: float) -> int:
    """Run an ``enchufe.aio.serve.Server`` until SIGINT, SIGTERM or SIGHUP; exit status 1 if
    any connection was cut.

    The first signal stops accepting and drains for ``drain_timeout`` seconds; a second one
    cuts what is left at once.  Either way the socket file is removed.
    """
    import asyncio
    import signal

    from .. import aio
    from ._tls import listening, reported

    signalled = False

    def stop() -> None:
        nonlocal signalled
        open_now = server.stats.active
        if signalled:
            if open_now:
                said = _("stopping now: cutting {open} open connection(s)").format(open=open_now)
                event("stopping", said, open=open_now)
        elif open_now and drain_timeout > 0:
            # Said as the relay says it: a user waiting on a drain knows why and how to cut it.
            if open_now == 1:
                said = _(
                    "stopping: no new clients; waiting up to {seconds} s for {open} open connection "
                    "(signal again to cut them now)"
                )
            else:
                said = _(
                    "stopping: no new clients; waiting up to {seconds} s for {open} open connections "
                    "(signal again to cut them now)"
                )
            seconds = f"{drain_timeout:g}"
            event(
                "stopping",
                said.format(seconds=seconds, open=open_now),
                open=open_now,
                drain_timeout=drain_timeout,
            )
        signalled = True
        server.shutdown(drain_timeout)

    async def main() -> Any:
        await server.start()
        # Handlers first: whoever reads the listening line may signal us at once.
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop)
        # A plain server too: SIGUSR1's default action would kill it; it says there is nothing
        # to reload instead.
        loop.add_signal_handler(signal.SIGUSR1, lambda: reported(server.reload_tls_files()))
        listening(server.bound_address, server.tls_pin)
        return await server.serve_forever()

    setup_logging()
    stats = aio.run(main())
    if stats.cut:
        said = _("stopped: {cut} connection(s) cut before they finished").format(cut=stats.cut)
        event("stopped", said, cut=stats.cut, accepted=stats.accepted)
        return 1
    event("stopped", _("stopped"), level=1, cut=0, accepted=stats.accepted)
    return 0


def refuse_mode_unless_file(target: Any, mode: str | None) -> None:
    """``--mode`` sets a unix socket file's permissions: refused (exit 2) for anything else."""
    from ..address import UnixAddress
    from ..errors import UsageError

    if mode is None:
        return
    if not isinstance(target, UnixAddress):
        raise UsageError(
            _("--mode sets a unix socket file's permissions; {address} has no file").format(address=target)
        )
    if target.abstract:
        raise UsageError(
            _(
                "--mode sets a unix socket file's permissions; {address} is an abstract name, "
                "which has none (use a path, e.g. unix:/run/app.sock)"
            ).format(address=target)
        )


def announced(handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """Wrap a stream handler of ``enchufe.aio.serve.Server`` so that ``-v`` tells what happens to
    each connection: ``accepted PEER`` and ``closed PEER after N bytes in, M out`` (``cut`` when
    a stop cut it).  The handler's errors go on to the server, which counts and logs them."""
    import asyncio

    from ._tls import handshake_done

    async def wrapped(conn: Any) -> None:
        if not reporting(1):  # nothing to tell: the handler alone (a handshake flood's cost)
            await handler(conn)
            return
        peer = peer_name(conn.peer_address)
        accepted(peer, conn.proxy_address, conn.proxy_header)
        handshake_done(conn, peer)  # the server ran the handshake before the handler
        how = "closed"
        try:
            await handler(conn)
        except asyncio.CancelledError:
            how = "cut"
            raise
        except Exception:
            how = "failed"
            raise
        finally:
            received, sent = conn.bytes_received, conn.bytes_sent
            said = _ended(how).format(peer=peer, received=received, sent=sent)
            event("close", said, level=1, peer=peer, received=received, sent=sent, cut=how == "cut")

    return wrapped


def _ended(how: str) -> str:
    """The ``-v`` line of a connection's end (its fields: peer, received, sent)."""
    if how == "cut":
        return _("cut {peer} after {received} bytes in, {sent} out")
    if how == "failed":
        return _("failed {peer} after {received} bytes in, {sent} out")
    return _("closed {peer} after {received} bytes in, {sent} out")


def accepted(peer: str, proxy_address: Any, proxy_header: Any) -> None:
    """The ``-v`` line (and --json event) of a client accepted: through a proxy, it names the
    proxy too (``accepted tcp://203.0.113.7:4000 via tcp://127.0.0.1:5123``)."""
    if proxy_header is None:
        event("accept", _("accepted {peer}").format(peer=peer), level=1, peer=peer)
        return
    proxy = peer_name(proxy_address)
    said = _("accepted {peer} via {proxy}").format(peer=peer, proxy=proxy)
    event("accept", said, level=1, peer=peer, proxy=proxy)


def announced_datagrams(handler: Callable[[Any], Any]) -> Callable[[Any], Awaitable[None]]:
    """Wrap a datagram handler of ``enchufe.aio.serve.Server`` so that ``-v`` tells when a new
    peer sends its first datagram (``new peer PEER``); see :func:`peer_forgotten` for the end."""
    import inspect

    async def wrapped(datagram: Any) -> None:
        if datagram.new_peer:
            peer = peer_name(datagram.sender)
            if datagram.proxy_address is None:
                event("accept", _("new peer {peer}").format(peer=peer), level=1, peer=peer)
            else:
                proxy = peer_name(datagram.proxy_address)
                said = _("new peer {peer} via {proxy}").format(peer=peer, proxy=proxy)
                event("accept", said, level=1, peer=peer, proxy=proxy)
        result = handler(datagram)
        if inspect.isawaitable(result):
            await result

    return wrapped


def peer_forgotten(session: Any) -> None:
    """``on_session_end`` of a datagram server: ``-v`` says a peer was forgotten."""
    peer, datagrams = peer_name(session.name), session.datagrams
    if session.client is None:
        said = _("forgot {peer} after {datagrams} datagrams").format(peer=peer, datagrams=datagrams)
        event("close", said, level=1, peer=peer, datagrams=datagrams)
    else:  # the session is the proxy's socket for that client
        proxy = peer_name(session.peer)
        said = _("forgot {peer} via {proxy} after {datagrams} datagrams")
        said = said.format(peer=peer, proxy=proxy, datagrams=datagrams)
        event("close", said, level=1, peer=peer, proxy=proxy, datagrams=datagrams)


def server_target(address: str, json_: bool, mode: str | None) -> Any:
    """The parsed ADDRESS of a server command (echo, chat), with --json applied and --mode
    refused (UsageError) where there is no socket file."""
    from .. import parse

    settings.json = settings.json or json_
    target = parse(address)
    refuse_mode_unless_file(target, mode)
    return target


def serve(
    address: Any,
    stream_handler: Any,
    datagram_handler: Any,
    *,
    max_conns: int,
    idle_timeout: float | None,
    mode: str | None,
    drain_timeout: float,
    proxy: dict[str, Any] | None = None,
) -> int:
    """Serve ``address`` with the handler for its kind until stopped (see :func:`run_server`),
    each wrapped so that ``-v`` says what happens to each connection or peer.  ``proxy``: the
    options of :func:`proxy_settings`."""
    from ..aio.serve import Server

    options: dict[str, Any] = {
        "max_connections": max_conns,
        "idle_timeout": idle_timeout,
        "mode": parse_mode(mode),
        **(proxy or {}),
    }
    if address.is_stream:
        server = Server(address, announced(stream_handler), **options)
    else:
        server = Server(
            address, announced_datagrams(datagram_handler), on_session_end=peer_forgotten, **options
        )
    return run_server(server, drain_timeout)


def parse_mode(mode: str | None) -> int | None:
    """The value of a --mode option: an octal permission such as 660 (BadParameter otherwise).

    Written as chmod takes it: ASCII octal digits only (``int()`` would also take ``+660``,
    ``6_60``, ``0o660`` and Arabic-Indic digits), at most 0777 (no setuid, setgid or sticky bit).
    """
    if mode is None:
        return None
    value = int(mode, 8) if _MODE_TEXT.fullmatch(mode) else -1
    if not 0 <= value <= 0o777:
        message = _("{mode} is not an octal file mode such as 600 or 660").format(mode=repr(mode))
        raise click.BadParameter(message, param_hint="--mode")
    return value
