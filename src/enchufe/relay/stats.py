"""Counters of a relay and their report lines, without I/O.

The engine bumps plain integer attributes of :class:`Stats` (no locks: one thread per process);
``--stats`` takes a :class:`Snapshot` every interval and turns two of them into a line with
rates, and the last one into the summary printed at exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..i18n import _

__all__ = ["Snapshot", "Stats", "human_bytes", "interval_report", "summary_report"]


class Stats:
    """What a relay has done so far.  Connections (and datagram sessions) are counted once each:

    * ``open``: relayed connections or datagram sessions alive now;
    * ``total``: clients admitted (a target was tried for them), datagram senders included;
    * ``refused``: clients turned away at accept (over ``--max-conns``, denied by a rule, or no
      descriptor left);
    * ``failed``: admitted clients whose target could not be reached (refused, timed out);
    * ``reset``: relayed connections ended by a reset or error on either side;
    * ``cut``: connections closed by the relay while open (idle timeout, end of the drain);
    * ``to_target`` / ``to_client``: bytes delivered in each direction.

    Datagrams (datagram relays and ``--frame``):

    * ``datagrams_to_target`` / ``datagrams_to_client``: datagrams (or framed messages) delivered;
    * ``truncated``: datagrams larger than ``--max-datagram``, dropped whole, never forwarded cut;
    * ``dropped``: datagrams that could not be delivered (no reply address, target unreachable,
      a tunnel's backlog full, too large for the target's datagrams, replies and datagrams still
      waiting when their session was evicted, expired or ended);
    * ``expired`` / ``evicted``: sessions ended by ``--idle-timeout`` / by ``--max-sessions``.

    TLS (a ``tls://`` LISTEN or TARGET; shown only once there was one):

    * ``tls_handshakes``: handshakes finished (with a client, or with the target);
    * ``tls_failures``: handshakes that failed, by reason (``untrusted``, ``timeout``, …);
    * ``tls_resumed``: finished handshakes that resumed an earlier session (a TLS 1.3 ticket);
    * ``tls_versions``: finished handshakes by the version agreed (``TLSv1.3``: count);
    * ``ktls``: whether kernel TLS could carry the relay's TLS, and why not (set when a relay
      with a TLS end opens, shown even before a handshake: ``unavailable (kernel has no tls
      ULP …)``).
    """

    __slots__ = (
        "collectors",
        "cut",
        "datagrams_to_client",
        "datagrams_to_target",
        "dropped",
        "evicted",
        "expired",
        "failed",
        "ktls",
        "open",
        "refused",
        "reset",
        "routes",
        "started",
        "tls_failures",
        "tls_handshakes",
        "tls_resumed",
        "tls_versions",
        "to_client",
        "to_target",
        "total",
        "truncated",
    )

    def __init__(self) -> None:
        self.open = 0
        self.total = 0
        self.refused = 0
        self.failed = 0
        self.reset = 0
        self.cut = 0
        self.to_target = 0
        self.to_client = 0
        self.datagrams_to_target = 0
        self.datagrams_to_client = 0
        self.truncated = 0
        self.dropped = 0
        self.expired = 0
        self.evicted = 0
        self.tls_handshakes = 0
        self.tls_failures: dict[str, int] = {}
        #: clients by the route their TLS server name took (--route, see relay.routes)
        self.routes: dict[str, int] = {}
        self.tls_resumed = 0
        self.tls_versions: dict[str, int] = {}
        self.ktls = ""
        self.started = time.monotonic()
        #: what moved out of Python's sight and is not counted yet (the loop's shortcuts, see
        #: relay.shortcuts and relay.datagram_shortcuts): each gives (bytes to target,
        #: datagrams to target, bytes to client, datagrams to client), added to every snapshot
        self.collectors: list[Callable[[], tuple[int, int, int, int]]] = []

    def snapshot(self) -> Snapshot:
        """The counters now.  Safe from another thread than the relay's: the shortcuts' bytes
        are read after the counters they are later added to, so a snapshot taken while they
        are being counted may lag by them, never count them twice."""
        snapshot = self._counters()
        more = [0, 0, 0, 0]
        for collect in self.collectors:
            for index, count in enumerate(collect()):
                more[index] += count
        if any(more):
            snapshot = replace(
                snapshot,
                to_target=snapshot.to_target + more[0],
                datagrams_to_target=snapshot.datagrams_to_target + more[1],
                to_client=snapshot.to_client + more[2],
                datagrams_to_client=snapshot.datagrams_to_client + more[3],
            )
        return snapshot

    def _counters(self) -> Snapshot:
        return Snapshot(
            when=time.monotonic(),
            started=self.started,
            open=self.open,
            total=self.total,
            refused=self.refused,
            failed=self.failed,
            reset=self.reset,
            cut=self.cut,
            to_target=self.to_target,
            to_client=self.to_client,
            datagrams_to_target=self.datagrams_to_target,
            datagrams_to_client=self.datagrams_to_client,
            truncated=self.truncated,
            dropped=self.dropped,
            expired=self.expired,
            evicted=self.evicted,
            tls_handshakes=self.tls_handshakes,
            tls_failures=tuple(sorted(self.tls_failures.items())),
            routes=tuple(sorted(self.routes.items())),
            tls_resumed=self.tls_resumed,
            tls_versions=tuple(sorted(self.tls_versions.items(), reverse=True)),
            ktls=self.ktls,
        )


@dataclass(frozen=True)
class Snapshot:
    """The counters of :class:`Stats` at one moment (monotonic seconds)."""

    when: float
    started: float
    open: int = 0
    total: int = 0
    refused: int = 0
    failed: int = 0
    reset: int = 0
    cut: int = 0
    to_target: int = 0
    to_client: int = 0
    datagrams_to_target: int = 0
    datagrams_to_client: int = 0
    truncated: int = 0
    dropped: int = 0
    expired: int = 0
    evicted: int = 0
    tls_handshakes: int = 0
    #: (reason, count) pairs, sorted by reason
    tls_failures: tuple[tuple[str, int], ...] = ()
    #: (route, count) pairs (--route), sorted by route
    routes: tuple[tuple[str, int], ...] = ()
    tls_resumed: int = 0
    #: (version, count) pairs, the newest version first
    tls_versions: tuple[tuple[str, int], ...] = ()
    ktls: str = ""

    @property
    def has_datagrams(self) -> bool:
        return bool(self.datagrams_to_target or self.datagrams_to_client or self.truncated or self.dropped)

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "open": self.open,
            "total": self.total,
            "refused": self.refused,
            "failed": self.failed,
            "reset": self.reset,
            "cut": self.cut,
            "to_target": self.to_target,
            "to_client": self.to_client,
        }
        if self.has_datagrams or self.expired or self.evicted:
            fields |= {
                "datagrams_to_target": self.datagrams_to_target,
                "datagrams_to_client": self.datagrams_to_client,
                "truncated": self.truncated,
                "dropped": self.dropped,
                "expired": self.expired,
                "evicted": self.evicted,
            }
        if self.tls_handshakes or self.tls_failures:
            fields |= {
                "tls_handshakes": self.tls_handshakes,
                "tls_failed": dict(self.tls_failures),
                "tls_resumed": self.tls_resumed,
                "tls_versions": dict(self.tls_versions),
            }
        if self.ktls:
            fields["ktls"] = self.ktls
        if self.routes:
            fields["routes"] = dict(self.routes)
        return fields


def _datagram_part(snap: Snapshot) -> str:
    if not (snap.has_datagrams or snap.expired or snap.evicted):
        return ""
    return _(
        "; datagrams {to_target} to target, {to_client} to client "
        "({truncated} truncated, {dropped} dropped; sessions {expired} expired, {evicted} evicted)"
    ).format(
        to_target=snap.datagrams_to_target,
        to_client=snap.datagrams_to_client,
        truncated=snap.truncated,
        dropped=snap.dropped,
        expired=snap.expired,
        evicted=snap.evicted,
    )


def _tls_part(snap: Snapshot) -> str:
    """``; TLS 3 handshakes, 1 failed (1 timeout), 1 resumed; agreed 2 TLSv1.3, 1 TLSv1.2;
    ktls: unavailable (…)``: the handshakes once there was one, kTLS for any TLS relay."""
    ktls = f"; ktls: {snap.ktls}" if snap.ktls else ""
    if not (snap.tls_handshakes or snap.tls_failures):
        return ktls
    failed = sum(count for _reason, count in snap.tls_failures)
    reasons = ", ".join(f"{count} {reason}" for reason, count in snap.tls_failures)
    agreed = ", ".join(f"{count} {version}" for version, count in snap.tls_versions)
    if reasons:
        line = _("; TLS {handshakes} handshakes, {failed} failed ({reasons}), {resumed} resumed")
    else:
        line = _("; TLS {handshakes} handshakes, {failed} failed, {resumed} resumed")
    line = line.format(
        handshakes=snap.tls_handshakes, failed=failed, reasons=reasons, resumed=snap.tls_resumed
    )
    if agreed:
        line += _("; agreed {versions}").format(versions=agreed)
    return line + ktls


def _routes_part(snap: Snapshot) -> str:
    """``; routes a.test 3, (default) 1, (unmatched) 2``: once a client was routed (--route)."""
    if not snap.routes:
        return ""
    return _("; routes {routes}").format(routes=", ".join(f"{route} {count}" for route, count in snap.routes))


def human_bytes(count: float) -> str:
    """``1536`` → ``"1.5 KiB"``; bytes below 1 KiB stay exact."""
    if count < 1024:
        return f"{int(count)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            break
    return f"{count:.1f} {unit}"


def interval_report(before: Snapshot, now: Snapshot) -> tuple[str, dict[str, Any]]:
    """The ``--stats`` line for the interval between two snapshots, and its JSON fields."""
    seconds = max(now.when - before.when, 1e-9)
    up = (now.to_target - before.to_target) / seconds
    down = (now.to_client - before.to_client) / seconds
    line = (
        _(
            "stats: {open} open, {total} total, {refused} refused, {failed} failed; "
            "to target {to_target} ({up}/s), to client {to_client} ({down}/s)"
        ).format(
            open=now.open,
            total=now.total,
            refused=now.refused,
            failed=now.failed,
            to_target=human_bytes(now.to_target),
            up=human_bytes(up),
            to_client=human_bytes(now.to_client),
            down=human_bytes(down),
        )
        + _datagram_part(now)
        + _tls_part(now)
        + _routes_part(now)
    )
    fields = now.fields() | {
        "interval": round(seconds, 3),
        "to_target_rate": round(up),
        "to_client_rate": round(down),
    }
    return line, fields


def summary_report(final: Snapshot, *, sessions: bool = False) -> tuple[str, dict[str, Any]]:
    """The summary printed at exit, and its JSON fields.  ``sessions``: the relay's clients are
    datagram senders, each a session (a datagram listener), not connections."""
    seconds = max(final.when - final.started, 1e-9)
    if sessions:
        head = _(
            "summary: {total} sessions relayed in {seconds} s ({refused} refused, "
            "{failed} target failures, {reset} reset, {cut} cut); "
            "to target {to_target}, to client {to_client}"
        )
    else:
        head = _(
            "summary: {total} connections relayed in {seconds} s ({refused} refused, "
            "{failed} target failures, {reset} reset, {cut} cut); "
            "to target {to_target}, to client {to_client}"
        )
    line = (
        head.format(
            total=final.total,
            seconds=f"{seconds:.1f}",
            refused=final.refused,
            failed=final.failed,
            reset=final.reset,
            cut=final.cut,
            to_target=human_bytes(final.to_target),
            to_client=human_bytes(final.to_client),
        )
        + _datagram_part(final)
        + _tls_part(final)
        + _routes_part(final)
    )
    fields = final.fields() | {"seconds": round(seconds, 3)}
    fields.pop("open")
    return line, fields
