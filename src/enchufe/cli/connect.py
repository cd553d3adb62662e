"""enchufe connect ADDRESS: the active side, stdio piped through the socket."""

from __future__ import annotations

import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from ..i18n import _
from ._common import (
    DatagramPrinter,
    StreamDump,
    complete_address,
    event,
    global_options,
    retry_options,
    settings,
    warn_truncated,
)
from ._numbers import FiniteFloat
from ._tls import help_text as tls_help
from ._via import via_option

if TYPE_CHECKING:  # imported when used, so that `enchufe --help` stays fast
    from .._unixfiles import SocketFile
    from .._via import FirstLeg
    from ..address import InetAddress, SocketAddress
    from ..hops import Hop

EXAMPLES = """\b
Examples:
  printf 'HEAD / HTTP/1.0\\r\\n\\r\\n' | enchufe connect tcp://example.com:http
  enchufe connect --crlf --idle-timeout 5 tcp://127.0.0.1:smtp     # talk SMTP by hand
  enchufe connect --retry 20 --source unix:@client unix:///run/app.sock
  enchufe connect tls://example.com:443                   # TLS, verified by the system CAs
  enchufe connect 'tls://10.0.0.5:9000?pin=sha256:HEX'     # the pin a cert=auto listener printed
  enchufe connect 'tls://db.internal:9000?ca=ca.pem&cert=me.pem&key=me.key'   # mutual TLS
  enchufe connect --via socks5://127.0.0.1:1080 tcp://db.internal:5432   # the proxy resolves the name
  enchufe connect --via http://user:pass@proxy:3128 'tls://example.com:443?ca=ca.pem'
"""


