"""``--workers N``: real processes sharing one UDP port, their windows merged exactly.

Many senders (each its own socket, so its own source port) send known values; the kernel
spreads them over the workers by address; the stdout bodies must carry the totals one
process would have computed, once per series.  A worker killed with SIGKILL, or silent
for 30 s, is started again on the same port, and what is sent afterwards is reported.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from tests.processes import GatewayProcess, run_cli, start_gateway

pytestmark = pytest.mark.slow

SENDERS = 60


def _metric(gw: GatewayProcess, name: str) -> float:
    assert gw.http is not None
    text = httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_metric(gw: GatewayProcess, name: str, want: float, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := _metric(gw, name)) != want:
        assert time.monotonic() < deadline, f"{name} = {got}, waiting for {want}"
        time.sleep(0.1)


def _start_workers() -> GatewayProcess:
    gw = start_gateway("stdout", "--workers", "2", "--window", "3600")
    gw.wait_for(re.compile(r"workers started count=2"), timeout=60)
    return gw


def _workers_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if "worker" in _cmdline(c) or "spawn" in _cmdline(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _send_from_many(gw: GatewayProcess, prefix: str) -> None:
    """Each sender its own socket (own source port): counter 1, timer i, gauge i, set i%7."""
    assert gw.udp is not None
    for i in range(SENDERS):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            lines = f"{prefix}.c:1|c\n{prefix}.t:{i}|ms\n{prefix}.s:m{i % 7}|s\n{prefix}.c:2|c|@0.5"
            s.sendto(lines.encode(), gw.udp)


def _points(gw: GatewayProcess, prefix: str) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for point in gw.points():
        metric = str(point["metric"])
        if metric.startswith(prefix + "."):
            assert metric not in found, f"{metric} reported twice"
            found[metric] = point["values"]  # type: ignore[assignment]
    return found


def _expected(n: int) -> dict[str, dict[str, float]]:
    timer_sum = n * (n - 1) / 2
    return {
        "c": {"avg": 5 * n / (3 * n), "sum": 5 * n, "last": 2, "max": 2, "min": 1, "count": 3 * n},
        "t": {
            "avg": timer_sum / n,
            "sum": timer_sum,
            "last": n - 1,
            "max": n - 1,
            "min": 0,
            "count": n,
        },
        "s": {k: 7 for k in ("avg", "sum", "last", "max", "min", "count")},
    }


def _check(points: dict[str, dict[str, float]], prefix: str) -> None:
    expected = _expected(SENDERS)
    assert set(points) == {f"{prefix}.{k}" for k in expected}
    for short, values in expected.items():
        got = points[f"{prefix}.{short}"]
        assert set(got) == set(values), got
        for stat, want in values.items():
            if stat == "last" and short != "s":
                continue  # senders race across workers; "last" is checked in test_merge.py
            assert math.isclose(got[stat], want, rel_tol=1e-12), (short, stat, got)


def test_two_workers_share_the_port_and_report_exact_totals() -> None:
    gw = _start_workers()
    try:
        assert len(_workers_of(gw.proc.pid)) == 2
        _send_from_many(gw, "wk")
        _wait_metric(gw, "statsd_gateway_lines_received_total", SENDERS * 4)
        assert _metric(gw, 'statsd_gateway_datagrams_received_total{listener="udp"}') == SENDERS
    finally:
        code = gw.stop()
    assert code == 0
    _check(_points(gw, "wk"), "wk")


@pytest.mark.parametrize(
    ("sig", "seen"),
    [
        pytest.param(signal.SIGKILL, r"worker \d exited", id="killed"),
        # Alive but silent, it holds back every window: after STALL_AFTER (30 s) the
        # parent kills it.
        pytest.param(signal.SIGSTOP, r"worker \d silent for \d+ s: killing it", id="stalled"),
    ],
)
def test_a_lost_worker_is_started_again_on_the_same_port(sig: int, seen: str) -> None:
    gw = _start_workers()
    try:
        victim = _workers_of(gw.proc.pid)[0]
        os.kill(victim, sig)
        gw.wait_for(re.compile(seen), timeout=60)
        _wait_metric(gw, "statsd_gateway_worker_restarts_total", 1)
        _wait_metric(gw, "statsd_gateway_workers_ready", 2, timeout=60)
        assert victim not in _workers_of(gw.proc.pid)
        _send_from_many(gw, "after")
        _wait_metric(gw, "statsd_gateway_lines_received_total", SENDERS * 4)
    finally:
        code = gw.stop()
    assert code == 0
    _check(_points(gw, "after"), "after")


def test_a_second_gateway_with_workers_cannot_share_the_port() -> None:
    """SO_REUSEPORT would let it bind and take half the traffic: the probe refuses it."""
    gw = _start_workers()
    try:
        assert gw.udp is not None
        done = run_cli(
            *("--endpoint", "stdout", "--udp", f"127.0.0.1:{gw.udp[1]}"),
            *("--http", "off", "--workers", "2"),
        )
    finally:
        assert gw.stop() == 0
    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if line.startswith("statsd-gateway:")]
    assert len(problems) == 1 and "cannot bind" in problems[0], done.stderr


def test_a_restarted_workers_counters_are_added_from_zero() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    metrics.add_totals(0, {("lines_received", ()): 30.0, ("lines_rejected", ("bad_value",)): 3})
    metrics.forget(0)  # worker 0 died; its replacement counts from zero
    metrics.add_totals(0, {("lines_received", ()): 40.0, ("lines_rejected", ("bad_value",)): 5})
    metrics.add_totals(0, {("lines_received", ()): 41.0, ("lines_rejected", ("bad_value",)): 5})
    totals = metrics.counter_totals()
    assert totals[("lines_received", ())] == 71
    assert totals[("lines_rejected", ("bad_value",))] == 8


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = run_cli(
            "--endpoint", "stdout", "--udp", f"127.0.0.1:{port}", "--http", "off", "--workers", "2"
        )
    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if line.startswith("statsd-gateway:")]
    assert len(problems) == 1 and "cannot bind" in problems[0], done.stderr
    assert "Traceback" not in done.stderr
