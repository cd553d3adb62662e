"""A channel on its socket sends a large write's TLS records in one system call, not one each.

OpenSSL writes every record (16 KiB of plaintext at most) to its socket as soon as it is made:
a 256 KiB write is sixteen ``write`` calls, and on loopback each of them runs the receiving
side's TCP path and wakes the reader.  :class:`Batcher` points the connection's write BIO at one
half of a BIO pair for the length of one ``SSL_write``, then sends what it holds in one
``send``, straight from the pair's buffer (``BIO_nread0``).  A pair, not a memory BIO: a memory
BIO zeroes its buffer as it grows and again when it is reset, two passes over every byte sent
that showed as 4 % of the sender's CPU (``memset``, ``perf``).  On a
2-core AMD EPYC VM with OpenSSL 3.0, ``enchufe connect tls://…`` sending 1 GiB used 1.67-1.80 s
of CPU with batches (then through a memory BIO; 0.36 s of it start-up), against 2.17-2.22 s
with a record per call (``benchmarks/tls_bulk_cpu.py``; benchmarks/RESULTS.md, session 11).

When the socket takes only part, the rest stays in that pair, which stays the connection's write
BIO until all of it is sent: whatever OpenSSL writes meanwhile (an alert
made while reading) goes behind it, in order, and the next ``SSL_write`` (which carries a key
update's answer) comes only once it is sent.  :meth:`Batcher.send` keeps the contract of
:meth:`~enchufe.tlschannel.TLSChannel.send`: ``0`` when the socket took only part, to be called
again with the same bytes once it is writable.

On the read side, :meth:`Batcher.read_records` decrypts the records a socket holds in one call
of the compiled :mod:`enchufe._tls_records` (one ``SSL_read_ex`` per record, in C, without the
GIL), where Python made a method call, a buffer slice and a GIL release per record.  It is what
:meth:`~enchufe.tlschannel.TLSChannel.read_into` uses after its first record.  Its outcome is
told as values, which :func:`read_error` makes into the exception Python's ``_ssl`` raises for
the same error.

The ``SSL *`` is found as :mod:`enchufe._tls_sessions` finds it; where it cannot be (another
Python, OpenSSL before 1.1.1), :func:`for_channel` gives ``None``, records go one by one, and
are read one Python call each (as without the compiled module).
"""

from __future__ import annotations

import _ssl
import ctypes
import os
import socket
import ssl
import threading
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import _tls_sessions, _tls_verify

_tls_records: ModuleType | None
try:
    if os.environ.get("ENCHUFE_PURE_PYTHON"):  # as for the relay's compiled path: to compare
        raise ImportError("ENCHUFE_PURE_PYTHON is set")
    from . import _tls_records as _tls_records
except ImportError:  # not built (no compiler): records are read one Python call each
    _tls_records = None

__all__ = [
    "BATCH_ABOVE",
    "BATCH_UP_TO",
    "FULL_RECORD_FLOOR",
    "RECORD",
    "Batcher",
    "batched",
    "for_channel",
    "read_error",
    "reads_records",
]

#: A write larger than this (more than one record) is batched; a smaller one is one record, and
#: OpenSSL's own write is the shortest way for it.
BATCH_ABOVE = 16384
#: Nor is a write larger than this: its records would all wait in memory while the socket is
#: full, on top of the plaintext the caller keeps to give again (the relay reads up to 1 MiB),
#: where OpenSSL on its own keeps one record.  The sync and stdio paths write 256 KiB at a time.
BATCH_UP_TO = 256 * 1024
#: Room for one whole record's plaintext (TLS: 2^14 bytes):
#: :meth:`~enchufe.tlschannel.TLSChannel.read_into` reads only while its buffer has this much, so
#: OpenSSL never keeps part of a record's plaintext (the socket would not say it is there).
RECORD = 16384
#: A record whose plaintext is at least this large, and as large as the largest the peer sent, is
#: taken as full: more may follow at once.  Peers fill records to a size of their own (16 KiB;
#: socat 8 KiB, its buffer; nginx's ssl_buffer_size 4 KiB), and a shorter one likely ends what
#: was sent.  Judged against 16 KiB alone, every 8 KiB record of socat's ended a read: one write
#: and one loop turn per record (socat into ``enchufe listen``: 518-571 MB/s; into socat:
#: 755-880; after the change 728-788).
FULL_RECORD_FLOOR = 4096

