"""The command's language: ``--lang es|en`` or the environment; click's mistakes in that language.

The language is chosen from the argument list before click parses it, so that a mistake in an
option given before ``--lang`` is reported in the language asked for too.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        if exc.param_hint is not None or exc.param is not None:
            hint = exc.param_hint if isinstance(exc.param_hint, str) else _param_name(exc.param)
            return _("invalid value for {param}: {message}").format(param=hint, message=exc.message)
        return _("invalid value: {message}").format(message=exc.message)
    if isinstance(exc, click.BadOptionUsage):
        if "requires an argument" in exc.message:
            return _("option {option} needs a value").format(option=exc.option_name) + _see_help(command)
        if "does not take a value" in exc.message:
            return _("option {option} takes no value").format(option=exc.option_name) + _see_help(command)
    if isinstance(exc, click.UsageError):
        message = exc.message
        if message.startswith("No such command"):
            return _("no such command: {message}").format(message=message.split(" ", 3)[-1].rstrip("."))
        if message.startswith("Got unexpected extra argument"):
            extra = message.partition("(")[2].rstrip(")")
            return _("unexpected extra argument: {arguments}").format(arguments=extra) + _see_help(command)
        return message + _see_help(command)
    return exc.format_message()


def _command_path(exc: click.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    return ctx.command_path if isinstance(ctx, click.Context) else "enchufe"


def _see_help(command: str) -> str:
    return " " + _("(see '{command} --help')").format(command=command)


def _param_name(param: click.Parameter | None) -> str:
    if param is None:
        return "?"
    if isinstance(param, click.Option):
        return "/".join(param.opts)
    return param.human_readable_name
