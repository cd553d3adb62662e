"""Unix socket files: live, stale, in the way, owned, permissions, and the sun_path limit."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable, Iterator

import pytest

import enchufe
import enchufe.aio as aio
from enchufe import AddressError, AddressInUse, NotASocket, trace

#: The uid and gid of "nobody": an identity with no claim on root's files.
NOBODY = 65534

Opener = Callable[..., object]
OPENERS: dict[str, tuple[str, Opener]] = {
    # name: (scheme, how to bind a path)
    "listen": ("unix", enchufe.listen),
    "bind_datagram": ("unixgram", enchufe.bind_datagram),
}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def stale_socket_file(path: str, sock_type: int) -> None:
    """Leave a socket file nobody listens on, as a server that died without cleaning up does."""
    with socket.socket(socket.AF_UNIX, sock_type) as sock:
        sock.bind(path)
        if sock_type == socket.SOCK_STREAM:
            sock.listen(1)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def close(thing: object) -> None:
    assert isinstance(thing, enchufe.Listener | enchufe.DatagramSocket)
    thing.close()


# --- a live socket file is somebody else's -------------------------------------------------------


@pytest.mark.parametrize("first", ["listen", "bind_datagram"])
@pytest.mark.parametrize("second", ["listen", "bind_datagram"])
def test_live_socket_file_is_address_in_use(first: str, second: str, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "live.sock")
    scheme, opener = OPENERS[first]
    live = opener(f"{scheme}://{path}")
    try:
        inode = os.lstat(path).st_ino
        fds = open_fds()
        scheme2, opener2 = OPENERS[second]
        with pytest.raises(AddressInUse, match="a live server") as info:
            opener2(f"{scheme2}://{path}")
        assert info.value.errno == errno.EADDRINUSE
        assert open_fds() == fds  # the socket made for the attempt was closed
        assert os.lstat(path).st_ino == inode  # the live server's file is untouched
    finally:
        close(live)


def test_live_listener_keeps_working_after_a_refused_second_listen(sock_dir: str) -> None:
    address = f"unix://{os.path.join(sock_dir, 'live.sock')}"
    with enchufe.listen(address) as listener:
        with pytest.raises(AddressInUse):
            enchufe.listen(address)
        with enchufe.connect(address) as client:
            client.send_all(b"!")
            # The liveness probe's connection was queued first (and closed): skip past it.
            for _ in range(3):
                with listener.accept() as server:
                    server.set_timeout(5)
                    if server.recv(1) == b"!":
                        break
            else:
                pytest.fail("the listener never got our connection")


# --- a stale socket file is replaced -------------------------------------------------------------


@pytest.mark.parametrize("opener_name", ["listen", "bind_datagram"])
@pytest.mark.parametrize("stale_type", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["stream", "dgram"])
def test_stale_socket_file_is_replaced(
    opener_name: str, stale_type: int, sock_dir: str, trace_lines: list[str]
) -> None:
    path = os.path.join(sock_dir, "stale.sock")
    stale_socket_file(path, stale_type)
    scheme, opener = OPENERS[opener_name]
    thing = opener(f"{scheme}://{path}")
    try:
        # (not checked by inode: the file system may hand the freed inode number to the new file)
        assert any(line.startswith(f"unlink({path})") and "stale" in line for line in trace_lines)
        if opener_name == "listen":
            with enchufe.connect(f"unix://{path}"):
                pass
        else:
            with enchufe.connect_datagram(f"unixgram://{path}") as client:
                client.send(b"reached")
                assert isinstance(thing, enchufe.DatagramSocket)
                thing.set_timeout(5)
                assert thing.recv() == b"reached"
    finally:
        close(thing)


# --- anything else in the way is never touched ---------------------------------------------------


@pytest.mark.parametrize("opener_name", ["listen", "bind_datagram"])
def test_regular_file_in_the_way_is_not_a_socket_and_untouched(opener_name: str, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "precious.txt")
    with open(path, "wb") as f:
        f.write(b"do not delete me")
    before = os.lstat(path)
    fds = open_fds()
    scheme, opener = OPENERS[opener_name]
    with pytest.raises(NotASocket, match="is not a socket") as info:
        opener(f"{scheme}://{path}")
    assert "never removes it" in str(info.value)
    assert open_fds() == fds
    after = os.lstat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    with open(path, "rb") as f:
        assert f.read() == b"do not delete me"


def test_directory_in_the_way_is_not_a_socket(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "folder")
    os.mkdir(path)
    with pytest.raises(NotASocket):
        enchufe.listen(f"unix://{path}")
    assert os.path.isdir(path)


# --- a server removes its own file, and only its own ---------------------------------------------


@pytest.mark.parametrize("opener_name", ["listen", "bind_datagram"])
def test_own_socket_file_is_removed_on_close(opener_name: str, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "own.sock")
    scheme, opener = OPENERS[opener_name]
    thing = opener(f"{scheme}://{path}")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    close(thing)
    assert not os.path.lexists(path)
    close(thing)  # idempotent, and still nothing to remove


@pytest.mark.parametrize("opener_name", ["listen", "bind_datagram"])
def test_a_file_that_replaced_ours_is_left_alone(opener_name: str, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "replaced.sock")
    scheme, opener = OPENERS[opener_name]
    thing = opener(f"{scheme}://{path}")
    os.unlink(path)
    with open(path, "w") as f:
        f.write("someone else's")
    close(thing)
    with open(path) as f:
        assert f.read() == "someone else's"


def test_a_new_server_on_our_path_keeps_its_file(sock_dir: str) -> None:
    address = f"unix://{os.path.join(sock_dir, 'shared.sock')}"
    old = enchufe.listen(address)
    assert isinstance(old.address, enchufe.UnixAddress)
    path = old.address.path
    assert path is not None
    os.unlink(path)  # e.g. an operator cleaning up, then a new server starts
    with enchufe.listen(address) as new:
        old.close()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with enchufe.connect(address), new.accept():
            pass


def test_relative_path_keeps_its_spelling(sock_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sock_dir)
    with enchufe.listen("unix:rel.sock") as listener:
        assert str(listener.address) == "unix:rel.sock"
        assert stat.S_ISSOCK(os.lstat(os.path.join(sock_dir, "rel.sock")).st_mode)
        with enchufe.connect("unix:rel.sock"), listener.accept():
            pass
    assert not os.path.lexists(os.path.join(sock_dir, "rel.sock"))


# --- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("opener_name", ["listen", "bind_datagram"])
@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_mode_sets_the_file_permissions(opener_name: str, mode: int, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "mode.sock")
    scheme, opener = OPENERS[opener_name]
    thing = opener(f"{scheme}://{path}", mode=mode)
    try:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == mode
    finally:
        close(thing)


def connect_as_nobody(path: str) -> int:
    """Connect to ``path`` from a child process running as uid/gid 65534.

    Returns 0 when the connection succeeded, the errno when it failed.
    """
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 100
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(path)
                    code = 0
                except OSError as exc:
                    code = exc.errno or 101
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    code = os.WEXITSTATUS(status)
    assert code not in (100, 101), "the child could not drop privileges"
    return code


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as uid 65534")
def test_mode_decides_who_may_connect(sock_dir: str) -> None:
    os.chmod(sock_dir, 0o755)  # let nobody reach the folder; the socket's own mode decides
    private = os.path.join(sock_dir, "private.sock")
    public = os.path.join(sock_dir, "public.sock")
    with (
        enchufe.listen(f"unix://{private}", mode=0o600),
        enchufe.listen(f"unix://{public}", mode=0o666),
    ):
        assert connect_as_nobody(private) == errno.EACCES
        assert connect_as_nobody(public) == 0


# --- the mode is the file's from birth -----------------------------------------------------------


def _open_and_close(how: str, address: str, mode: int) -> None:
    """Bind ``address`` with ``mode`` the way ``how`` does, then close it."""
    from enchufe.aio.serve import Server as AsyncServer
    from enchufe.sync.serve import Server as SyncServer

    async def nothing(_thing: object) -> None:
        return None

    if how == "listen":
        enchufe.listen(address, mode=mode).close()
    elif how == "bind_datagram":
        enchufe.bind_datagram(address.replace("unix://", "unixgram://"), mode=mode).close()
    elif how == "aio.listen":
        aio.run(aio.listen(address, mode=mode)).close()
    elif how == "aio.bind_datagram":
        aio.run(aio.bind_datagram(address.replace("unix://", "unixgram://"), mode=mode)).close()
    elif how.startswith("sync.Server"):
        target = address if how.endswith("stream") else address.replace("unix://", "unixgram://")
        with SyncServer(target, lambda _thing: None, mode=mode):
            pass
    else:
        target = address if how.endswith("stream") else address.replace("unix://", "unixgram://")

        async def main() -> None:
            async with AsyncServer(target, nothing, mode=mode):
                pass

        aio.run(main())


BINDERS = [
    "listen",
    "bind_datagram",
    "aio.listen",
    "aio.bind_datagram",
    "sync.Server stream",
    "sync.Server datagram",
    "aio.Server stream",
    "aio.Server datagram",
]


def reach_as_nobody(path: str, sock_type: int) -> int:
    """From a child running as uid/gid 65534: connect (stream) or send a datagram to ``path``.

    0 when it got through, else the errno.  A stream socket that is bound but not listening yet
    answers ECONNREFUSED, and only to a caller the file's mode lets in (EACCES otherwise).
    """
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 100
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, sock_type) as sock:
                try:
                    if sock_type == socket.SOCK_STREAM:
                        sock.connect(path)
                    else:
                        sock.sendto(b"x", path)
                    code = 0
                except OSError as exc:
                    code = exc.errno or 101
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    code = os.WEXITSTATUS(status)
    assert code not in (100, 101), "the child could not drop privileges"
    return code


@contextlib.contextmanager
def at_bind(path: str, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` at the moment the socket file at ``path`` is bound, before anything else
    happens to it (the narration of bind() is emitted right after the call returns)."""
    previous = trace.current_sink()

    def sink(line: str) -> None:
        if line.startswith("bind(") and path in line:
            action()

    trace.enable(sink)
    try:
        yield
    finally:
        if previous is None:
            trace.disable()
        else:
            trace.enable(previous)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as uid 65534")
