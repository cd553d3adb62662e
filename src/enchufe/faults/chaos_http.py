"""Toxiproxy's HTTP API over :class:`~enchufe.faults.chaos.Chaos`, served by the standard
library's ``http.server`` in threads of its own.

Why ``http.server``: the API is a control plane (a few requests a second at most), its clients
are Toxiproxy's (plain HTTP/1.1 with JSON bodies); the standard library parses HTTP for us, with
no dependency, and its threads keep the API apart from the relays' event loops (each proxy runs
its own).  h11 driven by an engine would serve the same with a dependency and an engine of its
own to run, for no gain at this rate.

Routes, status codes and JSON shapes are Toxiproxy's (``api.go``)::

    GET    /version                          200 {"version": …}
    GET    /proxies                          200 {NAME: proxy, …}
    POST   /proxies                          201 proxy            (409 if the name exists)
    POST   /populate                         201 {"proxies": […]}
    POST   /reset                            204
    GET    /proxies/NAME                     200 proxy            (404 if none)
    POST   /proxies/NAME  (or PATCH)         200 proxy            (enabled, listen, upstream)
    DELETE /proxies/NAME                     204
    GET    /proxies/NAME/toxics              200 [toxic, …]
    POST   /proxies/NAME/toxics              200 toxic            (409 if the name exists)
    GET    /proxies/NAME/toxics/TOXIC        200 toxic
    POST   /proxies/NAME/toxics/TOXIC (PATCH) 200 toxic           (attributes, toxicity)
    DELETE /proxies/NAME/toxics/TOXIC        204

Errors are ``{"error": MESSAGE, "status": CODE}``, in English whatever ``--lang`` says (the
request is served inside :func:`~enchufe.i18n.english`): Toxiproxy's clients read them.  As
Toxiproxy, a request whose User-Agent is a browser's (``Mozilla/…``) is refused (403): a web page
must not drive the API from the user's machine.  Bodies are bounded (:data:`MAX_BODY`), a silent
client is dropped after :data:`READ_TIMEOUT`, and whatever a request holds ends in a status, never
in the server's end.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..i18n import english
from .chaos import ApiError, Chaos, bad_body

__all__ = ["MAX_BODY", "READ_TIMEOUT", "ApiServer"]

#: Largest request body read: far above any proxy list a test writes.
MAX_BODY = 1024 * 1024
#: Seconds a client may take to send its request (Toxiproxy's read timeout).
READ_TIMEOUT = 15.0

_log = logging.getLogger("enchufe.chaos")

Reply = tuple[int, Any]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "enchufe-chaos"
    timeout = READ_TIMEOUT
    server: ApiServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        with english():
            try:
                status, body = self._route(method)
            except ApiError as exc:
                status, body = exc.status, exc.to_json()
            except Exception as exc:  # nothing a client sends ends the server
                _log.debug("chaos API request failed", exc_info=exc)
                status, body = 500, ApiError(500, f"internal error: {type(exc).__name__}").to_json()
        self._answer(status, body)

    def _route(self, method: str) -> Reply:
        if self.headers.get("User-Agent", "").startswith("Mozilla/"):
            raise ApiError(403, "User agent not allowed")
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        chaos = self.server.chaos
        route = ROUTES.get((method, len(parts), parts[0], parts[2] if len(parts) > 2 else ""))
        if route is None:
            known = any(
                key[1:] == (len(parts), parts[0], parts[2] if len(parts) > 2 else "") for key in ROUTES
            )
            raise ApiError(405 if known else 404, "method not allowed" if known else "not found")
        return route(chaos, parts, self._body if method == "POST" else _no_body)

    def _body(self) -> Any:
        length_text = self.headers.get("Content-Length", "0")
        if not length_text.isdigit() or int(length_text) > MAX_BODY:
            raise ApiError(
                413 if length_text.isdigit() else 400, f"bad request body: at most {MAX_BODY} bytes"
            )
        raw = self.rfile.read(int(length_text))
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise bad_body(str(exc) if raw else "EOF") from None

    def _answer(self, status: int, body: Any) -> None:
        data = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(format % args)


def _no_body() -> Any:
    return None


Route = Callable[[Chaos, list[str], Callable[[], Any]], Reply]


def _created(reply: Any) -> Reply:
    return 201, reply


def _reset(chaos: Chaos, parts: list[str], body: Callable[[], Any]) -> Reply:
    chaos.reset()
    return 204, None


def _delete_proxy(chaos: Chaos, parts: list[str], body: Callable[[], Any]) -> Reply:
    chaos.delete(parts[1])
    return 204, None


def _delete_toxic(chaos: Chaos, parts: list[str], body: Callable[[], Any]) -> Reply:
    chaos.delete_toxic(parts[1], parts[3])
    return 204, None


#: (method, number of path parts, first part, third part) → what answers
ROUTES: dict[tuple[str, int, str, str], Route] = {
    ("GET", 1, "version", ""): lambda c, p, b: (200, {"version": f"enchufe {__version__}"}),
    ("GET", 1, "proxies", ""): lambda c, p, b: (200, c.index()),
    ("POST", 1, "proxies", ""): lambda c, p, b: _created(c.create(b())),
    ("POST", 1, "populate", ""): lambda c, p, b: _created({"proxies": c.populate(b())}),
    ("POST", 1, "reset", ""): _reset,
    ("GET", 2, "proxies", ""): lambda c, p, b: (200, c.show(p[1])),
    ("POST", 2, "proxies", ""): lambda c, p, b: (200, c.update(p[1], b())),
    ("DELETE", 2, "proxies", ""): _delete_proxy,
    ("GET", 3, "proxies", "toxics"): lambda c, p, b: (200, c.toxics(p[1])),
    ("POST", 3, "proxies", "toxics"): lambda c, p, b: (200, c.add_toxic(p[1], b())),
    ("GET", 4, "proxies", "toxics"): lambda c, p, b: (200, c.toxic(p[1], p[3])),
    ("POST", 4, "proxies", "toxics"): lambda c, p, b: (200, c.update_toxic(p[1], p[3], b())),
    ("DELETE", 4, "proxies", "toxics"): _delete_toxic,
}


class ApiServer(ThreadingHTTPServer):
    """The API on ``(host, port)``, served from :meth:`start` in threads of its own until
    :meth:`stop`; ``log(line)`` hears of each request."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str, port: int, chaos: Chaos, log: Callable[[str], None]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.chaos = chaos
        self.log = log
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        # Polled 10 times a second for a stop: quick enough to stop, nothing to pay when idle.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="chaos API", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever(): only once it runs
            self.shutdown()
            self._thread.join(READ_TIMEOUT)
        self.server_close()
