"""The diagram's words in the current language: lifeline names, wait marks, TLS record kinds.

Each is a whole phrase, chosen by what it names (a translation may order its words as it likes);
the values (milliseconds, call names) are filled in by the caller.
"""

from __future__ import annotations

from ..i18n import _

__all__ = ["actor_name", "address", "role_name", "tls_record", "wait_mark"]


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


def wait_mark(what: str, *, inside: bool) -> str:
    """The mark of a call that waited for ``what`` (``connect()``, ``bytes``, ``EOF`` or
    ``datagram``): inside itself (blocked: ``{ms}`` and ``{call}`` to fill) or elsewhere, as
    its process did (``{ms}`` to fill)."""
    blocked, waited = {
        "connect()": (
            _("blocked {ms} ms in {call}() for the connect()"),
            _("waited {ms} ms for the connect()"),
        ),
        "bytes": (_("blocked {ms} ms in {call}() for the bytes"), _("waited {ms} ms for the bytes")),
        "EOF": (_("blocked {ms} ms in {call}() for the EOF"), _("waited {ms} ms for the EOF")),
        "datagram": (_("blocked {ms} ms in {call}() for the datagram"), _("waited {ms} ms for the datagram")),
    }[what]
    return blocked if inside else waited


def tls_record(content_type: str) -> str | None:
    """What a TLS record of this content type (its first byte, escaped) carries."""
    return {
        "\\x14": "TLS ChangeCipherSpec",
        "\\x15": _("TLS alert"),
        "\\x16": _("TLS handshake"),
        "\\x17": _("TLS data"),
    }.get(content_type)
