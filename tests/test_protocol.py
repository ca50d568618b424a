"""The StatsD line parser against CONTRACT section 2 (and the naming rules of section 4).

Written from the contract, line by line: what each line becomes (``parse_line``), and what the
batch form (``Parser.parse`` with ``SeriesNamer``) does with datagrams, its cache and its
counters.  Where the contract is silent, the choices recorded in docs/protocol.md are tested.
"""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.parser import NO_TIMESTAMP, ParsedBatch, Parser
from gateway.protocol import (
    FAR_FUTURE,
    Ignored,
    Kind,
    Op,
    Reject,
    Sample,
    parse_line,
)
from gateway.series import SeriesNamer

STATIC = (("host", "h1"),)
LONG = "a" * 255


def s(
    name: str,
    op: Op,
    value: float = 0.0,
    *,
    tags: tuple[tuple[str, str], ...] = (),
    rate: float = 1.0,
    member: bytes | None = None,
    timestamp: int | None = None,
) -> Sample:
    return Sample(name, tags, op, value, rate, member, timestamp)


C, G, GD, T, S = Op.COUNTER, Op.GAUGE, Op.GAUGE_DELTA, Op.TIMER, Op.SET

ACCEPTED = [
    # types
    pytest.param(b"api.requests:1|c", [s("api.requests", C, 1)], id="counter"),
    pytest.param(b"temp:5|g", [s("temp", G, 5)], id="gauge"),
    pytest.param(b"lat:12|ms", [s("lat", T, 12)], id="timer-ms"),
    pytest.param(b"lat:12|h", [s("lat", T, 12)], id="histogram-is-timer"),
    pytest.param(b"lat:12|d", [s("lat", T, 12)], id="distribution-is-timer"),
    pytest.param(b"users:alice|s", [s("users", S, member=b"alice")], id="set"),
    # value forms
    pytest.param(b"x:5|c", [s("x", C, 5)], id="value-int"),
    pytest.param(b"x:-3.5|c", [s("x", C, -3.5)], id="value-negative"),
    pytest.param(b"x:.5|c", [s("x", C, 0.5)], id="value-leading-dot"),
    pytest.param(b"x:1e2|c", [s("x", C, 100)], id="value-exponent"),
    pytest.param(b"x:1E-2|ms", [s("x", T, 0.01)], id="value-exponent-upper"),
    pytest.param(b"x:1.|c", [s("x", C, 1)], id="value-trailing-dot"),
    pytest.param(b"x:+2|c", [s("x", C, 2)], id="value-plus-counter"),
    pytest.param(b"x:-3.5|ms", [s("x", T, -3.5)], id="value-negative-timer"),
    pytest.param(b"g:+2|g", [s("g", GD, 2)], id="gauge-delta-plus"),
    pytest.param(b"g:-1.5|g", [s("g", GD, -1.5)], id="gauge-delta-minus"),
    pytest.param(b"g:1e2|g", [s("g", G, 100)], id="gauge-set-exponent"),
    # sample rates
    pytest.param(b"x:1|c|@0.5", [s("x", C, 1, rate=0.5)], id="rate-half"),
    pytest.param(b"x:1|c|@1", [s("x", C, 1)], id="rate-one"),
    pytest.param(b"x:1|c|@.25", [s("x", C, 1, rate=0.25)], id="rate-leading-dot"),
    pytest.param(b"x:3|ms|@0.1", [s("x", T, 3, rate=0.1)], id="rate-timer"),
    pytest.param(b"g:3|g|@0.5", [s("g", G, 3, rate=0.5)], id="rate-gauge-kept"),
    pytest.param(b"u:a|s|@0.5", [s("u", S, member=b"a", rate=0.5)], id="rate-set-kept"),
    # DogStatsD packing
    pytest.param(b"t:1:2:3|ms", [s("t", T, 1), s("t", T, 2), s("t", T, 3)], id="pack-timer"),
    pytest.param(
        b"g:5:+2:-1|g", [s("g", G, 5), s("g", GD, 2), s("g", GD, -1)], id="pack-gauge-deltas"
    ),
    pytest.param(b"c:1:2|c|@0.5", [s("c", C, 1, rate=0.5), s("c", C, 2, rate=0.5)], id="pack-rate"),
    pytest.param(b"u:a:b|s", [s("u", S, member=b"a:b")], id="set-member-with-colon"),
    pytest.param(b"u::|s", [s("u", S, member=b":")], id="set-member-only-colon"),
    pytest.param(b"u:|s", [s("u", S, member=b"")], id="set-empty-member"),
    pytest.param(b"u:\xff\xfe|s", [s("u", S, member=b"\xff\xfe")], id="set-member-raw-bytes"),
    # etsy chains
    pytest.param(
        b"n:1|c:2|c|@0.5", [s("n", C, 1), s("n", C, 2, rate=0.5)], id="etsy-chain-type-colon"
    ),
    pytest.param(
        b"n:1|c|@0.5:2|ms", [s("n", C, 1, rate=0.5), s("n", T, 2)], id="etsy-chain-after-rate"
    ),
    pytest.param(
        b"n:1|c:2|ms:a|s",
        [s("n", C, 1), s("n", T, 2), s("n", S, member=b"a")],
        id="etsy-chain-three-types",
    ),
    pytest.param(
        b"n:1|c|#a:1|@0.5:2|c|#b:2",
        [
            s("n", C, 1, rate=0.5, tags=(("a", "1"), ("b", "2"))),
            s("n", C, 2, tags=(("a", "1"), ("b", "2"))),
        ],
        id="etsy-chain-tags-apply-to-every-value",
    ),
    pytest.param(
        b"n:1:2|c:3|g", [s("n", C, 1), s("n", C, 2), s("n", G, 3)], id="etsy-chain-with-packing"
    ),
    # DogStatsD tags
    pytest.param(b"x:1|c|#env:prod", [s("x", C, 1, tags=(("env", "prod"),))], id="tag"),
    pytest.param(b"x:1|c|#canary", [s("x", C, 1, tags=(("canary", "true"),))], id="tag-bare"),
    pytest.param(b"x:1|c|#k:a,k:b", [s("x", C, 1, tags=(("k", "b"),))], id="tag-repeated-last"),
    pytest.param(b"x:1|c|#:v,k:x", [s("x", C, 1, tags=(("k", "x"),))], id="tag-empty-key"),
    pytest.param(b"x:1|c|#,,k:x,", [s("x", C, 1, tags=(("k", "x"),))], id="tag-empty-items"),
    pytest.param(b"x:1|c|#url:a:b", [s("x", C, 1, tags=(("url", "a_b"),))], id="tag-colon"),
    pytest.param(b"x:1|c|#env:", [s("x", C, 1, tags=(("env", ""),))], id="tag-empty-value"),
    pytest.param(
        b"x:1|c|#b:2,a:1", [s("x", C, 1, tags=(("a", "1"), ("b", "2")))], id="tags-sorted"
    ),
    pytest.param(
        b"x:1|c|#b:2|#a:1", [s("x", C, 1, tags=(("a", "1"), ("b", "2")))], id="tags-two-fields"
    ),
    pytest.param(
        b"x:1|c|#k-1:a b,k_1:c", [s("x", C, 1, tags=(("k_1", "c"),))], id="tags-sanitised-key"
    ),
    pytest.param(
        b"x:1|c|#route:/x", [s("x", C, 1, tags=(("route", "_x"),))], id="tag-value-sanitised"
    ),
    pytest.param(b"x:1|c|#k:\xff", [s("x", C, 1, tags=(("k", "_"),))], id="tag-value-bad-utf8"),
    pytest.param(b"x:1|c|#\xc3\xa9:v", [s("x", C, 1, tags=(("__", "v"),))], id="tag-key-utf8"),
    # name-tag dialects
    pytest.param(b"m,k=v,k2=v2:1|c", [s("m", C, 1, tags=(("k", "v"), ("k2", "v2")))], id="influx"),
    pytest.param(b"m#k=v,k2=v2:1|c", [s("m", C, 1, tags=(("k", "v"), ("k2", "v2")))], id="librato"),
    pytest.param(
        b"pre[k=v,k2=v2]post:1|c",
        [s("prepost", C, 1, tags=(("k", "v"), ("k2", "v2")))],
        id="signalfx",
    ),
    pytest.param(
        b"m;k=v;k2=v2:1|c", [s("m", C, 1, tags=(("k", "v"), ("k2", "v2")))], id="graphite"
    ),
    pytest.param(b"m,k=:1|c", [s("m", C, 1, tags=(("k", ""),))], id="influx-empty-value"),
    pytest.param(b"m,k=\xff:1|c", [s("m", C, 1, tags=(("k", "_"),))], id="influx-value-bad-utf8"),
    pytest.param(
        b"m,env=a:1|c|#env:b", [s("m", C, 1, tags=(("env", "b"),))], id="merge-dogstatsd-wins"
    ),
    pytest.param(
        b"m,env-x=a:1|c|#env_x:b",
        [s("m", C, 1, tags=(("env_x", "b"),))],
        id="merge-compared-after-sanitising",
    ),
    pytest.param(
        b"m,a=1:1|c|#b:2", [s("m", C, 1, tags=(("a", "1"), ("b", "2")))], id="merge-union"
    ),
    # unknown and ignored fields
    pytest.param(b"x:1|c|zz", [s("x", C, 1)], id="field-unknown"),
    pytest.param(b"x:1|c|c:abc", [s("x", C, 1)], id="field-container-id"),
    pytest.param(b"x:1|c|e:x", [s("x", C, 1)], id="field-external"),
    pytest.param(b"x:1|c|card:low", [s("x", C, 1)], id="field-cardinality"),
    pytest.param(
        b"x:1|c|c:abc|@0.5|card:low|#k:v|e:x",
        [s("x", C, 1, rate=0.5, tags=(("k", "v"),))],
        id="fields-mixed",
    ),
    pytest.param(b"x:1|c|T1700000000", [s("x", C, 1, timestamp=1700000000)], id="timestamp"),
    pytest.param(b"x:1|c\r", [s("x", C, 1)], id="trailing-cr"),
    # names
    pytest.param("café:1|c".encode(), [s("caf__", C, 1)], id="name-utf8-sanitised"),
    pytest.param(b"a-b:1|c", [s("a_b", C, 1)], id="name-dash"),
    pytest.param(b"a/b c:1|c", [s("a_b_c", C, 1)], id="name-slash-space"),
    pytest.param(LONG.encode() + b":1|c", [s(LONG, C, 1)], id="name-255-bytes"),
    pytest.param(
        b"a" * 253 + "é".encode() + b":1|c", [s("a" * 253 + "__", C, 1)], id="name-255-utf8"
    ),
    pytest.param(
        LONG.encode() + b",k=v:1|c", [s(LONG, C, 1, tags=(("k", "v"),))], id="name-255-plus-tags"
    ),
]

