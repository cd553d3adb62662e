"""The diagram's words in the current language: lifeline names, wait marks, TLS record kinds.

Each is a whole phrase, chosen by what it names (a translation may order its words as it likes);
the values (milliseconds, call names) are filled in by the caller.
"""

from __future__ import annotations

from ..i18n import _

__all__ = ["actor_name", "address", "blocked_mark", "role_name", "tls_record", "waited_mark"]


def role_name(role: str, number: int | None) -> str:
    """``server``, ``client 2``…, in the current language."""
    if role == "server":
        return _("server") if number is None else _("server {number}").format(number=number)
    return _("client") if number is None else _("client {number}").format(number=number)


def actor_name(actor: str) -> str:
    """An actor's name (the tour's ``server`` and ``client`` threads) in the current language."""
    return {"server": _("server"), "client": _("client")}.get(actor, actor)


def address(described: str) -> str:
    """A lifeline's address as shown: a unix socket with no name says so in words."""
    return _("(unnamed)") if described == "(unnamed)" else described


def blocked_mark(what: str) -> str:
    """The mark of a call that waited inside itself for ``what`` (``{ms}``, ``{call}`` to fill)."""
    return {
        "connect()": _("blocked {ms} ms in {call}() for the connect()"),
        "bytes": _("blocked {ms} ms in {call}() for the bytes"),
        "EOF": _("blocked {ms} ms in {call}() for the EOF"),
    }.get(what) or _("blocked {ms} ms in {call}() for the datagram")


def waited_mark(what: str) -> str:
    """The mark of a call whose process waited elsewhere for ``what`` (``{ms}`` to fill)."""
    return {
        "connect()": _("waited {ms} ms for the connect()"),
        "bytes": _("waited {ms} ms for the bytes"),
        "EOF": _("waited {ms} ms for the EOF"),
    }.get(what) or _("waited {ms} ms for the datagram")


def tls_record(content_type: str) -> str | None:
    """What a TLS record of this content type (its first byte, escaped) carries."""
    return {
        "\\x14": "TLS ChangeCipherSpec",
        "\\x15": _("TLS alert"),
        "\\x16": _("TLS handshake"),
        "\\x17": _("TLS data"),
    }.get(content_type)
