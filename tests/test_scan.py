"""The vectorised scan of a batch (``gateway.scan``) against the one-line-at-a-time grammar.

``decimals`` must never accept a value that ``parse_number`` refuses, nor convert one to a
different double; ``scan`` and ``templates`` must cut every line where ``bytes.partition``
cuts it.  Table cases name the edges; Hypothesis properties cover the rest.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import parse_number
from gateway.scan import MAX_DIGITS, decimals, scan, templates

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)


def convert(values: list[bytes]) -> list[float | None]:
    """``decimals`` on ``values`` laid out as lines; None where it leaves the value."""
    lines = scan(b"\n".join(b"x:" + v + b"|c" for v in values))
    converted, exact = decimals(lines.buf, lines.colon + 1, lines.pipe - lines.colon - 1)
    return [v if e else None for v, e in zip(converted.tolist(), exact.tolist(), strict=True)]


def same(a: float, b: float) -> bool:
    """Equal as doubles, sign of zero included."""
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        pytest.param(b"1", 1.0, id="digit"),
        pytest.param(b"-3.5", -3.5, id="negative"),
        pytest.param(b"+2", 2.0, id="plus"),
        pytest.param(b".5", 0.5, id="leading-point"),
        pytest.param(b"1.", 1.0, id="trailing-point"),
        pytest.param(b"-0", -0.0, id="negative-zero"),
        pytest.param(b"0.1", 0.1, id="inexact-in-binary"),
        pytest.param(b"007", 7.0, id="leading-zeros"),
        pytest.param(b"123456789012345", 123456789012345.0, id="fifteen-digits"),
        pytest.param(b".000000000000001", 1e-15, id="fifteen-fraction-digits"),
        pytest.param(b"99999999999999.9", 99999999999999.9, id="fifteen-digits-point"),
    ],
)
def test_plain_decimals_convert_like_float(raw: bytes, want: float) -> None:
    (got,) = convert([raw])
    assert got is not None
    assert same(got, want)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"-", id="sign-only"),
        pytest.param(b".", id="point-only"),
        pytest.param(b"1.2.3", id="two-points"),
        pytest.param(b"--1", id="two-signs"),
        pytest.param(b"1-", id="sign-after"),
        pytest.param(b"1e5", id="exponent"),
        pytest.param(b"nan", id="nan"),
        pytest.param(b"inf", id="inf"),
        pytest.param(b"1_000", id="underscore"),
        pytest.param(b" 1", id="blank"),
        pytest.param(b"1:2", id="packing"),
        pytest.param(b"1234567890123456", id="sixteen-digits"),
        pytest.param(b"0x10", id="hex"),
    ],
)
def test_other_values_are_left_to_parse_number(raw: bytes) -> None:
    assert convert([raw]) == [None]


def test_a_bad_value_leaves_its_neighbours_converted() -> None:
    assert convert([b"1", b"1..2", b"2.5", b"", b"-7"]) == [1.0, None, 2.5, None, -7.0]


DECIMAL = st.builds(
    lambda sign, head, point, tail: sign + head + point + tail,
    st.sampled_from([b"", b"+", b"-"]),
    st.text("0123456789", max_size=10).map(str.encode),
    st.sampled_from([b"", b"."]),
    st.text("0123456789", max_size=10).map(str.encode),
)
ANY_VALUE = st.one_of(
    DECIMAL,
    st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"|" not in b),
    st.text("0123456789.+-eE", max_size=18).map(str.encode),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
)


@PROPERTY
@given(st.lists(ANY_VALUE, min_size=1, max_size=40))
def test_converted_values_are_exactly_what_parse_number_gives(values: list[bytes]) -> None:
    for raw, got in zip(values, convert(values), strict=True):
        if got is not None:
            want = parse_number(raw)
            assert want is not None, raw
            assert same(got, want), raw


@PROPERTY
@given(st.lists(DECIMAL, min_size=1, max_size=40))
def test_every_plain_decimal_that_parse_number_accepts_is_converted(values: list[bytes]) -> None:
    for raw, got in zip(values, convert(values), strict=True):
        digits = sum(c in b"0123456789" for c in raw)
        if parse_number(raw) is not None and digits <= MAX_DIGITS:
            assert got is not None, raw


LINE = st.binary(max_size=30).filter(lambda b: b"\n" not in b)


@PROPERTY
@given(st.lists(LINE, min_size=1, max_size=30))
def test_scan_and_templates_cut_where_partition_does(lines: list[bytes]) -> None:
    data = b"\n".join(lines)
    found = scan(data)
    assert len(found) == len(lines)
    cut = templates(found)
    for i, line in enumerate(lines):
        assert data[found.start[i] : found.end[i]] == line
        name, colon, rest = line.partition(b":")
        value, pipe, tail = rest.partition(b"|")
        assert bool(found.valued[i]) == bool(colon and pipe)
        if colon and pipe:
            assert data[found.colon[i] + 1 : found.pipe[i]] == value
            assert cut[i] == name + b":|" + tail
        else:
            assert cut[i] == line


def test_scan_of_empty_data_is_one_empty_line() -> None:
    found = scan(b"")
    assert (len(found), templates(found)) == (1, [b""])
    assert np.array_equal(found.end - found.start, [0])
