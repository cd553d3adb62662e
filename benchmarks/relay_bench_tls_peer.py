#!/usr/bin/env python3
"""The TLS client and server of the TLS legs of ``benchmarks/relay_bench.py``.

Run by ``relay_bench_tls.py`` as separate processes (so that the client's crypto runs on its own
core, not in the harness), the same client in front of every contender (socat, stunnel,
enchufe): what differs between the figures is the relay in the middle.  Python's ``ssl`` is
OpenSSL underneath, with the bytes handed over in large blocks; ``openssl s_client`` is far
slower.  Every client connects to 127.0.0.1 with the server name ``localhost``, verifies the
server against CA, and requires TLS 1.3.  Each prints ONE line of ``key=value`` pairs.

    send PORT CA MIB             handshake, then MIB MiB in 256 KiB writes, then close_notify;
                                 the clock stops when the far end's close comes back (the sink
                                 closed: every byte delivered): bytes= seconds= gbps= version=
                                 cipher= end= (how the far end closed)
    ping PORT CA COUNT           handshake, WARMUP round trips untimed, then COUNT 1-byte round
                                 trips: rtps= p50_us= count=
    handshakes PORT CA COUNT AT  from monotonic time AT, COUNT times: connect, full handshake (no
                                 resumption), close_notify, wait for the far end's: count=
                                 errors= (connect or handshake failed) unclean= (closed without
                                 close_notify) first= last= (monotonic seconds, comparable
                                 between processes)
    sink PORT CERT               TLS server (until killed): every client's bytes read and
                                 discarded until its close_notify, then one sent back
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import statistics
import sys
import threading
import time

SERVER_NAME = "localhost"
BLOCK = 256 * 1024
#: Round trips before the clock starts: the first ones also carry the server's session tickets
#: and can wait for a delayed ACK (socat does not set TCP_NODELAY).
WARMUP = 20
#: No single connect, read or write waits longer than this (seconds).
TIMEOUT = 60.0


def client_context(ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return context.wrap_socket(raw, server_hostname=SERVER_NAME)
    except BaseException:
        raw.close()
        raise


def close_notify(conn: ssl.SSLSocket) -> str:
    """Send close_notify and wait for the far end's close: how it came (``close_notify``, or the
    error of a close without one)."""
    try:
        conn.unwrap().close()
        return "close_notify"
    except (OSError, ValueError) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def send(port: int, ca: str, mib: int) -> str:
    conn = connect(port, client_context(ca))
    block = memoryview(os.urandom(BLOCK))
    total = mib << 20
    version, cipher = conn.version(), (conn.cipher() or ("?",))[0]
    started = time.perf_counter()
    sent = 0
    while sent < total:
        conn.sendall(block)
        sent += len(block)
    end = close_notify(conn)
    seconds = time.perf_counter() - started
    return (
        f"bytes={sent} seconds={seconds:.6f} gbps={sent * 8 / seconds / 1e9:.4f} "
        f"version={version} cipher={cipher} end={end}"
    )


def bounce(conn: ssl.SSLSocket, byte: bytes) -> None:
    conn.sendall(byte)
    if conn.recv(1) != byte:
        raise ConnectionError("the echo ended or answered something else")


def ping(port: int, ca: str, count: int) -> str:
    conn = connect(port, client_context(ca))
    times: list[float] = []
    try:
        for _ in range(WARMUP):
            bounce(conn, b"w")
        started = time.perf_counter()
        for _ in range(count):
            sent = time.perf_counter()
            bounce(conn, b"p")
            times.append(time.perf_counter() - sent)
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    return f"rtps={count / seconds:.1f} p50_us={statistics.median(times) * 1e6:.1f} count={count}"


def handshakes(port: int, ca: str, count: int, at: float) -> str:
    """No data: a byte echoed would also measure the gateway's writes after the handshake (socat,
    without TCP_NODELAY, held its first answer for a delayed ACK: 40 ms a connection).  The close
    still goes through the whole path: the gateway passes the close_notify on to the target as an
    EOF and sends its own when the target's close comes back."""
    context = client_context(ca)
    time.sleep(max(0.0, at - time.monotonic()))
    first = time.monotonic()
    errors = unclean = 0
    for _ in range(count):
        try:
            conn = connect(port, context)
        except OSError:
            errors += 1
            continue
        if close_notify(conn) != "close_notify":
            unclean += 1
    last = time.monotonic()
    return f"count={count - errors} errors={errors} unclean={unclean} first={first:.6f} last={last:.6f}"


def discard(raw: socket.socket, context: ssl.SSLContext) -> None:
    """One client of the sink: its bytes read until close_notify (or EOF), then ours sent."""
    with contextlib.suppress(OSError, ValueError):
        raw.settimeout(TIMEOUT)
        conn = context.wrap_socket(raw, server_side=True)
        buffer = bytearray(BLOCK)
        while conn.recv_into(buffer):
            pass
        close_notify(conn)
    raw.close()


def sink(port: int, cert: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert)
    # A thread per client: the harness's "is it listening" probe is a client too, one that
    # never finishes its handshake.
    with socket.create_server(("127.0.0.1", port), backlog=128) as listener:
        while True:
            raw, _ = listener.accept()
            threading.Thread(target=discard, args=(raw, context), daemon=True).start()


def main(argv: list[str]) -> None:
    usage = f"usage: {argv[0]} send|ping|handshakes|sink PORT ... (see the docstring)"
    if len(argv) < 4:
        raise SystemExit(usage)
    mode, port = argv[1], int(argv[2])
    if mode == "sink":
        sink(port, argv[3])
        return
    if mode == "send" and len(argv) == 5:
        print(send(port, argv[3], int(argv[4])), flush=True)
    elif mode == "ping" and len(argv) == 5:
        print(ping(port, argv[3], int(argv[4])), flush=True)
    elif mode == "handshakes" and len(argv) == 6:
        print(handshakes(port, argv[3], int(argv[4]), float(argv[5])), flush=True)
    else:
        raise SystemExit(usage)


if __name__ == "__main__":
    main(sys.argv)
