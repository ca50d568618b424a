"""The API's name charset: checking and sanitising names, dimension keys and values.

JD Cloud accepts only ``[0-9A-Za-z._]`` in namespaces, metric names and dimensions.
StatsD names are sanitised byte-wise on their UTF-8 bytes (``café`` becomes ``caf__``),
so two names that are equal after sanitising are one series.

Pure: no I/O, no logging, no numpy.
"""

from __future__ import annotations

import re
import string

MAX_NAME_BYTES = 255
"""Longest namespace, metric name or (summed) dimension block the API accepts."""

_ALLOWED = frozenset((string.ascii_letters + string.digits + "._").encode())
_TABLE = bytes(b if b in _ALLOWED else ord("_") for b in range(256))
_API_NAME = re.compile(r"[0-9A-Za-z._]+")


def sanitize(raw: bytes) -> str:
    """Every byte outside ``[0-9A-Za-z._]`` becomes ``_``; the result is ASCII."""
    return raw.translate(_TABLE).decode("ascii")


def is_api_name(text: str) -> bool:
    """True when ``text`` is non-empty and uses only the API's charset."""
    return _API_NAME.fullmatch(text) is not None
