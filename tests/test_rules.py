"""Table-driven tests of gateway.rules.check_point: every rule, both sides of each limit."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.rules import AGG_KEYS, VALUE_MAX, Limits, check_point

NOW = 1_700_000_000
DAY = 86400


def point(**changes: Any) -> dict[str, Any]:
    """A valid type 2 point, with fields replaced (a value of ``...`` removes the field)."""
    base: dict[str, Any] = {
        "namespace": "statsd",
        "metric": "api.requests",
        "dimensions": {"host": "node1"},
        "timestamp": NOW - 60,
        "type": 2,
        "values": {"avg": 1.5, "sum": 3, "last": 2, "max": 2, "min": 1, "count": 2},
    }
    for key, value in changes.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return base


VALID = [
    pytest.param(point(), id="type2-all-keys"),
    pytest.param(point(values={"count": 0}), id="type2-one-key"),
    pytest.param(point(type=1, values={"value": 42}), id="type1"),
    pytest.param(point(type=1, values={"value": -0.5}), id="type1-negative-float"),
    pytest.param(point(values={"max": VALUE_MAX}), id="int-max-accepted"),
    pytest.param(point(values={"min": -VALUE_MAX}), id="int-min-accepted"),
    pytest.param(point(values={"max": 9.223372036854775e18}), id="float-below-2**63"),
    pytest.param(point(values={"count": 0.5}), id="fractional-count"),
    pytest.param(point(values={"count": -0.0}), id="count-negative-zero"),
    pytest.param(point(unit="ms"), id="unit"),
    pytest.param(point(unit="u" * 64), id="unit-64-bytes"),
    pytest.param(point(namespace="a" * 255), id="namespace-255-bytes"),
    pytest.param(point(metric="m._.9" * 51), id="metric-255-bytes"),
    pytest.param(point(dimensions={f"k{i}": "v" for i in range(5)}), id="five-dimensions"),
    pytest.param(point(dimensions={"k": "v" * 254}), id="dimensions-255-bytes"),
    pytest.param(point(timestamp=NOW - 30 * DAY), id="timestamp-exactly-30-days"),
    pytest.param(point(timestamp=NOW + 600), id="timestamp-10-minutes-ahead"),
]


@pytest.mark.parametrize("p", VALID)
def test_valid_points_pass(p: dict[str, Any]) -> None:
    assert check_point(p, now=NOW) == []


INVALID = [
    # shape
    pytest.param([], "point: must be a JSON object", id="not-an-object"),
    pytest.param(None, "point: must be a JSON object", id="null-point"),
    pytest.param(point(tags={"a": "b"}), "tags: unknown field", id="unknown-field"),
    pytest.param(point(namespace=...), "namespace: required field is missing", id="no-namespace"),
    pytest.param(point(metric=...), "metric: required field is missing", id="no-metric"),
    pytest.param(point(dimensions=...), "dimensions: required", id="no-dimensions"),
    pytest.param(point(timestamp=...), "timestamp: required", id="no-timestamp"),
    pytest.param(point(type=...), "type: required", id="no-type"),
    pytest.param(point(values=...), "values: required", id="no-values"),
    # names
    pytest.param(point(namespace=""), "namespace: must not be empty", id="namespace-empty"),
    pytest.param(point(namespace="a" * 256), "namespace: must be at most 255", id="ns-256"),
    pytest.param(point(namespace="a-b"), "namespace: only [0-9A-Za-z._]", id="ns-charset"),
    pytest.param(point(namespace=5), "namespace: must be a string", id="ns-not-string"),
    pytest.param(point(metric="café"), "metric: only [0-9A-Za-z._]", id="metric-non-ascii"),
    pytest.param(point(metric="a b"), "metric: only [0-9A-Za-z._]", id="metric-space"),
    pytest.param(point(unit=""), "unit: must not be empty", id="unit-empty"),
    pytest.param(point(unit="u" * 65), "unit: must be at most 64 bytes", id="unit-65"),
    pytest.param(point(unit="%"), "unit: only [0-9A-Za-z._]", id="unit-charset"),
    # dimensions
    pytest.param(point(dimensions={}), "dimensions: at least 1", id="dims-empty"),
    pytest.param(point(dimensions=["host"]), "dimensions: must be a JSON object", id="dims-list"),
    pytest.param(
        point(dimensions={f"k{i}": "v" for i in range(6)}),
        "dimensions: at most 5 entries, got 6",
        id="six-dimensions",
    ),
    pytest.param(
        point(dimensions={"k": "v" * 255}),
        "dimensions: keys and values must total at most 255 bytes, got 256",
        id="dimensions-256-bytes",
    ),
    pytest.param(
        point(dimensions={"a" * 100: "b" * 100, "c" * 28: "d" * 28}),
        "total at most 255 bytes, got 256",
        id="dimensions-sum-over",
    ),
    pytest.param(point(dimensions={"": "v"}), "must be a non-empty string", id="dim-key-empty"),
    pytest.param(
        point(dimensions={"host": ""}),
        "dimensions.host: value must be a non-empty",
        id="dim-value-empty",
    ),
    pytest.param(
        point(dimensions={"host": 1}),
        "dimensions.host: value must be a non-empty",
        id="dim-value-number",
    ),
    pytest.param(point(dimensions={"ho-st": "a"}), "key 'ho-st': only", id="dim-key-charset"),
    pytest.param(
        point(dimensions={"host": "1.2.3.4:80"}), "dimensions.host: only", id="dim-value-charset"
    ),
    pytest.param(point(dimensions={"dc": "bj "}), "dimensions.dc: only", id="dim-trailing-space"),
    # timestamp
    pytest.param(
        point(timestamp=15305424971), "timestamp: must be 10 digits", id="timestamp-11-digits"
    ),
    pytest.param(
        point(timestamp=999_999_999), "timestamp: must be 10 digits", id="timestamp-9-digits"
    ),
    pytest.param(
        point(timestamp=NOW * 1000), "timestamp: must be 10 digits", id="timestamp-milliseconds"
    ),
    pytest.param(
        point(timestamp=-1_000_000_000), "timestamp: must be 10 digits", id="timestamp-negative"
    ),
    pytest.param(
        point(timestamp=float(NOW)), "timestamp: must be an integer", id="timestamp-float"
    ),
    pytest.param(point(timestamp=str(NOW)), "timestamp: must be an integer", id="timestamp-string"),
    pytest.param(point(timestamp=True), "timestamp: must be an integer", id="timestamp-bool"),
    pytest.param(
        point(timestamp=NOW - 30 * DAY - 1),
        "timestamp: 1697407999 is more than 2592000 s older",
        id="timestamp-too-old",
    ),
    pytest.param(point(timestamp=NOW + 601), "s ahead of now", id="timestamp-future"),
    # type
    pytest.param(point(type=3), "type: must be the integer 1 (raw) or 2", id="type-3"),
    pytest.param(point(type=0), "type: must be the integer 1", id="type-0"),
    pytest.param(point(type="2"), "type: must be the integer 1", id="type-string"),
    pytest.param(point(type=True), "type: must be the integer 1", id="type-bool"),
    pytest.param(point(type=2.0), "type: must be the integer 1", id="type-float"),
    # values: keys
    pytest.param(point(values=[1]), "values: must be a JSON object", id="values-list"),
    pytest.param(point(values={}), "values: type 2 needs at least one", id="type2-empty"),
    pytest.param(point(values={"p99": 1}), "values: type 2 keys must be from", id="type2-p99"),
    pytest.param(
        point(values={"value": 1}), "values: type 2 keys must be from", id="type2-with-value"
    ),
    pytest.param(
        point(type=1, values={"avg": 1}),
        'values: type 1 needs exactly the key "value"',
        id="type1-avg",
    ),
    pytest.param(
        point(type=1, values={"value": 1, "max": 1}),
        "values: type 1 needs exactly",
        id="type1-extra-key",
    ),
    pytest.param(point(type=1, values={}), "values: type 1 needs exactly", id="type1-empty"),
    # values: numbers
    pytest.param(
        point(values={"max": 2.0**63}),
        "values.max: magnitude must be at most",
        id="float-2**63-refused",
    ),
    pytest.param(
        point(values={"min": -(2.0**63)}),
        "values.min: magnitude must be at most",
        id="float-minus-2**63-refused",
    ),
    pytest.param(
        point(values={"max": VALUE_MAX + 1}),
        "values.max: magnitude must be at most",
        id="int-over-max",
    ),
    pytest.param(point(values={"sum": float("nan")}), "values.sum: must be finite", id="nan"),
    pytest.param(point(values={"sum": float("inf")}), "values.sum: must be finite", id="inf"),
    pytest.param(
        point(values={"sum": float("-inf")}), "values.sum: must be finite", id="minus-inf"
    ),
    pytest.param(
        point(values={"avg": True}),
        "values.avg: must be a JSON number, got boolean",
        id="bool-refused",
    ),
    pytest.param(
        point(values={"avg": "80"}),
        "values.avg: must be a JSON number, got string",
        id="string-number-refused",
    ),
    pytest.param(
        point(values={"avg": None}), "values.avg: must be a JSON number, got null", id="null-value"
    ),
    pytest.param(
        point(values={"count": -1}),
        "values.count: must be >= 0, got -1",
        id="count-minus-1-refused",
    ),
    pytest.param(
        point(values={"count": -0.5}), "values.count: must be >= 0", id="count-negative-float"
    ),
]


@pytest.mark.parametrize(("p", "expected"), INVALID)
def test_invalid_points_name_field_and_rule(p: object, expected: str) -> None:
    errors = check_point(p, now=NOW)
    assert len(errors) == 1, errors
    assert expected in errors[0]


def test_every_failure_is_reported() -> None:
    bad = {
        "namespace": "",
        "metric": "a-b",
        "dimensions": {},
        "timestamp": 123,
        "type": 7,
        "values": {"avg": "1"},
        "extra": 1,
    }
    errors = check_point(bad, now=NOW)
    fields = [e.split(":", 1)[0] for e in errors]
    assert fields == [
        "extra",
        "namespace",
        "metric",
        "dimensions",
        "timestamp",
        "type",
        "values.avg",
    ]


@pytest.mark.parametrize(
    ("limits", "p", "ok"),
    [
        pytest.param(
            Limits(max_dimensions=6),
            point(dimensions={f"k{i}": "v" for i in range(6)}),
            True,
            id="six-dimensions-allowed",
        ),
        pytest.param(
            Limits(max_dimension_bytes=1024),
            point(dimensions={"k": "v" * 1000}),
            True,
            id="1024-bytes-allowed",
        ),
        pytest.param(
            Limits(max_dimension_bytes=1024),
            point(dimensions={"k": "v" * 1024}),
            False,
            id="1025-bytes-refused",
        ),
        pytest.param(
            Limits(max_age_seconds=7 * DAY),
            point(timestamp=NOW - 7 * DAY - 1),
            False,
            id="one-week-age",
        ),
        pytest.param(Limits(max_future_seconds=0), point(timestamp=NOW + 1), False, id="no-future"),
        pytest.param(Limits(max_future_seconds=0), point(timestamp=NOW), True, id="now-allowed"),
    ],
)
def test_limits_are_configurable(limits: Limits, p: dict[str, Any], ok: bool) -> None:
    assert (check_point(p, now=NOW, limits=limits) == []) is ok


def test_agg_keys_are_the_seed_keys() -> None:
    assert frozenset({"avg", "sum", "last", "max", "min", "count"}) == AGG_KEYS
    for key in AGG_KEYS:
        assert check_point(point(values={key: 1}), now=NOW) == []


def test_long_offending_values_are_cut() -> None:
    (error,) = check_point(point(metric="-" * 200), now=NOW)
    assert len(error) < 140
    assert error.endswith("...")


def test_length_is_counted_in_utf8_bytes() -> None:
    errors = check_point(point(metric="é" * 128), now=NOW)
    assert errors[0] == "metric: must be at most 255 bytes, got 256"
    assert errors[1].startswith("metric: only [0-9A-Za-z._] allowed")
    assert len(errors) == 2