REJECTED = [
    pytest.param(b"x|c", Reject.MISSING_COLON, id="missing-colon"),
    pytest.param(b"x", Reject.MISSING_COLON, id="bare-name"),
    pytest.param(b"x:1", Reject.MISSING_TYPE, id="missing-type"),
    pytest.param(b"x:1|", Reject.MISSING_TYPE, id="empty-type"),
    pytest.param(b"x:1|q", Reject.UNKNOWN_TYPE, id="unknown-type"),
    pytest.param(b"x:1|C", Reject.UNKNOWN_TYPE, id="unknown-type-case"),
    pytest.param(b"x:1|c:2|zz", Reject.UNKNOWN_TYPE, id="unknown-type-in-chain"),
    *[
        pytest.param(b"x:" + raw + b"|c", Reject.BAD_VALUE, id=f"value-{label}")
        for raw, label in [
            (b"nan", "nan"),
            (b"NaN", "NaN"),
            (b"inf", "inf"),
            (b"-inf", "minus-inf"),
            (b"1e309", "overflow"),
            (b"0x10", "hex"),
            (b"1_000", "underscore"),
            (b" 5", "leading-space"),
            (b"5 ", "trailing-space"),
            (b"", "empty"),
            (b"abc", "word"),
            (b"1,5", "comma"),
        ]
    ],
    pytest.param(b"g:+nan|g", Reject.BAD_VALUE, id="value-gauge-signed-nan"),
    pytest.param(b"t:1:x|ms", Reject.BAD_VALUE, id="value-packed-one-bad"),
    pytest.param(b"t:1::2|ms", Reject.BAD_VALUE, id="value-packed-empty"),
    pytest.param(b"g:5:+2:nan|g", Reject.BAD_VALUE, id="value-packed-gauge-last-bad"),
    pytest.param(b"n:1|c:abc|c", Reject.BAD_VALUE, id="value-chain-second-bad"),
    *[
        pytest.param(b"x:1|" + kind + b"|@" + raw, Reject.BAD_RATE, id=f"rate-{label}-{kind!r}")
        for kind in (b"c", b"ms", b"g", b"s")
        for raw, label in [
            (b"0", "zero"),
            (b"1.5", "above-one"),
            (b"-1", "negative"),
            (b"abc", "word"),
            (b"", "empty"),
        ]
    ],
    pytest.param(b"x:1|c|@nan", Reject.BAD_RATE, id="rate-nan"),
    pytest.param(b"n:1|c:2|c|@2", Reject.BAD_RATE, id="rate-in-chain"),
    pytest.param(b"x:1|c|T", Reject.BAD_TIMESTAMP, id="timestamp-empty"),
    pytest.param(b"x:1|c|Tabc", Reject.BAD_TIMESTAMP, id="timestamp-word"),
    pytest.param(b"x:1|c|T-5", Reject.BAD_TIMESTAMP, id="timestamp-negative"),
    pytest.param(b"x:1|c|T+5", Reject.BAD_TIMESTAMP, id="timestamp-plus"),
    pytest.param(b"x:1|c|T1.5", Reject.BAD_TIMESTAMP, id="timestamp-fraction"),
    pytest.param(b"x:1|c|T1e9", Reject.BAD_TIMESTAMP, id="timestamp-exponent"),
    pytest.param(b"m,k:1|c", Reject.BAD_NAME_TAG, id="influx-no-equals"),
    pytest.param(b"m,k=v,:1|c", Reject.BAD_NAME_TAG, id="influx-empty-segment"),
    pytest.param(b"m,:1|c", Reject.BAD_NAME_TAG, id="influx-trailing-comma"),
    pytest.param(b"m#k=v,x:1|c", Reject.BAD_NAME_TAG, id="librato-no-equals"),
    pytest.param(b"pre[k]post:1|c", Reject.BAD_NAME_TAG, id="signalfx-no-equals"),
    pytest.param(b"m;k=v;;k2=v2:1|c", Reject.BAD_NAME_TAG, id="graphite-empty-segment"),
    pytest.param(b":1|c", Reject.EMPTY_NAME, id="empty-name"),
    pytest.param(b",k=v:1|c", Reject.EMPTY_NAME, id="empty-name-influx"),
    pytest.param(b";k=v:1|c", Reject.EMPTY_NAME, id="empty-name-graphite"),
    pytest.param(b"[k=v]:1|c", Reject.EMPTY_NAME, id="empty-name-signalfx"),
    pytest.param(b"a" * 256 + b":1|c", Reject.NAME_TOO_LONG, id="name-256-bytes"),
    pytest.param(
        b"a" * 254 + "é".encode() + b":1|c", Reject.NAME_TOO_LONG, id="name-256-after-sanitising"
    ),
    pytest.param(b"\xff:1|c", Reject.BAD_UTF8, id="name-bad-utf8"),
    pytest.param(b"caf\xc3:1|c", Reject.BAD_UTF8, id="name-truncated-utf8"),
]

