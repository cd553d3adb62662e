"""enchufe._tls_socket: close_notify caught in the process's socketpair, one shutdown at a time."""

from __future__ import annotations

import os
import socket
import threading
import time

from enchufe import _tls_socket

ROUNDS = 200


def _catch_many(sock: socket.socket, marker: bytes, results: list[bytes], start: threading.Barrier) -> None:
    """Catch ROUNDS "shutdowns" of ``sock``, each writing ``marker`` twice with a pause between
    (as OpenSSL may write a record in parts), and keep what each call caught."""
    fd = sock.fileno()

    def shutdown() -> None:
        os.write(fd, marker)
        time.sleep(0.0002)  # the other thread runs here: its shutdown overlaps this one
        os.write(fd, marker)

    start.wait()
    for _round in range(ROUNDS):
        results.append(_tls_socket.shutdown_caught(fd, shutdown))


def test_two_threads_each_catch_only_their_own_bytes() -> None:
    """A relay's thread and a sync endpoint's thread may close at the same moment: each must get
    exactly what its own shutdown sent (another's close_notify would go to the wrong peer), and
    its socket must be its own again afterwards."""
    pairs = [socket.socketpair() for _ in range(2)]
    results: list[list[bytes]] = [[], []]
    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=_catch_many, args=(pairs[i][0], marker, results[i], start))
        for i, marker in enumerate((b"A", b"B"))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert results[0] == [b"AA"] * ROUNDS
        assert results[1] == [b"BB"] * ROUNDS
        for sock, peer in pairs:  # the descriptor is the socket again: its peer hears it
            sock.sendall(b"mine")
            assert peer.recv(16) == b"mine"
    finally:
        for sock, peer in pairs:
            sock.close()
            peer.close()


def test_a_forked_child_catches_with_its_own_lock_and_pair() -> None:
    """A fork made while another thread holds the lock: the child still catches (its own lock,
    its own socketpair), where the parent's held lock would block it forever."""
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with _tls_socket._catching:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    a, b = socket.socketpair()
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if it caught its bytes
            code = 1
            try:
                fd = a.fileno()

                def shutdown() -> None:
                    os.write(fd, b"child")

                got = _tls_socket.shutdown_caught(fd, shutdown)
                code = 0 if got == b"child" else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not done:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert done and os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join(10)
        a.close()
        b.close()
