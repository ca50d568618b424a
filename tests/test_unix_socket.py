"""StatsD over a Unix datagram socket (``--unix PATH``): the same lines as UDP, real sockets."""

from __future__ import annotations

import os
import re
import socket
import stat
from pathlib import Path

import httpx
import pytest

from tests.processes import GatewayProcess, run_cli
from tests.test_end_to_end import _metric

pytestmark = pytest.mark.slow
_UNIX = re.compile(r"unix listening address=(\S+)")


def _start(path: Path, *extra: str) -> GatewayProcess:
    gw = GatewayProcess(
        "--endpoint", "stdout", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--unix", str(path), "--dimension", "host=node1", "--window", "3600", *extra,
    ).wait_listening()  # fmt: skip
    assert gw.wait_for(_UNIX).group(1) == str(path)
    return gw


def _send_unix(path: Path, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for datagram in datagrams:
            s.sendto(datagram, str(path))


def test_unix_and_udp_feed_the_same_series(tmp_path: Path) -> None:
    path = tmp_path / "statsd.sock"
    gw = _start(path)
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o622
        _send_unix(path, b"uds.count:2|c|#via:uds", b"shared:1|c\nbad line")
        gw.send(b"shared:3|c")
        metrics = ""
        for _ in range(100):
            metrics = httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text  # type: ignore[index]
            if _metric(metrics, "statsd_gateway_lines_received_total") >= 4:
                break
    finally:
        assert gw.stop() == 0
    assert _metric(metrics, 'statsd_gateway_datagrams_received_total{listener="unix"}') == 2
    assert _metric(metrics, 'statsd_gateway_datagrams_received_total{listener="udp"}') == 1
    assert _metric(metrics, 'statsd_gateway_lines_rejected_total{reason="missing_colon"}') == 1
    points = {p["metric"]: p for p in gw.points()}
    assert points["uds.count"]["dimensions"] == {"host": "node1", "via": "uds"}
    assert points["shared"]["values"]["sum"] == 4  # type: ignore[index]
    assert not path.exists(), "the socket file is removed on stop"


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    left.bind(str(path))
    left.close()  # the file stays, nobody receives on it: what a killed process leaves
    gw = _start(path, "--unix-mode", "0600")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        _send_unix(path, b"after.restart:1|c")
    finally:
        assert gw.stop() == 0
    assert [p["metric"] for p in gw.points()] == ["after.restart"]
    assert any("removed stale socket" in line for line in gw.stderr)


def test_socket_in_use_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "busy.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as busy:
        busy.bind(str(path))
        done = run_cli(
            "--endpoint", "stdout", "--udp", "127.0.0.1:0", "--http", "off", "--unix", str(path)
        )
    assert (
        done.returncode == 2 and "another process" in done.stderr and "Traceback" not in done.stderr
    )


def test_regular_file_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    done = run_cli("--endpoint", "stdout", "--udp", "off", "--http", "off", "--unix", str(path))
    assert done.returncode == 2 and "not a socket" in done.stderr
    assert path.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--unix", "/no/such/folder/s.sock"], "must exist", id="missing-folder"),
        pytest.param(["--unix", "/tmp/" + "x" * 120], "107 bytes", id="too-long"),
        pytest.param(["--unix-mode", "rw-rw-rw-"], "octal", id="bad-mode"),
    ],
)
def test_bad_unix_options_exit_2(args: list[str], needle: str) -> None:
    done = run_cli("--endpoint", "stdout", *args)
    assert done.returncode == 2 and needle in done.stderr
