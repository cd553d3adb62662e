"""The relay command's contract: bad input exit 2 in one line, runtime failures exit 1, --workers.

The bad-input cases run the command's entry point in this process
(:func:`tests.cli.conftest.run_here`, a Python start saved for each of about ninety);
:func:`test_a_refusal_is_the_same_from_the_command` compares a few with ``python -m enchufe``.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import shlex
import socket
import subprocess
from collections.abc import Callable

import pytest

import enchufe
from enchufe.relay import Relay, RelayConfig
from tests.cli.conftest import run_here

from .conftest import ENCHUFE, STEP, StartRelay, Target, dial, echo, ping, turned_away

#: Every numeric option of relay: each states its range in --help and refuses what is outside.
NUMERIC_OPTIONS = (
    "--max-conns",
    "--connect-timeout",
    "--idle-timeout",
    "--max-sessions",
    "--max-datagram",
    "--drain-timeout",
    "--stats",
    "--workers",
    "--backlog",
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENCHUFE, "relay", *args], capture_output=True, text=True, timeout=STEP, check=False
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("tcp://127.0.0.1:0", "udp://127.0.0.1:53"), ("without framing", "stream", "datagram")),
        (("udp://127.0.0.1:0", "tcp://127.0.0.1:9"), ("without framing",)),
        (("tcp://127.0.0.1:0", "tcp://:80"), ("needs a host", "tcp://127.0.0.1:80")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:0"), ("needs a host and a port",)),
        (("tcp://127.0.0.1", "tcp://127.0.0.1:9"), ("missing port",)),
        (("-", "-"), ("cannot relay - to -",)),
        (("exec:cat", "tcp://127.0.0.1:9"), ("only be the TARGET",)),
        (("udp://127.0.0.1:0", "udp://127.0.0.1:9", "--frame"), ("--frame carries datagrams",)),
        (("udp://127.0.0.1:0", "udp://127.0.0.1:9", "--max-sessions", "0"), ("--max-sessions",)),
        (
            ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--allow", "10.0.0.300/8"),
            ("--allow", "not an IP network"),
        ),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--deny", "banana"), ("--deny 'banana'",)),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow", "10.0.0.0/8"), ("unix socket", "--allow-uid")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--allow-uid", "0"), ("need a unix LISTEN",)),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow-uid", "no-such-user-here"), ("no such user",)),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow-uid", "\u0663"), ("no such user", "ASCII digits")),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow-gid", "\u00b3"), ("no such group", "ASCII digits")),
        (("unix:@x", "tcp://127.0.0.1:9", "--workers", "2"), ("SO_REUSEPORT", "--workers 1")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--max-conns", "0"), ("--max-conns",)),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--connect-timeout", "0"), ("--connect-timeout",)),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--mode", "999"), ("octal",)),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--mode", "600"), ("--mode", "no file")),
        (("unix:@x", "tcp://127.0.0.1:9", "--mode", "600"), ("--mode", "abstract")),
        (("udp://127.0.0.1:0", "udp://127.0.0.1:9", "--backlog", "5"), ("--backlog", "has none")),
        *[
            (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", f"{option}={value}"), (option, "accepted:"))
            for option in NUMERIC_OPTIONS
            for value in ("nan", "inf", "-inf", "1e309", "99999999999999999999", "-1", "\u0663")
        ],
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--stats", "-1"), ("--stats", "0.1 ≤ S")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--stats=0.001"), ("--stats", "0.1 ≤ S")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--backlog", "65536"), ("--backlog", "65535")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--workers", "257"), ("--workers", "256")),
    ],
)
def test_bad_input_is_refused_with_one_line_and_status_2(
    args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    done = run_here("relay", *args)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    line = _one_line(stderr)  # click's own checks too: one line, no usage text
    assert line.startswith("enchufe: "), line
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)


@pytest.mark.parametrize(
    "args",
    [
        ("tcp://127.0.0.1:0", "udp://127.0.0.1:53"),
        ("unix:@x", "tcp://127.0.0.1:9", "--allow-uid", "no-such-user-here"),
        ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--workers=nan"),
        ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--stats", "-1"),
    ],
    ids=["kinds", "user", "number", "stats"],
)
def test_a_refusal_is_the_same_from_the_command(args: tuple[str, ...]) -> None:
    """The in-process runs above stand for the command: ``python -m enchufe relay`` says the same."""
    done = _run(*args)
    assert done.returncode == 2, done.stderr
    here = run_here("relay", *args)
    assert (here.returncode, here.stdout.decode(), here.stderr.decode()) == (2, done.stdout, done.stderr)


def test_an_address_in_use_is_a_runtime_failure() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(f"tcp4://127.0.0.1:{port}", "tcp4://127.0.0.1:9")
    assert done.returncode == 1
    assert "address already in use" in _one_line(done.stderr).lower()


def test_workers_share_the_port_and_stop_together(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--workers", "2", "-v")
        clients = [dial(relay.address) for _ in range(16)]
        try:
            assert all(ping(client) for client in clients)
        finally:
            for client in clients:
                client.close()
        relay.signal()
        assert relay.finish() == 0, relay.err
    err = relay.err
    assert err.count("listening on") == 1
    # The kernel spread the clients over both workers.
    assert "worker 1: accepted" in err and "worker 2: accepted" in err


@functools.cache
def _help() -> str:
    """``relay --help``, read once: the tests below only read it."""
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("option", NUMERIC_OPTIONS)
def test_every_numeric_option_states_its_range_in_help(option: str) -> None:
    options = _help().split("\nOptions:", 1)[1]
    # One block per option: its line starts with "  -", continuation lines are indented more.
    blocks = re.split(r"\n(?=  -)", options)
    (block,) = [b for b in blocks if b.strip().startswith(f"{option} ")]
    help_text = " ".join(block.split())  # click wraps lines: judge the words
    assert re.search(r"\[(?:default: [0-9.]+; )?[0-9.]+ [<≤] \S+ ≤ [0-9]+\]", help_text), (option, help_text)


def _examples() -> list[list[str]]:
    text = _help()
    block = text.split("Examples:", 1)[1].split("\n\n", 1)[0]
    examples = []
    for line in block.strip().splitlines():
        words = shlex.split(line, comments=True)
        assert words[:2] == ["enchufe", "relay"], line
        examples.append(words[2:])
    return examples


def test_help_has_examples() -> None:
    assert len(_examples()) >= 6


@pytest.mark.parametrize("index", range(8))
def test_each_help_example_runs(start_relay: StartRelay, sock_dir: str, index: int) -> None:
    """Every example of --help starts (its LISTEN moved to loopback or a temporary folder, so as
    not to take a public port) and stops cleanly; stdio ones are checked without running."""
    examples = _examples()
    if index >= len(examples):
        pytest.skip("fewer examples")
    args = [word for word in examples[index] if word != "<" and not word.endswith(".txt")]
    listen, rest = args[0], args[1:]
    if listen == "-":
        Relay(RelayConfig(listen, rest[0]))  # bad input would raise UsageError here
        return
    if "--allow-uid" in rest:
        try:
            pwd.getpwnam(rest[rest.index("--allow-uid") + 1])
        except KeyError:
            pytest.skip("the example's user does not exist here")
    value = enchufe.parse(listen)
    if isinstance(value, enchufe.UnixAddress):
        listen = f"unix://{os.path.join(sock_dir, 'example.sock')}"
    else:
        assert isinstance(value, enchufe.InetAddress)
        listen = f"{value.scheme}://127.0.0.1:0"
    relay = start_relay(listen, *rest)
    relay.signal()
    assert relay.finish() == 0, relay.err


@pytest.mark.parametrize("target", ["tcp4://127.0.0.1:{port}", "unix://{folder}/nobody.sock"])
def test_a_target_that_refuses_names_no_option_relay_lacks(
    target: str, sock_dir: str, start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """The library's messages name no command-line option: the relay's errors said
    "(--retry waits for one)", and relay has no --retry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = target.format(port=port, folder=sock_dir)
    done = subprocess.run(
        [*ENCHUFE, "relay", "-", target], input="x", capture_output=True, text=True, timeout=STEP
    )
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert f"cannot connect to {target}" in line, line
    assert "--retry" not in line and "--timeout" not in line, line
    relay = start_relay(make_address("tcp4"), target)
    assert turned_away(relay.address) is not None
    relay.wait_err(r"^enchufe: cannot connect to ")
    assert "--retry" not in relay.err, relay.err
