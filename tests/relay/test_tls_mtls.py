"""Mutual TLS on a terminating relay (ghostunnel's job): ``client-ca`` and ``allow-san``.

A client without a certificate, with one from another CA, or with one whose names are not
allowed is refused (an alert or a close) and the relay says why in one line, with the names of
the certificate when it was read (escaped: the peer chose them); an allowed client is relayed,
and its verified identity reaches the target: an ``exec:`` child's ``ENCHUFE_TLS_*`` variables
and the ``--json`` accept and close events.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

import enchufe
from enchufe.errors import NetworkError
from tests.tls.conftest import client_of

from .conftest import StartRelay, Target, echo

CN_WITH_ESCAPE = "bob\x1b[2J"


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: ``ca`` (trusted for clients), ``server``, ``alice`` (allowed: DNS:alice.example),
    ``bob`` (the same CA, not allowed, a terminal escape in its CN), ``mallory`` (another CA)."""
    folder = tmp_path_factory.mktemp("mtls")
    ca, other = trustme.CA(), trustme.CA()
    files = {
        "server": ca.issue_cert("localhost", "127.0.0.1", common_name="localhost"),
        "alice": ca.issue_cert("alice.example", common_name="alice"),
        "bob": ca.issue_cert("bob.example", common_name=CN_WITH_ESCAPE),
        "mallory": other.issue_cert("alice.example", common_name="mallory"),
    }
    paths = {"ca": str(folder / "ca.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    for name, cert in files.items():
        paths[name] = str(folder / f"{name}.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(paths[name])
    return paths


def _listen(mtls: dict[str, str]) -> str:
    return f"tls://127.0.0.1:0?cert={mtls['server']}&client-ca={mtls['ca']}&allow-san=DNS:alice.example"


def _client(relay_address: str, mtls: dict[str, str], who: str | None) -> str:
    query = f"ca={mtls['ca']}" + (f"&cert={mtls[who]}" if who else "")
    return client_of(relay_address, query)


def _outcome(address: str) -> str:
    """What a client gets for a line: the echo, or how it was refused (TLS 1.3 clients learn of
    a refusal of their certificate only when they read)."""
    try:
        with enchufe.connect(address) as conn:
            conn.send_all(b"ping\n")
            answer = conn.recv()
    except NetworkError as exc:
        return f"refused: {exc}"
    return "echo" if answer == b"ping\n" else f"closed: {answer!r}"


@pytest.mark.parametrize(
    ("who", "reason", "names", "told"),
    [
        (None, "client-certificate-missing", "", "requires a client certificate"),
        ("mallory", "client-certificate-refused", "", "does not trust the CA of this client's certificate"),
        ("bob", "not-allowed", "DNS:bob.example", "refused this client's certificate"),
    ],
    ids=["no-certificate", "another-ca", "not-allowed"],
)
def test_a_client_that_is_not_allowed_is_refused_in_one_line(
    mtls: dict[str, str], start_relay: StartRelay, who: str | None, reason: str, names: str, told: str
) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("--json", _listen(mtls), target.address)
        address = relay.listening()
        outcome = _outcome(_client(address, mtls, who))  # told by the relay's alert
        assert outcome.startswith("refused") and told in outcome, (outcome, relay.err)
        relay.wait_err(r'"event": "tls-failed"')
        (notice,) = [event for event in relay.json_events() if event["event"] == "tls-failed"]
        assert notice["reason"] == reason and notice["side"] == "client", notice
        if names:
            assert names in notice["error"] and "bob" in notice["error"], notice
        assert "\x1b" not in relay.err, relay.err  # the peer's names, escaped
        assert target.accepted == 0
        assert _outcome(_client(address, mtls, "alice")) == "echo", relay.err


def test_an_allowed_client_is_relayed_and_its_identity_is_in_the_events(
    mtls: dict[str, str], start_relay: StartRelay
) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("--json", "-v", _listen(mtls), target.address)
        assert _outcome(_client(relay.listening(), mtls, "alice")) == "echo", relay.err
        relay.wait_err(r'"event": "close"')
        events = {event["event"]: event for event in relay.json_events()}
        for name in ("accept", "close"):
            event = events[name]
            assert event["tls_version"] in ("TLSv1.2", "TLSv1.3") and event["tls_cipher"], event
            assert event["peer_subject"].startswith("CN=alice,"), event
            assert "DNS:alice.example" in event["peer_san"], event
            assert event["peer_pin"].startswith("sha256:"), event


def test_an_exec_child_gets_the_verified_identity(mtls: dict[str, str], start_relay: StartRelay) -> None:
    relay = start_relay(_listen(mtls), "exec:env")
    with enchufe.connect(_client(relay.listening(), mtls, "alice")) as conn:
        conn.shutdown_write()
        output = b""
        while data := conn.recv():
            output += data
    env = dict(line.split("=", 1) for line in output.decode().splitlines() if line.startswith("ENCHUFE_TLS_"))
    assert env["ENCHUFE_TLS_VERSION"] in ("TLSv1.2", "TLSv1.3") and env["ENCHUFE_TLS_CIPHER"], env
    assert env["ENCHUFE_TLS_ALPN"] == ""
    assert env["ENCHUFE_TLS_PEER_CN"] == "alice", env
    assert "DNS:alice.example" in env["ENCHUFE_TLS_PEER_SAN"], env
    assert env["ENCHUFE_TLS_PEER_PIN"].startswith("sha256:"), env


def test_without_a_client_certificate_an_exec_child_gets_no_peer_variables(
    tmp_path: Path, mtls: dict[str, str], start_relay: StartRelay
) -> None:
    relay = start_relay(f"tls://127.0.0.1:0?cert={mtls['server']}", "exec:env")
    with enchufe.connect(_client(relay.listening(), mtls, None)) as conn:
        conn.shutdown_write()
        output = b""
        while data := conn.recv():
            output += data
    names = {line.split("=", 1)[0] for line in output.decode().splitlines()}
    assert "ENCHUFE_TLS_VERSION" in names and "ENCHUFE_TLS_PEER_PIN" not in names, names
