"""Unix socket files: binding a path (stale files cleared, the mode set before the file exists),
autobind for a reply address, removing only our own file, and plain words for failures at a path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from . import trace
from ._calls import bind, unlink
from ._text import printable
from .address import UnixAddress
from .errors import AddressInUse, ConnectionRefused, NetworkError, NotASocket, PermissionDenied, doing
from .i18n import N_, _

_log = logging.getLogger("enchufe")


@dataclass
class SocketFile:
    """A unix socket file this process created, removed on release only if it is still ours."""

    path: str
    device: int
    inode: int

    def release(self) -> None:
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == (self.device, self.inode):
            with contextlib.suppress(OSError):
                unlink(self.path, N_("our socket file, removed on close"))


def clear_stale_socket_file(address: UnixAddress, sock_type: int) -> None:
    """Make way for binding ``address``: remove a stale socket file, refuse anything else.

    A socket file nobody accepts on is stale (a server that died without cleaning up) and is
    removed.  A live one means another server owns the address: :class:`AddressInUse`.  A file
    that is not a socket is never touched: :class:`NotASocket`.
    """
    path = address.path
    if path is None:
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise NotASocket(
            _(
                "cannot listen on {address}: {path} exists and is not a socket; "
                "enchufe never removes it: pick another path or remove it yourself"
            ).format(address=address, path=path),
            errno=errno.EEXIST,
        )
    if _socket_file_alive(path):
        raise AddressInUse(
            _(
                "cannot listen on {address}: address in use: a live server is bound there; "
                "stop it or pick another path"
            ).format(address=address),
            errno=errno.EADDRINUSE,
        )
    with contextlib.suppress(FileNotFoundError):
        unlink(path, N_("stale socket file: nobody accepts on it"))


def _socket_file_alive(path: str) -> bool:
    """Whether a socket is bound at ``path``, asked without disturbing it.

    A datagram socket's connect() only looks the path up: it answers ECONNREFUSED when nobody
    is bound there any more (stale), succeeds for a bound datagram socket, and says EPROTOTYPE
    for a live socket of another type.  A stream probe would instead queue a real connection,
    which a one-shot server would take as its client.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # EPROTOTYPE: alive, of another type; anything else: never remove it
    return True


def explain_unix_failure(address: object, exc: OSError, what: str) -> NetworkError | None:
    """A plainer error than the errno's when connecting or sending to a unix path failed.

    Linux answers ECONNREFUSED for a path that is not a socket at all (a regular file, a
    directory), which would send the user looking for a server that is not there; ENOENT means
    no socket file (yet); EACCES is about the file's or its folder's permissions, not a port.
    A datagram sent to a unix peer (a server's reply) fails the same ways when that peer closed
    its socket or removed its file: said so, not "start the server" nor "the port answered".
    ``None`` when the errno's own translation says it well.
    """
    if not isinstance(address, UnixAddress):
        return None
    action = what.split(" ", 1)[0]
    sending = action != "connect"
    if address.path is None:  # an abstract name: no file to look at
        if sending and exc.errno == errno.ECONNREFUSED:
            name = printable(str(address))
            return ConnectionRefused(
                _("cannot {what}: nothing receives on {address} any more (its socket is closed)").format(
                    what=doing(what), address=name
                ),
                errno=errno.ECONNREFUSED,
                action=action,
            )
        return None
    path = printable(address.path)
    if exc.errno == errno.ECONNREFUSED:
        try:
            st = os.stat(address.path)
        except OSError:
            return None
        if stat.S_ISSOCK(st.st_mode):
            if sending:
                return ConnectionRefused(
                    _("cannot {what}: nothing receives on {address} any more (its socket is closed)").format(
                        what=doing(what), address=path
                    ),
                    errno=errno.ECONNREFUSED,
                    action=action,
                )
            return None  # a socket nobody accepts on: "connection refused" says it
        if stat.S_ISDIR(st.st_mode):
            message = _(
                "cannot {what}: {path} is a directory, not a socket; give the path of a server's socket file"
            )
        elif stat.S_ISREG(st.st_mode):
            message = _(
                "cannot {what}: {path} is a regular file, not a socket; "
                "give the path of a server's socket file"
            )
        else:
            message = _(
                "cannot {what}: {path} is a file, not a socket; give the path of a server's socket file"
            )
        return NotASocket(
            message.format(what=doing(what), path=path),
            errno=errno.ENOTSOCK,
            action=action,
        )
    if exc.errno == errno.ENOENT:
        if sending:
            message = _(
                "cannot {what}: no such socket file {path} (start the server first, or the peer has gone)"
            )
        else:
            message = _("cannot {what}: no such socket file {path} (start the server first)")
        return ConnectionRefused(
            message.format(what=doing(what), path=path),
            errno=errno.ENOENT,
            action=action,
        )
    if exc.errno == errno.EACCES:
        return PermissionDenied(
            _(
                "cannot {what}: permission denied: this user may not write to {path} "
                "or enter its folder; check their permissions"
            ).format(what=doing(what), path=path),
            errno=errno.EACCES,
            action=action,
        )
    return None


