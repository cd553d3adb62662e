"""Routing by TLS server name with real handshakes (trustme certificates for a.test and
b.test): passthrough on a tcp:// or unix: LISTEN (the backend's own certificate reaches the
client: the bytes are untouched), termination on a tls:// LISTEN (the certificate chosen by the
name), ``openssl s_client -servername``, unmatched names, a ClientHello one byte at a time,
garbage, silence, and sha256 over a few MiB.  The relay runs in this process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from enchufe.relay import RelayConfig

from .conftest import (
    IO_TIMEOUT,
    STEP,
    RelayThread,
    StartRelay,
    Target,
    dial,
    generated,
    relay_thread,
    wait_until,
)

SIZE = 4 << 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: ``ca``; ``a``, ``b`` (a.test; b.test and *.example.com), ``other`` (the
    listener's own: other.test), and ``ca2``/``a2``: a.test from a second CA (for reloads)."""
    folder = tmp_path_factory.mktemp("routes")
    ca, ca2 = trustme.CA(), trustme.CA()
    paths = {name: str(folder / f"{name}.pem") for name in ("ca", "a", "b", "other", "ca2", "a2")}
    ca.cert_pem.write_to_path(paths["ca"])
    ca2.cert_pem.write_to_path(paths["ca2"])
    for name, issuer, hosts in (
        ("a", ca, ("a.test",)),
        ("b", ca, ("b.test", "*.example.com")),
        ("other", ca, ("other.test",)),
        ("a2", ca2, ("a.test",)),
    ):
        issuer.issue_cert(*hosts).private_key_and_cert_chain_pem.write_to_path(paths[name])
    return paths


