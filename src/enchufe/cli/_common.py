"""What every command shares: global options, event lines, stop signals, datagram output."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from .._text import one_line, printable
from ..i18n import _
from ._numbers import BoundedInt, FiniteFloat

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """Global options, merged from before and after the command name."""

    trace: bool = False
    verbose: int = 0
    debug: bool = False
    quiet: bool = False
    json: bool = False
    #: The command being run ("" before it is known).
    command: str = ""
    #: The running command's flag hints: what to add to a failure's line (see flag_hint).
    hint: Callable[[BaseException], str] | None = None


settings = Settings()


def _set_flag(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if not value:
            return
        if name == "verbose":
            settings.verbose += int(value)
            return
        setattr(settings, name, True)
        if name == "trace":
            from .. import trace

            trace.enable()

    return callback


#: The global options: (flags, the setting each one sets, its help); all are counted or flags.
_GLOBAL_OPTIONS = (
    (("--trace",), "trace", "Narrate every system call on stderr."),
    (("-v", "--verbose"), "verbose", "Say more (repeat for more)."),
    (("--debug",), "debug", "Show tracebacks."),
    (("-q", "--quiet"), "quiet", "Only errors on stderr."),
)


def _trace_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--trace-file FILE.jsonl: every traced call as a JSON object on a line of FILE."""
    if value is None:
        return
    from .. import _tracefile, trace  # only with the option: `enchufe --help` stays light

    try:
        fd = _tracefile.open_trace_file(value)
    except OSError as exc:
        from ..errors import reason  # the system's reason, in the user's language

        message = _("cannot write {path}: {reason} (give a path to a new or writable regular file)")
        said = message.format(path=printable(value), reason=reason(exc, lower=False))
        raise click.BadParameter(said, ctx, param) from None
    trace.record_to(_tracefile.file_recorder(fd))


def _lang(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--lang: main() chose the language from the arguments already; this sets it for a caller
    that runs the click command itself (tests, other programs)."""
    if value is not None:
        from .. import i18n

        i18n.set_language(value)


def global_options(f: F) -> F:
    """--trace, --trace-file, -v, --debug, --quiet: accepted before and after the command name."""
    for flags, name, help in reversed(_GLOBAL_OPTIONS):
        kind: dict[str, Any] = {"count": True} if name == "verbose" else {"is_flag": True}
        f = click.option(*flags, **kind, expose_value=False, callback=_set_flag(name), help=help)(f)
    f = click.option(
        "--lang",
        type=click.Choice(["en", "es"]),
        expose_value=False,
        callback=_lang,
        help="Language of messages, narration and the tour (default: from LANG, es_* is Spanish).",
    )(f)
    return click.option(
        "--trace-file",
        metavar="FILE.jsonl",
        expose_value=False,
        callback=_trace_file,
        help="Write every system call as a JSON object per line (for enchufe diagram).",
    )(f)


def json_option(f: F) -> F:
    return click.option(
        "--json",
        "json_",
        is_flag=True,
        help="Events (and datagrams) as JSON objects, one per line.",
    )(f)


def reporting(level: int = 0) -> bool:
    """Whether an event of ``level`` (see :func:`event`) would be shown: per-connection code
    skips making the words and fields of one that would not."""
    return not settings.quiet and (settings.json or settings.verbose >= level)


def event(name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
    """Report an event on stderr: a JSON object with ``--json``, else ``message`` on one line.

    ``level`` 0 is shown unless ``--quiet``; 1 needs ``-v``.  Untrusted text in ``message``
    (peer names, paths) cannot start a line of its own: control characters are escaped here;
    JSON escapes them itself.
    """
    if settings.quiet and name != "error":
        return
    if settings.json:
        import json  # here, not at the top: `enchufe --help` imports this module

        record = {"event": name, **fields}
        sys.stderr.write(json.dumps(record) + "\n")
    elif settings.verbose >= level:
        sys.stderr.write(one_line(message) + "\n")
    else:
        return
    sys.stderr.flush()


#: The signals that stop a command cleanly, as Ctrl-C does.  SIGHUP is the terminal going away
#: (an ssh session dropped, a terminal window closed): by default it kills the process on the
#: spot, leaving socket files behind and exec: children orphaned.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_sigterm() -> None:
    """Let SIGTERM and SIGHUP stop a command the way Ctrl-C does (as KeyboardInterrupt in the
    main thread), so that ``with`` blocks close sockets and remove socket files.

    SIGINT too when it came ignored: a shell starts a script's background commands (``enchufe
    listen … &``) with SIGINT ignored, and Python then leaves it so; ``kill -INT`` would do
    nothing (socat stops on it all the same)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class DatagramPrinter:
    """Writes received datagrams to stdout: raw payload, ``--json`` lines or ``--hex`` dumps.

    With ``-v`` each datagram is also reported on stderr: its size and its sender.
    """

    def __init__(self, *, as_json: bool, as_hex: bool) -> None:
        self.as_json = as_json
        self.as_hex = as_hex
        self.out = sys.stdout.buffer

    def __call__(self, data: bytes, sender: object, /, via: object = None) -> None:
        if settings.verbose:
            peer = peer_name(sender)
            if via is None:
                said = _("received {size} bytes from {peer}").format(size=len(data), peer=peer)
                event("datagram", said, level=1, peer=peer, size=len(data))
            else:
                proxy = peer_name(via)
                said = _("received {size} bytes from {peer} via {proxy}")
                event(
                    "datagram",
                    said.format(size=len(data), peer=peer, proxy=proxy),
                    level=1,
                    peer=peer,
                    proxy=proxy,
                    size=len(data),
                )
        if self.as_json:
            import base64
            import json

            record: dict[str, Any] = {  # names escaped: a peer's own bytes (see peer_name)
                "from": peer_name(sender) if sender is not None else None,
                "size": len(data),
                "base64": base64.b64encode(data).decode("ascii"),
            }
            if via is not None:
                record["via"] = peer_name(via)
            with contextlib.suppress(UnicodeDecodeError):
                record["text"] = data.decode("utf-8")
            self.out.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        elif self.as_hex:
            # The sender chose its name: escaped, so that it cannot forge lines of the dump.
            who = printable(str(sender)) if sender is not None else "(unbound sender)"
            if via is not None:
                who += f" via {printable(str(via))}"
            self.out.write(f"from {who}, {len(data)} bytes\n".encode() + hexdump(data))
        else:
            self.out.write(data)
        self.out.flush()


