"""The real ``statsd-gateway`` process: real UDP in, stdout bodies out, SIGTERM to finish.

The expected values are computed by hand from CONTRACT 4, not by the gateway's code.
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
import time

import httpx
import pytest

from tests.processes import GatewayProcess, start_gateway

pytestmark = pytest.mark.slow

MIX = b"""api.requests:1|c|#route:/users,env:prod
api.requests:4|c|@0.25|#route:/users,env:prod
api.requests:2|c|#env:prod,route:/users
api.latency:100|ms|@0.5
api.latency:300|ms
api.size:10|h
api.size:30|d
queue.depth:10|g
queue.depth:+5|g
queue.depth:-3|g
users.online:alice|s
users.online:bob|s
users.online:alice|s
region.temp,city=beijing:21.5|g
packed:1:2:3|ms
chain:1|c:2|c|@0.5
garbage here
bad.value:abc|c
_e{5,4}:hello|word
"""

HOST = {"host": "node1"}
EXPECTED = {
    ("api.requests", (("env", "prod"), ("route", "_users"))): {
        "avg": 19 / 6,
        "sum": 19,
        "last": 2,
        "max": 4,
        "min": 1,
        "count": 6,
    },
    ("api.latency", ()): {
        "avg": 500 / 3,
        "sum": 500,
        "last": 300,
        "max": 300,
        "min": 100,
        "count": 3,
    },
    ("api.size", ()): {"avg": 20, "sum": 40, "last": 30, "max": 30, "min": 10, "count": 2},
    ("queue.depth", ()): {"avg": 37 / 3, "last": 12, "max": 15, "min": 10, "count": 3},
    ("users.online", ()): {k: 2 for k in ("avg", "sum", "last", "max", "min", "count")},
    ("region.temp", (("city", "beijing"),)): {
        "avg": 21.5,
        "last": 21.5,
        "max": 21.5,
        "min": 21.5,
        "count": 1,
    },
    ("packed", ()): {"avg": 2, "sum": 6, "last": 3, "max": 3, "min": 1, "count": 3},
    ("chain", ()): {"avg": 5 / 3, "sum": 5, "last": 2, "max": 2, "min": 1, "count": 3},
}


def _series(point: dict[str, object]) -> tuple[str, tuple[tuple[str, str], ...]]:
    dims = dict(point["dimensions"])  # type: ignore[call-overload]
    assert dims.pop("host") == "node1"
    return str(point["metric"]), tuple(sorted(dims.items()))


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def _start(*extra: str) -> GatewayProcess:
    return start_gateway("stdout", *extra)


def test_known_mix_is_reported_as_computed_by_hand() -> None:
    gw = _start("--window", "2")
    try:
        gw.send(MIX)  # one datagram: one batch, one window
        gw.wait_for(re.compile(r"window closed start=\d+ series=8 "), timeout=15)
        metrics = httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text
        assert httpx.get(f"http://127.0.0.1:{gw.http[1]}/readyz", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{gw.http[1]}/healthz", timeout=5).status_code == 200
    finally:
        code = gw.stop()
    assert code == 0
    assert _metric(metrics, "statsd_gateway_lines_received_total") == 19
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="missing_colon"}') == 1
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="bad_value"}') == 1
    assert _metric(metrics, 'statsd_gateway_lines_ignored_total{kind="event"}') == 1

    points = gw.points()
    counted = [p for p in points if p["values"]["count"] > 0]  # type: ignore[index]
    assert {_series(p) for p in counted} == set(EXPECTED)
    assert len(counted) == len(EXPECTED), "each series reported once with its samples"
    window = {p["timestamp"] for p in counted}
    assert len(window) == 1 and next(iter(window)) % 2 == 0
    for point in counted:
        assert point["namespace"] == "statsd" and point["type"] == 2
        assert next(iter(point["dimensions"])) == "host"  # type: ignore[arg-type]
        expected = EXPECTED[_series(point)]
        values = point["values"]
        assert set(values) == set(expected), point  # type: ignore[arg-type]
        for key, want in expected.items():
            assert math.isclose(values[key], want, rel_tol=1e-12), (point, key)  # type: ignore[index]
    # Gauges stay live: any later window carries them held, with count 0.
    for point in points:
        if point["values"]["count"] == 0:  # type: ignore[index]
            assert point["metric"] in ("queue.depth", "region.temp")
            assert point["timestamp"] > next(iter(window))
            last = 12 if point["metric"] == "queue.depth" else 21.5
            assert point["values"] == {
                "avg": last,
                "last": last,
                "max": last,
                "min": last,
                "count": 0,
            }


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_stop_reports_the_open_window_at_once(sig: int) -> None:
    gw = _start("--window", "3600")
    gw.send(b"shutdown.count:5|c\nshutdown.gauge:7|g")
    code = gw.stop(sig)
    assert code == 0, "\n".join(gw.stderr)
    points = {p["metric"]: p for p in gw.points()}
    assert points["shutdown.count"]["values"]["sum"] == 5  # type: ignore[index]
    assert points["shutdown.gauge"]["values"]["last"] == 7  # type: ignore[index]
    start = points["shutdown.count"]["timestamp"]
    assert isinstance(start, int) and start % 3600 == 0


def test_garbage_and_oversized_datagrams_change_no_valid_series() -> None:
    rng = random.Random(7)
    gw = _start("--window", "3600")
    valid = b"good.count:3|c|#k:v\ngood.timer:12|ms\n"
    noise = [
        os.urandom(65507),
        bytes(rng.randrange(256) for _ in range(2000)),
        b"\xff\xfe:1|c\n:1|c\nx:1|c|@0\ny:1|zz\n" * 50,
        b"a" * 300 + b":1|c",  # name over 255 bytes
    ]
    for datagram in noise:
        gw.send(valid, datagram)
    metrics = None
    deadline_lines = len(noise) * 2
    try:
        for _ in range(100):
            metrics = httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text
            if (
                _metric(metrics, 'statsd_gateway_datagrams_received_total{listener="udp"}')
                >= deadline_lines
            ):
                break
            time.sleep(0.05)
    finally:
        assert gw.stop() == 0
    points = {p["metric"]: p["values"] for p in gw.points()}
    assert points["good.count"] == {"avg": 3, "sum": 12, "last": 3, "max": 3, "min": 3, "count": 4}
    assert points["good.timer"]["count"] == 4 and points["good.timer"]["sum"] == 48  # type: ignore[index]
    assert metrics is not None
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="bad_utf8"}') >= 50
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="empty_name"}') >= 50
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="bad_rate"}') >= 50
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="unknown_type"}') >= 50
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="name_too_long"}') == 1


def test_a_large_window_is_printed_in_full_at_stop() -> None:
    # 5,000 series are 100 bodies: more than the API pacing's one-second burst. With
    # --endpoint stdout there is no quota, so nothing may be held back by it.
    gw = _start("--window", "3600", "--shutdown-timeout", "5")
    lines = [f"many.s{i}:1|c".encode() for i in range(5000)]
    gw.send(*(b"\n".join(lines[i : i + 80]) for i in range(0, len(lines), 80)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text  # type: ignore[index]
        if _metric(text, "statsd_gateway_lines_received_total") == 5000:
            break
        time.sleep(0.05)
    assert gw.stop() == 0
    assert len(gw.points()) == 5000
