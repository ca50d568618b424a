"""The command line: bad configuration exits 2 with one line per problem, never a traceback."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from gateway.malloc import glibc_version
from tests.processes import run_cli, start_gateway


def _problems(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("statsd-gateway: ")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--udp", "127.0.0.1:99999"], "--udp", id="bad-port"),
        pytest.param(["--namespace", "my-ns"], "--namespace", id="namespace-dash"),
        pytest.param(["--window", "0"], "--window", id="window-zero"),
        pytest.param(["--dimension", "env=pro d"], "--dimension", id="dimension-charset"),
        pytest.param(["--no-such-flag"], "--no-such-flag", id="unknown-flag"),
    ],
)
def test_bad_flag_exits_2_with_one_line(args: list[str], needle: str) -> None:
    done = run_cli("--endpoint", "stdout", *args)
    assert done.returncode == 2
    problems = _problems(done.stderr)
    assert len(problems) == 1 and needle in problems[0], done.stderr


def test_unknown_toml_key_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('namespace = "ok"\nflush_every = 3\n')
    done = run_cli("--config", str(config), "--endpoint", "stdout")
    assert done.returncode == 2
    problems = _problems(done.stderr)
    assert len(problems) == 1 and "flush_every" in problems[0]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    done = run_cli("--udp", "nope", "--namespace", "a-b", "--window", "0", "--endpoint", "stdout")
    assert done.returncode == 2
    assert len(_problems(done.stderr)) == 3, done.stderr


def test_udp_port_in_use_exits_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = run_cli(
            "--endpoint", "stdout", "--udp", f"127.0.0.1:{port}", "--http", "127.0.0.1:0"
        )
    assert done.returncode == 2
    problems = _problems(done.stderr)
    assert len(problems) == 1 and f"127.0.0.1:{port}" in problems[0] and "bind" in problems[0]


def test_http_port_in_use_exits_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(
            "--endpoint", "stdout", "--udp", "127.0.0.1:0", "--http", f"127.0.0.1:{port}"
        )
    assert done.returncode == 2
    problems = _problems(done.stderr)
    assert len(problems) == 1 and "--http" in problems[0]


def test_check_config_prints_effective_settings() -> None:
    done = run_cli(
        "--check-config", "--endpoint", "stdout", "--namespace", "shop", env={"NODE_NAME": "node-7"}
    )
    assert done.returncode == 0, done.stderr
    assert "namespace = shop" in done.stdout
    assert "node_7" in done.stdout  # the default host dimension, sanitised


def test_python_dash_m_and_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert "0." in done.stdout + done.stderr


def test_shipped_sample_config_passes_check_config() -> None:
    done = run_cli(
        "--config", "deploy/statsd-gateway.toml", "--check-config", "--endpoint", "stdout"
    )
    assert done.returncode == 0, done.stderr
    assert "dimension = host=" in done.stdout and ",env=prod" in done.stdout


def test_jd_endpoint_without_credentials_fails_check_config(tmp_path: Path) -> None:
    done = run_cli(
        "--check-config",
        env={"HOME": str(tmp_path), "JDCLOUD_ACCESS_KEY": "", "JDCLOUD_SECRET_KEY": ""},
    )
    assert done.returncode == 2
    problems = _problems(done.stderr)
    assert len(problems) == 1 and "JDCLOUD_ACCESS_KEY" in problems[0]


def test_check_config_masks_the_access_key(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "JDCLOUD_ACCESS_KEY": "AKIDSECRETISH1234",
        "JDCLOUD_SECRET_KEY": "topsecretvalue99",
    }
    done = run_cli("--check-config", env=env)
    assert done.returncode == 0, done.stderr
    assert "AKID****" in done.stdout
    assert "SECRETISH1234" not in done.stdout + done.stderr
    assert "topsecretvalue99" not in done.stdout + done.stderr


def test_check_config_refuses_a_spool_dir_it_cannot_create() -> None:
    done = run_cli("--check-config", "--endpoint", "stdout", "--spool-dir", "/proc/no-such/spool")
    assert done.returncode == 2
    assert _problems(done.stderr) == [
        "statsd-gateway: --spool-dir /proc/no-such/spool: cannot create it: "
        "No such file or directory"
    ]


def _without_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import uvloop`` fails, as on a machine without it."""
    (tmp_path / "uvloop.py").write_text('raise ImportError("hidden by the test")\n')
    return {"PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--event-loop", "uvloop"], id="run"),
        pytest.param(["--event-loop", "uvloop", "--check-config"], id="check-config"),
    ],
)
def test_event_loop_uvloop_without_uvloop_exits_2(tmp_path: Path, args: list[str]) -> None:
    done = run_cli(
        "--endpoint",
        "stdout",
        "--udp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        *args,
        env=_without_uvloop(tmp_path),
    )
    assert done.returncode == 2
    assert _problems(done.stderr) == [
        "statsd-gateway: --event-loop uvloop: uvloop is not installed (pip install uvloop)"
    ]


@pytest.mark.parametrize(
    ("choice", "hide_uvloop", "env", "logged"),
    [
        pytest.param("auto", False, {}, "event loop: uvloop", id="auto-uvloop"),
        pytest.param(
            "auto", True, {}, "event loop: asyncio (uvloop is not installed)", id="auto-fallback"
        ),
        pytest.param("uvloop", False, {}, "event loop: uvloop", id="uvloop"),
        pytest.param(
            "asyncio", False, {}, "event loop: asyncio (--event-loop asyncio)", id="asyncio"
        ),
        pytest.param(
            "asyncio",
            False,
            {"GATEWAY_MALLOC_TUNING": "0"},
            "allocator: defaults kept (switched off)",
            id="malloc-tuning-off",
        ),
    ],
)
def test_event_loop_and_allocator_are_logged(
    tmp_path: Path, choice: str, hide_uvloop: bool, env: dict[str, str], logged: str
) -> None:
    if hide_uvloop:
        env = {**env, **_without_uvloop(tmp_path)}
    gw = start_gateway("stdout", "--event-loop", choice, env=env)
    try:
        gw.wait_for(re.compile(re.escape(logged)))
        if "GATEWAY_MALLOC_TUNING" not in env and glibc_version() is not None:
            gw.wait_for(re.compile(r"allocator: glibc \S+ mmap_threshold=1048576 "))
    finally:
        assert gw.stop() == 0