class _OneAddress(click.Command):
    """A command taking one ADDRESS that explains ``HOST PORT`` (nc's way) instead of failing
    with click's bare "unexpected extra argument"."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        if ctx.args and not ctx.resilient_parsing:
            raise _extra_arguments(ctx.params.get("address") or "", ctx.args)
        return rest


def _extra_arguments(first: str, extra: list[str]) -> Exception:
    from .._text import printable
    from ..address import parse
    from ..errors import AddressError, UsageError

    shown = " ".join(printable(a) for a in [first, *extra])
    if len(extra) == 1:
        host = f"[{first}]" if ":" in first and not first.startswith("[") else first
        try:
            suggestion = str(parse(f"tcp://{host}:{extra[0]}"))
        except AddressError:
            pass
        else:
            return UsageError(
                _(
                    "connect takes one address, not HOST PORT as nc does ({given}): write {address} "
                    "(or udp://…, unix:…)"
                ).format(given=shown, address=suggestion)
            )
    message = _("connect takes one address, not {count} ({given}); e.g. tcp://127.0.0.1:9000")
    return UsageError(message.format(count=len(extra) + 1, given=shown))


@click.command(
    "connect",
    cls=_OneAddress,
    epilog=EXAMPLES + "\n" + tls_help(),
    context_settings={"allow_extra_args": True},
)
@click.argument("address", shell_complete=complete_address)
@retry_options("Attempts after the first when refused or not there yet (a new socket each).")
@click.option(
    "--timeout",
    type=FiniteFloat(0, min_open=True),
    default=None,
    help="Stream: seconds per connection attempt. Datagram: seconds to wait for "
    "replies after stdin ends (default 1).",
)
@click.option(
    "--idle-timeout",
    type=FiniteFloat(0, min_open=True, zero="never"),
    default=None,
    help="Close after this many seconds with no traffic either way and exit 0, as nc -w and "
    "socat -T do; also bounds each connection attempt unless --timeout is given.",
)
@click.option(
    "--source",
    metavar="ADDR",
    default=None,
    help="Bind to this local address before connecting: tcp://HOST:PORT (port 0: any), "
    "udp://…, or for unix a path or @name, so that the server sees a named peer.",
)
@click.option("--crlf", is_flag=True, help="Send each line end of stdin as CRLF (ncat -C).")
@click.option(
    "--hex",
    "hex_",
    is_flag=True,
    help="Hex dump of both directions on stderr (> sent, < received), as ncat -x does.",
)
@via_option
@global_options
def command(
    address: str,
    retry: int,
    retry_delay: float,
    timeout: float | None,
    idle_timeout: float | None,
    source: str | None,
    crlf: bool,
    hex_: bool,
    via: tuple[str, ...],
) -> int:
    """Connect to ADDRESS; copy stdin to the peer and what it sends to stdout.

    On stdin's EOF the write side is shut down and reading goes on until the peer closes.
    On a datagram ADDRESS each stdin read is sent as one datagram and replies are printed until
    none has come for --timeout seconds.

    On a TLS ADDRESS (tls://, tls+unix:) the server is verified first (system CAs, ca=, or
    pin=); stdin's EOF sends close_notify and reading goes on.  The TLS parameters are
    listed below.

    Exit status: 0 when both directions ended (or --idle-timeout passed), 1 when the connection
    failed, was reset or was cut by SIGINT, SIGTERM or SIGHUP, or TLS refused the peer or was
    truncated (the line says why), 2 for bad input (TLS: an unknown or misplaced parameter, a
    missing or bad file).

    With --via the connection goes through proxies (SOCKS5 or HTTP CONNECT), each hop through
    the ones before it; a proxy that says no exits 1 with one line naming the hop and its reason.
    """
    from ..address import InetAddress, UnixAddress, parse
    from ..errors import AddressError
    from ._via import check_via_target, parse_via

    target = parse(address)
    if not isinstance(target, InetAddress | UnixAddress):
        raise AddressError(
            _(
                "{address}: connect needs a socket address (tcp://, udp://, unix:, unixgram:); "
                "e.g. tcp://127.0.0.1:9000"
            ).format(address=target)
        )
    hops = parse_via(via)
    check_via_target(target, hops)
    local = parse(source) if source is not None else None
    if local is not None:
        from ._source import check_source

        if not isinstance(local, InetAddress | UnixAddress):
            message = _("--source {address}: a source is a socket address, e.g. tcp://127.0.0.2:0")
            raise AddressError(message.format(address=local))
        check_source(local, hops[0].address if hops else target)
    options = _Options(
        via=hops,
        source=local,
        retry=retry,
        retry_delay=retry_delay,
        timeout=timeout,
        idle_timeout=idle_timeout or None,  # 0 means never
        crlf=crlf,
    )
    session = _Session(target, hex_=hex_, via=hops)
    settings.hint = lambda exc: _hint(exc, options, connected=session.connected)
    session.stop_on_signals()
    try:
        return session.run(options)
    except KeyboardInterrupt:
        session.interrupted()
        return 1


@dataclass(frozen=True)
class _Options:
    """How to connect and what to do with the bytes: the command's options, checked."""

    source: SocketAddress | None
    retry: int
    retry_delay: float
    #: Stream: seconds per connection attempt; datagram: seconds to wait for replies at the end.
    timeout: float | None
    #: ``None``: never (``--idle-timeout 0`` too).
    idle_timeout: float | None
    crlf: bool
    #: The proxies to go through, first hop first (none: connect directly).
    via: tuple[Hop, ...] = ()