def client_context(ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# ----------------------------------------------------------------------------- backends


def _tls_backend(cert: str, name: bytes) -> Any:
    """A TLS server's connection handler: say ``name``, then echo until close_notify."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)

    def serve(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(name + b"\n")
            with contextlib.suppress(ssl.SSLError, OSError):
                while data := tls.recv(256 * 1024):
                    tls.sendall(data)
                tls.unwrap()

    return serve


def _plain_backend(name: bytes) -> Any:
    def serve(conn: socket.socket) -> None:
        conn.sendall(name + b"\n")
        with contextlib.suppress(OSError):
            while data := conn.recv(256 * 1024):
                conn.sendall(data)

    return serve


Backends = tuple[Target, Target]


@pytest.fixture
def tls_backends(certs: dict[str, str]) -> Iterator[Backends]:
    with (
        Target("tcp://127.0.0.1:0", _tls_backend(certs["a"], b"A")) as a,
        Target("tcp://127.0.0.1:0", _tls_backend(certs["b"], b"B")) as b,
    ):
        yield a, b


@pytest.fixture
def plain_backends() -> Iterator[Backends]:
    with (
        Target("tcp://127.0.0.1:0", _plain_backend(b"plain A")) as a,
        Target("tcp://127.0.0.1:0", _plain_backend(b"plain B")) as b,
    ):
        yield a, b


@contextlib.contextmanager
def passthrough(
    backends: Backends, *, default: str = "-", listen: str = "tcp://127.0.0.1:0", **options: Any
) -> Iterator[RelayThread]:
    a, b = backends
    routes = (f"a.test={a.address}", f"*.example.com={b.address}", f"b.test={b.address}")
    with relay_thread(RelayConfig(listen, default, routes=routes, **options)) as relay:
        yield relay


@contextlib.contextmanager
def terminating(certs: dict[str, str], backends: Backends, **options: Any) -> Iterator[RelayThread]:
    a, b = backends
    routes = (f"a.test={a.address}?cert={certs['a']}", f"b.test={b.address}?cert={certs['b']}")
    listen = f"tls://127.0.0.1:0?cert={certs['other']}"
    with relay_thread(RelayConfig(listen, "-", routes=routes, **options)) as relay:
        yield relay


def hello_line(
    address: str, ca: str, name: str | None, *, alpn: list[str] | None = None, check_name: bool = True
) -> bytes:
    """Connect through the relay with TLS for ``name`` (verified against ``ca``): the line the
    backend says first."""
    with dial(address) as sock:
        ctx = client_context(ca)
        if name is None or not check_name:
            ctx.check_hostname = False
        if alpn:
            ctx.set_alpn_protocols(alpn)
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            return tls.recv(64)


def wait_stats(relay: RelayThread, key: str, count: int) -> None:
    wait_until(lambda: relay.relay.stats.routes.get(key, 0) >= count, f"{count} clients routed {key}")


# ----------------------------------------------------------------------------- passthrough


def test_passthrough_routes_by_server_name(certs: dict[str, str], tls_backends: Backends) -> None:
    """Each name reaches its backend, whose own certificate the client verifies: the relay
    passed the TLS bytes through untouched."""
    with passthrough(tls_backends) as relay:
        assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"
        assert hello_line(relay.address, certs["ca"], "B.Test") == b"B\n"
        assert hello_line(relay.address, certs["ca"], "www.example.com") == b"B\n"
        wait_stats(relay, "*.example.com", 1)
        fields = relay.relay.stats.snapshot().fields()
        assert fields["routes"] == {"a.test": 1, "b.test": 1, "*.example.com": 1}
        assert fields["to_target"] > 0
        routed = relay.events.named("route")
        assert [event["route"] for event in routed] == ["a.test", "b.test", "*.example.com"]
        assert routed[0]["server_name"] == "a.test"


def test_passthrough_on_a_unix_listener(
    certs: dict[str, str], tls_backends: Backends, tmp_path: Path
) -> None:
    listen = f"unix://{tmp_path / 'gw.sock'}"
    with passthrough(tls_backends, listen=listen) as relay:
        assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"


def test_default_target_takes_other_names_and_no_sni(certs: dict[str, str], tls_backends: Backends) -> None:
    _a, b = tls_backends
    with passthrough(tls_backends, default=b.address) as relay:
        assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"
        # b's certificate is not for nope.test: the client does not check the name here
        assert hello_line(relay.address, certs["ca"], None) == b"B\n"
        wait_stats(relay, "(default)", 1)


def test_passthrough_alpn_route(certs: dict[str, str], tls_backends: Backends) -> None:
    """``alpn=acme-tls/1``: clients of a.test offering it go to B (an ACME client's port, say);
    the others to a.test's plain route, A."""
    a, b = tls_backends
    routes = (f"a.test={a.address}", f"a.test={b.address}?alpn=acme-tls/1")
    with relay_thread(RelayConfig("tcp://127.0.0.1:0", "-", routes=routes)) as relay:
        assert hello_line(relay.address, certs["ca"], "a.test", alpn=["h2", "http/1.1"]) == b"A\n"
        line = hello_line(relay.address, certs["ca"], "a.test", alpn=["acme-tls/1"], check_name=False)
        assert line == b"B\n"
        wait_stats(relay, "a.test alpn=acme-tls/1", 1)
        assert relay.events.named("route")[1]["alpn"] == ["acme-tls/1"]


def test_unmatched_name_refused_with_an_alert(certs: dict[str, str], tls_backends: Backends) -> None:
    """TARGET -: a name no route takes is told unrecognized_name, said in one line, counted."""
    with passthrough(tls_backends) as relay:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            hello_line(relay.address, certs["ca"], "nope.test")
        wait_stats(relay, "(unmatched)", 1)
        refused = relay.events.named("refused")
        assert len(refused) == 1 and refused[0]["reason"] == "unmatched"
        assert "no route for server name nope.test" in refused[0]["detail"]
        assert all(target.accepted == 0 for target in tls_backends)
        assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"  # and it serves on


def test_hello_one_byte_at_a_time(certs: dict[str, str], tls_backends: Backends) -> None:
    """The ClientHello in as many TCP segments as it has bytes: routed all the same."""
    ctx = client_context(certs["ca"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="b.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with passthrough(tls_backends) as relay, dial(relay.address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(hello)):
            sock.send(hello[index : index + 1])
            if index % 64 == 0:
                time.sleep(0.001)  # let some of them arrive apart
        for _ in range(100):  # bounded: a handshake is a few rounds
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "the relay closed during the handshake"
                incoming.write(data)
        sock.sendall(outgoing.read())
        line = b""
        for _ in range(100):
            with contextlib.suppress(ssl.SSLWantReadError):
                line += tls.read(64)
            if line:
                break
            incoming.write(sock.recv(65536))
        assert line == b"B\n"


def test_garbage_is_refused_and_the_relay_serves_on(certs: dict[str, str], tls_backends: Backends) -> None:
    with passthrough(tls_backends) as relay:
        with dial(relay.address) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
        wait_stats(relay, "(no hello)", 1)
        (refused,) = relay.events.named("refused")
        assert refused["hello"] == "not-tls" and "plain text" in refused["detail"]
        assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"
        assert all(target.accepted == 1 for target in tls_backends[:1])


def test_silent_client_is_cut_at_the_timeout(certs: dict[str, str], tls_backends: Backends) -> None:
    """A client that sends nothing holds its slot until the (idle) timeout, then is cut."""
    with passthrough(tls_backends, idle_timeout=0.5) as relay, dial(relay.address) as sock:
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
        assert 0.4 < time.monotonic() - started < STEP
        wait_until(lambda: relay.relay.stats.open == 0, "the silent client's slot freed")
        (refused,) = relay.events.named("refused")
        assert refused["hello"] == "timeout" and "sent nothing within 0.5 s" in refused["detail"]
        assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"


def test_silent_clients_do_not_stall_the_others(certs: dict[str, str], tls_backends: Backends) -> None:
    """100 clients that send nothing: a routed client is served meanwhile, and every silent one
    is cut at the timeout, freeing its slot."""
    silent: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        relay = stack.enter_context(passthrough(tls_backends, idle_timeout=1.0))
        for _ in range(100):
            silent.append(stack.enter_context(dial(relay.address)))
        wait_until(lambda: relay.relay.stats.open == 100, "100 silent clients admitted")
        assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"
        wait_until(lambda: relay.relay.stats.open == 0, "the silent clients cut")
        assert relay.relay.stats.routes["(no hello)"] == 100
        for sock in silent:
            sock.settimeout(STEP)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""


def test_passthrough_integrity(certs: dict[str, str], tls_backends: Backends) -> None:
    """sha256 of a few MiB both ways through the passthrough (TLS end to end)."""
    ctx = client_context(certs["ca"])
    with (
        passthrough(tls_backends) as relay,
        dial(relay.address) as sock,
        ctx.wrap_socket(sock, server_hostname="a.test") as tls,
    ):
        assert tls.recv(2) == b"A\n"
        sent, received = hashlib.sha256(), hashlib.sha256()
        count = 0
        for big in generated(7, SIZE):
            for start in range(0, len(big), 64 * 1024):
                chunk = big[start : start + 64 * 1024]
                tls.sendall(chunk)
                sent.update(chunk)
                # The echo as it comes: never more than a chunk or two in flight, so neither
                # side's buffers fill up (one thread: an SSL socket is not shared across threads)
                while count < SIZE and _readable(tls, 0):
                    data = tls.recv(256 * 1024)
                    received.update(data)
                    count += len(data)
        while count < SIZE:
            data = tls.recv(256 * 1024)
            assert data
            received.update(data)
            count += len(data)
        assert received.hexdigest() == sent.hexdigest()


def _readable(sock: ssl.SSLSocket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


# ----------------------------------------------------------------------------- openssl s_client


def _s_client(port: int, name: str, ca: str) -> str:
    """What ``openssl s_client -servername NAME`` prints once its "ping" came back (it waits for
    the server's close with -quiet: it is stopped then)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, "-CAfile", ca]
    proc = subprocess.Popen(
        [*args, "-verify_return_error", "-quiet"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = b""
    try:
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        deadline = time.monotonic() + STEP
        while b"ping" not in out and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.1)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
    finally:
        proc.kill()
        proc.wait(STEP)
        proc.stdin.close()
        proc.stdout.close()
    return out.decode(errors="replace")


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("?")[0])


def test_openssl_s_client_through_both_kinds_of_route(
    certs: dict[str, str], tls_backends: Backends, plain_backends: Backends
) -> None:
    """``openssl s_client -servername``: a.test reaches TLS backend A through the passthrough
    and plain backend A through the terminating relay (with a.test's certificate); b.test
    reaches the B ones."""
    with passthrough(tls_backends) as through, terminating(certs, plain_backends) as ending:
        for name, passed, terminated in (("a.test", "A", "plain A"), ("b.test", "B", "plain B")):
            out = _s_client(_port(through.address), name, certs["ca"])
            assert f"{passed}\nping" in out, out
            out = _s_client(_port(ending.address), name, certs["ca"])
            assert f"{terminated}\nping" in out, out


# ----------------------------------------------------------------------------- termination


def test_termination_picks_the_certificate_by_name(certs: dict[str, str], plain_backends: Backends) -> None:
    with terminating(certs, plain_backends) as relay:
        assert hello_line(relay.address, certs["ca"], "a.test") == b"plain A\n"
        assert hello_line(relay.address, certs["ca"], "b.test") == b"plain B\n"
        wait_stats(relay, "b.test", 1)
        assert relay.relay.stats.tls_handshakes == 2
        # a name without a route and no default: the alert, before any certificate is shown
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            hello_line(relay.address, certs["ca"], "other.test")
        wait_stats(relay, "(unmatched)", 1)


def test_termination_route_without_cert_uses_the_listeners(
    certs: dict[str, str], plain_backends: Backends
) -> None:
    a, _b = plain_backends
    listen = f"tls://127.0.0.1:0?cert={certs['other']}"
    routes = (f"other.test={a.address}",)
    with relay_thread(RelayConfig(listen, "-", routes=routes)) as relay:
        assert hello_line(relay.address, certs["ca"], "other.test") == b"plain A\n"


def test_reload_reads_route_certificates_again(
    certs: dict[str, str], plain_backends: Backends, tmp_path: Path
) -> None:
    """SIGUSR1 (Relay.reload) reads the routes' certificates again for the next handshakes."""
    route_cert = tmp_path / "a.pem"
    shutil.copy(certs["a"], route_cert)
    a, _b = plain_backends
    listen = f"tls://127.0.0.1:0?cert={certs['other']}"
    with relay_thread(RelayConfig(listen, "-", routes=(f"a.test={a.address}?cert={route_cert}",))) as relay:
        assert hello_line(relay.address, certs["ca"], "a.test") == b"plain A\n"
        shutil.copy(certs["a2"], route_cert)
        relay.relay.reload()
        wait_until(lambda: bool(relay.events.named("reload")[1:]), "the routes' reload line")
        assert hello_line(relay.address, certs["ca2"], "a.test") == b"plain A\n"
        with pytest.raises(ssl.SSLCertVerificationError):
            hello_line(relay.address, certs["ca"], "a.test")


def test_reload_interval_watches_route_certificates(
    certs: dict[str, str], plain_backends: Backends, tmp_path: Path
) -> None:
    """--reload-interval: a route's certificate file replaced is read again, as SIGUSR1 does."""
    route_cert = tmp_path / "a.pem"
    shutil.copy(certs["a"], route_cert)
    a, _b = plain_backends
    listen = f"tls://127.0.0.1:0?cert={certs['other']}"
    config = RelayConfig(listen, "-", routes=(f"a.test={a.address}?cert={route_cert}",), reload_interval=0.1)
    with relay_thread(config) as relay:
        assert hello_line(relay.address, certs["ca"], "a.test") == b"plain A\n"
        replacement = tmp_path / "a2.pem"
        shutil.copy(certs["a2"], replacement)
        replacement.replace(route_cert)  # as a deployment does: a new file in its place
        wait_until(
            lambda: any("route certificates reloaded" in text for name, text, _ in relay.events.events),
            "the routes' certificates reloaded",
        )
        assert hello_line(relay.address, certs["ca2"], "a.test") == b"plain A\n"


def test_termination_integrity(certs: dict[str, str], plain_backends: Backends) -> None:
    """Bytes through a terminating route, both ways (a smaller size: Python does the TLS)."""
    ctx = client_context(certs["ca"])
    with (
        terminating(certs, plain_backends) as relay,
        dial(relay.address) as sock,
        ctx.wrap_socket(sock, server_hostname="b.test") as tls,
    ):
        tls.settimeout(IO_TIMEOUT)
        assert tls.recv(8) == b"plain B\n"
        payload = b"".join(generated(3, 1 << 20))
        tls.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = tls.recv(256 * 1024)
            assert data
            got += data
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


# ----------------------------------------------------------------------------- the command


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_routes_json_events_and_summary(
    start_relay: StartRelay, certs: dict[str, str], tls_backends: Backends, workers: str
) -> None:
    """``enchufe relay tcp://… - --route … --json``: the route each client took is an event and
    a count in the summary (of every worker); an unmatched name is one "refused" event."""
    a, b = tls_backends
    relay = start_relay(
        "tcp://127.0.0.1:0",
        "-",
        "--route",
        f"a.test={a.address}",
        "--route",
        f"*.example.com={b.address}",
        "--workers",
        workers,
        "--json",
    )
    assert hello_line(relay.address, certs["ca"], "a.test") == b"A\n"
    assert hello_line(relay.address, certs["ca"], "api.example.com") == b"B\n"
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        hello_line(relay.address, certs["ca"], "example.com")
    relay.wait_err(r'"event": "refused"')
    relay.signal()
    assert relay.finish() == 0, relay.err
    events = relay.json_events()
    routed = [e for e in events if e["event"] == "route"]
    assert sorted(e["server_name"] for e in routed) == ["a.test", "api.example.com"]
    (refused,) = [e for e in events if e["event"] == "refused"]
    assert refused["reason"] == "unmatched" and "example.com" in refused["detail"]
    counts: dict[str, int] = {}
    for summary in (e for e in events if e["event"] == "summary"):
        for route, count in summary.get("routes", {}).items():
            counts[route] = counts.get(route, 0) + count
    assert counts == {"a.test": 1, "*.example.com": 1, "(unmatched)": 1}
