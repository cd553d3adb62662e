"""The proxies of ``enchufe chaos`` as relays, and the server that holds them with its API.

::

    server = ChaosServer("127.0.0.1", 8474, emit)                       # API bound
    server.populate_file("proxies.json")                               # --config, optional
    server.start()                                                      # API served
    …
    server.close()                                                      # API and relays stopped

Each proxy is a :class:`~enchufe.relay.Relay` bound in the API's request (so that its answer
names the real port, and a port in use is that request's error) and run in a thread of its own
(:class:`~.relay_thread.RelayThread`), with no signal handling (the command's main thread has it).
Its event lines follow ``--lang`` even when an API request (served in English) starts or stops it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import EnchufeError, UsageError, reason
from ..i18n import _, english
from ..relay import EventSink, RelayConfig
from ..relay.events import Emit
from .chaos import ApiError, Chaos, ChaosProxy, as_address, show_address
from .chaos_http import ApiServer
from .relay_thread import RelayThread

__all__ = ["ChaosServer"]


class ChaosServer:
    """The API and the proxies' relays (see the module)."""

    def __init__(
        self,
        api_host: str,
        api_port: int,
        emit: Emit | None = None,
        level: int = 0,
        *,
        seed: int | None = None,
    ) -> None:
        self._emit = emit
        self._level = level
        self.events = EventSink(emit, level)
        self.chaos = Chaos(self._start, self._stop, seed=seed)
        self.api = ApiServer(api_host, api_port, self.chaos, self._log)

    @property
    def port(self) -> int:
        return self.api.port

    def populate_file(self, path: str) -> list[dict[str, Any]]:
        """``--config FILE``: a JSON array of proxies, as ``POST /populate`` takes it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(_("--config {path}: {reason}").format(path=path, reason=reason(exc))) from None
        except ValueError as exc:
            raise UsageError(_("--config {path}: not JSON: {error}").format(path=path, error=exc)) from None
        try:
            return self.chaos.populate(data)
        except ApiError as exc:
            raise UsageError(_("--config {path}: {reason}").format(path=path, reason=exc.message)) from None

    def start(self) -> None:
        self.api.start()

    def close(self) -> None:
        self.api.stop()
        self.chaos.close()

    # -- a proxy's relay

    def _start(self, proxy: ChaosProxy) -> None:
        listen = as_address(proxy.listen, "listen")
        target = as_address(proxy.upstream, "upstream")
        config = RelayConfig(listen=listen, target=target, faults=proxy.plan)
        events = self.events
        relay_events = EventSink(self._emit, self._level, proxy=proxy.name)
        try:
            running = RelayThread.start(config, relay_events, f"chaos proxy {proxy.name}")
        except UsageError as exc:
            raise ApiError(400, _("proxy {name}: {error}").format(name=proxy.name, error=exc)) from None
        except (EnchufeError, OSError) as exc:
            raise ApiError(500, _("proxy {name}: {error}").format(name=proxy.name, error=exc)) from None
        bound = running.address
        proxy.listen = show_address(bound, proxy.listen)
        proxy.relay = running
        with english(False):  # the user's line, though an API request (in English) started it
            message = _("proxy {name}: listening on {address}, to {target}").format(
                name=proxy.name, address=bound, target=target
            )
        events(
            "proxy",
            message,
            level=0,
            proxy=proxy.name,
            listen=str(bound),
            upstream=str(target),
        )

    def _stop(self, proxy: ChaosProxy) -> None:
        proxy.relay.stop()
        with english(False):  # see _start
            message = _("proxy {name}: stopped").format(name=proxy.name)
        self.events("proxy", message, level=1, proxy=proxy.name, stopped=True)

    def _log(self, line: str) -> None:
        with english(False):  # see _start
            message = _("chaos API: {request}").format(request=line)
        self.events("request", message, level=2, request=line)