_BIO_CTRL_RESET = 1
#: The pair's buffer: a whole batch's records (16 KiB of plaintext and 22 bytes more each, in
#: TLS 1.3; 29 to 90 in 1.2) and room for what OpenSSL may add behind them while the socket is
#: full (an alert).  A batch always starts with it empty, so that its records always fit: a
#: pair that cannot take a record makes SSL_write fail with its records half written.
_RING = BATCH_UP_TO + 64 * 1024


class _Bio:
    """A BIO pair, freed with this object: what OpenSSL writes to ``pointer`` (the connection's
    write BIO) is read from ``peer``, in place."""

    __slots__ = ("__weakref__", "peer", "pointer")

    def __init__(self, crypto: Any) -> None:
        ours, peer = ctypes.c_void_p(), ctypes.c_void_p()
        if not crypto.BIO_new_bio_pair(ctypes.byref(ours), _RING, ctypes.byref(peer), 1):
            raise MemoryError("BIO_new_bio_pair")
        self.pointer: int = ours.value or 0
        self.peer: int = peer.value or 0
        weakref.finalize(self, _free_pair, crypto, self.pointer, self.peer)


def _free_pair(crypto: Any, ours: int, peer: int) -> None:
    crypto.BIO_free(ours)
    crypto.BIO_free(peer)


_threads = threading.local()


def _thread_bio(crypto: Any) -> _Bio:
    """This thread's BIO pair (one per thread, as the read side's gathering buffer): empty
    between two calls, so that an idle connection holds none."""
    bio: _Bio | None = getattr(_threads, "bio", None)
    if bio is None:
        bio = _threads.bio = _Bio(crypto)
    return bio