@pytest.mark.parametrize("how", BINDERS)
def test_a_private_socket_is_never_reachable_even_under_umask_000(how: str, sock_dir: str) -> None:
    """mode=0o600 under umask 000: at the very moment bind() returns, the file is already 0600
    and uid 65534 cannot connect or send (the mode used to be set by a chmod after bind)."""
    os.chmod(sock_dir, 0o755)  # nobody may enter the folder: the socket's own mode decides
    path = os.path.join(sock_dir, "private.sock")
    sock_type = socket.SOCK_DGRAM if ("datagram" in how) else socket.SOCK_STREAM
    seen: list[tuple[int, int]] = []

    def probe() -> None:
        seen.append((stat.S_IMODE(os.lstat(path).st_mode), reach_as_nobody(path, sock_type)))

    with umask(0), at_bind(path, probe):
        for _ in range(3):
            _open_and_close(how, f"unix://{path}", 0o600)
            assert not os.path.lexists(path)
    assert seen == [(0o600, errno.EACCES)] * 3


@pytest.mark.parametrize("how", BINDERS)
def test_a_symlink_planted_after_bind_is_never_followed(how: str, sock_dir: str) -> None:
    """Whoever can write to the folder swaps the new socket file for a symlink to a private
    file right after bind: the file behind the link keeps its mode, the bind fails cleanly."""
    path = os.path.join(sock_dir, "swapped.sock")
    secret = os.path.join(sock_dir, "secret")
    with open(secret, "w") as f:
        f.write("root only\n")
    os.chmod(secret, 0o600)

    def swap() -> None:
        os.rename(path, path + ".moved")
        os.symlink(secret, path)

    with umask(0o022), at_bind(path, swap), pytest.raises(NotASocket, match="replaced"):
        _open_and_close(how, f"unix://{path}", 0o666)  # 0o666 & ~0o022: the mode is widened
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert os.path.islink(path)  # not ours: left where it is


