"""Library log records as the CLI shows them: one escaped line each, tracebacks with --debug."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from enchufe.cli._common import settings, setup_logging


@pytest.fixture
def cli_logging() -> Iterator[None]:
    saved = (settings.debug, settings.quiet, settings.json, settings.verbose)
    logger = logging.getLogger("enchufe")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    try:
        yield
    finally:
        settings.debug, settings.quiet, settings.json, settings.verbose = saved
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def _log_a_failure() -> None:
    try:
        raise RuntimeError("boom in a handler")
    except RuntimeError:
        logging.getLogger("enchufe.servers").exception("handler failed on the connection from %s", "x\ny")


@pytest.mark.parametrize("debug", [False, True])
def test_a_logged_exception_shows_its_traceback_only_with_debug(
    debug: bool, cli_logging: None, capfd: pytest.CaptureFixture[str]
) -> None:
    settings.debug, settings.quiet, settings.json, settings.verbose = debug, False, False, 0
    setup_logging()
    _log_a_failure()
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "enchufe: handler failed on the connection from x\\ny"
    if debug:
        assert "Traceback (most recent call last):" in err
        assert lines[-1] == "RuntimeError: boom in a handler"
    else:
        assert lines == [lines[0]]
