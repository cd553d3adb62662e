"""enchufe check ADDRESS…: is anything listening at each address (like ``nc -z``)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from ..i18n import _
from ._common import complete_address, global_options, settings, stop_on_sigterm
from ._numbers import FiniteFloat
from ._via import via_option

EXAMPLES = """\b
Examples:
  enchufe check tcp://127.0.0.1:22 tcp://[::1]:5432 unix:///run/app.sock
  enchufe check --timeout 0.5 --json tcp://db.internal:postgresql udp://127.0.0.1:domain
  until enchufe -q check tcp://127.0.0.1:8080; do sleep 0.2; done   # wait for a server
  enchufe check --via socks5://127.0.0.1:1080 tcp://intranet.example:443   # as the proxy sees it
"""

#: Statuses that count as "answers" for the exit status.  A UDP port that refused nothing may
#: have a server behind it or may be dropping datagrams: nc -zuv counts it as success, and so
#: does check (it says "no reply" rather than "open").
_ANSWERS = frozenset({"open", "no reply"})

#: Checks at once: enough for a port list, few enough not to exhaust file descriptors.
_PARALLEL = 32


@dataclass
class Outcome:
    """What one address said: ``status`` is one word or two (``open``, ``refused``, ``timed
    out``, ``no socket file``, ``not a socket``, ``no reply``, ``error``); through proxies,
    ``proxy refused`` and ``proxy`` before any other failure that was a proxy's."""

    address: str
    status: str
    seconds: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in _ANSWERS


@click.command("check", epilog=EXAMPLES)
@click.argument("addresses", metavar="ADDRESS...", nargs=-1, required=True, shell_complete=complete_address)
@click.option(
    "--timeout",
    type=FiniteFloat(0, min_open=True),
    default=2.0,
    show_default=True,
    help="Seconds to wait for each address (UDP: for a refusal or a reply).",
)
@click.option("--json", "json_", is_flag=True, help="One JSON object per address on stdout.")
@via_option
@global_options
def command(addresses: tuple[str, ...], timeout: float, json_: bool, via: tuple[str, ...]) -> int:
    """Check whether something answers at every ADDRESS; one line each on stdout.

    \b
    tcp, unix:      connect, then close at once (the server sees a client that says nothing,
                    as with nc -z): open, refused, timed out, no socket file.
    unixgram:       connect() only looks the path up, nothing is sent: open when a socket is
                    bound there, refused for a stale socket file, no socket file.
    udp:            one empty datagram is sent; refused when the port answers ICMP unreachable,
                    open when a reply comes, else "no reply" (a server that ignores empty
                    datagrams, or a firewall that drops them: UDP cannot tell more).
    tls, tls+unix:  open only once the TLS handshake and the server's verification passed
                    ("TLS refused" and why otherwise).
    --via:          through the proxies: open once the last one opened its tunnel; "refused"
                    when the target refused it, "proxy refused" when a proxy said no (and why),
                    "proxy unreachable" when nothing listens at a proxy's address, "proxy …"
                    (timed out, unknown host) when it could not be reached otherwise.

    Exit status: 0 if every address is open (or, for UDP, did not refuse: as nc -zuv), 1 if any
    is not, 2 for bad input. All addresses are checked at once; with -q nothing is printed and
    the exit status alone answers.
    """
    from ..address import InetAddress, UnixAddress, parse
    from ..errors import AddressError
    from ._via import check_via_target, parse_via

    hops = parse_via(via)
    targets = []
    for text in addresses:
        target = parse(text)
        if not isinstance(target, InetAddress | UnixAddress):
            raise AddressError(
                _(
                    "{address}: check needs a socket address (tcp://, udp://, unix:, unixgram:); "
                    "e.g. tcp://127.0.0.1:22"
                ).format(address=target)
            )
        if isinstance(target, InetAddress) and (target.is_wildcard or target.port == 0):
            raise AddressError(
                _("{address}: check needs a host and a port to reach, e.g. {example}").format(
                    address=target, example=f"{target.scheme}://127.0.0.1:{target.port or 22}"
                )
            )
        check_via_target(target, hops, command="check")
        targets.append(target)
    setups = [_tls_setup(target) for target in targets]  # bad TLS settings: exit 2 before any check
    stop_on_sigterm()  # SIGTERM and SIGHUP end a check as Ctrl-C does: what was printed stands
    failed = False
    try:
        for outcome in _check_all(list(zip(targets, setups, strict=True)), timeout, hops):
            _report(outcome, json_)
            if not outcome.ok:
                failed = True
    except KeyboardInterrupt:
        sys.stderr.write(_("enchufe: check interrupted") + "\n")
        return 1
    return 1 if failed else 0


def _tls_setup(target: Any) -> Any:
    """The client side of a TLS target (its files read now), ``None`` for a plain one."""
    from .._tlsstream import client_setup

    return client_setup(target) if target.is_tls else None


def _check_all(
    targets: list[tuple[Any, Any]], timeout: float, hops: tuple[Any, ...] = ()
) -> Iterator[Outcome]:
    """Every target's outcome, in the order given, checked ``_PARALLEL`` at a time.

    Daemon threads, so that a stop signal ends the command at once instead of waiting for
    checks still blocked in connect().
    """
    slots = threading.BoundedSemaphore(_PARALLEL)
    outcomes: list[Outcome | None] = [None] * len(targets)
    done = [threading.Event() for _ in targets]

    def work(index: int) -> None:
        try:
            outcomes[index] = _check(*targets[index], timeout, hops)
        except Exception as exc:  # a bug must still give one line per address, not a hang
            outcomes[index] = Outcome(str(targets[index][0]), "error", 0.0, repr(exc))
        finally:
            slots.release()
            done[index].set()

    def start_all() -> None:
        for index in range(len(targets)):
            slots.acquire()
            threading.Thread(target=work, args=(index,), daemon=True).start()

    threading.Thread(target=start_all, daemon=True).start()
    for index, finished in enumerate(done):
        finished.wait()
        outcome = outcomes[index]
        assert outcome is not None
        yield outcome