IGNORED = [
    pytest.param(b"_e{5,4}:title|text", Ignored.EVENT, id="event"),
    pytest.param(b"_e{5,4}:title|text|#env:prod|p:low", Ignored.EVENT, id="event-fields"),
    pytest.param(b"_sc|db.up|0", Ignored.SERVICE_CHECK, id="service-check"),
    pytest.param(b"_sc|db.up|2|#env:prod|m:down", Ignored.SERVICE_CHECK, id="service-check-tags"),
]


@pytest.mark.parametrize(("line", "expected"), ACCEPTED)
def test_accepted_line(line: bytes, expected: list[Sample]) -> None:
    assert parse_line(line) == tuple(expected)


@pytest.mark.parametrize(("line", "reason"), REJECTED)
def test_rejected_line(line: bytes, reason: Reject) -> None:
    assert parse_line(line) == reason


@pytest.mark.parametrize(("line", "kind"), IGNORED)
def test_ignored_line(line: bytes, kind: Ignored) -> None:
    assert parse_line(line) == kind


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        pytest.param(C, Kind.COUNTER, id="counter"),
        pytest.param(G, Kind.GAUGE, id="gauge"),
        pytest.param(GD, Kind.GAUGE, id="gauge-delta"),
        pytest.param(T, Kind.TIMER, id="timer"),
        pytest.param(S, Kind.SET, id="set"),
    ],
)
def test_kind_of_op(op: Op, kind: Kind) -> None:
    assert s("x", op).kind is kind