class _Session:
    """One connection's life: open it, pump stdio, and say what happened on stderr."""

    def __init__(self, target: SocketAddress, *, hex_: bool, via: tuple[Hop, ...] = ()) -> None:
        from .._text import printable
        from ..stdio import StreamResult
        from ._via import shown

        self.target = target
        self.via = via
        self.shown = printable(str(target)) + shown(via)
        self.result = StreamResult()
        self.connected = False
        self.peer = self.shown
        self.dump = StreamDump() if hex_ else None
        self.signal_name = "SIGINT"

    def stop_on_signals(self) -> None:
        """SIGINT, SIGTERM and SIGHUP (the terminal went away) all cut the session; which one
        is remembered for the line that says so."""

        def handler(signum: int, frame: object) -> None:
            self.signal_name = signal.Signals(signum).name
            raise KeyboardInterrupt

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, handler)

    def run(self, options: _Options) -> int:
        from ..errors import NetworkError

        try:
            if self.target.is_stream:
                return self._stream(options)
            return self._datagram(options)
        except NetworkError as exc:
            raise _printable(exc) from None

    def _open(self, options: _Options, timeout: float | None) -> tuple[socket.socket, SocketFile | None]:
        from .. import _sockets

        if options.via:
            return self._open_via(options, timeout), None
        if options.source is None:
            return _sockets.open_connection(
                self.target, timeout=timeout, retries=options.retry, retry_delay=options.retry_delay
            )
        from ._source import open_from

        return open_from(
            self.target,
            options.source,
            timeout=timeout,
            retries=options.retry,
            retry_delay=options.retry_delay,
        )

    def _open_via(self, options: _Options, timeout: float | None) -> socket.socket:
        from .._via import open_via
        from ..address import InetAddress

        assert isinstance(self.target, InetAddress)
        return open_via(
            self.target,
            options.via,
            timeout=timeout,
            retries=options.retry,
            retry_delay=options.retry_delay,
            first_leg=_first_leg(options),
        )

    def _connected(self, local: SocketAddress | None, peer: SocketAddress | None) -> None:
        from .._text import printable

        self.connected = True
        if self.via:
            peer = None  # the socket's peer is the first proxy: the target is what was reached
        self.peer = printable(str(peer)) if peer is not None else self.shown
        # The JSON field keeps the English words (programs read it); the line is the user's.
        mine = printable(str(local)) if local is not None else "an unnamed socket"
        if local is not None:
            said = _("connected to {peer} from {local}").format(peer=self.peer, local=mine)
        else:
            said = _("connected to {peer} from an unnamed socket").format(peer=self.peer)
        event("connected", said, level=1, peer=self.peer, local=mine)

    def _stream(self, options: _Options) -> int:
        from .._tlsstream import client_setup
        from ..stdio import pump_stream
        from ._tls import handshake_done, open_tls, tls_peer

        idle_timeout = options.idle_timeout
        tls = client_setup(self.target)  # bad TLS settings or files: exit 2 before any socket
        attempt = options.timeout if options.timeout is not None else idle_timeout
        sock, owned = self._open(options, attempt)
        try:
            with open_tls(sock, tls, self.target, attempt) as conn:
                self._connected(conn.local_address, conn.peer_address if tls is None else tls_peer(conn))
                if tls is not None:
                    handshake_done(conn, self.peer, server=True)
                pump_stream(
                    conn,
                    idle_timeout=idle_timeout,
                    outgoing=CrlfWriter() if options.crlf else None,
                    on_data=self.dump,
                    result=self.result,
                )
        finally:
            if owned is not None:
                owned.release()
        self._closed(idle_timeout)
        return 0

    def _datagram(self, options: _Options) -> int:
        from ..address import from_sockaddr
        from ..stdio import pump_datagram
        from ..sync import DatagramSocket

        if self.via:
            return self._datagram_via(options)
        sock, owned = self._open(options, None)
        with DatagramSocket(sock, owned=owned, peer_address=self.target) as dgram:
            self._connected(dgram.local_address, from_sockaddr(sock.family, sock.type, sock.getpeername()))
            pump_datagram(
                dgram,
                DatagramPrinter(as_json=False, as_hex=False),
                linger=1.0 if options.timeout is None else options.timeout,
                on_truncated=warn_truncated,
                idle_timeout=options.idle_timeout,
                outgoing=crlf_datagram if options.crlf else None,
                on_data=self._count_datagram,
            )
        self._closed(None)
        return 0

    def _datagram_via(self, options: _Options) -> int:
        """Datagrams through a SOCKS5 UDP association: each stdin read goes to the proxy's relay
        with the target in its header; what the relay sends back is printed without it."""
        import contextlib

        from .._hop_socks5 import udp_unwrap, udp_wrap
        from .._via import open_udp_via
        from ..address import InetAddress
        from ..stdio import pump_datagram
        from ..sync import DatagramSocket

        target = self.target
        assert isinstance(target, InetAddress)
        udp, control = open_udp_via(
            target,
            self.via,
            timeout=options.timeout,
            retries=options.retry,
            retry_delay=options.retry_delay,
            first_leg=_first_leg(options),
        )
        printer = DatagramPrinter(as_json=False, as_hex=False)

        def outgoing(data: bytes) -> bytes:
            return udp_wrap(target.host, target.port, crlf_datagram(data) if options.crlf else data)

        def incoming(data: bytes, sender: object, /, via: object = None) -> None:
            unwrapped = udp_unwrap(data)
            if unwrapped is not None:  # else not a relay's datagram: dropped, as RFC 1928 says
                host, port, payload = unwrapped
                printer(payload, InetAddress("udp", host, port))

        def count(direction: str, data: bytes) -> None:
            unwrapped = udp_unwrap(data)
            if unwrapped is not None:
                self._count_datagram(direction, unwrapped[2])

        with contextlib.closing(control), DatagramSocket(udp, peer_address=target) as dgram:
            self._connected(dgram.local_address, None)
            pump_datagram(
                dgram,
                incoming,
                linger=1.0 if options.timeout is None else options.timeout,
                on_truncated=warn_truncated,
                idle_timeout=options.idle_timeout,
                outgoing=outgoing,
                on_data=count,
            )
        self._closed(None)
        return 0

    def _count_datagram(self, direction: str, data: bytes) -> None:
        if direction == "in":
            self.result.received += len(data)
        else:
            self.result.sent += len(data)
        if self.dump is not None:
            self.dump(direction, data)

    def _closed(self, idle_timeout: float | None) -> None:
        received, sent = self.result.received, self.result.sent
        idle = {"idle": True} if self.result.idle else {}
        if idle:
            said = _("closed {peer}: no traffic for {seconds} s, after {received} bytes in, {sent} out")
        else:
            said = _("closed {peer} after {received} bytes in, {sent} out")
        seconds = f"{idle_timeout:g}" if idle_timeout is not None else ""
        said = said.format(peer=self.peer, seconds=seconds, received=received, sent=sent)
        event("closed", said, level=1, peer=self.peer, received=received, sent=sent, **idle)

    def interrupted(self) -> None:
        if self.connected:
            message = _(
                "interrupted by {signal}: connection to {peer} cut after {received} bytes in, {sent} out"
            )
        else:
            message = _("interrupted by {signal} while connecting to {address}")
        said = message.format(
            signal=self.signal_name,
            peer=self.peer,
            address=self.shown,
            received=self.result.received,
            sent=self.result.sent,
        )
        # Said even with --quiet: the exit status alone would not tell a cut from a failure.
        sys.stderr.write(f"enchufe: {said}\n")
        sys.stderr.flush()


