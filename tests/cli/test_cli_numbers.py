"""Numeric options: finite values in a stated range, in ASCII digits; anything else is exit 2.

Each value is one that Python's ``float()``/``int()`` would take (``nan``, ``inf``, ``1e309``
overflowing to infinity, the Arabic-Indic digit ``٣``) or that the kernel or ``select`` would
refuse later with a traceback (``1e20`` seconds, a backlog of 10**11).

The hundreds of refusals run in this process (:func:`~tests.cli.conftest.run_here`): each would
otherwise cost a Python start.  :func:`test_a_refusal_is_the_same_from_the_command` runs a case of
each kind as the command too, and compares.
"""

from __future__ import annotations

import os

import pytest

from .conftest import assert_one_error_line, run, run_here

#: (arguments before the option, option) for every numeric option of the commands H4 owns.
OPTIONS = [
    (("listen", "tcp://127.0.0.1:0"), "--backlog"),
    (("listen", "udp://127.0.0.1:0"), "--count"),
    (("recv", "udp://127.0.0.1:0"), "--count"),
    (("recv", "udp://127.0.0.1:0"), "--max-size"),
    (("echo", "tcp://127.0.0.1:0"), "--max-conns"),
    (("echo", "tcp://127.0.0.1:0"), "--idle-timeout"),
    (("echo", "udp://127.0.0.1:0"), "--drain-timeout"),
    (("chat", "tcp://127.0.0.1:0"), "--queue-limit"),
    (("chat", "tcp://127.0.0.1:0"), "--max-conns"),
    (("chat", "tcp://127.0.0.1:0"), "--idle-timeout"),
    (("chat", "tcp://127.0.0.1:0"), "--drain-timeout"),
    (("send", "tcp://127.0.0.1:9", "x"), "--timeout"),
    (("send", "tcp://127.0.0.1:9", "x"), "--retry"),
    (("send", "tcp://127.0.0.1:9", "x"), "--retry-delay"),
    (("bench",), "--duration"),
    (("bench",), "--count"),
    (("bench",), "--size"),
    (("bench",), "--parallel"),
]

BAD_VALUES = ["nan", "inf", "-inf", "-1", "1e309", "1e20", "99999999999", "\u0663", "1_0", ""]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize(
    ("before", "option"), OPTIONS, ids=[f"{'-'.join(b[:2]).split(':')[0]}{o}" for b, o in OPTIONS]
)
def test_bad_number_is_refused_with_one_line(before: tuple[str, ...], option: str, value: str) -> None:
    done = run_here(*before, option, value)
    assert done.returncode == 2, done.stderr
    line = assert_one_error_line(done.stderr, option, repr(value))
    assert "accepted:" in line  # the range that would have been taken


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("listen", "--help"), "1 ≤ N ≤ 65535"),
        (("send", "--help"), "0 < S ≤ 1000000"),
        (("echo", "--help"), "0 ≤ S ≤ 1000000"),
        (("recv", "--help"), "1 ≤ N ≤ 16777216"),
        (("bench", "--help"), "0 < S ≤ 3600"),
    ],
)
def test_help_shows_the_accepted_range(args: tuple[str, ...], shown: str) -> None:
    done = run(*args)
    assert done.returncode == 0
    assert shown in " ".join(done.stdout.decode().split())


def test_a_good_number_at_the_bound_is_taken() -> None:
    # --timeout at its largest accepted value still reaches the network (and is refused there).
    done = run("send", "tcp://127.0.0.1:9", "x", "--timeout", "1000000")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "refused")


@pytest.mark.parametrize("mode", ["\u0666\u0666\u0660", "6_60", "+660", " 660", "0o660", "1777", "888", ""])
@pytest.mark.parametrize("command", ["listen", "recv", "echo", "chat"])
def test_mode_is_octal_digits_as_chmod_takes_them(command: str, mode: str, sock_dir: str) -> None:
    scheme = "unixgram" if command == "recv" else "unix"
    done = run_here(command, f"{scheme}://{sock_dir}/m.sock", "--mode", mode)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, "--mode", "octal")
    assert not os.path.exists(f"{sock_dir}/m.sock")


@pytest.mark.parametrize("value", ["-1", "-inf", "-0.5", "-\u0663"])
@pytest.mark.parametrize("joined", [True, False], ids=["equals", "space"])
def test_a_negative_stats_interval_gets_the_range_message(value: str, joined: bool) -> None:
    # --stats takes an optional value: click alone reads "-1" after it as an unknown option.
    option = [f"--stats={value}"] if joined else ["--stats", value]
    done = run_here("relay", *option, "tcp://127.0.0.1:0", "tcp://127.0.0.1:9")
    assert done.returncode == 2, done.stderr
    line = assert_one_error_line(done.stderr, "--stats", repr(value))
    assert "accepted: 0.1 ≤ S" in line


@pytest.mark.parametrize(
    "args",
    [
        ("listen", "tcp://127.0.0.1:0", "--backlog", "1e309"),
        ("send", "tcp://127.0.0.1:9", "x", "--timeout", "\u0663"),
        ("echo", "unix://{dir}/m.sock", "--mode", "888"),
        ("relay", "--stats", "-1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:9"),
    ],
    ids=["number", "digit", "mode", "stats"],
)
def test_a_refusal_is_the_same_from_the_command(args: tuple[str, ...], sock_dir: str) -> None:
    """The in-process runs above stand for the command: ``python -m enchufe`` says the same."""
    args = tuple(arg.format(dir=sock_dir) for arg in args)
    done = run(*args, timeout=10)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr)
    here = run_here(*args)
    assert (here.returncode, here.stdout, here.stderr) == (done.returncode, done.stdout, done.stderr)
