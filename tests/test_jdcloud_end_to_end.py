"""The gateway process reporting to the emulator process over real, signed HTTP."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import httpx
import pytest

from tests.processes import EmulatorProcess, GatewayProcess, start_gateway
from tests.test_end_to_end import EXPECTED, MIX, _metric, _series

pytestmark = pytest.mark.slow

ACCESS, SECRET = "AKE2EGATEWAY0001", "e2e-secret-value-not-real"


def _run(
    *,
    faults: dict[str, Any] | None = None,
    datagrams: tuple[bytes, ...] = (MIX,),
    gateway_args: tuple[str, ...] = (),
    path: str = "/v1/customMetrics",
) -> tuple[list[dict[str, Any]], dict[str, Any], str, str]:
    """Send, wait until the first window was delivered, scrape /metrics, stop both.

    Returns the points of the window holding the samples (held gauges of later windows are
    left out), the emulator's stats, every log line of both processes, and /metrics.
    """
    emulator = EmulatorProcess("--access-key", ACCESS, "--secret-key", SECRET)
    try:
        if faults:
            httpx.post(f"{emulator.url}/control/faults", json=faults, timeout=5).raise_for_status()
        gw = start_gateway(
            emulator.url + path,
            *("--window", "2", "--gauge-ttl", "1", *gateway_args),
            env={"JDCLOUD_ACCESS_KEY": ACCESS, "JDCLOUD_SECRET_KEY": SECRET},
        )
        try:
            gw.send(*datagrams)
            metrics = ""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                metrics = httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text  # type: ignore[index]
                if _metric(metrics, "statsd_gateway_points_built_total") > 0 and (
                    _metric(metrics, "statsd_gateway_pending_points") == 0
                ):
                    break
                time.sleep(0.1)
        finally:
            assert gw.stop() == 0
        points = httpx.get(f"{emulator.url}/points", timeout=5).json()
        stats = httpx.get(f"{emulator.url}/stats", timeout=5).json()
    finally:
        emulator.stop()
    first = min((p["timestamp"] for p in points), default=0)
    logs = "\n".join(gw.stderr + gw.stdout + emulator.stderr + emulator.stdout)
    return [p for p in points if p["timestamp"] == first], stats, logs, metrics


def test_points_arrive_signed_and_as_computed() -> None:
    points, stats, logs, metrics = _run()
    assert stats["signature_failures"] == 0 and stats["overwrites"] == 0
    assert set(stats["requests_by_status"]) == {"200"}
    assert _metric(metrics, "statsd_gateway_points_sent_total") == stats["points_accepted"]
    assert {_series(p) for p in points} == set(EXPECTED)
    for point in points:
        for key, want in EXPECTED[_series(point)].items():
            assert math.isclose(point["values"][key], want, rel_tol=1e-12)
    assert SECRET not in logs


def test_v2_path_and_signature_version_3() -> None:
    points, stats, _, _ = _run(path="/v2/customMetrics", gateway_args=("--signature-version", "3"))
    assert stats["signature_failures"] == 0 and len(points) == len(EXPECTED)


def test_point_type_1_sends_one_raw_point_per_statistic() -> None:
    points, _, _, _ = _run(datagrams=(b"raw.m:4|c\nraw.m:6|c",), gateway_args=("--point-type", "1"))
    got = {p["metric"]: p["values"] for p in points}
    assert got == {
        "raw.m.avg": {"value": 5},
        "raw.m.sum": {"value": 10},
        "raw.m.last": {"value": 6},
        "raw.m.max": {"value": 6},
        "raw.m.min": {"value": 4},
        "raw.m.count": {"value": 2},
    }
    assert all(p["type"] == 1 for p in points)


def test_partial_400_drops_only_the_refused_points() -> None:
    points, stats, logs, metrics = _run(faults={"reject_metric": r"^api\.latency$"})
    assert {p["metric"] for p in points} == {m for m, _ in EXPECTED} - {"api.latency"}
    assert stats["points_rejected"] == 1
    assert _metric(metrics, 'statsd_gateway_points_rejected_total{reason="api"}') == 1
    assert _metric(metrics, "statsd_gateway_points_sent_total") == stats["points_accepted"]
    refused = [line for line in logs.splitlines() if "point refused by the API" in line]
    assert len(refused) == 1 and "requestId=" in refused[0] and "errDetail=" in refused[0]
    assert re.search(r"requestId=[0-9a-zA-Z-]{6,}", refused[0])


def test_500_then_200_delivers_once() -> None:
    points, stats, _, metrics = _run(faults={"status": 500, "status_count": 1})
    assert stats["requests_by_status"]["500"] == 1
    assert stats["overwrites"] == 0 and len(points) == len(EXPECTED)
    assert _metric(metrics, 'statsd_gateway_requests_total{status="500"}') == 1
    assert _metric(metrics, "statsd_gateway_points_sent_total") == stats["points_accepted"]


def test_missing_credentials_exit_2_naming_the_variables() -> None:
    gw = GatewayProcess("--endpoint", "http://127.0.0.1:9/v1/customMetrics", "--udp", "127.0.0.1:0")
    assert gw.proc.wait(30) == 2
    gw.stop()
    assert any("JDCLOUD_ACCESS_KEY" in line and "--endpoint stdout" in line for line in gw.stderr)
