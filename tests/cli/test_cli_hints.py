"""A runtime failure's hint says what to try for *this* address: "permission denied" on a unix
path is about the file's folder, on a broadcast address about SO_BROADCAST, and only on a low
port about ports above 1023."""

from __future__ import annotations

import encodings.idna  # noqa: F401  (resolving a host name needs it)
import os
import sys

# Imported before dropping privileges: the child cannot read Python's files under /root.
import enchufe.cli
import enchufe.cli.listen
import enchufe.cli.recv
import enchufe.cli.send
import enchufe.stdio

from .conftest import assert_one_error_line, free_port, run

#: The uid and gid of "nobody": an identity with no claim on root's files.
NOBODY = 65534


def run_as_nobody(*args: str) -> tuple[int, str]:
    """``enchufe ARGS`` in a forked child running as uid/gid 65534 (root ignores file
    permissions); returns its exit status and stderr.  Everything it needs is imported already:
    the child could not read Python's files under /root."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 100
        try:
            os.close(read_end)
            # pytest's capture stands in for sys.stderr: write to the pipe instead.
            sys.stderr = open(write_end, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                enchufe.cli.main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 101
            except BaseException:
                import traceback

                traceback.print_exc()
                raise
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stderr:
        output = stderr.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    return os.WEXITSTATUS(status), output


def test_broadcast_says_so_broadcast() -> None:
    done = run("send", "udp://255.255.255.255:9", "x")
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr, "permission denied", "SO_BROADCAST")
    assert "1023" not in line


def test_unix_path_in_a_folder_nobody_may_write_says_check_its_permissions(sock_dir: str) -> None:
    os.chmod(sock_dir, 0o755)  # root's: others may enter, not create
    for command, scheme in (("listen", "unix"), ("recv", "unixgram")):
        status, stderr = run_as_nobody(command, f"{scheme}://{sock_dir}/s.sock")
        assert status == 1, stderr
        line = assert_one_error_line(stderr, "permission denied", "folder")
        assert "1023" not in line and "port" not in line


def test_a_privileged_port_says_use_one_above_1023() -> None:
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as setting:
        assert int(setting.read()) > 7, "this host lets anyone bind port 7"
    status, stderr = run_as_nobody("listen", "tcp://127.0.0.1:7")
    assert status == 1, stderr
    assert_one_error_line(stderr, "permission denied", "above 1023")


def test_send_refused_names_its_retry_option_once() -> None:
    """The library's message names no option; send adds its own, unless it already retried."""
    port = free_port()
    line = assert_one_error_line(run("send", f"tcp://127.0.0.1:{port}", "x").stderr, "refused")
    message, hint = line.split("? ", 1)  # the hint: a sentence of its own, after the message
    assert "--" not in message and "--retry N" in hint, line
    retried = assert_one_error_line(
        run("send", f"tcp://127.0.0.1:{port}", "x", "--retry", "1", "--retry-delay", "0").stderr, "refused"
    )
    assert "--retry" not in retried and "2 attempts" in retried, retried
