"""The name of a unix address, as text: a path or an abstract name, and whether it fits.  Pure:
no file is looked at.

:mod:`enchufe.address` parses the whole address; this module splits what follows ``unix:``
and refuses (:class:`~enchufe.errors.AddressError`, naming the whole ``text``) what cannot be a
unix socket address.
"""

from __future__ import annotations

import os

from ._text import printable
from ._text import quoted as _q
from .errors import AddressError
from .i18n import _

#: sun_path holds 108 bytes; a path needs its terminating NUL and an abstract name its leading
#: NUL, so 107 bytes of name are what either form can use.
MAX_UNIX_NAME = 107


def split_unix(text: str, scheme: str, rest: str) -> tuple[bool, str]:
    """Whether ``rest`` (after ``unix:``) is an abstract name, and the name or path as written."""
    if rest.startswith("@"):
        if not rest[1:]:
            raise AddressError(
                _("{text}: empty abstract name; write {example}").format(
                    text=_q(text), example=f"{scheme}:@name"
                )
            )
        return True, rest[1:]
    if rest.startswith("//"):
        path = rest[2:]
        if not path.startswith("/"):
            raise AddressError(
                _(
                    "{text}: after {scheme}:// comes an absolute path (three slashes: {absolute}); "
                    "a relative path is written {relative}"
                ).format(
                    text=_q(text),
                    scheme=scheme,
                    absolute=f"{scheme}:///tmp/app.sock",
                    relative=f"{scheme}:{printable(path) or 'app.sock'}",
                )
            )
    else:
        path = rest
    if not path:
        raise AddressError(
            _("{text}: missing socket path; write {absolute}, {relative} or {abstract}").format(
                text=_q(text),
                absolute=f"{scheme}:///tmp/app.sock",
                relative=f"{scheme}:rel/app.sock",
                abstract=f"{scheme}:@name",
            )
        )
    return False, path


def check_length(text: str, scheme: str, name: str, *, abstract: bool) -> None:
    """Refuse a path or abstract name longer than :data:`MAX_UNIX_NAME` bytes, showing a shorter form."""
    size = len(name.encode("utf-8", "surrogateescape")) if abstract else len(os.fsencode(name))
    if size <= MAX_UNIX_NAME:
        return
    if abstract:
        message = _(
            "{text}: abstract name is {size} bytes, longer than the {limit} a unix socket address holds; "
            "use a shorter name, e.g. {abstract}"
        )
    else:
        message = _(
            "{text}: socket path is {size} bytes, longer than the {limit} a unix socket address holds; "
            "use a shorter path, e.g. {path}, or {abstract}"
        )
    raise AddressError(
        message.format(
            text=_q(text),
            size=size,
            limit=MAX_UNIX_NAME,
            path=f"{scheme}:///tmp/app.sock",
            abstract=f"{scheme}:@app",
        )
    )
