"""Starting bench's own servers in a child process and talking to it (see :mod:`.servers`)."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import threading
from types import TracebackType
from typing import IO, Any

from ..address import InetAddress, SocketAddress, UnixAddress, parse
from ..errors import EnchufeError, NetworkError, UsageError
from ..i18n import _, language
from .sequence import Counts

__all__ = ["ServerProcess"]

#: Seconds the child may take to answer one control request (starting Python and importing
#: enchufe comes first, which on a loaded machine can take a few seconds).
ANSWER_TIMEOUT = 20.0

#: The command that runs the servers: this interpreter, the servers module (given the language
#: its errors are to be in).
COMMAND = (sys.executable, "-m", "enchufe.bench.servers")


class ServerProcess:
    """The child process that runs bench's own servers; a context manager.

    ``start(role, address)`` binds a server there and returns its real address;
    ``counts(id, token)`` asks a counting sink what it received; closing ends the child.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._pins: dict[int, str] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            (*COMMAND, language()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # a crash in the child shows on our stderr
            text=True,
            bufsize=1,
        )
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # EOF: the child stops its servers and exits
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _request(self, **request: Any) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise EnchufeError(_("bench's server process is not running"))
        with self._lock:
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
            except OSError as exc:
                message = _("bench's server process (pid {pid}) is gone: {error}").format(
                    pid=proc.pid, error=exc
                )
                raise NetworkError(message) from exc
            line = _readline(proc.stdout, ANSWER_TIMEOUT)
        if not line:
            raise NetworkError(
                _("bench's server process (pid {pid}) ended unexpectedly").format(pid=proc.pid)
            )
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            error = str(reply.get("error") or _("unknown error"))
            raise UsageError(error) if reply.get("usage") else NetworkError(error)
        return reply

    def start(self, role: str, address: str) -> tuple[int, SocketAddress]:
        """Start a ``role`` server on ``address`` (port 0 allowed): (its id, its real address)."""
        reply = self._request(op="start", role=role, address=address)
        bound = parse(str(reply["address"]))
        if not isinstance(bound, InetAddress | UnixAddress):
            raise EnchufeError(
                _("bench's server process answered with {address}, not a socket address").format(
                    address=bound
                )
            )
        if reply.get("pin"):
            self._pins[int(reply["id"])] = str(reply["pin"])
        return int(reply["id"]), bound

    def pin(self, server_id: int) -> str | None:
        """``sha256:HEX`` of a TLS server started with ``cert=auto`` (None for a plain one)."""
        return self._pins.get(server_id)

    def counts(self, server_id: int, token: int) -> Counts:
        reply = self._request(op="counts", id=server_id, token=token)
        return Counts(
            received=int(reply["received"]),
            duplicates=int(reply["duplicates"]),
            reordered=int(reply["reordered"]),
            foreign=int(reply["foreign"]),
        )

    def stop(self, server_id: int) -> None:
        self._request(op="stop", id=server_id)


def _readline(stream: IO[str], timeout: float) -> str:
    """One line from ``stream``, or a NetworkError after ``timeout`` seconds.

    One request is answered by exactly one line, so nothing is ever left in the stream's buffer
    after a reply: waiting on the descriptor is enough.
    """
    ready, _w, _x = select.select([stream], [], [], timeout)
    if not ready:
        raise NetworkError(
            _("bench's server process did not answer within {seconds} s").format(seconds=f"{timeout:g}")
        )
    return stream.readline()
