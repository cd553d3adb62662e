"""A terminated client's TLS read and written by OpenSSL on the socket itself (relay/tls_pump.py,
tlschannel.py's ``sock=``): what epoll cannot see, and what OpenSSL's shutdown would read.

* Plaintext OpenSSL keeps after a read (a record bigger than the buffer it was read into) is
  not announced by the socket: the pump must take it in the same wake-up, not wait for bytes
  that may never come.
* close_notify towards the client while the client's bytes wait in the relay's socket (or
  towards a TLS target while its bytes do): OpenSSL's shutdown reads the socket after sending
  close_notify, and would take (and drop) them.
"""

from __future__ import annotations

import hashlib
import queue
import re
import select
import socket
import ssl
import subprocess
import threading
from typing import IO

from enchufe._tlsstream import TLSSetup
from enchufe.relay import RelayConfig
from enchufe.relay.tls_pump import SocketTLSPump, TLSLink, make_pump
from enchufe.tlsparams import TLSParams
from tests.tls import conftest as tls_conftest

from ._gateway import tool
from ._harness import narrated
from .conftest import STEP, Target, dial, echo, relay_thread, sockaddr_of
from .test_tls_relay import _client, _terminating

#: PEM files of one trustme CA (tests/tls/conftest.py)
pem = tls_conftest.pem

RECORD = 16384
_ACCEPTED = re.compile(r"^accept\(fd \d+\) = fd (\d+) from ")
#: How long a socket that takes nothing means that it is full.
PAUSE = 0.2


def _client_context(pem: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pem["ca"])
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def test_plaintext_openssl_keeps_after_a_wake_up_goes_on_in_the_same_run(pem: dict[str, str]) -> None:
    # One 16 KiB record, a 1 KiB buffer: the record leaves the socket at the first read, and
    # the rest of its plaintext waits in OpenSSL, where epoll cannot see it.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem["server"])
    relay_end, client_end = socket.socketpair()
    dst_r, dst_w = socket.socketpair()
    with relay_end, client_end, dst_r, dst_w:
        channel = TLSSetup(context, TLSParams(), True).channel("tls test", sock=relay_end)
        link = TLSLink(channel, relay_end.fileno())
        assert link.channel.on_socket
        client_end.settimeout(STEP)
        client = _client_context(pem).wrap_socket(
            client_end, server_hostname="localhost", do_handshake_on_connect=False
        )
        _relay_one_record(link, client, relay_end, dst_r, dst_w)


def _relay_one_record(
    link: TLSLink, client: ssl.SSLSocket, relay_end: socket.socket, dst_r: socket.socket, dst_w: socket.socket
) -> None:
    with client:
        shaking = threading.Thread(target=client.do_handshake, daemon=True)
        shaking.start()
        for _ in range(50):  # bounded: a handshake is a few flights
            if link.channel.handshake():
                break
            assert select.select([relay_end], [], [], STEP)[0], "the client's handshake stalled"
        shaking.join(STEP)
        assert link.channel.handshaken and not shaking.is_alive()
        pump = make_pump(
            relay_end.fileno(),
            dst_w.fileno(),
            src_link=link,
            dst_link=None,
            finish=lambda: None,
            dst_is_pipe=False,
            buffer=memoryview(bytearray(1024)),
        )
        assert isinstance(pump, SocketTLSPump)
        client.sendall(b"r" * RECORD)
        assert select.select([relay_end], [], [], STEP)[0]
        pump.run()  # one readiness event
        assert not select.select([relay_end], [], [], 0)[0], "the socket still has bytes"
        dst_r.setblocking(False)
        got = b""
        while True:
            try:
                chunk = dst_r.recv(65536)
            except BlockingIOError:
                break
            got += chunk
        assert got == b"r" * RECORD, f"{len(got)} of {RECORD} bytes passed on; the rest waits in OpenSSL"


def test_close_notify_while_the_clients_bytes_wait_in_the_relay_loses_none(pem: dict[str, str]) -> None:
    # The target answers and ends first, once the client's upload has filled every buffer on
    # its way (the target reads it only later): the relay's socket holds the client's records
    # when close_notify goes to the client, and every byte of the upload must still arrive.
    blocked = threading.Event()
    heard = threading.Event()

    def serve(conn: socket.socket) -> tuple[int, str]:
        first = conn.recv(4096)
        assert blocked.wait(STEP), "the client's upload never filled the buffers"
        conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)
        assert heard.wait(STEP), "the client never heard the end"
        digest = hashlib.sha256(first)
        count = len(first)
        while chunk := conn.recv(65536):
            digest.update(chunk)
            count += len(chunk)
        return count, digest.hexdigest()

    with Target("tcp://127.0.0.1:0", serve) as target, _terminating(pem, target.address) as relay:
        with _client_context(pem).wrap_socket(dial(relay.address), server_hostname="localhost") as client:
            count, digest = _upload_until_the_end(client, blocked, heard)
        assert target.wait_results(1) == [(count, digest)]
        assert relay.relay.stats.snapshot().reset == 0


