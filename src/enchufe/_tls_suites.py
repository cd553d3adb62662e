"""Which TLS 1.3 cipher suite enchufe asks for first: AES-128-GCM, as Go, BoringSSL and
Mozilla's recommended server configuration do, where OpenSSL's default order puts AES-256-GCM
first.

Both are AES-GCM with hardware AES; AES-128 makes 10 rounds per block where AES-256 makes 14.
On the 2-core AMD EPYC VM where enchufe is measured, ``openssl speed -evp`` on 16 KiB blocks
gave 2.40-2.48 GB/s against 2.09-2.47 (five alternated pairs), and ``enchufe listen tls://``
receiving executed 7.7 % fewer user-space instructions per MiB (callgrind; benchmarks/RESULTS.md,
session 14): a small saving on every byte, which that VM's run-to-run noise hides in wall-clock
figures.

Only the order changes, never the set: the suites this context already has (OpenSSL's default
or the system's ``Ciphersuites`` policy, from its configuration file) are kept, with
``TLS_AES_128_GCM_SHA256`` moved to the front when it is among them.  A server also turns on
OpenSSL's ``SSL_OP_PRIORITIZE_CHACHA``: a client that lists ChaCha20-Poly1305 first (one
without AES hardware) still gets it.  Python's ``ssl`` has no call for TLS 1.3 suites
(``set_ciphers`` is for TLS 1.2 and older), so ``SSL_CTX_set_ciphersuites`` is reached as
:mod:`enchufe._tls_verify` reaches OpenSSL; where that cannot be done the context keeps
OpenSSL's order, which works as well, only at AES-256's cost.
"""

from __future__ import annotations

import ssl

from . import _tls_verify

__all__ = ["FIRST", "prefer_aes128"]

FIRST = "TLS_AES_128_GCM_SHA256"
#: SSL_OP_PRIORITIZE_CHACHA (OpenSSL 1.1.1 and later), which Python's ssl does not name.
_PRIORITIZE_CHACHA = 1 << 21


def prefer_aes128(context: ssl.SSLContext) -> bool:
    """Put :data:`FIRST` ahead of the other TLS 1.3 suites of ``context``; True when the order
    is now so (or already was), False when the suite is not enabled or OpenSSL cannot be reached."""
    suites = [c["name"] for c in context.get_ciphers() if c.get("protocol") == "TLSv1.3"]
    if FIRST not in suites:
        return False
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        context.options |= _PRIORITIZE_CHACHA
    if suites[0] == FIRST:
        return True
    found = _tls_verify.libraries()
    if found is None:
        return False
    libssl, _libcrypto = found
    pointer = _tls_verify.context_pointer(context, libssl)
    if pointer is None:
        return False
    order = ":".join([FIRST, *(s for s in suites if s != FIRST)])
    return bool(libssl.SSL_CTX_set_ciphersuites(pointer, order.encode("ascii")))
