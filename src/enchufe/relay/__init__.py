"""The relay: for every client of LISTEN, open TARGET and carry bytes both ways until both are done.

::

    from enchufe.relay import Relay, RelayConfig

    relay = Relay(RelayConfig("tcp://:8080", "unix:///run/app.sock", max_conns=1000))
    relay.open()
    print(relay.address)              # the real listening address
    result = relay.run()              # until SIGTERM/SIGINT (or relay.stop() from another thread)

The pieces, one idea per module:

* :mod:`.engine` — the event loop: epoll readiness, a heap of timers, a wake-up pipe;
* :mod:`.pump` — one direction of a stream: splice through a pooled pipe, or copy;
* :mod:`.stream` — the stream listener handler and the per-client session (connect, half-close,
  reset propagation, idle timeout);
* :mod:`.limits` — access rules (pure) and the file-descriptor budget;
* :mod:`.stats` — counters and their report lines (pure);
* :mod:`.events` — where events go (the CLI's stderr lines or JSON, or a test's list);
* :mod:`.server` — one relay process: listener, limits, stats, signals, graceful shutdown;
* :mod:`.workers` — ``--workers N``: processes sharing a TCP port with SO_REUSEPORT.
"""

from __future__ import annotations

from .events import EventSink, Recorder
from .limits import AccessRules
from .server import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    Relay,
    RelayConfig,
    RelayResult,
    check_endpoints,
)
from .stats import Snapshot, Stats
from .workers import run_workers

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DRAIN_TIMEOUT",
    "AccessRules",
    "EventSink",
    "Recorder",
    "Relay",
    "RelayConfig",
    "RelayResult",
    "Snapshot",
    "Stats",
    "check_endpoints",
    "run_workers",
]