def _report(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        record: dict[str, Any] = {
            "address": outcome.address,
            "status": outcome.status,
            "ok": outcome.ok,
            "seconds": round(outcome.seconds, 6),
        }
        if outcome.detail:
            record["detail"] = outcome.detail
        sys.stdout.write(json.dumps(record) + "\n")
    elif not settings.quiet:
        shown = outcome.detail and (
            settings.verbose
            or outcome.status in ("error", "TLS refused")
            or outcome.status.startswith("proxy ")
        )
        detail = f" ({outcome.detail})" if shown else ""
        sys.stdout.write(f"{outcome.address} {_said(outcome.status)}{detail}\n")
    sys.stdout.flush()


def _said(status: str) -> str:
    """A status as the text line says it, in the user's language (--json keeps the English
    words: programs read them)."""
    if status.startswith("proxy ") and status not in ("proxy refused", "proxy unreachable"):
        return _("proxy {status}").format(status=_said(status.removeprefix("proxy ")))
    said = {
        "open": _("open"),
        "refused": _("refused"),
        "timed out": _("timed out"),
        "no socket file": _("no socket file"),
        "not a socket": _("not a socket"),
        "no reply": _("no reply"),
        "error": _("error"),
        "TLS refused": _("TLS refused"),
        "proxy refused": _("proxy refused"),
        "proxy unreachable": _("proxy unreachable"),
        "unknown host": _("unknown host"),
        "wrong socket type": _("wrong socket type"),
    }
    return said.get(status, status)


def _check(target: Any, tls: Any, timeout: float, hops: tuple[Any, ...] = ()) -> Outcome:
    """Connect and close (a TLS target: once the handshake and the verification passed)."""
    from .. import _sockets
    from .._text import printable
    from ..errors import EnchufeError

    shown = printable(str(target))
    start = time.monotonic()
    try:
        if hops:
            from .._via import open_via

            sock = open_via(target, hops, timeout=timeout, retries=0, retry_delay=0)
        else:
            sock, _owned = _sockets.open_connection(
                target, timeout=timeout, retries=0, retry_delay=0, datagram_reply=False
            )
    except EnchufeError as exc:
        return Outcome(shown, _status(exc, via=bool(hops)), time.monotonic() - start, printable(str(exc)))
    if tls is not None:
        return _handshake(sock, tls, target, shown, start, timeout)
    try:
        status = _probe_udp(sock, timeout) if _is_udp(target) else "open"
    finally:
        sock.close()
    return Outcome(shown, status, time.monotonic() - start)


def _handshake(sock: Any, tls: Any, target: Any, shown: str, start: float, timeout: float) -> Outcome:
    """The TLS part of a check: open only once the server is verified (or pinned)."""
    from .._text import printable
    from ..errors import EnchufeError, TLSRefused
    from ._tls import open_tls

    try:
        # The check's --timeout bounds the handshake too (when shorter than handshake-timeout).
        with open_tls(sock, tls, target, timeout):
            pass
    except TLSRefused as exc:
        return Outcome(shown, "TLS refused", time.monotonic() - start, printable(str(exc)))
    except EnchufeError as exc:
        return Outcome(shown, _status(exc), time.monotonic() - start, printable(str(exc)))
    return Outcome(shown, "open", time.monotonic() - start)


def _is_udp(target: Any) -> bool:
    from ..address import InetAddress

    return isinstance(target, InetAddress) and not target.is_stream


def _probe_udp(sock: Any, timeout: float) -> str:
    """Send one empty datagram and listen for ICMP port unreachable (ECONNREFUSED) or a reply."""
    sock.settimeout(timeout)
    try:
        sock.send(b"")
        sock.recv(1)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "no reply"
    except OSError:
        return "error"
    return "open"


def _status(exc: Exception, *, via: bool = False) -> str:
    """The status word(s) of a failed check.  Through proxies (``via``), only the last hop's
    reply speaks for the target: any other failure was on the way to, or with, a proxy (one that
    is down, unknown, silent, or refused by the proxy before it in a chain), said as ``proxy …``
    so that it is never taken for the target's."""
    import errno

    from ..errors import ConnectionRefused, NameResolutionError, NotASocket, TimedOut
    from ..hops import HopRefused

    if isinstance(exc, HopRefused):
        about_target = exc.next_hop is None and exc.hop.scheme == "socks5"
        return "refused" if exc.code == 5 and about_target else "proxy refused"
    if via:
        if isinstance(exc, ConnectionRefused):
            return "proxy unreachable"  # nothing listens there: not a proxy that said no
        return f"proxy {_status(exc)}"
    if isinstance(exc, TimedOut):
        return "timed out"
    if isinstance(exc, NotASocket):
        return "not a socket"
    if isinstance(exc, ConnectionRefused):
        return "no socket file" if getattr(exc, "errno", None) == errno.ENOENT else "refused"
    if isinstance(exc, NameResolutionError):
        return "unknown host"
    if getattr(exc, "errno", None) == errno.EPROTOTYPE:
        return "wrong socket type"  # e.g. unixgram: at a stream socket's path
    return "error"
