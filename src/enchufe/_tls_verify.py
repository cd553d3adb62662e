"""A server's own check of a client certificate inside the handshake (``allow-san``,
``allow-cn``), so that a client it does not allow is told by an alert (bad_certificate), as
one whose chain OpenSSL refuses is, and gets no session ticket.

Python's ``ssl`` has no verification callback; OpenSSL's ``SSL_CTX_set_verify`` takes one.
It is reached with ctypes: the ``SSL_CTX *`` is the first field of CPython's ``_ssl``
context object (a layout other C extensions rely on too; tested here on 3.11), and the
functions are those of the libssl that ``_ssl`` itself loaded.  Before the pointer is used,
OpenSSL's idea of it must agree with Python's (its options and verify mode).  Anything amiss
(another Python, an OpenSSL linked statically, no ``/proc``) leaves the context as it was: the
check after the handshake (:func:`._tls.check_client_certificate`) still refuses the client,
only without an alert.

The callback runs inside ``do_handshake()``, on the thread that called it, which then raises
:class:`ssl.SSLCertVerificationError` with :data:`REJECTED`; :func:`refusal` gives that
thread the refusal's own words.
"""

from __future__ import annotations

import contextlib
import ctypes
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

from .errors import TLSRefused
from .i18n import _

__all__ = ["REJECTED", "context_pointer", "hello_refusal", "install", "libraries", "refusal", "require_alpn"]

#: X509_V_ERR_CERT_REJECTED: OpenSSL answers it with a bad_certificate alert.
REJECTED = 28
_VERIFY_PEER_REQUIRED = 3  # SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT

#: Given a verified leaf certificate (DER): the refusal, or None when it is allowed.
Check = Callable[[bytes], TLSRefused | None]

_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_pending = threading.local()
_libraries: list[tuple[Any, Any] | None] = []


def install(context: ssl.SSLContext, check: Check) -> bool:
    """Have OpenSSL ask ``check`` about each client's leaf certificate once its chain is
    verified, on every connection made from ``context`` (which must already require client
    certificates); False when this Python or OpenSSL does not allow it."""
    found = libraries()
    if found is None or context.verify_mode != ssl.CERT_REQUIRED:
        return False
    libssl, libcrypto = found
    pointer = context_pointer(context, libssl)
    if pointer is None or libssl.SSL_CTX_get_verify_mode(pointer) != _VERIFY_PEER_REQUIRED:
        return False

    def verify(preverified: int, store: int | None) -> int:
        # An exception here would be printed by ctypes and taken as a refusal: none may escape,
        # and anything unforeseen lets the check after the handshake decide.
        try:
            if not preverified or libcrypto.X509_STORE_CTX_get_error_depth(store) != 0:
                return preverified
            certificate = libcrypto.X509_STORE_CTX_get_current_cert(store)
            size = libcrypto.i2d_X509(certificate, None)
            if not certificate or size <= 0:
                return 1
            der = ctypes.create_string_buffer(size)
            cursor = ctypes.c_char_p(ctypes.addressof(der))
            if libcrypto.i2d_X509(certificate, ctypes.byref(cursor)) != size:
                return 1
            refused = check(der.raw)
            if refused is None:
                return 1
            _pending.refusal = refused
            libcrypto.X509_STORE_CTX_set_error(store, REJECTED)
            return 0
        except Exception:
            return 1

    callback = _Callback(verify)
    libssl.SSL_CTX_set_verify(pointer, _VERIFY_PEER_REQUIRED, callback)
    # OpenSSL holds only the function's address: the context keeps the callback alive.
    context._enchufe_verify = callback  # type: ignore[attr-defined]
    return True


#: int (*)(SSL *, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
#: unsigned int inlen, void *arg): OpenSSL's ALPN selection callback.
_AlpnCallback = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_ubyte),
    ctypes.c_void_p,
    ctypes.c_uint,
    ctypes.c_void_p,
)
_ALPN_OK, _ALPN_ALERT_FATAL, _ALPN_NOACK = 0, 2, 3
_NPN_NEGOTIATED = 1


def require_alpn(context: ssl.SSLContext, protocols: tuple[str, ...]) -> bool:
    """Have a server context (its ``set_alpn_protocols`` done) end the handshake of a client
    that offers ALPN but none of ``protocols`` with the no_application_protocol alert, as RFC
    7301 asks; Python's own selection lets such a handshake finish with no protocol, and the
    client learns nothing but a closed connection.  The choice is Python's otherwise: the
    first of ``protocols`` the client offers.  A client that offers no ALPN at all gets the same
    alert at its ClientHello (OpenSSL's ClientHello callback).  False when it cannot be
    installed (the check after the handshake still refuses such clients, in silence)."""
    found = libraries()
    if found is None or not protocols:
        return False
    libssl, _libcrypto = found
    pointer = context_pointer(context, libssl)
    if pointer is None:
        return False
    wire = b"".join(bytes([len(p.encode())]) + p.encode() for p in protocols)
    ours = ctypes.create_string_buffer(wire, len(wire))

    def select(_ssl: int, out: Any, outlen: Any, offered: int, offered_len: int, _arg: int) -> int:
        try:
            found = libssl.SSL_select_next_proto(out, outlen, ours, len(wire), offered, offered_len)
            return _ALPN_OK if found == _NPN_NEGOTIATED else _ALPN_ALERT_FATAL
        except Exception:  # printed by ctypes otherwise: Python's way instead (no protocol)
            return _ALPN_NOACK

    def hello(ssl_: int, alert: Any, _arg: int) -> int:
        # A client that offers no ALPN at all: refused at its ClientHello with the same alert,
        # rather than let through a handshake that the check after it would end in silence.
        try:
            present = libssl.SSL_client_hello_get0_ext(ssl_, _ALPN_EXTENSION, None, None)
        except Exception:  # printed by ctypes otherwise: the check after the handshake instead
            return _HELLO_SUCCESS
        if present == 1:
            return _HELLO_SUCCESS
        alert[0] = _ALERT_NO_APPLICATION_PROTOCOL
        _pending.hello = TLSRefused(
            _("the client offers no ALPN protocol; this server accepts {protocols}").format(
                protocols=", ".join(protocols)
            ),
            "alpn",
        )
        return _HELLO_ERROR

    callback = _AlpnCallback(select)
    libssl.SSL_CTX_set_alpn_select_cb(pointer, callback, None)
    on_hello = _HelloCallback(hello)
    libssl.SSL_CTX_set_client_hello_cb(pointer, on_hello, None)
    # OpenSSL holds only addresses: the context keeps the callbacks and the list alive.
    context._enchufe_alpn = (callback, on_hello, ours)  # type: ignore[attr-defined]
    return True


