"""``enchufe chaos``: named proxies with toxics, each proxy a relay, driven as Toxiproxy is.

:class:`Chaos` is Toxiproxy's proxy collection and toxic collections: what its HTTP API
(:mod:`.chaos_http`) calls, each method answering with the JSON Toxiproxy answers, or raising
:class:`ApiError` with Toxiproxy's status and message (``{"error": …, "status": …}``).

A proxy is an :class:`~enchufe.relay.Relay` from ``listen`` to ``upstream``, run in a thread of
its own, with a :class:`~enchufe.faults.FaultPlan` that :class:`Chaos` changes as toxics are added,
updated and removed: a connection (or datagram session) started afterwards has the new toxics.
``listen`` and ``upstream`` are ``host:port`` (TCP, as Toxiproxy takes them) or any enchufe
address (``unix:…``, ``udp://…``, ``unixgram:…``).  ``enabled: false`` stops the relay (its
listener closed: new clients are refused; open connections are cut); ``true`` starts it again on
the address it had.

Messages are marked for translation, for ``enchufe chaos --config`` in the user's language; the
HTTP API calls these methods inside :func:`~enchufe.i18n.english`, so that its answers are
Toxiproxy's, word for word, whatever ``--lang`` says.

Thread-safety: every method holds one lock; the relays run in their own threads and read the
plan's toxics tuple when a connection starts.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..address import Address, InetAddress, parse
from ..errors import EnchufeError
from ..i18n import _
from .toxics import FaultError, FaultPlan, Toxic, check_attributes, check_toxicity

__all__ = ["ApiError", "Chaos", "ChaosProxy", "as_address", "show_address"]


class ApiError(Exception):
    """An answer other than success: Toxiproxy's status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def bad_body(why: str) -> ApiError:
    return ApiError(400, _("bad request body: {reason}").format(reason=why))


def as_address(text: Any, what: str) -> Address:
    """``host:port`` (Toxiproxy's form: TCP) or an enchufe address; ApiError 400 if neither."""
    if not isinstance(text, str) or not text:
        raise ApiError(400, _("missing required field: {field}").format(field=what))
    value = text if "://" in text or ":" not in text or text.startswith(("unix", "-")) else f"tcp://{text}"
    if value.startswith(":"):  # ":8080", as Go listens: every interface
        value = f"tcp://{value}"
    try:
        return parse(value)
    except EnchufeError as exc:
        raise ApiError(400, _("{field}: {error}").format(field=what, error=exc)) from None


def show_address(address: Address, given: str) -> str:
    """How a proxy shows an address: ``host:port`` when it was given so (Toxiproxy's form)."""
    if isinstance(address, InetAddress) and "://" not in given:
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"{host}:{address.port}"
    return str(address)


@dataclass
class ChaosProxy:
    """One proxy: its relay, its toxics (in order) and the plan its relay reads."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True
    toxics: list[Toxic] = field(default_factory=list)
    plan: FaultPlan = field(
        default_factory=lambda: FaultPlan((), random.SystemRandom().randrange(2**63), live=True)
    )
    #: its running relay (a :class:`~.relay_thread.RelayThread`), None while disabled
    relay: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics],
        }

    def find(self, name: str) -> int:
        for index, toxic in enumerate(self.toxics):
            if toxic.name == name:
                return index
        raise ApiError(404, _("toxic not found"))

    def publish(self) -> None:
        """The relay's connections from now on have these toxics."""
        self.plan.replace(tuple(self.toxics))


#: ``start(proxy)`` → the relay started (bound, running in a thread); ``stop(proxy)``.
Starter = Callable[[ChaosProxy], None]


