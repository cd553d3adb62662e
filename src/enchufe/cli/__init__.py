"""The ``enchufe`` command: a thin layer over the library, one module per command.

Commands are imported only when run, so ``enchufe --help`` stays fast.  Errors are mapped to
exit statuses in one place (:func:`main`): bad input 2, runtime failures 1, never a traceback
unless ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

import click

from .._text import one_line
from ._common import F, Settings, flag_hint, global_options, settings, with_hint
from ._language import choose_language, click_message

# name → (module, one-line help).  The help is repeated here so that listing the commands
# does not import them.
COMMANDS: dict[str, tuple[str, str]] = {
    "listen": (
        "listen",
        "Passive side: accept a client (or bind a datagram socket), pipe stdio.",
    ),
    "connect": ("connect", "Active side: connect to ADDRESS and pipe stdin and stdout through it."),
    "send": ("send", "Send DATA (or stdin) as one datagram or one stream write, then close."),
    "recv": ("recv", "Bind a datagram socket and print each datagram."),
    "echo": ("echo", "Echo server for any of the six kinds."),
    "chat": ("chat", "Chat room: every message from one client goes to all the others."),
    "relay": ("relay", "For every client of LISTEN, open TARGET and carry bytes both ways."),
    "socks": ("socks", "SOCKS5 server: each client names its destination, relayed as relay does."),
    "chaos": ("chaos", "Proxies with faults on purpose, driven by Toxiproxy's HTTP API."),
    "tour": ("tour", "Every kind's server and client on loopback, narrated, then a summary."),
    "diagram": ("diagram", "Sequence diagram of --trace-file outputs: a server and its clients, merged."),
    "bench": ("bench", "Throughput, latency, connection and datagram rates: all six kinds, or ADDRESSes."),
    "check": ("check", "Is anything listening at each ADDRESS? Exit 0 if every one answers (nc -z)."),
}


def _print_man(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .manpage import render  # the page's text: loaded only when asked for

    click.echo(render(ctx.find_root().command), nl=False)
    ctx.exit(0)


def _print_completion(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .manpage import completion_script

    click.echo(completion_script(ctx.find_root().command, value), nl=False)
    ctx.exit(0)


def man_options(f: F) -> F:
    """--man and --completion SHELL on the top-level group (eager: they print and exit)."""
    f = click.option(
        "--completion",
        type=click.Choice(["bash", "zsh", "fish"]),
        expose_value=False,
        is_eager=True,
        callback=_print_completion,
        help='Print the shell completion script and exit, e.g. eval "$(enchufe --completion bash)".',
    )(f)
    f = click.option(
        "--man",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_man,
        help="Print the manual page (roff) and exit: enchufe --man | man -l -",
    )(f)
    return f


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"{__name__}.{entry[0]}")
        command: click.Command = module.command
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        settings.command = name or ""
        settings.hint = None  # the command sets its own, if its flags can help
        return name, command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_m, help_) in COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # stdout closed by its reader (`enchufe recv … | head`): not an error of ours.  Caught
            # here because click turns EPIPE into a silent exit status 1.
            _silence_stdout()
            raise click.exceptions.Exit(0) from None


@click.group(
    cls=LazyGroup,
    invoke_without_command=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@global_options
@click.version_option(None, "-V", "--version", package_name="enchufe", prog_name="enchufe")
@man_options
def cli(**_options: Any) -> None:
    """Stream and datagram sockets for UNIX, IPv4 and IPv6, in one address syntax.

    \b
    Addresses: tcp://HOST:PORT  tcp4://…  tcp6://[HOST]:PORT  udp://HOST:PORT  udp4://…  udp6://…
               unix:///abs/path  unix:rel/path  unix:@abstract
               unixgram:///abs/path  unixgram:rel/path  unixgram:@abstract
               TLS on stream kinds: 'tls://HOST:PORT?ca=FILE'  'tls+unix:PATH?cert=auto'  (see --man)

    New here? Run `enchufe tour`.
    """


#: click 8.2+ raises this for a group run without arguments (8.1 printed the help and exited 0).
_NO_ARGS_IS_HELP: tuple[type[click.UsageError], ...] = tuple(
    cls for cls in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if cls is not None
)


def _own_insecure_lines() -> None:
    """The commands say ``insecure`` in their own line, at every connection (see ._tls): the
    library's warning (InsecureTLSWarning) would say it again, in Python's format."""
    import warnings

    from ..errors import InsecureTLSWarning

    warnings.filterwarnings("ignore", category=InsecureTLSWarning)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the contract's status: 0 done, 1 runtime failure, 2 bad input."""
    from ..errors import EnchufeError, UsageError

    choose_language(sys.argv[1:] if argv is None else argv)
    _own_insecure_lines()
    try:
        # Outside standalone mode click returns the exit code a command asked for.
        status = cli.main(args=argv, prog_name="enchufe", standalone_mode=False)
    except _NO_ARGS_IS_HELP as exc:
        # `enchufe` alone: the help, as click prints it (not squeezed into one error line).
        exc.show()
        sys.exit(2)
    except click.ClickException as exc:
        # One line naming the mistake and what is accepted, in the user's language: the usage
        # text click would print first says nothing about the mistake.
        click.echo(f"enchufe: {one_line(click_message(exc))}", err=True)
        sys.exit(2 if isinstance(exc, click.UsageError | click.BadParameter) else exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except EnchufeError as exc:
        if settings.debug:
            traceback.print_exc()
        message = with_hint(str(exc), flag_hint(exc))
        if settings.json:
            import json

            click.echo(json.dumps({"event": "error", "message": message}), err=True)
        else:
            click.echo(f"enchufe: {one_line(message)}", err=True)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # stdout closed by its reader (`enchufe recv … | head`): not an error of ours.
        _silence_stdout()
        sys.exit(0)
    sys.exit(status if isinstance(status, int) else 0)


def _silence_stdout() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


__all__ = ["Settings", "cli", "main"]