# --- connecting to a path that is not a socket --------------------------------------------------

CONNECTORS: dict[str, Callable[[str], object]] = {
    "connect": lambda p: enchufe.connect(f"unix://{p}"),
    "connect_datagram": lambda p: enchufe.connect_datagram(f"unixgram://{p}"),
    "aio.connect": lambda p: aio.run(aio.connect(f"unix://{p}")),
    "aio.connect_datagram": lambda p: aio.run(aio.connect_datagram(f"unixgram://{p}")),
    "sendto": lambda p: _sendto(f"unixgram://{p}"),
}


def _sendto(address: str) -> None:
    with enchufe.bind_datagram(f"unixgram:@enchufe-test-sendto-{os.getpid()}") as sock:
        sock.sendto(b"x", address)


@pytest.mark.parametrize("how", list(CONNECTORS))
@pytest.mark.parametrize("what", ["a regular file", "a directory"])
def test_connecting_to_a_path_that_is_not_a_socket_says_so(how: str, what: str, sock_dir: str) -> None:
    """Linux answers "connection refused" for a file that is not a socket: enchufe says what it is."""
    path = os.path.join(sock_dir, "passwd")
    if what == "a directory":
        os.mkdir(path)
    else:
        with open(path, "w") as f:
            f.write("root:x:0:0::/root:/bin/sh\n")
    with pytest.raises(NotASocket) as info:
        CONNECTORS[how](path)
    message = str(info.value)
    assert f"{path} is {what}, not a socket" in message
    assert "refused" not in message and "--" not in message
    assert not info.value.retryable
    assert info.value.attempts in ((), (info.value,))


