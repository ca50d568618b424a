"""The C allocator's thresholds, so that reading a datagram does not cost a system call.

asyncio's datagram transport reads each datagram with ``sock.recvfrom(256 KiB)``.  CPython
allocates the 256 KiB bytes object with ``malloc`` and shrinks it to the datagram's size
with ``realloc``.  With glibc's defaults that is an ``mmap``, an ``mremap`` and, when the
datagram is freed, a ``munmap``, about 10 µs per datagram: the dynamic mmap threshold
never rises, because the chunk is already small when it is freed.  Raising only the mmap
threshold (``mallopt(M_MMAP_THRESHOLD)``, or ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold``)
moves the cost to the heap's top: shrinking the block frees more than the trim threshold
(128 KiB), so glibc gives it back with ``brk`` and takes it again on the next read, two
``brk`` per datagram.  Raising both thresholds serves every read from the heap with no
system call.  uvloop reads into its own buffer and is not affected either way.  (The
listener now reads its sockets itself, UDP 64 KiB at a time, which needs none of this, and
Unix datagrams 256 KiB at a time, which does: ``gateway.listener``.)

``tune_allocator`` does that once, at start-up, on glibc only (musl and macOS: nothing).
It leaves the allocator alone when ``GATEWAY_MALLOC_TUNING=0`` (a diagnostic, to measure
the difference) or when ``GLIBC_TUNABLES`` already sets either threshold (the operator's
choice wins).

``tune_collector`` sets Python's own cyclic collector for the same kind of load.

Imports only the standard library; no asyncio, no numpy, nothing from ``gateway``.
"""

from __future__ import annotations

import ctypes
import enum
import gc
import logging
import os
from collections.abc import Mapping

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
"""Blocks below 1 MiB come from the heap, among them every 256 KiB datagram read."""
TRIM_THRESHOLD = 4 << 20
"""Free space at the top of the heap kept for reuse rather than given back with ``brk``."""
SWITCH = "GATEWAY_MALLOC_TUNING"
_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


class Outcome(enum.Enum):
    SET = "set"
    SWITCHED_OFF = "switched off"
    OPERATOR_TUNABLES = "GLIBC_TUNABLES sets a threshold"
    NOT_GLIBC = "not glibc"
    REFUSED = "mallopt refused"


def glibc_version() -> str | None:
    """``glibc 2.36`` and the like on glibc; None elsewhere (musl, macOS, Windows)."""
    try:
        found = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # the name is unknown to this platform's C library
        return None
    return found if found and found.startswith("glibc") else None


def decide(environ: Mapping[str, str], libc: str | None) -> Outcome | None:
    """Why the thresholds are left alone, or None when they should be set."""
    if environ.get(SWITCH, "").strip() == "0":
        return Outcome.SWITCHED_OFF
    if libc is None:
        return Outcome.NOT_GLIBC
    if any(name in environ.get("GLIBC_TUNABLES", "") for name in _TUNABLES):
        return Outcome.OPERATOR_TUNABLES
    return None


def tune_allocator(environ: Mapping[str, str]) -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); log what was done.

    Call once, before the event loop starts.  Returns whether the thresholds were set:
    False, doing nothing, on other C libraries or when ``decide`` says to leave them.
    """
    libc = glibc_version()
    outcome = decide(environ, libc) or _mallopt()
    if outcome is Outcome.SET:
        logger.info(
            "allocator: %s mmap_threshold=%d trim_threshold=%d (no system call per datagram)",
            libc,
            MMAP_THRESHOLD,
            TRIM_THRESHOLD,
        )
    else:
        logger.info("allocator: defaults kept (%s)", outcome.value)
    return outcome is Outcome.SET


def _mallopt() -> Outcome:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return Outcome.NOT_GLIBC
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if mallopt(param, value) != 1:
            return Outcome.REFUSED
    return Outcome.SET


def tune_collector() -> None:
    """Collect the young generation every 100,000 allocations instead of every 700, and
    keep what exists now out of every scan.

    Intake allocates short-lived objects by the million, nearly all freed by reference
    counting; with the defaults, the collections they trigger walk every live series key.
    """
    gc.set_threshold(100_000, 50, 100)
    gc.freeze()