# --- batch form -----------------------------------------------------------------------------


def columns(batch: ParsedBatch) -> tuple[list[object], ...]:
    return (
        batch.keys,
        batch.ops.tolist(),
        batch.values.tolist(),
        batch.weights.tolist(),
        batch.timestamps.tolist(),
        batch.members,
    )


def expected_columns(lines: list[bytes], namer: SeriesNamer) -> tuple[list[object], ...]:
    """The batch columns that ``parse_line`` implies for ``lines``."""
    out: tuple[list[object], ...] = ([], [], [], [], [], [])
    for line in lines:
        result = parse_line(line)
        if not isinstance(result, tuple):
            continue
        for sample in result:
            out[0].append(namer(sample.name, sample.tags)[0])
            out[1].append(sample.op)
            out[2].append(sample.value)
            out[3].append(1.0 / sample.rate)
            out[4].append(NO_TIMESTAMP if sample.timestamp is None else sample.timestamp)
            if sample.member is not None:
                out[5].append(sample.member)
    return out


def new_parser() -> tuple[Parser, SeriesNamer]:
    namer = SeriesNamer(STATIC)
    return Parser(namer), namer


def test_datagram_lines_crlf_and_empty_lines() -> None:
    parser, _ = new_parser()
    batch = parser.parse([b"a:1|c\r\n\r\n\nb:2|ms\n", b"c:3|g", b"", b"\n\n", b"d:4|c\r\n"])
    assert (batch.lines, batch.accepted, batch.rejects, batch.ignored) == (4, 4, {}, {})
    assert batch.values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert batch.keys == [("a", STATIC), ("b", STATIC), ("c", STATIC), ("d", STATIC)]
    assert batch.ops.tolist() == [C, T, G, C]


