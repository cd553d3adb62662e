"""The tour, run once in this process with its trace recorded: real runs of every kind."""

from __future__ import annotations

import io

import pytest

from enchufe import tour
from enchufe.diagram.model import Diagram, build


@pytest.fixture(scope="session")
def tour_diagrams() -> dict[str, Diagram]:
    """Each leg's diagram by its label (tcp4 … unixgram, tls), from one real tour."""
    results = tour.run(io.StringIO(), record=True)
    assert all(r.ok for r in results), [(r.label, r.error) for r in results]
    return {r.label: build(r.events, f"{r.label}: {r.header}") for r in results}
