"""enchufe send ADDRESS [DATA]: one datagram, or one stream write, then close."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from ..i18n import _
from ._common import event, given, global_options, retry_options, settings, stop_on_sigterm
from ._numbers import FiniteFloat
from ._tls import help_text as tls_help
from ._via import via_option

if TYPE_CHECKING:
    from ..address import Address
    from ..hops import Hop

#: How long to wait for a reply, or for the peer to close after our EOF, unless --timeout says.
DEFAULT_TIMEOUT = 5.0


@click.command("send", epilog=tls_help())
@click.argument("address")
@click.argument("data", required=False)
@click.option("--wait-reply", is_flag=True, help="Print the answer (stream: all until the peer closes).")
@click.option(
    "--timeout",
    type=FiniteFloat(0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the connection and the reply (datagram: only with --wait-reply).",
)
@retry_options("Attempts after the first.")
@via_option
@global_options
def command(
    address: str,
    data: str | None,
    wait_reply: bool,
    timeout: float,
    retry: int,
    retry_delay: float,
    via: tuple[str, ...],
) -> int:
    """Send DATA (or all of stdin) to ADDRESS and close.

    On a stream the write side is shut down after the data; with --wait-reply everything the
    peer sends until it closes is printed.  On a datagram socket DATA goes as one datagram;
    with --wait-reply the first datagram that comes back is printed.

    \b
    Examples:
      # one line to an echo server, and its answer
      enchufe send tcp://127.0.0.1:7000 'hello' --wait-reply
      # an HTTP request from stdin; prints the whole response
      printf 'GET / HTTP/1.0\\r\\n\\r\\n' | enchufe send tcp://example.com:80 --wait-reply
      # one datagram to a daemon's socket, retried while it starts
      enchufe send unixgram:/run/app.sock 'reload' --retry 5
    """
    from .. import parse
    from ..errors import UsageError
    from ._via import check_via_target, parse_via

    target = parse(address)
    hops = parse_via(via)
    check_via_target(target, hops, command="send")
    if not target.is_stream and not wait_reply and given("timeout"):
        raise UsageError(
            _(
                "--timeout is how long to wait for a reply; sending a datagram to {address} waits for "
                "nothing (add --wait-reply)"
            ).format(address=target)
        )
    settings.hint = _hint
    # SIGTERM and SIGHUP (the terminal gone) stop as Ctrl-C does: sockets closed, exit status 1.
    stop_on_sigterm()
    # os.fsencode gives back the bytes of the command line even when they are not UTF-8.
    try:
        payload = os.fsencode(data) if data is not None else sys.stdin.buffer.read()
        return _send(target, payload, wait_reply, timeout, retry, retry_delay, hops)
    except KeyboardInterrupt:
        event("close", _("interrupted: {address} cut").format(address=target), cut=True)
        return 1


def _hint(exc: BaseException) -> str:
    """The flag that helps when connecting failed, as a sentence (the error boundary adds it to
    the line, see :func:`with_hint`); "" when none does."""
    from ..errors import ConnectionRefused, NetworkError, TimedOut

    if not isinstance(exc, NetworkError) or exc.action != "connect":
        return ""
    if isinstance(exc, ConnectionRefused) and len(exc.attempts) <= 1:
        return _("--retry N tries again, e.g. while the server starts.")
    if isinstance(exc, TimedOut) and "--timeout" not in str(exc):
        return _("Raise --timeout to wait longer.")
    return ""


def _send(
    target: Address,
    payload: bytes,
    wait_reply: bool,
    timeout: float,
    retry: int,
    retry_delay: float,
    hops: tuple[Hop, ...],
) -> int:
    from .. import TimedOut, connect, connect_datagram
    from .._waits import drain_until_eof, recv_within
    from ._via import shown

    out = sys.stdout.buffer
    if not target.is_stream:
        opened = connect_datagram(
            target, retries=retry, retry_delay=retry_delay, via=hops, timeout=timeout if hops else None
        )
        with opened as sock:
            sock.send(payload)
            peer = f"{target}{shown(hops)}"
            said = _("sent {size} bytes to {peer}").format(size=len(payload), peer=peer)
            event("sent", said, level=1, peer=peer, size=len(payload))
            if wait_reply:
                try:
                    reply = recv_within(sock, timeout)
                except TimedOut:
                    raise TimedOut(
                        _(
                            "no reply from {address} within {seconds} s; is a server answering there? "
                            "(raise --timeout to wait longer)"
                        ).format(address=target, seconds=f"{timeout:g}")
                    ) from None
                said = _("received {size} bytes from {peer}").format(size=len(reply), peer=target)
                event("datagram", said, level=1, peer=str(target), size=len(reply))
                out.write(reply)
                out.flush()
        return 0
    tls = getattr(target, "tls", None)
    if tls is not None and tls.insecure:
        from ._tls import warn_insecure

        warn_insecure(target)
    with connect(target, timeout=timeout, retries=retry, retry_delay=retry_delay, via=hops) as conn:
        peer = f"{target}{shown(hops)}" if hops else str(conn.peer_address or target)
        event("connect", _("connected to {peer}").format(peer=peer), level=1, peer=peer)
        conn.send_all(payload)
        conn.shutdown_write()
        # Wait for the peer's EOF before closing: closing with unread data would reset the
        # connection, and a reset can destroy what the peer has not read yet.
        received = 0

        def sink(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)
            out.write(chunk)

        # Without --wait-reply what comes back is not wanted: read and dropped, a reset forgiven.
        finished = drain_until_eof(conn, timeout, sink if wait_reply else None)
        out.flush()
        if wait_reply and not finished:
            raise TimedOut(
                _(
                    "{address} did not close within {seconds} s after our data; raise --timeout to wait "
                    "longer"
                ).format(address=target, seconds=f"{timeout:g}")
            )
        if wait_reply:
            said = _("closed {peer} after {received} bytes in, {sent} out")
        else:
            said = _("closed {peer} after {sent} out")
        said = said.format(peer=peer, received=received, sent=len(payload))
        event("close", said, level=1, peer=peer, received=received, sent=len(payload))
    return 0
