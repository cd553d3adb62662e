"""The TLS settings of a relay's two ends, made from their files, and made again on a reload.

A TLS LISTEN has a server side (its certificate, key and ``client-ca``), a TLS TARGET a client
side (its ``ca``, and a client certificate and key).  :meth:`TLSEnds.reload` reads those files
again (SIGUSR1, ``--reload-interval``): the handshakes that start afterwards use the new
contexts, the connections under way keep theirs.  A file that is now missing or bad keeps the
old settings of both ends, and the error says which file and why.  A ``cert=auto`` certificate
is kept (nothing of it is on disk).

Resumption: the relay's server contexts issue :data:`TICKETS` TLS 1.3 session tickets per
handshake (the library's servers issue none), so that a returning client skips the certificate
and key exchange.  A ticket is sealed with keys of the context that issued it: a reload (new
contexts) ends the resumption of older sessions, which is what a changed ``client-ca`` needs,
and each of ``--workers`` resumes only the sessions it issued.

kTLS: :func:`ktls_status` says whether kernel TLS could carry the relay's TLS (``--stats``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .._text import printable
from .._tlsstream import TLSSetup, client_setup, server_setup
from ..address import Address, InetAddress, UnixAddress
from ..errors import EnchufeError
from ..i18n import _
from ..tlsparams import TLSParams

__all__ = ["TICKETS", "Reloaded", "TLSEnds", "file_stamp", "ktls_status"]

#: TLS 1.3 session tickets sent after each full handshake: OpenSSL's default, which stunnel and
#: nginx keep; two let a client open two connections at once, each resuming (a ticket is used once).
TICKETS = 2

#: The kernel's upper-layer protocols for TCP: ``tls`` when kernel TLS can be set on a socket.
ULP_FILE = "/proc/sys/net/ipv4/tcp_available_ulp"


@dataclass(frozen=True)
class Reloaded:
    """What one reload did: ``files`` read again (``cert=PATH`` …), or ``error`` (the old stay)."""

    files: tuple[str, ...]
    error: EnchufeError | None = None

    def report(self, why: str) -> tuple[str, dict[str, Any]]:
        """The "reload" event's line and fields; ``why`` is what asked (``SIGUSR1`` …)."""
        if self.error is not None:
            line = _("enchufe: {why}: TLS files not reloaded, the old ones stay: {error}").format(
                why=why, error=self.error
            )
            return line, {"reloaded": False, "error": str(self.error)}
        if not self.files:
            line = _("{why}: cert=auto keeps its certificate (nothing on disk)").format(why=why)
            return line, {"reloaded": False}
        shown = printable(" ".join(self.files))
        line = _("{why}: TLS files reloaded for the next handshakes: {files}").format(why=why, files=shown)
        return line, {"reloaded": True, "files": list(self.files)}


class TLSEnds:
    """The server side of a TLS LISTEN (``client``, it serves the clients) and the client side
    of a TLS TARGET (``target``); ``None`` for a plain end.  Files are read when made: an
    :class:`~enchufe.errors.AddressError` names a missing or bad one."""

    __slots__ = ("_listen", "_target", "client", "target")

    def __init__(self, listen: Address, target: Address) -> None:
        self._listen = listen if isinstance(listen, InetAddress | UnixAddress) and listen.is_tls else None
        self._target = target if isinstance(target, InetAddress | UnixAddress) and target.is_tls else None
        self.client: TLSSetup | None = _serving(self._listen) if self._listen is not None else None
        self.target: TLSSetup | None = client_setup(self._target) if self._target is not None else None

    def files(self) -> tuple[str, ...]:
        """The files a reload reads, as ``NAME=PATH`` (LISTEN's first)."""
        names: list[str] = []
        if self.client is not None and not self.client.params.cert_auto:
            names += _files(self.client.params, ("cert", "key", "client_ca"))
        if self.target is not None:
            names += _files(self.target.params, ("ca", "cert", "key"))
        return tuple(names)

    def stamps(self) -> tuple[object, ...]:
        """What changes when one of :meth:`files` is replaced or rewritten."""
        return tuple(file_stamp(name.split("=", 1)[1]) for name in self.files())

    def reload(self) -> Reloaded:
        """Read every file again; both ends change together, or neither does."""
        try:
            client = self.client
            if self._listen is not None and client is not None and not client.params.cert_auto:
                client = _serving(self._listen)
            target = client_setup(self._target) if self._target is not None else None
        except EnchufeError as exc:
            return Reloaded(self.files(), exc)
        self.client, self.target = client, target
        return Reloaded(self.files())


def _serving(listen: InetAddress | UnixAddress) -> TLSSetup | None:
    """The server side of a TLS LISTEN, with session tickets for resumption."""
    setup = server_setup(listen)
    if setup is not None:
        setup.context.num_tickets = TICKETS
    return setup


def ktls_status(ulp_file: str = ULP_FILE) -> str:
    """``available …`` or ``unavailable (why)``: the kernel must list the ``tls`` ULP, and this
    Python's ``ssl`` must be able to ask OpenSSL for it (``ssl.OP_ENABLE_KTLS``, Python 3.12+).

    Even then the relay does not use it: its TLS runs over memory BIOs (the handshake inside its
    own event engine), and OpenSSL hands the keys to the kernel only for a socket it owns."""
    try:
        with open(ulp_file, encoding="ascii", errors="replace") as file:
            ulps = file.read().split()
    except OSError as exc:
        return f"unavailable (cannot read {ulp_file}: {exc.strerror or exc})"
    if "tls" not in ulps:
        listed = printable(" ".join(ulps)) or "nothing"
        return f"unavailable (kernel has no tls ULP: {ulp_file} lists {listed})"
    import ssl

    if not hasattr(ssl, "OP_ENABLE_KTLS"):
        return "unavailable (the kernel has it; this Python's ssl has no OP_ENABLE_KTLS)"
    return "available, not used (the relay's TLS runs over memory BIOs; kTLS needs a socket OpenSSL owns)"


def _files(params: TLSParams, fields: tuple[str, ...]) -> list[str]:
    found = []
    for field in fields:
        path = getattr(params, field)
        if path is not None:
            found.append(f"{field.replace('_', '-')}={path}")
    return found


def file_stamp(path: str) -> tuple[int, int, int] | None:
    """What changes when the file at ``path`` is replaced or rewritten (``None``: it is not there)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