class Batcher:
    """The batched writes of one connection (see the module).  ``write`` is the connection's
    ``SSL_write`` as CPython's ``_ssl`` object makes it (its exceptions pass)."""

    def __init__(
        self, libs: tuple[Any, Any], pointer: int, sock: socket.socket, write: Callable[[Any], int]
    ) -> None:
        self._ssl_lib, self._crypto = libs
        self._pointer = pointer
        self._sock = sock
        self._write = write
        #: While the socket has not taken all of a batch: the BIO pair holding the rest (the
        #: connection's write BIO meanwhile), and the plaintext count that batch stood for.
        self._owing: _Bio | None = None
        self._owed_for = 0
        self._sockbio = 0
        self._unkept: weakref.finalize[..., Any] | None = None
        self._at = ctypes.c_void_p()

    @property
    def owing(self) -> bool:
        """Whether records of an earlier :meth:`send` wait for the socket."""
        return self._owing is not None

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt ``data`` and send its records together: ``len(data)`` once all went, ``0``
        when the socket took only part (call again with the same bytes once it is writable).
        A reset is ``OSError``; TLS errors are ``ssl.SSLError``, as from ``SSL_write``."""
        owing = self._owing
        if owing is not None:
            if not self._push(owing):
                return 0
            self._settled(owing)
            return self._owed_for
        bio = _thread_bio(self._crypto)
        sockbio = self._attach(bio)
        try:
            count = self._write(data)
            sent_all = self._push(bio)
        except BaseException:
            self._detach(sockbio)
            self._crypto.BIO_ctrl(bio.pointer, _BIO_CTRL_RESET, 0, None)
            raise
        if sent_all:
            self._detach(sockbio)
            return count
        # The rest stays in this BIO, the connection's until it is sent; the thread makes another.
        _threads.bio = None
        self._owing, self._owed_for, self._sockbio = bio, count, sockbio
        # The socket BIO's reference kept meanwhile goes back to OpenSSL once the rest is sent,
        # or is dropped if the connection is let go before that.
        self._unkept = weakref.finalize(self, self._crypto.BIO_free, sockbio)
        return 0

    def read_records(
        self, buffer: memoryview, offset: int, record: int, largest: int
    ) -> tuple[int, int, int, int]:
        """Decrypt into ``buffer[offset:]`` the records there are, while a whole ``record`` fits
        and each is no shorter than ``largest``: ``(count, largest, stop, error)``, where
        ``stop`` is :data:`STOP_FULL`, :data:`STOP_SHORT` (a shorter record: likely the last
        there is) or the ``SSL_get_error`` code that ended it (``ssl.SSL_ERROR_WANT_READ``: the
        socket has no more; others: see :func:`read_error`).  Only where :func:`reads_records`."""
        records = _records()
        assert records is not None, "read_records() where reads_records() is false"
        outcome: tuple[int, int, int, int] = records.read_records(
            self._pointer, buffer, offset, record, largest
        )
        return outcome

    def take_owed(self) -> bytes:
        """The records still owed, for a driver about to send close_notify after them; the
        socket is the write BIO again."""
        owing = self._owing
        if owing is None:
            return b""
        parts = []
        while (size := self._crypto.BIO_nread0(owing.peer, ctypes.byref(self._at))) > 0:
            parts.append(ctypes.string_at(self._at.value or 0, size))
            self._crypto.BIO_nread(owing.peer, ctypes.byref(self._at), size)
        self._settled(owing)
        return b"".join(parts)

    # -- the BIOs

    def _attach(self, bio: _Bio) -> int:
        """Make ``bio`` the connection's write BIO; the socket's BIO, kept, is returned."""
        lib = self._ssl_lib
        sockbio: int = lib.SSL_get_wbio(self._pointer)
        self._crypto.BIO_up_ref(sockbio)  # SSL_set0_wbio frees one reference of the BIO it drops
        self._crypto.BIO_up_ref(bio.pointer)  # and takes one of the BIO it is given
        lib.SSL_set0_wbio(self._pointer, bio.pointer)
        return sockbio

    def _detach(self, sockbio: int) -> None:
        """The socket's BIO back as the write BIO (the reference kept by :meth:`_attach` given)."""
        self._ssl_lib.SSL_set0_wbio(self._pointer, sockbio)

    def _settled(self, bio: _Bio) -> None:
        if self._unkept is not None:
            self._unkept.detach()
            self._unkept = None
        self._detach(self._sockbio)
        self._crypto.BIO_ctrl(bio.pointer, _BIO_CTRL_RESET, 0, None)
        self._owing = None
        if getattr(_threads, "bio", None) is None:
            _threads.bio = bio  # the thread's again

    def _push(self, bio: _Bio) -> bool:
        """Send what ``bio`` holds: True once it is empty, False when the socket took only part
        (what it took is taken out of the pair)."""
        crypto, at = self._crypto, self._at
        # What the pair holds in one piece: all of it, unless it wrapped round its buffer end.
        while (size := crypto.BIO_nread0(bio.peer, ctypes.byref(at))) > 0:
            view = memoryview((ctypes.c_char * size).from_address(at.value or 0)).cast("B")
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                sent = 0
            finally:
                view.release()
            if sent:
                crypto.BIO_nread(bio.peer, ctypes.byref(at), sent)
            if sent < size:
                return False
        return True


#: :meth:`Batcher.read_records` stopped because less room than a record was left, or at a record
#: shorter than the largest seen.
STOP_FULL, STOP_SHORT = -1, -2


def read_error(stop: int, error: int) -> ssl.SSLError:
    """The exception Python's ``_ssl`` raises for an ``SSL_read_ex`` that failed with ``stop``
    (``SSL_get_error``) and ``error`` (``ERR_peek_last_error``): :class:`ssl.SSLEOFError` for an
    end without close_notify, and for a system call's error with nothing queued (a reset: an
    ``_ex`` call returns 0, which ``_ssl`` tells as EOF whatever errno says; the stream layer
    tells a reset from it by the socket), else :class:`ssl.SSLError` with its ``library`` and
    ``reason``, worded as ``_ssl`` words it."""
    if stop == ssl.SSL_ERROR_SYSCALL and not error:
        return ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
    library, reason = _split(error)
    if (library, reason) == (_ERR_LIB_SSL, _SSL_R_UNEXPECTED_EOF_WHILE_READING):
        return ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
    library_name = _ssl.lib_codes_to_names.get(library)
    reason_name = _ssl.err_codes_to_names.get((library, reason))
    text = _reason_text(error) if error else "A failure in the SSL library occurred"
    kind = ssl.SSL_ERROR_SSL if stop in (ssl.SSL_ERROR_SSL, ssl.SSL_ERROR_SYSCALL) else stop
    if library_name and reason_name:
        message = f"[{library_name}: {reason_name}] {text}"
    elif reason_name:
        message = f"[{reason_name}] {text}"
    else:
        message = text
    exc = ssl.SSLError(kind, message)
    exc.library, exc.reason = library_name, reason_name  # type: ignore[assignment]
    return exc