class Chaos:
    """The proxies, by name (see the module).  ``start`` and ``stop`` run a proxy's relay
    (:mod:`.chaos_relays`); they are parameters so that the collection stays testable alone."""

    def __init__(self, start: Starter, stop: Starter, *, seed: int | None = None) -> None:
        self._start = start
        self._stop = stop
        self._seed = seed
        self._lock = threading.Lock()
        self.proxies: dict[str, ChaosProxy] = {}

    # -- proxies

    def index(self) -> dict[str, Any]:
        with self._lock:
            return {name: proxy.to_json() for name, proxy in self.proxies.items()}

    def show(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._get(name).to_json()

    def create(self, data: Any) -> dict[str, Any]:
        fields = _proxy_fields(data)
        with self._lock:
            if fields["name"] in self.proxies:
                raise ApiError(409, _("proxy already exists"))
            proxy = self._new(fields)
            return proxy.to_json()

    def update(self, name: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise bad_body(_("a proxy is a JSON object"))
        with self._lock:
            proxy = self._get(name)
            listen = data.get("listen", proxy.listen)
            upstream = data.get("upstream", proxy.upstream)
            enabled = data.get("enabled", proxy.enabled)
            if not isinstance(enabled, bool):
                raise bad_body(_("enabled must be true or false, not {value}").format(value=repr(enabled)))
            as_address(listen, "listen")
            as_address(upstream, "upstream")
            if (listen, upstream) != (proxy.listen, proxy.upstream):
                self._halt(proxy)
                proxy.listen, proxy.upstream = listen, upstream
            if enabled and proxy.relay is None:
                self._begin(proxy)
            elif not enabled:
                self._halt(proxy)
            proxy.enabled = enabled
            return proxy.to_json()

    def delete(self, name: str) -> None:
        with self._lock:
            proxy = self._get(name)
            self._halt(proxy)
            del self.proxies[name]

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        with self._lock:
            for proxy in self.proxies.values():
                proxy.toxics.clear()
                proxy.publish()
                if proxy.relay is None:
                    self._begin(proxy)
                proxy.enabled = True

    def populate(self, data: Any) -> list[dict[str, Any]]:
        """Create (or replace, when listen or upstream differ) each proxy of a JSON array."""
        if not isinstance(data, list):
            raise bad_body(_("populate takes a JSON array of proxies"))
        checked = []
        for number, item in enumerate(data, 1):
            try:
                checked.append(_proxy_fields(item))
            except ApiError as exc:
                message = _("{error} at proxy {number}").format(error=exc.message, number=number)
                raise ApiError(exc.status, message) from None
        with self._lock:
            done = []
            for fields in checked:
                existing = self.proxies.get(fields["name"])
                if existing is not None:
                    if (existing.listen, existing.upstream) == (fields["listen"], fields["upstream"]):
                        done.append(existing.to_json())
                        continue
                    self._halt(existing)
                    del self.proxies[existing.name]
                done.append(self._new(fields).to_json())
            return done

    def close(self) -> None:
        with self._lock:
            for proxy in self.proxies.values():
                self._halt(proxy)

    def _get(self, name: str) -> ChaosProxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(404, _("proxy not found"))
        return proxy

    def _new(self, fields: dict[str, Any]) -> ChaosProxy:
        proxy = ChaosProxy(fields["name"], fields["listen"], fields["upstream"], fields["enabled"])
        if self._seed is not None:
            proxy.plan.seed = self._seed
        if proxy.enabled:
            self._begin(proxy)
        self.proxies[proxy.name] = proxy
        return proxy

    def _begin(self, proxy: ChaosProxy) -> None:
        try:
            self._start(proxy)
        except ApiError:
            raise
        except (EnchufeError, OSError) as exc:
            raise ApiError(
                500, _("cannot start proxy {name}: {error}").format(name=proxy.name, error=exc)
            ) from None

    def _halt(self, proxy: ChaosProxy) -> None:
        if proxy.relay is not None:
            with contextlib.suppress(Exception):
                self._stop(proxy)
            proxy.relay = None

    # -- toxics

    def toxics(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [t.to_json() for t in self._get(name).toxics]

    def toxic(self, name: str, toxic: str) -> dict[str, Any]:
        with self._lock:
            proxy = self._get(name)
            return proxy.toxics[proxy.find(toxic)].to_json()

    def add_toxic(self, name: str, data: Any) -> dict[str, Any]:
        with self._lock:
            proxy = self._get(name)
            toxic = _toxic(data)
            if "/" in toxic.name:
                raise _no_slash(toxic.name)
            if any(t.name == toxic.name for t in proxy.toxics):
                raise ApiError(409, _("toxic already exists"))
            self._check_kind(proxy, toxic)
            proxy.toxics.append(toxic)
            proxy.publish()
            return toxic.to_json()

    def update_toxic(self, name: str, toxic_name: str, data: Any) -> dict[str, Any]:
        """As Toxiproxy: the attributes given replace those of the toxic, and its toxicity."""
        if not isinstance(data, Mapping):
            raise bad_body(_("a toxic is a JSON object"))
        with self._lock:
            proxy = self._get(name)
            index = proxy.find(toxic_name)
            old = proxy.toxics[index]
            given = data.get("attributes") or {}
            if not isinstance(given, Mapping):
                raise bad_body(_("attributes must be a JSON object"))
            try:
                attributes = check_attributes(old.type, {**old.attributes, **given})
                toxicity = check_toxicity(old.type, data.get("toxicity", old.toxicity))
            except FaultError as exc:
                raise ApiError(400, str(exc)) from None
            new = Toxic(old.type, attributes, old.stream, toxicity, old.name)
            proxy.toxics[index] = new
            proxy.publish()
            return new.to_json()

    def delete_toxic(self, name: str, toxic_name: str) -> None:
        with self._lock:
            proxy = self._get(name)
            del proxy.toxics[proxy.find(toxic_name)]
            proxy.publish()

    @staticmethod
    def _check_kind(proxy: ChaosProxy, toxic: Toxic) -> None:
        listen = as_address(proxy.listen, "listen")
        try:
            FaultPlan((toxic,), 0).check_kind(listen.is_stream)
        except FaultError as exc:
            raise ApiError(400, str(exc).removeprefix("--fault ")) from None


def _toxic(data: Any) -> Toxic:
    try:
        return Toxic.from_json(data)
    except FaultError as exc:
        message = str(exc)
        if message.startswith("unknown fault type"):  # the API speaks English: see the module
            message = _("invalid toxic type: {error}").format(error=message)
        raise ApiError(400, message) from None


def _no_slash(name: str) -> ApiError:
    return ApiError(400, _("name: {name} cannot be a path of the API (no '/')").format(name=repr(name)))


def _proxy_fields(data: Any) -> dict[str, Any]:
    """A proxy's name, listen, upstream and enabled from Toxiproxy's JSON, checked."""
    if not isinstance(data, Mapping):
        raise bad_body(_("a proxy is a JSON object"))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, _("missing required field: {field}").format(field="name"))
    if "/" in name:
        raise _no_slash(name)
    upstream = data.get("upstream")
    as_address(upstream, "upstream")
    listen = data.get("listen") or "127.0.0.1:0"
    as_address(listen, "listen")
    enabled = data.get("enabled", True)
    if enabled is None:
        enabled = True
    if not isinstance(enabled, bool):
        raise bad_body(_("enabled must be true or false, not {value}").format(value=repr(enabled)))
    return {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