def test_batch_columns() -> None:
    parser, _ = new_parser()
    batch = parser.parse([b"t:1:2|ms|@0.5|T1700000000\nu:a:b|s\nx:1|c:2|c|@0.25"])
    assert batch.ops.tolist() == [T, T, S, C, C]
    assert batch.values.tolist() == [1.0, 2.0, 0.0, 1.0, 2.0]
    assert batch.weights.tolist() == [2.0, 2.0, 1.0, 1.0, 4.0]
    assert batch.timestamps.tolist() == [1700000000, 1700000000] + [NO_TIMESTAMP] * 3
    assert batch.members == [b"a:b"]
    assert (batch.lines, batch.accepted) == (3, 3)


GOOD = [
    b"a:1|c|#k:v",
    b"g:5:+2:-1|g",
    b"u:x:y|s",
    b"t:1|ms|@0.5|T1700000000",
    b"m,k=v:2|h|#z:1",
    b"n:1|c|@0.5:2|ms",
]


@pytest.mark.parametrize(
    ("garbage", "counted"),
    [
        pytest.param(b"a:nan|c|#k:v", {Reject.BAD_VALUE: 1}, id="bad-value-same-series"),
        pytest.param(b"\xff\xfe\x00", {Reject.MISSING_COLON: 1}, id="binary"),
        pytest.param(b"\xff:1|c", {Reject.BAD_UTF8: 1}, id="bad-utf8"),
        pytest.param(b"g:5:+2:x|g", {Reject.BAD_VALUE: 1}, id="packed-gauge-bad"),
        pytest.param(b"n:1|c|@2:2|ms", {Reject.BAD_RATE: 1}, id="chain-bad-rate"),
        pytest.param(b"m,k:2|h", {Reject.BAD_NAME_TAG: 1}, id="bad-name-tag"),
        pytest.param(b"a:1|c|T-1", {Reject.BAD_TIMESTAMP: 1}, id="bad-timestamp"),
        pytest.param(b"_e{1,1}:a|b", {Ignored.EVENT: 1}, id="event"),
    ],
)
def test_bad_line_changes_nothing_else(garbage: bytes, counted: dict[object, int]) -> None:
    clean_parser, namer = new_parser()
    clean = clean_parser.parse([b"\n".join(GOOD)])
    dirty_parser, _ = new_parser()
    mixed = [*GOOD[:2], garbage, *GOOD[2:4], garbage, *GOOD[4:]]
    dirty = dirty_parser.parse([b"\n".join(mixed)])
    assert columns(dirty) == columns(clean) == expected_columns(GOOD, namer)
    assert Counter(dirty.rejects) + Counter(dirty.ignored) == Counter(
        {k: 2 * v for k, v in counted.items()}
    )
    assert (dirty.lines, dirty.accepted) == (len(GOOD) + 2, len(GOOD))