#: int (*)(SSL *, int *alert, void *arg): OpenSSL's ClientHello callback.
_HelloCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
)
_HELLO_ERROR, _HELLO_SUCCESS = 0, 1
_ALPN_EXTENSION = 16  # TLSEXT_TYPE_application_layer_protocol_negotiation
_ALERT_NO_APPLICATION_PROTOCOL = 120


def refusal(verify_code: int) -> TLSRefused | None:
    """The refusal the check made in this thread's failed handshake (taken: asked once)."""
    refused: TLSRefused | None = getattr(_pending, "refusal", None)
    _pending.refusal = None
    return refused if verify_code == REJECTED else None


def hello_refusal() -> TLSRefused | None:
    """The refusal the ClientHello callback made in this thread's failed handshake (taken)."""
    refused: TLSRefused | None = getattr(_pending, "hello", None)
    _pending.hello = None
    return refused


def context_pointer(context: ssl.SSLContext, libssl: Any) -> int | None:
    """The ``SSL_CTX *`` of ``context``, or None unless OpenSSL's options for it are Python's."""
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or libssl.SSL_CTX_get_options(pointer) != int(context.options):
        return None
    return int(pointer)


def libraries() -> tuple[Any, Any] | None:
    """The libssl and libcrypto that ``_ssl`` uses (ctypes libraries, found once), or ``None``
    when they cannot be told for sure (see the module)."""
    if not _libraries:
        _libraries.append(_find())
    return _libraries[0]


def _find() -> tuple[Any, Any] | None:
    """The libssl and libcrypto ``_ssl`` uses, typed; None when they cannot be told for sure."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 15):
        return None
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            path = line.rsplit(" ", 1)[-1].strip()
            for name in ("libssl.so", "libcrypto.so"):
                if f"/{name}" in path:
                    paths.setdefault(name, path)
    if len(paths) != 2:
        return None
    try:
        libssl = ctypes.CDLL(paths["libssl.so"])
        libcrypto = ctypes.CDLL(paths["libcrypto.so"])
        libcrypto.OpenSSL_version_num.restype = ctypes.c_ulong
        if libcrypto.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
            return None
        _declare(libssl, libcrypto)
    except (OSError, AttributeError):
        return None
    return libssl, libcrypto


def _declare(libssl: Any, libcrypto: Any) -> None:
    pointer, integer = ctypes.c_void_p, ctypes.c_int
    libssl.SSL_CTX_get_options.argtypes = [pointer]
    libssl.SSL_CTX_get_options.restype = ctypes.c_uint64
    libssl.SSL_CTX_get_verify_mode.argtypes = [pointer]
    libssl.SSL_CTX_get_verify_mode.restype = integer
    libssl.SSL_CTX_set_verify.argtypes = [pointer, integer, _Callback]
    libssl.SSL_CTX_set_verify.restype = None
    libcrypto.X509_STORE_CTX_get_error_depth.argtypes = [pointer]
    libcrypto.X509_STORE_CTX_get_error_depth.restype = integer
    libcrypto.X509_STORE_CTX_get_current_cert.argtypes = [pointer]
    libcrypto.X509_STORE_CTX_get_current_cert.restype = pointer
    libcrypto.X509_STORE_CTX_set_error.argtypes = [pointer, integer]
    libcrypto.X509_STORE_CTX_set_error.restype = None
    libcrypto.i2d_X509.argtypes = [pointer, ctypes.POINTER(ctypes.c_char_p)]
    libcrypto.i2d_X509.restype = integer
    libssl.SSL_CTX_set_alpn_select_cb.argtypes = [pointer, _AlpnCallback, pointer]
    libssl.SSL_CTX_set_alpn_select_cb.restype = None
    libssl.SSL_select_next_proto.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_ubyte),
        ctypes.c_char_p,
        ctypes.c_uint,
        pointer,
        ctypes.c_uint,
    ]
    libssl.SSL_select_next_proto.restype = integer
    libssl.SSL_client_hello_get0_ext.argtypes = [pointer, ctypes.c_uint, pointer, pointer]
    libssl.SSL_client_hello_get0_ext.restype = integer
    libssl.SSL_CTX_set_client_hello_cb.argtypes = [pointer, _HelloCallback, pointer]
    libssl.SSL_CTX_set_client_hello_cb.restype = None
    libssl.SSL_CTX_set_ciphersuites.argtypes = [pointer, ctypes.c_char_p]
    libssl.SSL_CTX_set_ciphersuites.restype = integer