_ERR_LIB_SSL = 20
_SSL_R_UNEXPECTED_EOF_WHILE_READING = 294


def _split(error: int) -> tuple[int, int]:
    """``ERR_GET_LIB`` and ``ERR_GET_REASON`` of an OpenSSL error code (macros in C)."""
    if ssl.OPENSSL_VERSION_INFO >= (3,):
        if error & 0x80000000:  # ERR_SYSTEM_FLAG: errno in the reason
            return 2, error & 0x7FFFFFFF
        return (error >> 23) & 0xFF, error & 0x7FFFFF
    return (error >> 24) & 0xFF, error & 0xFFF


def _reason_text(error: int) -> str:
    libs = _libraries()
    text = libs[1].ERR_reason_error_string(error) if libs is not None else None
    return text.decode("ascii", "replace") if text else "unknown error"


def reads_records() -> bool:
    """Whether :meth:`Batcher.read_records` can be used: the compiled module is built, bound to
    ``_ssl``'s OpenSSL, and not turned off (else records are read one Python call each)."""
    return _records() is not None


def _records() -> ModuleType | None:
    """:mod:`enchufe._tls_records`, bound to ``_ssl``'s OpenSSL (once); ``None`` when it is not
    built or that OpenSSL cannot be reached."""
    if not _bound:
        records, libs = _tls_records, _libraries()
        if records is not None and libs is not None:
            libssl, libcrypto = libs
            address = ctypes.c_void_p
            try:
                records.bind(
                    ctypes.cast(libssl.SSL_read_ex, address).value,
                    ctypes.cast(libssl.SSL_get_error, address).value,
                    ctypes.cast(libcrypto.ERR_peek_last_error, address).value,
                    ctypes.cast(libcrypto.ERR_clear_error, address).value,
                )
            except (AttributeError, ValueError):  # a function missing: records one by one
                records = None
        else:
            records = None
        _bound.append(records)
    return _bound[0]


_bound: list[ModuleType | None] = []


def batched(size: int) -> bool:
    """Whether a write of ``size`` bytes is batched (always the same answer for the same size:
    a call made again with the same bytes takes the same way)."""
    return BATCH_ABOVE < size <= BATCH_UP_TO


def for_channel(sslobj: ssl.SSLObject, sock: socket.socket, write: Callable[[Any], int]) -> Batcher | None:
    """A :class:`Batcher` for the connection of ``sslobj`` (on ``sock``), or ``None`` when its
    ``SSL *`` cannot be reached for sure."""
    libs = _libraries()
    if libs is None:
        return None
    pointer = _tls_sessions.ssl_pointer(sslobj)
    if pointer is None:
        return None
    return Batcher(libs, pointer, sock, write)


_declared: list[tuple[Any, Any] | None] = []


def _libraries() -> tuple[Any, Any] | None:
    if not _declared:
        found = _tls_verify.libraries()
        if found is not None and ssl.OPENSSL_VERSION_INFO >= (1, 1, 1):
            libssl, libcrypto = found
            pointer, integer = ctypes.c_void_p, ctypes.c_int
            try:
                for lib, name, argtypes, restype in (
                    (libssl, "SSL_get_wbio", [pointer], pointer),
                    (libssl, "SSL_set0_wbio", [pointer, pointer], None),
                    (
                        libcrypto,
                        "BIO_new_bio_pair",
                        [pointer, ctypes.c_size_t, pointer, ctypes.c_size_t],
                        integer,
                    ),
                    (libcrypto, "BIO_nread0", [pointer, pointer], integer),
                    (libcrypto, "BIO_nread", [pointer, pointer, integer], integer),
                    (libcrypto, "BIO_up_ref", [pointer], integer),
                    (libcrypto, "BIO_free", [pointer], integer),
                    (libcrypto, "BIO_ctrl", [pointer, integer, ctypes.c_long, pointer], ctypes.c_long),
                    (libcrypto, "ERR_reason_error_string", [ctypes.c_ulong], ctypes.c_char_p),
                ):
                    function = getattr(lib, name)
                    function.argtypes, function.restype = argtypes, restype
            except AttributeError:
                found = None
        else:
            found = None
        _declared.append(found)
    return _declared[0]