def _first_leg(options: _Options) -> FirstLeg | None:
    """How ``--via`` opens the connection to the first proxy: from ``--source`` when given."""
    source = options.source
    if source is None:
        return None
    from ._source import open_from

    def first_leg(address: InetAddress, seconds: float | None) -> socket.socket:
        return open_from(address, source, timeout=seconds, retries=0, retry_delay=0)[0]

    return first_leg


def _printable(exc: Exception) -> Exception:
    """The library's error with every character of its message printable."""
    from .._text import printable

    message = str(exc)
    if not message.isprintable():
        exc.args = (printable(message),)
    return exc


def _hint(exc: BaseException, options: _Options, *, connected: bool) -> str:
    """The flag that helps when connecting failed, as a sentence (the error boundary adds it to
    the line, see :func:`with_hint`); "" when none does."""
    from ..errors import ConnectionRefused, NetworkError, TimedOut

    if not isinstance(exc, NetworkError) or connected or exc.action not in ("connect", None):
        return ""
    if isinstance(exc, ConnectionRefused):
        if not options.retry:
            return _("--retry N waits for a server to start.")
        return _("Raise --retry or --retry-delay to wait longer.")
    if isinstance(exc, TimedOut):
        timeout, idle_timeout = options.timeout, options.idle_timeout
        flag = "--timeout" if timeout is not None or idle_timeout is None else "--idle-timeout"
        limit = timeout if timeout is not None else idle_timeout
        if not limit:
            return _("--timeout S sets the limit.")
        return _("Raise {option} (now {seconds} s).").format(option=flag, seconds=f"{limit:g}")
    return ""


class CrlfWriter:
    """Stdin's line ends as CRLF: a LF not already preceded by CR gets one (ncat -C).

    Remembers whether the previous chunk ended in CR, so a CRLF split across two reads stays one.
    """

    def __init__(self) -> None:
        self._after_cr = False

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return data
        parts = data.split(b"\n")
        out = bytearray(parts[0])
        for i in range(1, len(parts)):
            before = parts[i - 1]
            cr_before = before.endswith(b"\r") if before else (i == 1 and self._after_cr)
            out += b"\n" if cr_before else b"\r\n"
            out += parts[i]
        self._after_cr = data.endswith(b"\r")
        return bytes(out)


def crlf_datagram(data: bytes) -> bytes:
    """One datagram's line ends as CRLF (each datagram on its own: no state between them)."""
    return CrlfWriter()(data)
