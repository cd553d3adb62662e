"""``enchufe --man``, ``--completion``, ``-V`` and a fast ``--help``.

The man page is generated from the click commands: every command and every option of the click
tree must appear in it, and it must render without warnings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import click
import pytest

from enchufe.cli import COMMANDS, cli

from .conftest import ENCHUFE, STEP, run


def man_page() -> str:
    done = run("--man")
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    return done.stdout.decode()


def option_names(command: click.Command, ctx: click.Context) -> list[str]:
    names: list[str] = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and not param.hidden:
            names += [*param.opts, *param.secondary_opts]
    return names


def roff(text: str) -> str:
    return text.replace("-", "\\-")


def test_every_command_and_option_is_in_the_man_page() -> None:
    page = man_page()
    ctx = click.Context(cli, info_name="enchufe")
    for name in option_names(cli, ctx):
        assert f"\\fB{roff(name)}" in page or f", {roff(name)}" in page, name
    assert sorted(cli.list_commands(ctx)) == sorted(COMMANDS)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        assert f".SS enchufe {name} " in page, name
        section = page.split(f".SS enchufe {name} ", 1)[1].split("\n.SS ", 1)[0]
        sub = click.Context(command, info_name=name, parent=ctx)
        for option in option_names(command, sub):
            assert roff(option) in section, f"{name} {option}"
        for argument in (p for p in command.params if isinstance(p, click.Argument)):
            assert (argument.metavar or argument.name or "").upper() in section.upper(), name


def test_man_page_has_the_sections() -> None:
    page = man_page()
    sections = [line.split(" ", 1)[1] for line in page.splitlines() if line.startswith(".SH ")]
    for wanted in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "GLOBAL OPTIONS",
        "ADDRESSES",
        "COMMANDS",
        "EXIT STATUS",
        "SIGNALS",
        "ENVIRONMENT",
        "EXAMPLES",
    ):
        assert wanted in sections, wanted
    assert page.startswith(".TH ENCHUFE 1 ")
    environment = page.split(".SH ENVIRONMENT", 1)[1].split(".SH EXAMPLES", 1)[0]
    for variable in ("ENCHUFE_PURE_PYTHON", "ENCHUFE_SPIN_US", "LC_MESSAGES"):
        assert roff(variable) in environment, variable
    addresses = page.split(".SH ADDRESSES", 1)[1].split(".SH COMMANDS", 1)[0]
    for form in ("tcp://HOST:PORT", "tcp6://[HOST]:PORT", "unix:@name", "unixgram:", "exec:PROGRAM"):
        assert roff(form) in addresses, form
    assert "http (80)" in addresses  # service names


def test_no_line_of_the_page_is_taken_for_a_roff_request() -> None:
    """Help text starting with '.' or "'" must not become a request (it would vanish)."""
    page = man_page()
    requests = {line.split()[0] for line in page.splitlines() if line[:1] in (".", "'")}
    assert requests <= {".TH", ".SH", ".SS", ".PP", ".TP", ".B", ".BR", ".RS", ".RE", ".nf", ".fi", ".br"}


@pytest.mark.skipif(shutil.which("man") is None and shutil.which("groff") is None, reason="no man or groff")
def test_man_page_renders_without_warnings() -> None:
    page = man_page().encode()
    if shutil.which("man") is not None:
        argv = ["man", "--warnings", "-l", "-"]
        env = {**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"}
    else:
        argv = ["groff", "-man", "-Tutf8", "-ww", "-z"]
        env = dict(os.environ)
    done = subprocess.run(argv, input=page, capture_output=True, timeout=STEP, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"", done.stderr.decode()
    if argv[0] == "man":
        text = done.stdout.decode()
        assert "enchufe connect [OPTIONS] ADDRESS" in text
        assert "--idle-timeout" in text


def test_completion_bash_script_is_clicks() -> None:
    done = run("--completion", "bash")
    assert done.returncode == 0, done.stderr
    script = done.stdout.decode()
    assert "_ENCHUFE_COMPLETE=bash_complete" in script
    assert "complete -o nosort -F _enchufe_completion enchufe" in script
    same = subprocess.run(
        [*ENCHUFE],
        env={**os.environ, "_ENCHUFE_COMPLETE": "bash_source"},
        capture_output=True,
        timeout=STEP,
        check=False,
    )
    assert same.stdout.decode().strip() == script.strip()


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "#compdef enchufe"), ("fish", "complete --no-files")])
def test_completion_other_shells(shell: str, marker: str) -> None:
    done = run("--completion", shell)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout.decode()


def test_completion_bad_shell_is_bad_usage() -> None:
    done = run("--completion", "tcsh")
    assert done.returncode == 2


def complete(words: str, cword: int) -> list[str]:
    """What bash completion would offer: click's protocol through the environment."""
    env = {**os.environ, "_ENCHUFE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run([*ENCHUFE], env=env, capture_output=True, timeout=STEP, check=False)
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.decode().splitlines()]


def test_completing_a_command_name() -> None:
    assert complete("enchufe con", 1) == ["connect"]
    assert complete("enchufe ch", 1) == ["chat", "chaos", "check"]
    assert complete("enchufe s", 1) == ["send", "socks"]


def test_completing_an_option() -> None:
    assert complete("enchufe connect --idle", 2) == ["--idle-timeout"]


def test_version_short_and_long() -> None:
    short = run("-V")
    long = run("--version")
    assert short.returncode == long.returncode == 0
    assert short.stdout == long.stdout
    assert short.stdout.startswith(b"enchufe, version ")


def test_help_imports_no_command_module() -> None:
    """``enchufe --help`` lists the commands from the table: no command module is imported."""
    code = (
        "import sys\n"
        "from enchufe.cli import cli\n"
        "try:\n"
        "    cli.main(['--help'], prog_name='enchufe', standalone_mode=False)\n"
        "finally:\n"
        "    print(sorted(m for m in sys.modules if m.startswith('enchufe')), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=STEP, check=False)
    assert done.returncode == 0, done.stderr
    loaded = done.stderr.decode()
    for name in COMMANDS:
        assert f"'enchufe.cli.{name}'" not in loaded, name
    assert "check" in done.stdout.decode()


def test_completing_an_address_offers_the_schemes() -> None:
    assert complete("enchufe connect tc", 2) == ["tcp://", "tcp4://", "tcp6://"]
    assert complete("enchufe check tcp://127.0.0.1:22 unix", 3) == ["unix:", "unixgram:"]