def bind_unix(sock: socket.socket, address: UnixAddress, mode: int | None) -> SocketFile | None:
    """Bind a unix socket, clearing a stale file first; the socket file is born with ``mode``.

    The mode is given to the socket itself before bind (``fchmod`` on the descriptor: Linux
    creates the file with the socket's mode, less the umask), so the file never exists with a
    wider mode than asked, and no path is ever chmodded after bind, which would follow a symlink
    planted there.  Bits the umask removed are added back through a descriptor of the new file
    itself (opened with O_PATH|O_NOFOLLOW and checked to be a socket of ours).  If anything
    fails after bind, the new socket file is removed.
    """
    clear_stale_socket_file(address, sock.type)
    path = address.path
    if mode is not None and path is not None:
        os.fchmod(sock.fileno(), mode)
        if trace.enabled():
            trace.emit(f"fchmod(fd {sock.fileno()}, {mode:#o})  # the socket file is created with it")
    if path is None:
        bind(sock, address.sockaddr)
        return None
    # A stop signal (the CLI makes SIGINT, SIGTERM and SIGHUP a KeyboardInterrupt) landing between
    # bind and the SocketFile in the caller's hands would leave the new file behind.  The signals
    # are held meanwhile, so that one that comes is raised where the file can still be removed;
    # and since another thread may take a signal the main thread holds, whatever is raised before
    # the file is owned removes it if this socket made it.
    held = _hold(_STOP_SIGNALS)
    owned: SocketFile | None = None
    try:
        bind(sock, address.sockaddr)
        owned = _own(path, mode)
        _hold(held, signal.SIG_SETMASK)  # raises the KeyboardInterrupt of a signal held
    except BaseException:
        if owned is not None:
            owned.release()
        elif _bound_to(sock, path):
            _remove_new_socket_file(path)
        _hold(held, signal.SIG_SETMASK)
        raise
    return owned


def _bound_to(sock: socket.socket, path: str) -> bool:
    with contextlib.suppress(OSError):
        return bool(sock.getsockname() == path)
    return False


#: The signals the CLI turns into KeyboardInterrupt (enchufe.cli._common.STOP_SIGNALS).
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _hold(signals: Iterable[int], how: int = signal.SIG_BLOCK) -> set[int | signal.Signals]:
    """``pthread_sigmask(how, signals)`` on the main thread (where Python runs signal
    handlers, as it does on return from this call for any signal unblocked); the mask before."""
    if threading.current_thread() is not threading.main_thread():
        return set()
    return signal.pthread_sigmask(how, signals)


def _own(path: str, mode: int | None) -> SocketFile:
    """The SocketFile for the socket file just bound at ``path``, given ``mode`` if the umask
    narrowed it; on failure the file is removed."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        _remove_new_socket_file(path)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            # Replaced between bind and open by whoever can write to the folder: not ours.
            raise OSError(errno.ENOTSOCK, f"{path} was replaced by something else right after bind")
        owned = SocketFile(path, st.st_dev, st.st_ino)
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            _widen_mode(fd, path, mode)
    except OSError:
        os.close(fd)
        _remove_new_socket_file(path)
        raise
    os.close(fd)
    return owned


def _widen_mode(fd: int, path: str, mode: int) -> None:
    """Give the socket file open as ``fd`` (O_PATH) exactly ``mode``, which the umask narrowed.

    fchmod() refuses O_PATH descriptors; /proc/self/fd/N names the very file they hold, never
    a symlink's target.  Without /proc the file keeps the narrower mode: safe, and said.
    """
    try:
        os.chmod(f"/proc/self/fd/{fd}", mode)
    except FileNotFoundError:
        _log.warning(
            _("{path} keeps the mode the umask left (/proc is not mounted to set {mode})").format(
                path=path, mode=f"{mode:#o}"
            )
        )
        return
    if trace.enabled():
        trace.emit(f"chmod(/proc/self/fd/{fd}, {mode:#o})  # {path}, through its descriptor")


def _remove_new_socket_file(path: str) -> None:
    """After a failure right after bind: remove the socket file just made, if it is ours."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid():
            unlink(path, N_("bind succeeded but what followed failed"))


def autobind_unix(sock: socket.socket) -> SocketFile | None:
    """Give an unbound unix datagram socket a reply address, so that servers can answer it.

    Linux assigns a unique abstract name when binding to the empty address ("autobind"); where
    that is not available, a fresh path in a private temporary folder is used and removed on close.
    """
    try:
        bind(sock, "")
        return None
    except OSError:
        folder = tempfile.mkdtemp(prefix="enchufe-")
        path = os.path.join(folder, "reply.sock")
        bind(sock, path)
        st = os.stat(path)
        return _TempSocketFile(path, st.st_dev, st.st_ino)


class _TempSocketFile(SocketFile):
    def release(self) -> None:
        super().release()
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.path))
