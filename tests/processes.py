"""Start real gateway (and emulator) processes for tests, and read what they say.

Addresses are read back from the process's own log lines (it binds port 0), never guessed.
Every wait has a deadline; every process is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_UDP = re.compile(r"udp listening address=(\S+):(\d+)")
_HTTP = re.compile(r"http listening address=(\S+):(\d+)")


class Process:
    """A child process whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in ("JDCLOUD_ACCESS_KEY", "JDCLOUD_SECRET_KEY", "JDCLOUD_SECURITY_TOKEN"):
            if env is None or name not in env:
                full_env.pop(name, None)
        self.proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=ROOT,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._events: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, sink: list[str]) -> None:
        with stream:  # type: ignore[attr-defined]
            for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
                line = raw.decode("utf-8", "replace").rstrip("\n")
                sink.append(line)
                self._events.put(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        for line in list(self.stderr) + list(self.stdout):
            if m := pattern.search(line):
                return m
        while time.monotonic() < deadline:
            try:
                line = self._events.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self._events.empty():
                    break
                continue
            if m := pattern.search(line):
                return m
        raise AssertionError(
            f"no line matching {pattern.pattern!r} within {timeout}s; stderr:\n"
            + "\n".join(self.stderr[-30:])
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("process did not stop within the deadline") from None
        self._join()
        return code

    def _join(self) -> None:
        for reader in self._readers:  # they end at EOF, once the process has exited
            reader.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._join()


class GatewayProcess(Process):
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__([sys.executable, "-m", "gateway", *args], env)
        self.udp: tuple[str, int] | None = None
        self.http: tuple[str, int] | None = None

    def wait_listening(self, timeout: float = 15.0) -> GatewayProcess:
        m = self.wait_for(_UDP, timeout)
        self.udp = (m.group(1), int(m.group(2)))
        m = self.wait_for(_HTTP, timeout)
        self.http = (m.group(1), int(m.group(2)))
        return self

    def send(self, *datagrams: bytes) -> None:
        assert self.udp is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for datagram in datagrams:
                s.sendto(datagram, self.udp)

    def bodies(self) -> list[dict[str, object]]:
        """Every request body the gateway printed with ``--endpoint stdout``."""
        return [json.loads(line) for line in self.stdout if line.startswith("{")]

    def points(self) -> list[dict[str, object]]:
        return [p for body in self.bodies() for p in body["metricDataList"]]  # type: ignore[attr-defined]


def start_gateway(endpoint: str, *extra: str, env: dict[str, str] | None = None) -> GatewayProcess:
    """A gateway on loopback ports chosen by the kernel, with the static dimension host=node1."""
    return GatewayProcess(
        *("--endpoint", endpoint, "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"),
        *("--dimension", "host=node1", "--send-jitter", "0", *extra),
        env=env,
    ).wait_listening()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


_EMULATOR = re.compile(r"emulator listening on (http://\S+)")


class EmulatorProcess(Process):
    def __init__(self, *args: str) -> None:
        super().__init__(
            [sys.executable, "-m", "gateway.emulator", "--listen", "127.0.0.1:0", *args]
        )
        self.url = self.wait_for(_EMULATOR).group(1)
