"""The parser's vectorised fast path: one batch of lines scanned with numpy (CONTRACT 2).

A batch of datagrams is one ``bytes`` buffer; this module finds, for every line at once, where
the line starts and ends, its first ``:`` and the first ``|`` after it, and so where its
value lies.  From those positions it builds each line's *template* (the line without its
value: ``name:|type|fields``), which is what the parser's cache is keyed on, and converts the
plain decimal values of a whole batch in a few array operations.  No per-line Python runs
here; the parser decides what to do with the lines this module cannot vouch for.

Decimals are converted exactly: a value of at most 15 digits (sign and one ``.`` allowed, no
exponent) is an integer below 2**53 divided by a power of ten of at most 10**15, both exact
in a double, so the one correctly rounded division gives the same double as ``float()``.
Anything else (exponents, longer digit strings, any other byte) is left to
``gateway.protocol.parse_number``, one value at a time.

Pure: no I/O, no logging, no clock.  numpy is used here because this is where the per-line
work of intake is; what leaves is arrays the aggregator takes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Positions = npt.NDArray[np.intp]

MAX_DIGITS = 15
"""Digits of a value converted in bulk; every integer of 15 digits is exact in a double."""
MAX_FAST_VALUE = MAX_DIGITS + 2
"""Longest value converted in bulk: 15 digits, a sign and a point."""

_NEWLINE, _COLON, _PIPE = ord("\n"), ord(":"), ord("|")
_PLUS, _MINUS, _POINT, _ZERO = ord("+"), ord("-"), ord("."), ord("0")
_POW10 = 10.0 ** np.arange(MAX_DIGITS + 1)


@dataclass(frozen=True, slots=True)
class Lines:
    """Every line of a batch by position in ``data``, empty lines included.

    ``colon`` is the line's first ``:`` and ``pipe`` the first ``|`` after it; ``valued``
    says both exist in the line, so that its value is ``data[colon + 1 : pipe]``.  A line
    without them has ``colon`` or ``pipe`` at or past its ``end``.
    """

    data: bytes
    buf: npt.NDArray[np.uint8]
    start: Positions
    end: Positions
    colon: Positions
    pipe: Positions
    valued: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.start)


def scan(data: bytes) -> Lines:
    """Find the lines of ``data`` (separated by ``\\n``) and their first ``:`` and ``|``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    size = len(buf)
    newlines = np.flatnonzero(buf == _NEWLINE)
    start = np.empty(len(newlines) + 1, dtype=np.intp)
    start[0] = 0
    start[1:] = newlines + 1
    end = np.empty_like(start)
    end[:-1] = newlines
    end[-1] = size
    # Past the last one, a search finds ``size``: no ``:`` (or ``|``) in the line.
    colons = np.append(np.flatnonzero(buf == _COLON), size)
    pipes = np.append(np.flatnonzero(buf == _PIPE), size)
    colon = colons[np.searchsorted(colons, start)]
    pipe = pipes[np.searchsorted(pipes, colon)]
    return Lines(data, buf, start, end, colon, pipe, pipe < end)


def templates(lines: Lines) -> list[bytes]:
    """Each line without its value (``name:|rest``); a line with no value stays whole.

    A whole line has no ``:`` directly followed by ``|``, unless its value is empty, so it
    never equals the template of a line that has a value.
    """
    first = lines.colon[lines.valued] + 1
    length = lines.pipe[lines.valued] - first
    total = int(length.sum())
    if total == 0:
        return lines.data.split(b"\n")
    # The positions of every value byte: each run [first, first + length) laid end to end.
    offsets = np.repeat(first - (np.cumsum(length) - length), length)
    keep = np.ones(len(lines.buf), dtype=bool)
    keep[offsets + np.arange(total)] = False
    return lines.buf[keep].tobytes().split(b"\n")


def decimals(
    buf: npt.NDArray[np.uint8], first: Positions, length: Positions
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Convert the values ``buf[first : first + length]``; ``exact`` marks those converted.

    A value is converted when it is an optional sign, digits with at most one ``.``, at
    most ``MAX_DIGITS`` digits and at least one; the others are left (``exact`` False,
    value 0) for ``parse_number``, which accepts or rejects them.
    """
    n = len(first)
    values = np.zeros(n, dtype=np.float64)
    exact = np.zeros(n, dtype=bool)
    rows = np.flatnonzero((length > 0) & (length <= MAX_FAST_VALUE))
    if len(rows) == 0:
        return values, exact
    first, length = first[rows], length[rows]
    last = len(buf) - 1
    # Horner's rule a column at a time: every step is one array operation over the rows.
    mantissa = np.zeros(len(rows), dtype=np.int64)
    digits = np.zeros(len(rows), dtype=np.intp)
    fraction = np.zeros(len(rows), dtype=np.intp)
    points = np.zeros(len(rows), dtype=np.intp)
    stray = np.zeros(len(rows), dtype=bool)
    negative = buf[first] == _MINUS
    for column in range(int(length.max())):
        inside = length > column
        chars = buf[np.minimum(first + column, last)]
        digit = (chars - _ZERO) <= 9  # uint8 wraps below '0'
        digit &= inside
        point = (chars == _POINT) & inside
        allowed = digit | point
        if column == 0:
            allowed |= negative | (chars == _PLUS)
        stray |= inside & ~allowed
        mantissa = np.where(digit, mantissa * 10 + (chars - _ZERO), mantissa)
        digits += digit
        fraction += digit & (points > 0)
        points += point
    exact[rows] = ~stray & (points <= 1) & (digits >= 1) & (digits <= MAX_DIGITS)
    magnitude = mantissa / _POW10[np.minimum(fraction, MAX_DIGITS)]
    values[rows] = np.where(exact[rows], np.where(negative, -magnitude, magnitude), 0.0)
    return values, exact
