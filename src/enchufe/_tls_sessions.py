"""A client's TLS session, taken from one connection and given to the next through OpenSSL itself.

Python 3.11's ``SSLObject.session`` copies the session both ways: the getter and the setter
each write it out and read it back (``i2d``/``d2i_SSL_SESSION``, a workaround for an OpenSSL
1.1.0 bug), and reading it back parses the server's certificate again.  Measured here (AMD EPYC
VM, OpenSSL 3.0): 317 µs for the getter alone, so that a resumed connection of the sync client
cost as much CPU as a full handshake (2.1-2.2 ms each).  OpenSSL's own calls share the session
instead (a reference count): :func:`of` and :func:`offer` make them with ctypes, on the ``SSL *``
of CPython's ``_ssl`` socket object (its second field; checked against the context OpenSSL
says it belongs to before use), with the libssl ``_ssl`` loaded (see
:mod:`enchufe._tls_verify`).  Where any of that cannot be told for sure, :func:`of` and
:func:`offer` use Python's property, as before.  ``benchmarks/tls_client_cpu.py --resume``
after the change: 1,190-1,451 µs of client CPU per resumed connection, against 2,363-2,439
before (benchmarks/RESULTS.md, session 10).
"""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import ssl
import weakref
from typing import Any

from . import _tls_seen, _tls_verify

__all__ = ["Session", "of", "offer", "ssl_pointer"]


class Session:
    """One reference to an OpenSSL ``SSL_SESSION`` a client may resume, released when this
    object goes.  Immutable once made (OpenSSL does not change a session it shares)."""

    __slots__ = ("__weakref__", "pointer")

    def __init__(self, pointer: int, free: Any) -> None:
        self.pointer = pointer
        weakref.finalize(self, free, pointer)


def of(sslobj: ssl.SSLObject, context: ssl.SSLContext) -> ssl.SSLSession | Session | None:
    """The session of a client connection made from ``context`` whose handshake is done, for a
    later one to resume: OpenSSL's own (:func:`_take`) where it can be reached, else Python's
    (after which the connection is back on ``context``, which the session must name); ``None``
    when it cannot be resumed (a TLS 1.3 server sent no ticket, or it came after what was read)."""
    libssl, pointer = _ssl_pointer(sslobj)
    if pointer is not None:
        return _take(libssl, pointer)
    _tls_seen.restore(sslobj, context)
    session = sslobj.session
    if session is None or (sslobj.version() == "TLSv1.3" and not session.has_ticket):
        return None
    return session


def offer(sslobj: ssl.SSLObject, session: ssl.SSLSession | Session) -> None:
    """Offer ``session`` (from :func:`of`) in the handshake ``sslobj`` is about to make; one
    that cannot be set (of another context) leaves a full handshake to be made."""
    if isinstance(session, Session):
        libssl, pointer = _ssl_pointer(sslobj)
        if pointer is not None:
            libssl.SSL_set_session(pointer, session.pointer)  # refused: a full handshake
    else:
        with contextlib.suppress(ValueError):
            sslobj.session = session


def _take(libssl: Any, pointer: int) -> Session | None:
    """The session of the connection ``pointer`` (an ``SSL *``), if it can be resumed (a TLS 1.3
    server sent a ticket that was read)."""
    session = libssl.SSL_get1_session(pointer)
    if not session:
        return None
    if not libssl.SSL_SESSION_is_resumable(session):
        libssl.SSL_SESSION_free(session)
        return None
    return Session(session, libssl.SSL_SESSION_free)


def ssl_pointer(sslobj: ssl.SSLObject) -> int | None:
    """The ``SSL *`` of ``sslobj`` (see :func:`_ssl_pointer`), or ``None`` when it cannot be
    reached (then ``sslobj.session`` is the way to its session)."""
    return _ssl_pointer(sslobj)[1]


def _ssl_pointer(sslobj: ssl.SSLObject) -> tuple[Any, int | None]:
    """The ``SSL *`` of ``sslobj``, once OpenSSL agrees that it belongs to the context Python
    says it has; ``None`` otherwise."""
    libssl = _library()
    core = getattr(sslobj, "_sslobj", None)
    if libssl is None or type(core) is not _SSL_SOCKET:  # the layout below is that type's
        return libssl, None
    # CPython's PySSLSocket: PyObject_HEAD, then the socket's weakref, then the SSL *.
    pointer = ctypes.c_void_p.from_address(id(core) + _SSL_FIELD).value
    context = ctypes.c_void_p.from_address(id(sslobj.context) + object.__basicsize__).value
    if not pointer or not context or libssl.SSL_get_SSL_CTX(pointer) != context:
        return libssl, None
    return libssl, pointer


_SSL_FIELD = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)
_SSL_SOCKET: Any = getattr(_ssl, "_SSLSocket", None)
_declared: list[Any] = []


def _library() -> Any:
    if not _declared:
        libraries = _tls_verify.libraries()
        # From 1.1.1 on, OpenSSL never changes a session it may share (a new ticket makes a
        # new session): before, sharing one was the bug Python's copy works around.
        if libraries is not None and ssl.OPENSSL_VERSION_INFO >= (1, 1, 1):
            libssl = libraries[0]
            pointer = ctypes.c_void_p
            try:
                for name, argtypes, restype in (
                    ("SSL_get1_session", [pointer], pointer),
                    ("SSL_set_session", [pointer, pointer], ctypes.c_int),
                    ("SSL_SESSION_free", [pointer], None),
                    ("SSL_SESSION_is_resumable", [pointer], ctypes.c_int),
                    ("SSL_get_SSL_CTX", [pointer], pointer),
                ):
                    function = getattr(libssl, name)
                    function.argtypes, function.restype = argtypes, restype
            except AttributeError:
                libssl = None
        else:
            libssl = None
        _declared.append(libssl)
    return _declared[0]