def test_arrival_order_across_cache_hits_and_misses() -> None:
    lines = [
        b"g:1|g",
        b"g:+1|g",
        b"g:-2|g",
        b"g:1:+1|g",
        b"g:7|g",
        b"g:3|g|T1700000000",
        b"g:+3|g",
        b"u:a|s",
        b"g:-1|g",
        b"u:b|s",
        b"g:2|g",
    ]
    ops = [G, GD, GD, G, GD, G, G, GD, S, GD, S, G]
    values = [1.0, 1.0, -2.0, 1.0, 1.0, 7.0, 3.0, 3.0, 0.0, -1.0, 0.0, 2.0]
    parser, _ = new_parser()
    for _ in range(3):  # cold, then warm, then warm again
        batch = parser.parse([b"\n".join(lines)])
        assert (batch.ops.tolist(), batch.values.tolist(), batch.members) == (
            ops,
            values,
            [b"a", b"b"],
        )
        assert batch.timestamps.tolist() == [NO_TIMESTAMP] * 6 + [1700000000] + [NO_TIMESTAMP] * 5


@pytest.mark.parametrize(("line", "expected"), ACCEPTED + REJECTED + IGNORED)
def test_cache_agrees_with_parse_line(line: bytes, expected: object) -> None:
    parser, namer = new_parser()
    first = parser.parse([line + b"\n" + line, line])
    second = parser.parse([line, line + b"\n" + line])
    want = expected_columns([line] * 3, namer)
    assert columns(first) == columns(second) == want
    result = parse_line(line)
    outcome = Counter({result: 3}) if not isinstance(result, tuple) else Counter()
    for batch in (first, second):
        assert Counter(batch.rejects) + Counter(batch.ignored) == outcome
        assert (batch.lines, batch.accepted) == (3, 3 - sum(outcome.values()))


