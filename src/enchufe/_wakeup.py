"""A signal that a blocking wait cannot miss: the process's signal wake-up pipe.

Python runs a signal handler in the main thread between two bytecodes.  A signal that arrives
after the last such check but before ``poll()`` blocks only sets a flag, and the wait goes on,
forever if nothing else happens: a SIGTERM sent right after ``listen``'s listening line could
leave it running.  The C-level handler also writes a byte to the descriptor given to
``signal.set_wakeup_fd``; a wait that watches that pipe's read end returns at once, and the
pending Python handler runs (raising ``KeyboardInterrupt``, or calling ``shutdown()``).

This is what asyncio does for its loops; :func:`signal_fd` gives the same to the selector loops
of the sync side.  Only the main thread receives Python signal handlers, so other threads get
``None`` and wait as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

__all__ = ["drain", "signal_fd"]

_pipe: tuple[int, int] | None = None


def signal_fd() -> int | None:
    """The read end of the signal wake-up pipe, to watch for reading in a blocking wait; call
    :func:`drain` when it is readable.  ``None`` outside the main thread, or while another wake-up
    descriptor is installed (an asyncio loop running in this thread owns it then)."""
    global _pipe
    if threading.current_thread() is not threading.main_thread():
        return None
    if _pipe is None:
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _pipe = (read_end, write_end)
    try:
        previous = signal.set_wakeup_fd(_pipe[1], warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter after all
        return None
    if previous not in (-1, _pipe[1]):
        signal.set_wakeup_fd(previous)  # someone else's: leave it as it was
        return None
    return _pipe[0]


def drain() -> None:
    """Empty the wake-up pipe (its bytes only say "a signal came"; the handler does the rest)."""
    if _pipe is None:
        return
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while os.read(_pipe[0], 512):
            pass
