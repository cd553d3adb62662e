"""A package's public names, imported on their first use (PEP 562).

``enchufe`` and ``enchufe.relay`` re-export names from their modules; importing all of them up
front made every program (each ``enchufe`` command, each relay worker) load and compile every
endpoint, TLS and proxy module it would never use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_names"]


def lazy_names(
    package: str, namespace: dict[str, object], table: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose globals are ``namespace``.

    ``table`` maps a public name to the relative name of the module that defines it (the module
    itself when the name is the module's own: ``"trace": ".trace"``).  The value found is kept in
    ``namespace``, so each name is looked up once; any other name raises AttributeError.
    """

    def __getattr__(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value: object = importlib.import_module(module, package)
        if name != module[1:]:
            value = getattr(value, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