@pytest.mark.parametrize(
    ("warm", "line", "reason"),
    [
        pytest.param(b"a:1|c", b"a:abc|c", Reject.BAD_VALUE, id="counter-bad-value"),
        pytest.param(b"a:1|c", b"a:|c", Reject.BAD_VALUE, id="counter-empty-value"),
        pytest.param(b"a:1|c", b"a:1::2|c", Reject.BAD_VALUE, id="counter-packed-bad"),
        pytest.param(b"g:1|g", b"g:+inf|g", Reject.BAD_VALUE, id="gauge-inf"),
        pytest.param(b"t:1|ms|@0.5", b"t:0x1|ms|@0.5", Reject.BAD_VALUE, id="timer-hex"),
    ],
)
def test_warm_cache_still_rejects(warm: bytes, line: bytes, reason: Reject) -> None:
    parser, _ = new_parser()
    parser.parse([warm])
    batch = parser.parse([warm + b"\n" + line + b"\n" + warm])
    assert batch.rejects == {reason: 1}
    assert (batch.lines, batch.accepted, len(batch.values)) == (3, 2, 2)


# --- series naming ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dimensions", "dropped"),
    [
        pytest.param(b"m:1|c", STATIC, {}, id="no-tags"),
        pytest.param(
            b"m:1|c|#z:1,a:2", (*STATIC, ("a", "2"), ("z", "1")), {}, id="static-first-sorted"
        ),
        pytest.param(
            b"m,zz=1:1|c|#b-b:2,a:1",
            (*STATIC, ("a", "1"), ("b_b", "2"), ("zz", "1")),
            {},
            id="sorted-by-sanitised-key",
        ),
        pytest.param(b"m:1|c|#env:", (*STATIC, ("env", "_")), {}, id="empty-value-underscore"),
        pytest.param(b"m,env=:1|c", (*STATIC, ("env", "_")), {}, id="empty-name-tag-value"),
        pytest.param(
            b"m:1|c|#host:x,a:1", (*STATIC, ("a", "1")), {"static_key": 1}, id="static-key"
        ),
        pytest.param(
            b"m:1|c|#a:1,b:2,c:3,d:4,e:5,f:6",
            (*STATIC, ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")),
            {"max_dimensions": 2},
            id="five-dimensions",
        ),
        pytest.param(
            b"m:1|c|#a:" + b"v" * 248 + b",b:1",
            (*STATIC, ("a", "v" * 248)),
            {"max_dimension_bytes": 1},
            id="exactly-255-bytes-then-full",
        ),
        pytest.param(
            b"m:1|c|#a:" + b"v" * 249 + b",b:1",
            (*STATIC, ("b", "1")),
            {"max_dimension_bytes": 1},
            id="greedy-later-smaller-fits",
        ),
        pytest.param(
            b"m:1|c|#host:x,a:1,b:2,c:3,d:4,e:5,f:6",
            (*STATIC, ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")),
            {"static_key": 1, "max_dimensions": 2},
            id="limits-in-order",
        ),
        pytest.param(
            b"m:1:2:3|c|#host:x", STATIC, {"static_key": 1}, id="dropped-counted-per-line"
        ),
    ],
)
def test_series_dimensions(
    line: bytes, dimensions: tuple[tuple[str, str], ...], dropped: dict[str, int]
) -> None:
    parser, _ = new_parser()
    for _ in range(2):  # cold, then a cache hit
        batch = parser.parse([line, line])
        assert set(batch.keys) == {("m", dimensions)}
        assert batch.dropped_tags == {k: 2 * v for k, v in dropped.items()}


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([b"a-b:1|c", b"a_b:1|c", b"a b:1|c"], id="dash-underscore-space"),
        pytest.param(["café:1|c".encode(), b"caf__:1|c", b"caf\xc3\xa8:1|c"], id="utf8"),
        pytest.param([b"m:1|c|#k-1:v", b"m,k_1=v:1|c", b"m;k 1=v:1|c"], id="tag-key"),
        pytest.param([b"m:1|c|#k:a b", b"m:1|c|#k:a_b", b"m:1|c|#k:a\xffb"], id="tag-value"),
        pytest.param([b"m:1|c|#t", b"m:1|c|#t:true", b"m,t=true:1|c"], id="bare-tag-true"),
    ],
)
def test_equal_after_sanitising_is_one_series(lines: list[bytes]) -> None:
    parser, _ = new_parser()
    batch = parser.parse([b"\n".join(lines)])
    assert batch.accepted == len(lines)
    assert len(set(batch.keys)) == 1


