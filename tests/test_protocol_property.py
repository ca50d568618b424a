"""Hypothesis properties of the StatsD parser (CONTRACT section 2).

1. ``Parser.parse`` never raises, and every non-empty line is exactly one of accepted,
   rejected (by reason) or ignored.
2. The batch form agrees with ``parse_line`` line by line (same samples in the same order,
   same reject reasons), cold and with a warm cache.
3. ``parse_line`` never raises, and what it accepts is well formed.

Inputs are arbitrary bytes and datagrams built from a grammar-aware strategy (valid lines,
valid lines with a byte mutated, random bytes).  Derandomized, so CI is deterministic.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.parser import NO_TIMESTAMP, ParsedBatch, Parser
from gateway.protocol import Ignored, Op, Reject, parse_line
from gateway.series import SeriesNamer
from tests.test_protocol import columns

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
API_NAME = re.compile(rb"[0-9A-Za-z._]+")
API_CHARS = re.compile(rb"[0-9A-Za-z._]*")


def namer() -> SeriesNamer:
    """Tight limits, so that dropped tags happen often."""
    return SeriesNamer((("host", "h1"),), max_dimensions=3, max_dimension_bytes=40)


# --- grammar-aware strategies --------------------------------------------------------------

WORD = st.text(alphabet="abcxyz.-_é /", min_size=0, max_size=6).map(str.encode)
GOOD_KEY = st.sampled_from([b"env", b"host", b"k", b"k-1", b"k_1", b"a", b"r\xc3\xa9"])
BAD_KEY = st.sampled_from([b"", b"\xff"])
BAD_NAME_VALUE = st.sampled_from([b"a:b", b"\xfe"])
GOOD_NAME = st.one_of(
    st.sampled_from([b"api.requests", b"a-b", b"a_b", b"caf\xc3\xa9", b"x", b"a" * 255]),
    WORD.filter(bool),
)
BAD_NAME = st.sampled_from([b"", b"a" * 256, b"\xff", b"caf\xc3"])
GOOD_VALUE = st.one_of(
    st.sampled_from([b"1", b"-3.5", b".5", b"1e2", b"1.", b"+2", b"-1", b"0", b"1E-2"]),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.integers(-(10**20), 10**20).map(lambda i: str(i).encode()),
)
BAD_VALUE = st.sampled_from(
    [b"nan", b"inf", b"-inf", b"1e309", b"0x10", b"1_000", b" 5", b"", b"abc", b"-", b"+"]
)
GOOD_TYPE = st.sampled_from([b"c", b"g", b"ms", b"h", b"d", b"s"])
BAD_TYPE = st.sampled_from([b"x", b"", b"C", b"ms "])
GOOD_FIELD = st.sampled_from(
    [b"@0.5", b"@1", b"@.25", b"@1e-3", b"T1700000000", b"T0", b"c:abc", b"e:x", b"zz", b""]
)
BAD_FIELD = st.sampled_from([b"@0", b"@1.5", b"@-1", b"@abc", b"@", b"T", b"Tabc", b"T-5", b"T1.5"])


def pick(draw: st.DrawFn, good: st.SearchStrategy[bytes], bad: st.SearchStrategy[bytes]) -> bytes:
    """Mostly good; bad one time in eight (the callers' ``faulty`` lines only)."""
    return draw(bad) if draw(st.integers(0, 7)) == 0 else draw(good)


@st.composite
def name_part(draw: st.DrawFn, faulty: bool) -> bytes:
    base = pick(draw, GOOD_NAME, BAD_NAME) if faulty else draw(GOOD_NAME)
    segments = []
    for _ in range(draw(st.integers(0, 3))):
        key = pick(draw, GOOD_KEY, BAD_KEY) if faulty else draw(GOOD_KEY)
        value = pick(draw, WORD, BAD_NAME_VALUE) if faulty else draw(WORD)
        segments.append(key + b"=" + value)
    if faulty and draw(st.integers(0, 7)) == 0:
        segments.append(draw(st.sampled_from([b"", b"novalue"])))
    if not segments:
        return base
    dialect = draw(st.sampled_from(["influx", "librato", "signalfx", "graphite"]))
    if dialect == "influx":
        return base + b"," + b",".join(segments)
    if dialect == "librato":
        return base + b"#" + b",".join(segments)
    if dialect == "graphite":
        return base + b";" + b";".join(segments)
    return base + b"[" + b",".join(segments) + b"]" + draw(WORD)


@st.composite
def dog_tags(draw: st.DrawFn, faulty: bool) -> bytes:
    items = []
    for _ in range(draw(st.integers(0, 4))):
        key = pick(draw, GOOD_KEY, BAD_KEY) if faulty else draw(GOOD_KEY)
        if draw(st.booleans()):
            value = pick(draw, WORD, BAD_NAME_VALUE) if faulty else draw(WORD)
            key += b":" + value
        items.append(key)
    return b"#" + b",".join(items)


@st.composite
def group(draw: st.DrawFn, faulty: bool) -> bytes:
    count = draw(st.integers(1, 3))
    if faulty:
        values = [pick(draw, GOOD_VALUE, BAD_VALUE) for _ in range(count)]
        kind = pick(draw, GOOD_TYPE, BAD_TYPE)
    else:
        values, kind = [draw(GOOD_VALUE) for _ in range(count)], draw(GOOD_TYPE)
    fields = []
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            fields.append(draw(dog_tags(faulty)))
        else:
            fields.append(pick(draw, GOOD_FIELD, BAD_FIELD) if faulty else draw(GOOD_FIELD))
    return b"|".join([b":".join(values), kind, *fields])


@st.composite
def valid_ish_line(draw: st.DrawFn) -> bytes:
    """A line from the grammar; half of them may carry faults from the contract's reject list."""
    faulty = draw(st.booleans())
    groups = [draw(group(faulty)) for _ in range(draw(st.integers(1, 2)))]
    line = draw(name_part(faulty)) + b":" + b":".join(groups)
    if draw(st.booleans()):
        line += b"\r"
    return line


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(valid_ish_line()))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(line)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(b":|@#,;=[]\r\x00\xff.-+eT"))
        if action == "insert":
            line.insert(at, byte)
        elif at < len(line):
            if action == "delete":
                del line[at]
            else:
                line[at] = byte
    return bytes(line)


