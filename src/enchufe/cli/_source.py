"""Connecting from a chosen local address: ``connect --source ADDR``, like ``nc -s``/``-p``.

The source is checked against the target before any socket exists (:func:`check_source`: same
domain, same type, no IPv4/IPv6 mismatch between literals), then every attempt of the retry plan
makes a new socket, binds it to the source and connects it.  A unix source path becomes a socket
file that this process owns and removes when the connection closes, so that the server sees a
named peer (``getpeername``) instead of an unnamed one.
"""

from __future__ import annotations

import socket
import time

from .. import _calls, _resolve, _unixfiles
from .._connect import ConnectPlan
from .._resolve import Target
from .._unixfiles import SocketFile
from ..address import InetAddress, SocketAddress, UnixAddress
from ..errors import AddressError, NameResolutionError, NetworkError, translate
from ..i18n import _


def check_source(source: SocketAddress, target: SocketAddress) -> None:
    """Refuse (:class:`AddressError`) a source that cannot be the local end of ``target``."""
    if isinstance(target, UnixAddress):
        if not isinstance(source, UnixAddress) or source.datagram != target.datagram:
            raise AddressError(
                _(
                    "--source {source}: connecting to {target} needs a {scheme}: source, e.g. --source "
                    "{scheme}:@client or --source {scheme}:///tmp/client.sock"
                ).format(source=source, target=target, scheme=target.scheme)
            )
        return
    assert isinstance(target, InetAddress)
    example = f"{target.transport}://{'[::1]' if target.family == 6 else '127.0.0.1'}:0"
    if not isinstance(source, InetAddress) or source.transport != target.transport:
        raise AddressError(
            _(
                "--source {source}: connecting to {target} needs a {transport}:// source (HOST:PORT, "
                "port 0 for any), e.g. --source {example}"
            ).format(source=source, target=target, transport=target.transport, example=example)
        )
    if source.family and target.family and source.family != target.family:
        raise AddressError(
            _(
                "--source {source}: an IPv{family} source cannot reach the IPv{target_family} address "
                "{target}; give an IPv{target_family} source, e.g. --source {example}"
            ).format(
                source=source,
                family=source.family,
                target_family=target.family,
                target=target,
                example=example,
            )
        )


def open_from(
    target: SocketAddress,
    source: SocketAddress,
    *,
    timeout: float | None,
    retries: int,
    retry_delay: float,
) -> tuple[socket.socket, SocketFile | None]:
    """A socket bound to ``source`` and connected to ``target``, retried as ``connect`` is.

    Returns the socket and, for a unix source path, the socket file to release on close.
    Failing to bind the source is not retried: it is :class:`AddressInUse` or
    :class:`PermissionDenied` … naming the source.
    """
    check_source(source, target)
    plan = ConnectPlan(target, retries=retries, retry_delay=retry_delay)
    sock_type = socket.SOCK_STREAM if target.is_stream else socket.SOCK_DGRAM
    for delay in plan:
        if delay:
            time.sleep(delay)
        for where in _targets(target, source):
            sock = _new(where.family, sock_type, target)
            owned = _bind(sock, source)
            try:
                sock.settimeout(timeout)
                _calls.connect(sock, where.sockaddr)
                sock.settimeout(None)
                return sock, owned
            except BaseException as exc:
                # Also on KeyboardInterrupt (a stop signal while connecting): the source's
                # socket file must not outlive the attempt.
                _calls.close(sock)
                if owned is not None:
                    owned.release()
                if not isinstance(exc, OSError):
                    raise
                plan.failed(exc, _unixfiles.explain_unix_failure(target, exc, f"connect to {target}"))
    raise plan.error()


def _targets(target: SocketAddress, source: SocketAddress) -> list[Target]:
    if isinstance(target, UnixAddress):
        return [Target(socket.AF_UNIX, target.sockaddr)]
    assert isinstance(source, InetAddress)
    found = _resolve.resolve(target, passive=False)
    if source.family:
        wanted = socket.AF_INET if source.family == 4 else socket.AF_INET6
        found = [t for t in found if t.family == wanted]
        if not found:
            raise NameResolutionError(
                _(
                    "cannot connect to {target} from {source}: the name has no IPv{family} address; "
                    "give a source of the other family, or none"
                ).format(target=target, source=source, family=source.family),
                action="connect",
            )
    return found


def _new(family: int, sock_type: int, target: SocketAddress) -> socket.socket:
    try:
        return _calls.new_socket(family, sock_type)
    except OSError as exc:
        raise translate(exc, f"connect to {target}") from exc


def _bind(sock: socket.socket, source: SocketAddress) -> SocketFile | None:
    """Bind ``sock`` to ``source``; on failure close it and raise a :class:`NetworkError`."""
    try:
        if isinstance(source, UnixAddress):
            return _unixfiles.bind_unix(sock, source, None)
        assert isinstance(source, InetAddress)
        if source.port:
            # A fixed source port is reused run after run: TIME_WAIT of the last run's
            # connection must not refuse it (nc -p does the same).
            _calls.setsockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, "SO_REUSEADDR")
        _calls.bind(sock, _local(sock.family, source))
        return None
    except OSError as exc:
        _calls.close(sock)
        raise translate(exc, f"bind the source address {source}") from exc
    except NetworkError:
        _calls.close(sock)
        raise


def _local(family: int, source: InetAddress) -> tuple[str, int] | tuple[str, int, int, int]:
    """The sockaddr for ``source`` in the family the target resolved to (pure for literals)."""
    if family == socket.AF_INET6:
        if not source.host:
            return ("::", source.port, 0, 0)
        infos = _resolve.resolve(source, passive=True)
        for target in infos:
            if target.family == socket.AF_INET6:
                sockaddr = target.sockaddr
                assert isinstance(sockaddr, tuple)
                return (sockaddr[0], sockaddr[1], sockaddr[2], sockaddr[3])
    else:
        if not source.host:
            return ("0.0.0.0", source.port)
        for target in _resolve.resolve(source, passive=True):
            if target.family == socket.AF_INET:
                sockaddr = target.sockaddr
                assert isinstance(sockaddr, tuple)
                return (sockaddr[0], sockaddr[1])
    raise NameResolutionError(
        _("the source address {source} has no IPv{family} address to reach the target from").format(
            source=source, family=6 if family == socket.AF_INET6 else 4
        ),
        action="bind",
    )
