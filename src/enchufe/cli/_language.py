"""The command's language: ``--lang es|en`` or the environment; click's mistakes in that language.

The language is chosen from the argument list before click parses it, so that a mistake in an
option given before ``--lang`` is reported in the language asked for too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from .. import i18n
from ..i18n import _


def choose_language(argv: Sequence[str]) -> str:
    """Set and return the language: the last ``--lang X`` / ``--lang=X`` in ``argv`` (before a
    ``--``), else the environment's (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``)."""
    asked: str | None = None
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(args):
            asked = args[i + 1]
        elif arg.startswith("--lang="):
            asked = arg.split("=", 1)[1]
    if asked is None or asked not in i18n.LANGUAGES:
        # A bad --lang is reported by click (in the environment's language).
        asked = i18n.language_from_environment()
    return i18n.set_language(asked)


def click_message(exc: click.ClickException) -> str:
    """One line for a mistake click found, in the current language: what is wrong and, where
    click knows it, what is accepted."""
    command = _command_path(exc)
    if isinstance(exc, click.NoSuchOption):
        line = _("no such option: {option}").format(option=exc.option_name)
        if exc.possibilities:
            line += " " + _("(did you mean {options}?)").format(options=", ".join(sorted(exc.possibilities)))
        return line + _see_help(command)
    if isinstance(exc, click.MissingParameter):
        name = _param_name(exc.param)
        if exc.param is not None and exc.param.param_type_name == "argument":
            line = _("missing argument {name}").format(name=name)
        else:
            line = _("missing option {name}").format(name=name)
        return line + _see_help(command)
    if isinstance(exc, click.BadParameter):
        message = _click_value_message(exc.message)
        if exc.param_hint is not None or exc.param is not None:
            hint = exc.param_hint if isinstance(exc.param_hint, str) else _param_name(exc.param)
            return _("invalid value for {param}: {message}").format(param=hint, message=message)
        return _("invalid value: {message}").format(message=message)
    if isinstance(exc, click.BadOptionUsage):
        if "requires an argument" in exc.message:
            return _("option {option} needs a value").format(option=exc.option_name) + _see_help(command)
        if "does not take a value" in exc.message:
            return _("option {option} takes no value").format(option=exc.option_name) + _see_help(command)
    if isinstance(exc, click.UsageError):
        return _usage_message(exc, command)
    return exc.format_message()


def _usage_message(exc: click.UsageError, command: str) -> str:
    """The other usage mistakes click finds: a command unknown or missing, an extra argument."""
    message = exc.message
    if message.startswith("No such command"):
        return _no_such_command(exc, message.split(" ", 3)[-1].rstrip("."))
    if message == "Missing command.":
        commands = ", ".join(_commands(exc))
        return _("missing command; the commands are: {commands}").format(commands=commands) + _see_help(
            command
        )
    if message.startswith("Got unexpected extra argument"):
        extra = message.partition("(")[2].rstrip(")")
        return _("unexpected extra argument: {arguments}").format(arguments=extra) + _see_help(command)
    return message + _see_help(command)


def _command_path(exc: click.ClickException) -> str:
    """The command whose --help to suggest: the mistake's, or the one being parsed (click's
    option parser gives no context with "requires an argument")."""
    from ._common import settings

    ctx = getattr(exc, "ctx", None)
    if isinstance(ctx, click.Context):
        return ctx.command_path
    return f"enchufe {settings.command}" if settings.command else "enchufe"


def _commands(exc: click.ClickException) -> list[str]:
    ctx = getattr(exc, "ctx", None)
    group = ctx.command if isinstance(ctx, click.Context) else None
    return group.list_commands(ctx) if isinstance(group, click.Group) and ctx is not None else []


def _no_such_command(exc: click.ClickException, name: str) -> str:
    """``no such command: 'lisen' (did you mean listen?); the commands are: listen, connect, …``"""
    import difflib

    commands = _commands(exc)
    line = _("no such command: {name}").format(name=name)
    close = difflib.get_close_matches(name.strip("'"), commands, n=2)
    if close:
        line += " " + _("(did you mean {options}?)").format(options=", ".join(close))
    if commands:
        line += "; " + _("the commands are: {commands}").format(commands=", ".join(commands))
    return line


#: click's own messages about a value (English: click's gettext domain has no catalog), each
#: as a pattern and the message that says it in the current language.
_CLICK_VALUE_MESSAGES: tuple[tuple[str, Callable[[], str]], ...] = (
    (r"(?P<value>.+) is not one of (?P<choices>.+)\.", lambda: _("{value} is not one of {choices}")),
    (r"(?P<value>.+) is not (?P<choices>'[^']*')\.", lambda: _("{value} is not one of {choices}")),
    (r"\w+ (?P<path>.+) does not exist\.", lambda: _("{path} does not exist")),
    (r"\w+ (?P<path>.+) is a file\.", lambda: _("{path} is a file")),
    (r"\w+ (?P<path>.+) is a directory\.", lambda: _("{path} is a directory")),
    (r"\w+ (?P<path>.+) is not readable\.", lambda: _("{path} is not readable")),
    (r"\w+ (?P<path>.+) is not writable\.", lambda: _("{path} is not writable")),
    (r"\w+ (?P<path>.+) is not executable\.", lambda: _("{path} is not executable")),
)


def _click_value_message(message: str) -> str:
    """A message of click's about a bad value (a choice, a path) in the current language; in
    English, and any other message (enchufe's own, translated already), as it is."""
    if i18n.language() == "en":
        return message
    import re

    for pattern, translated in _CLICK_VALUE_MESSAGES:
        match = re.fullmatch(pattern, message, re.DOTALL)
        if match:
            return translated().format(**match.groupdict())
    return message


def _see_help(command: str) -> str:
    return " " + _("(see '{command} --help')").format(command=command)


def _param_name(param: click.Parameter | None) -> str:
    if param is None:
        return "?"
    if isinstance(param, click.Option):
        return "/".join(param.opts)
    return param.human_readable_name
