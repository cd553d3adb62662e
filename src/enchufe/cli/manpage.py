"""``enchufe --man`` and ``enchufe --completion SHELL``: the manual page and completion scripts.

The man page is generated from the same click commands that ``--help`` shows, so the two
never drift apart.  Loaded only for --man and --completion (the options themselves are in
:mod:`enchufe.cli`, address completion in :mod:`._common`): a command never compiles it.
"""

from __future__ import annotations

import click


def completion_script(cli: click.Command, shell: str) -> str:
    """The script click's completion protocol gives for ``shell``: the same text as
    ``_ENCHUFE_COMPLETE={shell}_source enchufe`` prints."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # the option's Choice allows only shells click knows
    source: str = cls(cli, {}, "enchufe", "_ENCHUFE_COMPLETE").source()
    return source if source.endswith("\n") else source + "\n"


# ---------------------------------------------------------------------------- the man page

#: (form, kind, notes): the address table, as the SPEC and the parser define it.
ADDRESS_FORMS = [
    ("tcp://HOST:PORT", "stream, IPv4 or IPv6", "family from HOST (literal, or resolved at open time)"),
    ("tcp4://HOST:PORT, tcp6://[HOST]:PORT", "stream, forced family", ""),
    ("udp://HOST:PORT, udp4://..., udp6://...", "datagram", ""),
    ("unix:///abs/path.sock, unix:rel/path.sock", "AF_UNIX stream, file", "path at most 107 bytes"),
    ("unix:@name", "AF_UNIX stream, abstract", "Linux abstract namespace, at most 107 bytes"),
    ("unixgram:///abs/path, unixgram:rel/path, unixgram:@name", "AF_UNIX datagram", ""),
    ("- or stdio:", "standard input and output", "where a data endpoint is accepted (relay)"),
    ("exec:PROGRAM ARGS...", "a child's stdin and stdout", "split like a shell, run without one"),
    ("tls://HOST:PORT, tls4://..., tls6://[HOST]:PORT", "TLS over TCP", "settings as ?query (see TLS)"),
    ("tls+unix:///path, tls+unix:rel/path, tls+unix:@name", "TLS over a unix stream socket", "see TLS"),
]

TLS_NOTES = [
    "TLS settings are query parameters of the address, the same in every command and in the "
    "library (quote the address in a shell): 'tls://db.example:5432?ca=ca.pem&alpn=h2'.  Files "
    "are PEM; a value with odd characters is percent-encoded (ca=/srv/odd%26name.pem).  TLS 1.2 "
    "is the minimum.  udp and unixgram take no TLS parameters (there is no DTLS): exit status 2.",
    "Verification is on by default: a client checks the server's chain against the system store "
    "(SSL_CERT_FILE/SSL_CERT_DIR honoured) or ca=, and its name against sni= or HOST.",
    "cert=auto: the listening line ends with 'pin sha256:HEX' (--json: a pin field); a client "
    "that gives it as pin=sha256:HEX trusts exactly that key, with no file on either side.",
    "EOF: stdin's EOF sends close_notify and reading goes on (a server may answer after it); the "
    "peer's close_notify is EOF; a connection that ends without one is 'truncated' (exit 1).",
    "Each refusal is one line, exit status 1: an untrusted or self-signed server (add ca= or "
    "pin=), a name mismatch, an expired certificate, a client certificate missing or refused, no "
    "common version or ALPN, a peer that does not speak TLS (and what it sent).  An unknown or "
    "misplaced parameter (client-ca on connect, pin on listen), a missing or non-PEM file, or a "
    "key that does not match its certificate is bad input: exit status 2.",
    "listen --exec children of a TLS listener also get ENCHUFE_TLS_VERSION, ENCHUFE_TLS_CIPHER, "
    "ENCHUFE_TLS_ALPN and, with a client certificate, ENCHUFE_TLS_PEER_CN, ENCHUFE_TLS_PEER_SAN "
    "(TYPE:VALUE,...) and ENCHUFE_TLS_PEER_PIN.  -v says each client's version, cipher and "
    "certificate subject; --trace narrates the handshake.",
]

ADDRESS_NOTES = [
    "IPv6 literals are bracketed: tcp://[::1]:9000.  HOST may be empty when listening: "
    "tcp://:9000 is every interface, IPv6 and IPv4 alike; an explicit [::] is IPv6 only.  "
    'Port 0 means "pick a free port".',
    "A port may be a service name, for the address's transport: tcp://example.com:http, "
    "udp://127.0.0.1:domain.  enchufe knows the common names of /etc/services (listed below) "
    "without reading any file; the canonical form shows the number.",
    "Only dotted quads are IPv4 addresses: inet_aton's shorthand (1.2.3 for 1.2.0.3, "
    "2130706433 for 127.0.0.1, octal and hexadecimal parts) is refused.",
    "Bad input (unknown scheme, missing or out-of-range port, unbracketed IPv6, path too long, "
    "empty host for a client, NUL bytes) is refused before any socket is made, with one line "
    "naming the problem and showing an accepted form, and exit status 2.",
]

ENVIRONMENT = [
    (
        "LANGUAGE, LC_ALL, LC_MESSAGES, LANG",
        "the language of messages, as gettext reads them: es_* "
        "is Spanish, anything else English (--lang es|en decides instead).",
    ),
    (
        "ENCHUFE_PURE_PYTHON",
        "set (to anything): the relay runs its pure-Python path even where the "
        "compiled one (enchufe._speedups, built at install when a C compiler and Python's headers are "
        "present) is installed, and TLS connections read their records one Python call each "
        "(not with enchufe._tls_records); the same work, more slowly.  For comparison, or to "
        "rule it out.",
    ),
    (
        "ENCHUFE_SPIN_US",
        "the longest time in microseconds (0 to 10000, default 100) the compiled relay keeps "
        "looking for the next message, without sleeping, after passing messages on: ping-pong "
        "latency for a little CPU while traffic flows.  The look adapts: it shrinks to none while "
        "answers come later than that, and grows again when they come sooner.  0 never looks "
        "without sleeping.  Another value: the default.",
    ),
]

EXIT_STATUS = [
    ("0", "done: both directions ended, every checked address answered, a server was stopped "
     "with nothing in flight cut."),
    ("1", "a runtime failure (refused, reset, timed out, address in use, a connection cut by a "
     "signal; TLS: a refused handshake, a peer that is not TLS, a truncated connection), with a "
     "line saying what happened and what to try."),
    ("2", "bad usage or bad input: a line naming the problem, never a traceback."),
]  # fmt: skip

SIGNALS = [
    ("SIGINT, SIGTERM", "servers stop accepting and drain open connections (--drain-timeout); a "
     "second signal cuts them.  connect cuts its connection and says so, check stops at once "
     "(exit status 1 for both)."),
    ("SIGHUP", "the terminal went away: the same clean stop as SIGTERM; socket files are "
     "removed and exec: children ended and reaped; connect and check stop as for SIGTERM."),
    ("SIGUSR1", "a TLS server or relay reloads its certificates, keys and CAs."),
]  # fmt: skip

EXAMPLES = [
    ("enchufe listen tcp://:9000", "wait for one client on port 9000, pipe it to stdio"),
    ("enchufe connect tcp://127.0.0.1:9000 < request", "send a file, print the answer"),
    ("enchufe echo unix:@echo & enchufe connect unix:@echo", "an echo server on an abstract socket"),
    ("enchufe relay tcp://:8080 unix:///run/app.sock", "expose a unix socket on TCP"),
    ("enchufe check tcp://127.0.0.1:22 udp://127.0.0.1:domain", "is anything listening?"),
    ("enchufe listen 'tls://:9443?cert=auto'", "TLS with a throwaway certificate; prints its pin"),
    ("enchufe connect 'tls://host:9443?pin=sha256:HEX'", "trust exactly that server, no files"),
    ("enchufe --man | man -l -", "read this page"),
    ('eval "$(enchufe --completion bash)"', "complete commands and options in bash"),
]


def render(cli: click.Command) -> str:
    """The roff source of enchufe(1), from the click commands themselves."""
    from importlib.metadata import PackageNotFoundError, version

    from ..address import SERVICES

    try:
        release = version("enchufe")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        release = "unknown"
    ctx = click.Context(cli, info_name="enchufe")
    assert isinstance(cli, click.Group)
    out = [
        f'.TH ENCHUFE 1 "" "enchufe {_text(release)}" "User Commands"',
        ".SH NAME",
        "enchufe \\- " + _text(_first_line(cli.help or "")),
        ".SH SYNOPSIS",
        ".B enchufe",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".br",
        ".B enchufe",
        "\\fB\\-\\-man\\fR | \\fB\\-\\-completion\\fR \\fISHELL\\fR | \\fB\\-V\\fR",
        ".SH DESCRIPTION",
        *_help(cli.help or ""),
        ".PP",
        "Global options may stand before or after the command name.",
        ".SH GLOBAL OPTIONS",
        *_options(cli, ctx),
        ".SH ADDRESSES",
        *_address_table(),
    ]
    for note in ADDRESS_NOTES:
        out += [".PP", _text(note)]
    for transport, services in SERVICES.items():
        by_port = sorted(services.items(), key=lambda kv: kv[1])
        listed = ", ".join(f"{name} ({port})" for name, port in by_port)
        out += [".PP", f"Service names for {transport}: {_text(listed)}."]
    out += [".SH TLS", *_tls_table()]
    for note in TLS_NOTES:
        out += [".PP", _text(note)]
    out.append(".SH COMMANDS")
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if command is None or command.hidden:  # pragma: no cover - every listed command exists
            continue
        out += _command(name, command, ctx)
    out.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        out += [".TP", f".B {code}", _text(meaning)]
    out.append(".SH SIGNALS")
    for names, meaning in SIGNALS:
        out += [".TP", f".B {_text(names)}", _text(meaning)]
    out.append(".SH ENVIRONMENT")
    for names, meaning in ENVIRONMENT:
        out += [".TP", f".B {_text(names)}", _text(meaning)]
    out.append(".SH EXAMPLES")
    for example, meaning in EXAMPLES:
        out += [".TP", f"\\fB{_text(example)}\\fR", _text(meaning)]
    out += [".SH SEE ALSO", ".BR nc (1),", ".BR ncat (1),", ".BR socat (1),", ".BR unix (7),", ".BR ip (7)"]
    return "\n".join(out) + "\n"


def _command(name: str, command: click.Command, parent: click.Context) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(ctx))
    out = [f".SS enchufe {_text(name)} {_text(usage)}", *_help(command.help or "")]
    options = _options(command, ctx)
    if options:
        out += [".PP", "Options:", ".RS", *options, ".RE"]
    if command.epilog:
        # The TLS table that connect's and listen's --help end with is the TLS section here.
        from ._tls import help_text

        out += _help(command.epilog.replace(help_text(), "TLS addresses: see TLS below.\n"))
    return out


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in command.get_params(ctx):
        # Arguments are in the synopsis; click 8.5 also gives them help records (often empty).
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None:
            continue
        names, help_ = record
        # An empty help must not leave a line that is a lone "." (an empty roff request).
        out += [".TP", f"\\fB{_text(names)}\\fR", _text(help_) or "\\&"]
    return out


def _address_table() -> list[str]:
    rows: list[str] = []
    for form, kind, notes in ADDRESS_FORMS:
        rows += [".TP", f"\\fB{_text(form)}\\fR", _text(f"{kind}; {notes}" if notes else kind)]
    return rows


def _tls_table() -> list[str]:
    from ._tls import PARAMETER_ROWS

    rows: list[str] = []
    for name, side, meaning in PARAMETER_ROWS:
        rows += [".TP", f"\\fB{_text(name)}\\fR ({side})", _text(meaning)]
    return rows


def _help(text: str) -> list[str]:
    """Click help text as roff: paragraphs filled, ``\\b`` paragraphs kept as written."""
    import inspect

    out: list[str] = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        if not lines:
            continue
        if lines[0].strip() == "\b":
            out += [".PP", ".nf", *(_text(line) or "\\&" for line in lines[1:]), ".fi"]
        else:
            out += [".PP", _text(" ".join(line.strip() for line in lines))]
    return out


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].rstrip(".") if text.strip() else ""


def _text(text: str) -> str:
    """Plain text made safe for roff: backslashes and hyphens escaped, no line starting with a
    control character."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line if line[:1] in (".", "'") else line) for line in escaped.split("\n")]
    return "\n".join(lines)