@pytest.mark.parametrize("how", list(CONNECTORS))
def test_connecting_to_a_missing_path_says_start_the_server(how: str, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "nobody-here.sock")
    with pytest.raises(enchufe.ConnectionRefused) as info:
        CONNECTORS[how](path)
    message = str(info.value)
    hint = "start the server first" + (", or the peer has gone" if how == "sendto" else "")
    assert f"no such socket file {path} ({hint})" in message
    assert "--" not in message  # the library never names a command-line option
    assert info.value.retryable


# --- the sun_path limit --------------------------------------------------------------------------


def path_of(sock_dir: str, size: int) -> str:
    path = os.path.join(sock_dir, "")
    return path + "p" * (size - len(path))


@pytest.mark.parametrize(
    "call",
    [
        lambda p: enchufe.listen(f"unix://{p}"),
        lambda p: enchufe.bind_datagram(f"unixgram://{p}"),
        lambda p: enchufe.connect(f"unix://{p}"),
        lambda p: enchufe.connect_datagram(f"unixgram://{p}"),
    ],
    ids=["listen", "bind_datagram", "connect", "connect_datagram"],
)
def test_path_over_107_bytes_is_refused_before_any_socket(
    call: Callable[[str], object], sock_dir: str, trace_lines: list[str]
) -> None:
    path = path_of(sock_dir, 108)
    assert len(os.fsencode(path)) == 108
    with pytest.raises(AddressError, match="108 bytes"):
        call(path)
    assert not [line for line in trace_lines if line.startswith("socket(")]
    assert not os.path.lexists(path)


def test_path_of_107_bytes_works(sock_dir: str) -> None:
    path = path_of(sock_dir, 107)
    with enchufe.listen(f"unix://{path}") as listener, enchufe.connect(listener.address):
        listener.accept().close()
    assert not os.path.lexists(path)
