"""The certificate a peer showed in a handshake that refused it, for the line that says why.

A name mismatch must list the names the certificate has, an expiry its date; yet Python 3.11's
``ssl`` gives nothing of a certificate that failed verification (3.13's
``get_unverified_chain`` does, and is used where it exists).  OpenSSL's message callback
(``SSLContext._msg_callback``: private in CPython, present since 3.8, used by its own tests)
sees every handshake message after decryption, the Certificate message among them: its first
certificate is kept for the connection while the handshake runs.

The callback costs two Python calls per record for as long as it is installed (decrypting
costs half as much again with it), so a connection whose handshake is done moves to a context
without one (:func:`quiet`).  Anything here missing (another Python, a private attribute gone)
only loses the detail: the refusal keeps its plainer line.
"""

from __future__ import annotations

import contextlib
import ssl
import weakref

__all__ = ["certificate", "leaf", "quiet", "restore", "watch"]

_HANDSHAKE = 22  # TLS ContentType
_CERTIFICATE = 11  # TLS HandshakeType
_HAS_CHAIN = hasattr(ssl.SSLObject, "get_unverified_chain")

#: The leaf certificate (DER) each watched connection was shown, until the connection goes.
_seen: weakref.WeakKeyDictionary[object, bytes] = weakref.WeakKeyDictionary()
#: The context a watched connection moves to once its handshake is done, by side (server or
#: client), made at first use.
_quiet: dict[bool, ssl.SSLContext] = {}


def watch(context: ssl.SSLContext) -> None:
    """Keep the certificate the peer shows to connections made from ``context`` (a client's,
    or a server's that asks for client certificates); nothing when this Python can tell
    without it, or cannot tell at all."""
    if _HAS_CHAIN:
        return
    with contextlib.suppress(AttributeError, TypeError, ValueError, NotImplementedError):
        context._msg_callback = _message  # type: ignore[attr-defined]


def _message(
    conn: object, direction: str, version: int, content_type: int, msg_type: int, data: bytes
) -> None:
    # An exception here would be raised by the handshake itself: nothing may escape.
    if direction != "read" or content_type != _HANDSHAKE or msg_type != _CERTIFICATE:
        return
    with contextlib.suppress(Exception):
        der = leaf(data, tls13=version == ssl.TLSVersion.TLSv1_3)
        if der:
            _seen[conn] = der


def leaf(message: bytes, *, tls13: bool) -> bytes | None:
    """The first certificate (DER) of a Certificate handshake message (its 4-byte header
    included); ``None`` when it holds none or does not parse.

    TLS 1.3 puts a request context (1-byte length) before the list and extensions after each
    entry; TLS 1.2 has the bare list.  Both lists and each certificate have 3-byte lengths."""
    at = 4
    if tls13:
        at += 1 + message[at]
    if at + 6 > len(message):
        return None
    size = int.from_bytes(message[at + 3 : at + 6], "big")
    at += 6
    der = message[at : at + size]
    return der if size and len(der) == size else None


def certificate(sslobj: ssl.SSLObject) -> bytes | None:
    """The leaf certificate the peer showed ``sslobj`` (DER), verified or not; ``None`` when
    it is not known."""
    if _HAS_CHAIN:
        with contextlib.suppress(Exception):
            chain = sslobj.get_unverified_chain()  # type: ignore[attr-defined]
            if chain:
                first = chain[0]
                return first if isinstance(first, bytes) else bytes(first.public_bytes(ssl.ENCODING_DER))  # type: ignore[attr-defined]
        return None
    return _seen.get(sslobj)


def quiet(sslobj: ssl.SSLObject, context: ssl.SSLContext) -> None:
    """Stop watching ``sslobj`` (made from ``context``), whose handshake is done: it moves to a
    bare context of its side, where no callback runs per record.

    Only what the handshake decided matters after it; OpenSSL's verification store and
    certificate are taken from the new context, so a TLS 1.2 renegotiation would fail against
    its empty store (watched client contexts refuse renegotiation; OpenSSL 3 servers refuse a
    client's by default).  :func:`restore` moves
    it back, for what must name ``context`` (its session)."""
    _seen.pop(sslobj, None)
    if _HAS_CHAIN or sslobj.context is not context:
        return
    if getattr(context, "_msg_callback", None) is None:
        return
    with contextlib.suppress(Exception):
        sslobj.context = _quiet_context(sslobj.server_side)


def _quiet_context(server_side: bool) -> ssl.SSLContext:
    quiet = _quiet.get(server_side)
    if quiet is None:
        quiet = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
        if not server_side:
            quiet.check_hostname = False
        quiet.verify_mode = ssl.CERT_NONE
        _quiet[server_side] = quiet
    return quiet


def restore(sslobj: ssl.SSLObject, context: ssl.SSLContext) -> None:
    """Move ``sslobj`` back to ``context``: a session taken from it then names ``context``, as
    the connection that resumes it must (the callback runs again: only at the end)."""
    if sslobj.context is not context:
        with contextlib.suppress(Exception):
            sslobj.context = context
