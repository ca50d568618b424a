"""Delivery under faults, with real processes: the gateway, the emulator, a spool on disk.

Every scenario keeps a ledger: each point the test sent is delivered exactly once or counted
under a drop reason, and no series-minute reaches the emulator twice with other values.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import EmulatorProcess, GatewayProcess, start_gateway
from tests.test_end_to_end import _metric

pytestmark = pytest.mark.slow

ACCESS, SECRET = "AKFAULTS00000001", "faults-secret-not-real"
KEYS = {"JDCLOUD_ACCESS_KEY": ACCESS, "JDCLOUD_SECRET_KEY": SECRET}


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metrics(gw: GatewayProcess) -> str:
    return httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text  # type: ignore[index]


def pending(gw: GatewayProcess) -> float:
    return _metric(metrics(gw), "statsd_gateway_pending_points")


def faults(emulator: EmulatorProcess, spec: dict[str, Any] | None) -> None:
    if spec is None:
        httpx.delete(f"{emulator.url}/control/faults", timeout=5).raise_for_status()
    else:
        httpx.post(f"{emulator.url}/control/faults", json=spec, timeout=5).raise_for_status()


def accepted(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return list(httpx.get(f"{emulator.url}/points", timeout=5).json())


def stats(emulator: EmulatorProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{emulator.url}/stats", timeout=5).json())


def counter_sums(points: list[dict[str, Any]]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for point in points:
        if "sum" in point["values"]:
            sums[point["metric"]] = sums.get(point["metric"], 0) + point["values"]["sum"]
    return sums


def gateway(emulator: EmulatorProcess, *extra: str, secret: str = SECRET) -> GatewayProcess:
    return start_gateway(
        f"{emulator.url}/v1/customMetrics",
        *("--gauge-ttl", "1", *extra),
        env={"JDCLOUD_ACCESS_KEY": ACCESS, "JDCLOUD_SECRET_KEY": secret},
    )


@pytest.fixture
def emulator() -> Any:
    process = EmulatorProcess("--access-key", ACCESS, "--secret-key", SECRET)
    yield process
    process.stop()


def test_api_down_longer_than_a_window_then_back(emulator: EmulatorProcess, tmp_path: Path) -> None:
    faults(emulator, {"status": 503, "status_count": 0})  # every request until cleared
    gw = gateway(emulator, "--window", "1", "--spool-dir", str(tmp_path))
    try:
        for n in range(3):  # three windows' worth while the API is down
            gw.send(f"outage.count:{n + 1}|c\noutage.timer:{10 * (n + 1)}|ms".encode())
            time.sleep(1.0)
        wait_until(lambda: pending(gw) >= 6, 10, "the windows to be queued")
        assert list(tmp_path.glob("*.body")), "pending bodies are spooled while the API is down"
        text = metrics(gw)
        assert _metric(text, 'statsd_gateway_requests_total{status="503"}') >= 1
        assert httpx.get(f"http://127.0.0.1:{gw.http[1]}/readyz", timeout=5).status_code in (
            200,
            503,
        )
        faults(emulator, None)
        wait_until(lambda: pending(gw) == 0, 40, "the backlog to drain after the outage")
        assert httpx.get(f"http://127.0.0.1:{gw.http[1]}/readyz", timeout=5).status_code == 200
    finally:
        assert gw.stop() == 0
    points = accepted(emulator)
    assert counter_sums(points) == {"outage.count": 6, "outage.timer": 60}
    assert stats(emulator)["overwrites"] == 0
    assert not list(tmp_path.glob("*.body")), "delivered bodies leave the spool"


def test_429_storm_with_retry_after_slows_down_and_delivers(emulator: EmulatorProcess) -> None:
    faults(emulator, {"status": 429, "status_count": 3, "retry_after": 1})
    gw = gateway(emulator, "--window", "1")
    try:
        gw.send(b"storm.count:5|c")
        wait_until(lambda: stats(emulator)["points_accepted"] >= 1, 30, "delivery after the storm")
        text = metrics(gw)
    finally:
        assert gw.stop() == 0
    assert _metric(text, 'statsd_gateway_requests_total{status="429"}') == 3
    assert _metric(text, "statsd_gateway_request_rate_factor") < 1.0
    assert counter_sums(accepted(emulator)) == {"storm.count": 5}


@pytest.mark.parametrize(
    ("spec", "extra"),
    [
        pytest.param({"drop": 2}, (), id="connections-dropped"),
        pytest.param({"status": 500, "status_count": 2}, (), id="500s"),
        pytest.param(
            {"latency": 2.5, "latency_count": 1}, ("--request-timeout", "1"), id="slow-past-timeout"
        ),
    ],
)
def test_transient_failures_deliver_each_series_minute_once(
    emulator: EmulatorProcess, spec: dict[str, Any], extra: tuple[str, ...]
) -> None:
    faults(emulator, spec)
    gw = gateway(emulator, "--window", "1", *extra)
    try:
        gw.send(b"flaky.count:2|c\nflaky.count:3|c\nflaky.gauge:7|g")
        wait_until(
            lambda: pending(gw) == 0 and stats(emulator)["points_accepted"] >= 2, 30, "delivery"
        )
    finally:
        assert gw.stop() == 0
    points = accepted(emulator)
    assert counter_sums(points) == {"flaky.count": 5}
    # A request that timed out may still have been stored: its retry rewrites the same
    # series-minute with the same values (last write wins), never a second, different one.
    by_key: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for point in points:
        by_key.setdefault((point["metric"], point["timestamp"]), []).append(point["values"])
    assert all(len({repr(v) for v in values}) == 1 for values in by_key.values())


def test_wrong_credentials_then_fixed_by_a_restart(
    emulator: EmulatorProcess, tmp_path: Path
) -> None:
    gw = gateway(emulator, "--window", "1", "--spool-dir", str(tmp_path), secret="wrong-secret")
    try:
        gw.send(b"auth.count:4|c")
        wait_until(
            lambda: 'statsd_gateway_requests_total{status="401"} 1.0' in metrics(gw),
            15,
            "the 401",
        )
        assert any("requestId=" in line and "401" in line for line in gw.stderr)
    finally:
        assert gw.stop() == 0
    assert stats(emulator)["points_accepted"] == 0
    fixed = gateway(emulator, "--window", "1", "--spool-dir", str(tmp_path))
    try:
        wait_until(lambda: stats(emulator)["points_accepted"] >= 1, 20, "the held points")
    finally:
        assert fixed.stop() == 0
    assert counter_sums(accepted(emulator)) == {"auth.count": 4}


def test_sigterm_mid_window_and_restart_reports_the_minute_once(
    emulator: EmulatorProcess, tmp_path: Path
) -> None:
    window = 20
    # Start right after a window edge so that both halves land in the same window.
    time.sleep((window - time.time() % window) % window + 0.3)
    first = gateway(emulator, "--window", str(window), "--spool-dir", str(tmp_path))
    first.send(b"restart.count:3|c\nrestart.timer:10|ms\nrestart.users:a|s\nrestart.gauge:5|g")
    wait_until(
        lambda: _metric(metrics(first), "statsd_gateway_lines_received_total") == 4, 5, "intake"
    )
    assert first.stop() == 0
    assert stats(emulator)["points_accepted"] == 0, "the open window is saved, not reported"
    second = gateway(emulator, "--window", str(window), "--spool-dir", str(tmp_path))
    try:
        second.send(
            b"restart.count:4|c\nrestart.timer:30|ms\nrestart.users:b|s\nrestart.gauge:+1|g"
        )
        wait_until(lambda: stats(emulator)["points_accepted"] >= 4, window + 15, "the window")
    finally:
        assert second.stop() == 0
    points = {p["metric"]: p for p in accepted(emulator) if p["values"]["count"] > 0}
    assert points["restart.count"]["values"]["sum"] == 7
    assert points["restart.count"]["values"]["count"] == 2
    assert points["restart.timer"]["values"] == {
        "avg": 20,
        "sum": 40,
        "last": 30,
        "max": 30,
        "min": 10,
        "count": 2,
    }
    assert points["restart.users"]["values"]["count"] == 2
    assert points["restart.gauge"]["values"]["last"] == 6  # the delta applied to the saved value
    assert len({p["timestamp"] for p in points.values()}) == 1
    assert stats(emulator)["overwrites"] == 0


def test_sigkill_keeps_what_was_spooled(emulator: EmulatorProcess, tmp_path: Path) -> None:
    faults(emulator, {"status": 503, "status_count": 0})
    gw = gateway(emulator, "--window", "1", "--spool-dir", str(tmp_path))
    gw.send(b"killed.count:9|c")
    wait_until(lambda: bool(list(tmp_path.glob("*.body"))), 15, "a spooled body")
    gw.stop(signal.SIGKILL)
    faults(emulator, None)
    after = gateway(emulator, "--window", "1", "--spool-dir", str(tmp_path))
    try:
        wait_until(lambda: stats(emulator)["points_accepted"] >= 1, 20, "the spooled points")
        assert any(re.search(r"spool: resuming bodies=1", line) for line in after.stderr)
    finally:
        assert after.stop() == 0
    assert counter_sums(accepted(emulator)) == {"killed.count": 9}


def test_shutdown_deadline_cuts_a_slow_request_short(emulator: EmulatorProcess) -> None:
    faults(emulator, {"latency": 30, "latency_count": 0})
    gw = gateway(emulator, "--window", "1", "--request-timeout", "60", "--shutdown-timeout", "2")
    gw.send(b"slow.count:1|c")
    wait_until(lambda: pending(gw) >= 1, 10, "the body to be queued")
    time.sleep(0.5)  # the request is now waiting on the emulator
    started = time.monotonic()
    assert gw.stop() == 0
    assert time.monotonic() - started < 10, "stop took far longer than --shutdown-timeout"
    assert any("shutdown timeout: points not delivered count=1" in line for line in gw.stderr)


def test_a_second_signal_ends_a_long_stop_at_once(emulator: EmulatorProcess) -> None:
    faults(emulator, {"status": 503, "status_count": 0})
    gw = gateway(emulator, "--window", "1", "--shutdown-timeout", "120")
    gw.send(b"stuck.count:1|c")
    wait_until(lambda: 'statsd_gateway_requests_total{status="503"}' in metrics(gw), 10, "a 503")
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.send_signal(signal.SIGINT)  # at once: the same Ctrl-C seen twice (make forwards it)
    gw.wait_for(re.compile("stopping: draining intake"), 10)
    time.sleep(1.2)
    assert gw.proc.poll() is None, "a duplicate signal right after the first must not end the stop"
    started = time.monotonic()
    assert gw.stop(signal.SIGINT) == 1
    assert time.monotonic() - started < 10
    assert any("second signal" in line for line in gw.stderr)
