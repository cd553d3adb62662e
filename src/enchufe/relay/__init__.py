"""The relay: for every client of LISTEN, open TARGET and carry bytes (or datagrams) both ways.

::

    from enchufe.relay import Relay, RelayConfig

    relay = Relay(RelayConfig("tcp://:8080", "unix:///run/app.sock", max_conns=1000))
    relay.open()
    print(relay.address)              # the real listening address
    result = relay.run()              # until SIGTERM/SIGINT/SIGHUP (or relay.stop() from a thread)

What is relayed follows from the two addresses:

=========================  ==========================================================  ===========
LISTEN → TARGET            session                                                     handler
=========================  ==========================================================  ===========
stream → stream            a connection per client, two pumps with half-close          StreamRelay
stream → ``exec:PROG``     a child per client, its stdin and stdout                    StreamRelay
stream → ``-``             the first client, to this process's stdin and stdout        StreamRelay
``-`` → stream / exec      stdin and stdout, once; the relay ends with it              StdioRelay
datagram → datagram        an upstream socket per sender (replies go back to it)       DatagramRelay
datagram → stream, frame   a stream per sender, each datagram a length-prefixed message FramedDatagramRelay
stream → datagram, frame   an upstream datagram socket per client stream               FramedStreamRelay
=========================  ==========================================================  ===========

The pieces, one idea per module:

* :mod:`.config` — what a relay is told (:class:`RelayConfig`) and the checks that refuse a
  configuration before anything is bound (pure);
* :mod:`.engine` — the event loop: epoll readiness, a heap of timers, a wake-up pipe;
* :mod:`.pump` — one direction of a stream: read and write half-steps, splicing through a pooled
  pipe, or copying through a bulk buffer towards TCP (measured faster there), small messages in
  one read and one write; :mod:`.pump_state`, what a pump holds; :mod:`.pools`, the pipes and
  buffers lent to pumps while bytes are in flight;
* :mod:`.targets` — TARGET's addresses, resolved at most every 30 s;
* :mod:`.session` — what every client's session shares: the connect phase (addresses in order,
  back-off, timeout), the idle timer, the end and its event;
* :mod:`.stream` — the stream listener handler (accept, rules, limits); :mod:`.stream_session`,
  the per-client session (two pumps, half-close, reset propagation), with sockets, stdio and
  exec children as its ends (:mod:`.sides`);
* :mod:`.children` — ``exec:`` children: spawned, watched with pidfds, stopped, always reaped;
* :mod:`.datagram_listener` — datagram listeners: a session per sender (``enchufe.sessions``),
  one receive loop, truncation counted, idle expiry and eviction; :mod:`.datagram_replies`, the
  replies that wait for the listener; :mod:`.datagram_io`, batched reads and UDP GSO sends;
* :mod:`.datagram` — datagram → datagram; :mod:`.tunnel` — datagram → stream with ``--frame``;
* :mod:`.framed` — stream → datagram with ``--frame``;
* :mod:`.limits` — access rules (pure) and the file-descriptor budget;
* :mod:`.stats` — counters and their report lines (pure);
* :mod:`.events` — where events go (the CLI's stderr lines or JSON, or a test's list);
* :mod:`.server` — one relay process: listener, limits, stats, signals, graceful shutdown;
* :mod:`.workers` — ``--workers N``: processes sharing a TCP port with SO_REUSEPORT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .config import (
        DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_DRAIN_TIMEOUT,
        RelayConfig,
        RelayResult,
        check_endpoints,
    )
    from .events import EventSink, Recorder
    from .limits import AccessRules
    from .server import Relay
    from .stats import Snapshot, Stats
    from .workers import run_workers

#: Public name → its module, imported on first use (PEP 562): ``from enchufe.relay.config import
#: …`` (the CLI's defaults) does not load the whole relay, nor does a relay load --workers.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("DEFAULT_CONNECT_TIMEOUT", "DEFAULT_DRAIN_TIMEOUT", "RelayConfig"), ".config"),
    **dict.fromkeys(("RelayResult", "check_endpoints"), ".config"),
    **dict.fromkeys(("EventSink", "Recorder"), ".events"),
    **dict.fromkeys(("Snapshot", "Stats"), ".stats"),
    "AccessRules": ".limits",
    "Relay": ".server",
    "run_workers": ".workers",
}

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


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
