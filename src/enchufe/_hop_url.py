"""A proxy URL's parts (``socks5://[USER:PASS@]HOST:PORT``, ``http://…``), checked, and the
URL as it may be shown (its password masked): what :func:`enchufe.hops.parse_hop` is made of.
Pure: no DNS, no socket."""

from __future__ import annotations

from ._inet_text import check_host_name, is_ipv6, literal_family, parse_port
from ._text import printable
from .errors import AddressError
from .i18n import N_, _

__all__ = ["ACCEPTED", "EXAMPLE", "MAX_FIELD", "SCHEMES", "credentials", "host_port", "masked"]

#: The schemes accepted, and what each is called in messages.  ``socks5h`` (curl's name for
#: "the proxy resolves names") is an alias: enchufe's SOCKS5 always lets the proxy resolve.
SCHEMES = {"socks5": "socks5", "socks5h": "socks5", "http": "http"}
ACCEPTED = N_("socks5://[USER:PASS@]HOST:PORT or http://[USER:PASS@]HOST:PORT")
EXAMPLE = N_("e.g. socks5://127.0.0.1:1080")
#: RFC 1929 gives the username and the password one length byte each; so does RFC 1928 a name.
MAX_FIELD = 255


def masked(text: str) -> str:
    """``text`` printable, any userinfo's password replaced by ``***``."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if sep and at:
        user, colon, _password = userinfo.partition(":")
        text = f"{scheme}://{user}{':***' if colon else ''}@{hostport}"
    return printable(text)


def credentials(text: str, scheme: str, userinfo: str) -> tuple[str, str]:
    """``USER:PASS`` of ``text`` (the whole URL, shown masked in errors), percent-decoded and
    checked for ``scheme``: (username, password); AddressError when they cannot be used."""
    from urllib.parse import unquote

    raw_user, _colon, raw_password = userinfo.partition(":")
    try:
        username = unquote(raw_user, errors="strict")
        password = unquote(raw_password, errors="strict")
    except UnicodeDecodeError:
        raise AddressError(
            _(
                "{url}: the username or password is not UTF-8 once percent-decoded; "
                "write them as USER:PASS@, special characters as %XX"
            ).format(url=masked(text))
        ) from None
    if not username:
        raise AddressError(
            _("{url}: empty username before '@'; write {scheme}://USER:PASS@HOST:PORT").format(
                url=masked(text), scheme=scheme
            )
        )
    if scheme == "socks5":
        for template, value in (
            (
                N_(
                    "{url}: a SOCKS5 username is 1 to {most} bytes (RFC 1929), not {size}; "
                    "write socks5://USER:PASS@HOST:PORT"
                ),
                username,
            ),
            (
                N_(
                    "{url}: a SOCKS5 password is 1 to {most} bytes (RFC 1929), not {size}; "
                    "write socks5://USER:PASS@HOST:PORT"
                ),
                password,
            ),
        ):
            size = len(value.encode())
            if not 1 <= size <= MAX_FIELD:
                raise AddressError(_(template).format(url=masked(text), most=MAX_FIELD, size=size))
    elif ":" in username:
        raise AddressError(
            _("{url}: an HTTP username cannot hold ':' (Basic credentials)").format(url=masked(text))
        )
    return username, password


def host_port(text: str, scheme: str, hostport: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) of ``text``: (host, port); AddressError naming what is wrong,
    with an example for ``scheme``."""
    example = f"{scheme}://127.0.0.1:{1080 if scheme == 'socks5' else 3128}"
    shown = masked(text)
    if any(ch in hostport for ch in "/?#@"):
        raise AddressError(
            _("{url}: nothing may follow the port; write it as {example}").format(url=shown, example=example)
        )
    if hostport.startswith("["):
        host, close, after = hostport[1:].partition("]")
        if not close or not is_ipv6(host) or "%" in host:
            raise AddressError(
                _("{url}: bad IPv6 address in brackets, e.g. {scheme}://[::1]:1080").format(
                    url=shown, scheme=scheme
                )
            )
        if not after.startswith(":"):
            raise AddressError(
                _("{url}: missing port; write it as {example}").format(
                    url=shown, example=f"{scheme}://[{printable(host)}]:1080"
                )
            )
        port_text = after[1:]
    else:
        host, colon, port_text = hostport.rpartition(":")
        if not colon:
            raise AddressError(
                _("{url}: missing port; write it as {accepted}, e.g. {example}").format(
                    url=shown, accepted=_(ACCEPTED), example=example
                )
            )
        if ":" in host:
            raise AddressError(
                _("{url}: an IPv6 address must be in brackets, e.g. {scheme}://[::1]:1080").format(
                    url=shown, scheme=scheme
                )
            )
        if not host:
            raise AddressError(
                _("{url}: missing proxy host; write it as {example}").format(url=shown, example=example)
            )
        if literal_family(host) is None:
            check_host_name(shown, scheme, host, port_text, example)
    port = parse_port(shown, port_text, example, "tcp")
    if port == 0:
        raise AddressError(
            _("{url}: port 0 is no proxy's port; write it as {example}").format(url=shown, example=example)
        )
    return host, port