def test_series_namer_limits_are_options() -> None:
    namer = SeriesNamer((("host", "h"),), max_dimensions=2, max_dimension_bytes=10)
    key, dropped = namer("m", (("a", "1"), ("b", "2"), ("c", "123456789")))
    assert key == ("m", (("host", "h"), ("a", "1")))
    assert sorted(dropped) == ["max_dimensions", "max_dimensions"]
    key, dropped = SeriesNamer((), max_dimension_bytes=4)("m", (("a", "123"), ("b", "12")))
    assert (key, dropped) == (("m", (("a", "123"),)), ("max_dimension_bytes",))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(b"x:1|c|T99999999999999999999", FAR_FUTURE, id="huge-stamp-is-far-future"),
        pytest.param(b"x:1|c|T" + b"9" * 5000, FAR_FUTURE, id="5000-digit-stamp"),
        pytest.param(b"x:1|c|T0", 0, id="stamp-zero-is-the-epoch"),
    ],
)
def test_timestamp_edges(line: bytes, expected: int) -> None:
    parsed = parse_line(line)
    assert isinstance(parsed, tuple) and parsed[0].timestamp == expected


def test_subnormal_rate_is_rejected() -> None:
    # 1/5e-324 overflows to infinity, which no weight may be.
    assert parse_line(b"x:1|c|@5e-324") is Reject.BAD_RATE
    assert isinstance(parse_line(b"x:1|c|@1e-300"), tuple)


def test_a_warm_batch_is_served_from_the_cache_and_says_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [
        b"hits:1|c|#route:/a,env:prod",
        b"hits:4|c|@0.25|#route:/a,env:prod",
        b"lat:12.5|ms|@0.5",
        b"depth:10|g",
        b"depth:+5|g",
        b"depth:-3|g",
        b"users:alice|s",
        b"users:bob:x|s",  # a member with a colon
        b"many:1|c|#a:1,b:2,c:3,d:4,e:5,f:6",  # a dropped tag on every line
        b"hits:1e2|c|#route:/a,env:prod",
    ]
    parser, _ = new_parser()
    cold = parser.parse([b"\n".join(lines)])

    def per_line(*_: object) -> None:
        raise AssertionError("a warm batch of cached lines went line by line")

    monkeypatch.setattr(parser, "_parse_slow", per_line)
    warm = parser.parse([b"\n".join(lines)])
    assert columns(warm) == columns(cold)
    assert (warm.lines, warm.accepted, warm.rejects, warm.dropped_tags) == (
        cold.lines, cold.accepted, cold.rejects, cold.dropped_tags,
    )  # fmt: skip


@pytest.mark.parametrize(
    "odd",
    [b"hits:nan|c", b"hits:1e309|c", b"hits:|c", b"hits:1:2|c", b"hits:0x10|c", b"hits:1e|c"],
)
def test_an_odd_value_in_a_warm_batch_is_judged_line_by_line(odd: bytes) -> None:
    parser, namer = new_parser()
    parser.parse([b"hits:1|c"])
    lines = [b"hits:2|c", odd, b"hits:3|c"]
    assert columns(parser.parse([b"\n".join(lines)])) == expected_columns(lines, namer)


def test_key_table_stays_bounded_under_tag_churn() -> None:
    namer = SeriesNamer(STATIC)
    parser = Parser(namer, cache_size=8)
    for i in range(200):  # a new request id every line: a new series every line
        lines = [b"steady:1|c|#k:v", f"churn:{i}|ms|#req:{i}".encode(), b"steady:2|c|#k:v"]
        batch = parser.parse([b"\n".join(lines)])
        assert columns(batch) == expected_columns(lines, namer)
        assert len(batch.key_table) <= 2 * 8 + len(lines)