SPECIAL = st.sampled_from(
    [
        *[b"_e{5,4}:title|text|#t:v", b"_sc|db.up|0", b"", b"\r", b"g:5:+2:-1|g", b"u:a:b|s"],
        *[b"g:+1|g", b"g:-2|g", b"g:3|g", b"g:x|g", b"u:|s", b"c:1|c|#host:x,a:1,b:2,c:3"],
    ]
)
LINE = st.one_of(valid_ish_line(), mutated(), st.binary(max_size=40), SPECIAL)
DATAGRAMS = st.one_of(
    st.lists(st.binary(max_size=200), max_size=4),
    st.lists(st.lists(LINE, max_size=8).map(b"\n".join), max_size=4),
)


# --- expectations from parse_line ----------------------------------------------------------


def lines_of(datagrams: list[bytes]) -> list[bytes]:
    """The lines that are not empty once one trailing CR is stripped (``parse_line`` strips it)."""
    return [
        line for datagram in datagrams for line in datagram.split(b"\n") if line.removesuffix(b"\r")
    ]


def expected(datagrams: list[bytes], name: SeriesNamer) -> tuple[object, ...]:
    keys: list[object] = []
    ops: list[int] = []
    values: list[float] = []
    weights: list[float] = []
    timestamps: list[int] = []
    members: list[bytes] = []
    rejects: Counter[Reject] = Counter()
    ignored: Counter[Ignored] = Counter()
    dropped: Counter[str] = Counter()
    lines = lines_of(datagrams)
    for line in lines:
        result = parse_line(line)
        if isinstance(result, Reject):
            rejects[result] += 1
            continue
        if isinstance(result, Ignored):
            ignored[result] += 1
            continue
        key, drops = name(result[0].name, result[0].tags)
        dropped.update(drops)
        for sample in result:
            keys.append(key)
            ops.append(sample.op)
            values.append(sample.value)
            weights.append(1.0 / sample.rate)
            timestamps.append(NO_TIMESTAMP if sample.timestamp is None else sample.timestamp)
            if sample.member is not None:
                members.append(sample.member)
    accepted = len(lines) - rejects.total() - ignored.total()
    columns = (keys, ops, values, weights, timestamps, members)
    return (*columns, len(lines), accepted, rejects, ignored, dropped)


def observed(batch: ParsedBatch) -> tuple[object, ...]:
    return (
        *columns(batch),
        batch.lines,
        batch.accepted,
        Counter(batch.rejects),
        Counter(batch.ignored),
        Counter(batch.dropped_tags),
    )


# --- properties -----------------------------------------------------------------------------


@PROPERTY
@given(DATAGRAMS)
def test_parse_never_raises_and_every_line_is_counted_once(datagrams: list[bytes]) -> None:
    batch = Parser(namer()).parse(datagrams)
    assert batch.lines == len(lines_of(datagrams))
    assert batch.lines == batch.accepted + sum(batch.rejects.values()) + sum(batch.ignored.values())
    assert all(count > 0 for count in (*batch.rejects.values(), *batch.ignored.values()))
    per_sample = {len(batch.ops), len(batch.values), len(batch.weights), len(batch.timestamps)}
    assert per_sample == {len(batch.keys)}
    assert len(batch.members) == sum(op == Op.SET for op in batch.ops)


@PROPERTY
@given(DATAGRAMS)
def test_batch_agrees_with_parse_line_cold_and_warm(datagrams: list[bytes]) -> None:
    want = expected(datagrams, namer())
    parser = Parser(namer())
    assert observed(parser.parse(datagrams)) == want  # cold cache
    assert observed(parser.parse(datagrams)) == want  # every accepted line now cached
    doubled = datagrams + datagrams[::-1]
    assert observed(parser.parse(doubled)) == expected(doubled, namer())


@PROPERTY
@given(datagrams=DATAGRAMS, warm=st.lists(LINE, max_size=20))
def test_batch_agrees_with_parse_line_after_other_traffic(
    datagrams: list[bytes], warm: list[bytes]
) -> None:
    parser = Parser(namer(), cache_size=8)  # small, so the cache also fills and clears
    parser.parse([b"\n".join(warm)])
    assert observed(parser.parse(datagrams)) == expected(datagrams, namer())


@PROPERTY
@given(st.one_of(LINE, st.binary(max_size=300)))
def test_parse_line_never_raises_and_samples_are_well_formed(line: bytes) -> None:
    result = parse_line(line)
    if isinstance(result, Reject | Ignored):
        return
    assert isinstance(result, tuple)
    assert result
    for sample in result:
        name = sample.name.encode("ascii")
        assert API_NAME.fullmatch(name)
        assert len(name) <= 255
        keys = [key for key, _ in sample.tags]
        assert keys == sorted(set(keys))
        for key, value in sample.tags:
            assert API_NAME.fullmatch(key.encode("ascii"))
            assert API_CHARS.fullmatch(value.encode("ascii"))
        assert math.isfinite(sample.value)
        assert 0.0 < sample.rate <= 1.0
        assert (sample.member is not None) == (sample.op is Op.SET)
        assert sample.timestamp is None or sample.timestamp >= 0
        assert (sample.name, sample.tags) == (result[0].name, result[0].tags)