def warn_truncated(exc: Exception) -> None:
    """A datagram larger than the buffer was cut: said as a warning, and the command goes on."""
    event("truncated", _("enchufe: warning: {error}").format(error=exc), error=str(exc))


def hexdump(data: bytes) -> bytes:
    """The classic 16-bytes-a-line dump: offset, hex bytes, printable characters."""
    lines = []
    for offset in range(0, len(data), 16):
        row = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{offset:08x}  {hexes:<47}  |{text}|\n")
    return "".join(lines).encode()


class StreamDump:
    """``connect --hex``: each chunk sent or received as a header line and a classic hex dump, on
    stderr (as ncat -x does)."""

    def __init__(self) -> None:
        self.totals = {"out": 0, "in": 0}

    def __call__(self, direction: str, data: bytes) -> None:
        start = self.totals[direction]
        self.totals[direction] += len(data)
        if direction == "out":
            line = _("> sent {size} bytes (offset {offset})")
        else:
            line = _("< received {size} bytes (offset {offset})")
        header = line.format(size=len(data), offset=start) + "\n"
        sys.stderr.buffer.write(header.encode() + hexdump(data))
        sys.stderr.flush()


class _EventHandler(logging.Handler):
    """Library log records as event lines: plain text, or JSON objects with ``--json``."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        level = record.levelname.lower()
        event("log", tagged(message), level=0, severity=level, message=message)
        error = record.exc_info[1] if record.exc_info else None
        if settings.debug and error is not None and not settings.quiet:
            # --debug promises tracebacks: those a handler logged with log.exception too.
            import traceback

            sys.stderr.write("".join(traceback.format_exception(error)))
            sys.stderr.flush()


def setup_logging() -> None:
    """Route the library's logging to stderr: warnings always, details with ``-v``."""
    logger = logging.getLogger("enchufe")
    logger.handlers[:] = [_EventHandler()]
    logger.setLevel(logging.INFO if settings.verbose else logging.WARNING)
    logger.propagate = False


def retry_options(retry_help: str) -> Callable[[F], F]:
    """--retry N and --retry-delay S of the commands that connect (the delay's default is the
    library's)."""
    from .._connect import DEFAULT_RETRY_DELAY

    retry = click.option("--retry", type=BoundedInt(0), default=0, help=retry_help)
    delay = click.option(
        "--retry-delay",
        type=FiniteFloat(0),
        default=DEFAULT_RETRY_DELAY,
        show_default=True,
        help="Seconds between attempts.",
    )
    return lambda f: retry(delay(f))


def flag_hint(exc: BaseException) -> str:
    """What to add to a runtime failure's line: a sentence naming the option of the running
    command that helps, if any (its :attr:`Settings.hint`); :func:`with_hint` adds it.

    The library's messages never name options (it serves programs without a command line); its
    errors say what was being done (``action``) and whether another attempt may succeed
    (``retryable``), and each command maps that to its own flags.
    """
    return settings.hint(exc) if settings.hint is not None else ""


def with_hint(message: str, hint: str) -> str:
    """``message`` followed by ``hint`` (a whole sentence of its own, or nothing): a full stop
    ends the message first unless a question or a sentence already ended it, so that two
    remarks are never glued into one ("…(start the server first) (--retry N …)")."""
    if not hint:
        return message
    message = message.rstrip()
    return f"{message} {hint}" if message.endswith((".", "?", "!")) else f"{message}. {hint}"


def given(name: str) -> bool:
    """Whether the option whose parameter is ``name`` was given (command line or environment),
    rather than left at its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def tagged(message: object) -> str:
    """``enchufe: MESSAGE``: a line that stands alone on stderr, with the program's name (which
    no language translates) before a message already in the user's language."""
    return f"enchufe: {message}"


def peer_name(address: object) -> str:
    """How a peer is named in events: its address escaped (a unix peer's path or abstract name,
    a PROXY header's source, are the peer's own bytes), or ``(unnamed)`` for an unbound unix
    peer.  Escaped for ``--json`` too, as the relay's events are: a ``jq -r .peer`` must not
    print a peer's escape sequences or newlines."""
    if not address:
        return "(unnamed)"
    from .._text import printable

    return printable(str(address))


#: What an address starts with, offered when completing an ADDRESS argument.
SCHEME_PREFIXES = (
    "tcp://", "tcp4://", "tcp6://", "udp://", "udp4://", "udp6://", "unix:", "unixgram:",
    "tls://", "tls4://", "tls6://", "tls+unix:",
)  # fmt: skip


def complete_address(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Completion for an ADDRESS argument: the schemes, until one is typed."""
    from click.shell_completion import CompletionItem

    return [
        CompletionItem(prefix, type="plain")
        for prefix in SCHEME_PREFIXES
        if prefix.startswith(incomplete.lower())
    ]