def test_close_notify_to_a_target_whose_bytes_wait_in_the_relay_loses_none(pem: dict[str, str]) -> None:
    # The same towards a TLS target (origination): the plain client ends first, once the
    # target's stream has filled every buffer on its way; close_notify goes to the target.
    blocked = threading.Event()
    heard = threading.Event()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem["server"])

    def serve(conn: socket.socket) -> tuple[int, str]:
        with context.wrap_socket(conn, server_side=True) as tls:
            return _upload_until_the_end(tls, blocked, heard)

    with Target("tcp://127.0.0.1:0", serve) as target:
        config = RelayConfig(
            "tcp://127.0.0.1:0", f"tls://{target.address.removeprefix('tcp://')}?ca={pem['ca']}&sni=localhost"
        )
        with relay_thread(config) as relay, dial(relay.address) as client:
            first = client.recv(4096)
            assert first and blocked.wait(STEP), "the target's stream never filled the buffers"
            client.sendall(b"bye")
            client.shutdown(socket.SHUT_WR)
            digest = hashlib.sha256(first)
            count = len(first)
            while chunk := client.recv(65536):
                digest.update(chunk)
                count += len(chunk)
            assert heard.is_set()
            assert target.wait_results(1) == [(count, digest.hexdigest())]
            assert relay.relay.stats.snapshot().reset == 0


def _upload_until_the_end(
    client: ssl.SSLSocket, blocked: threading.Event, heard: threading.Event
) -> tuple[int, str]:
    """Send until the relay's close_notify came after "bye" (the socket full meanwhile: set
    ``blocked``), then close_notify back: the bytes sent and their sha256."""
    client.setblocking(False)
    chunk = bytes(range(256)) * 64
    digest = hashlib.sha256()
    sent = 0
    answer = b""
    idle = 0
    for _ in range(100_000):  # bounded: some 16 MiB fill the buffers
        readable, writable, _ = select.select([client], [client], [], PAUSE)
        if not (readable or writable):  # the socket takes no more: every buffer on the way is full
            blocked.set()
            idle += 1
            assert idle * PAUSE < STEP, "nothing moved"
            continue
        if readable:
            try:
                data = client.recv(65536)
            except ssl.SSLWantReadError:
                data = None
            if data == b"":  # close_notify
                assert answer == b"bye"
                heard.set()
                break
            answer += data or b""
        if writable:
            try:
                client.send(chunk)  # whole: one record
            except (ssl.SSLWantWriteError, BlockingIOError):
                blocked.set()
                continue
            digest.update(chunk)
            sent += len(chunk)
    assert heard.is_set()
    client.setblocking(True)
    client.settimeout(STEP)
    client.unwrap()
    return sent, digest.hexdigest()


def test_a_traced_relay_narrates_the_system_calls_of_its_tls_sides(pem: dict[str, str]) -> None:
    # OpenSSL on the socket makes its own reads and writes, unseen: a relay that narrates them
    # keeps its TLS sides on memory BIOs, and reads the client's records itself.
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        _terminating(pem, target.address) as relay,
        narrated() as lines,
        _client(relay, pem) as conn,
    ):
        conn.send_all(b"narrated")
        assert conn.recv() == b"narrated"
    accepted = [match.group(1) for line in lines if (match := _ACCEPTED.match(line))]
    assert accepted, "\n".join(lines)
    assert any(line.startswith(f"read(fd {accepted[0]}, ") for line in lines), "\n".join(lines)


def test_key_updates_from_openssl_are_answered_and_the_data_flows_on(pem: dict[str, str]) -> None:
    # s_client's "K" asks the relay to update its keys too (OpenSSL answers on the socket
    # itself), "k" updates only its own; the echo must go on after each.
    with Target("tcp://127.0.0.1:0", echo) as target, _terminating(pem, target.address) as relay:
        host, port = sockaddr_of(relay.address)[1]
        command = [tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-CAfile", pem["ca"]]
        command += ["-servername", "localhost"]
        with subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as client:
            assert client.stdin is not None and client.stdout is not None
            lines = _lines_of(client.stdout)
            try:
                for line, answer in (("one", "one"), ("K", "KEYUPDATE"), ("two", "two"), ("k", "KEYUPDATE")):
                    client.stdin.write(line + "\n")
                    client.stdin.flush()
                    _wait_for(lines, answer)
                client.stdin.write("three\n")
                client.stdin.flush()
                _wait_for(lines, "three")
            finally:
                client.kill()
        assert target.wait_results(1) == [None]


def _lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines of ``stream``, stripped, as a thread reads them."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], wanted: str) -> None:
    seen = []
    for _ in range(200):  # bounded: s_client prints a screenful before the first line
        line = lines.get(timeout=STEP)
        if line == wanted:
            return
        seen.append(line)
    raise AssertionError(f"no {wanted!r} in: {seen}")
