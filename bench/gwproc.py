"""A gateway process under benchmark: start, scrape /metrics, read /proc, stop (a bench helper).

``GatewayProcess.start`` runs ``python -m gateway --udp 127.0.0.1:0 --http 127.0.0.1:0
--endpoint stdout ...`` with its stdout sent to a file (or /dev/null) and reads the bound
addresses back from its ``udp listening address=`` and ``http listening address=`` log lines.
A thread keeps draining its stderr so that logging never blocks it.  ``stop`` sends SIGTERM
to that one PID, SIGKILL after a deadline, and reaps it with ``wait4`` so that the peak RSS
of its whole life (shutdown included) is known.  The /proc readers (CPU, memory, a UDP
socket's queue and drop counter) take any PID or port, so other receivers can use them.

Standard library only; never imports ``gateway`` (the gateway runs in its own process).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
_ADDRESS = re.compile(rb"(udp|http) listening address=(\S+):(\d+)")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
CLK_TCK = os.sysconf("SC_CLK_TCK")

Metrics = dict[str, float]
"""Prometheus samples keyed by ``name`` or ``name{labels}`` exactly as exposed."""


@dataclass(frozen=True, slots=True)
class Memory:
    rss_kib: int
    hwm_kib: int


@dataclass(frozen=True, slots=True)
class Exit:
    returncode: int
    max_rss_kib: int
    """Peak resident set over the process's whole life (``ru_maxrss`` from ``wait4``)."""
    killed: bool


def parse_metrics(text: str) -> Metrics:
    out: Metrics = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def system_busy_seconds() -> float:
    """CPU seconds all processes have used so far, summed over cores (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


@dataclass(frozen=True, slots=True)
class UdpSocket:
    """One bound UDP socket on 127.0.0.1 as /proc/net/udp shows it."""

    queued_bytes: int
    """rx_queue: bytes received by the kernel and not yet read."""
    drops: int
    """Datagrams the kernel dropped for this socket (receive buffer full), since it was bound."""


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``--workers`` processes), from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` and its descendants so far, from /proc/PID/stat."""
    total = 0
    for member in process_tree(pid):
        try:
            text = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def process_memory(pid: int) -> Memory:
    """VmRSS and VmHWM of process ``pid`` and its descendants, summed."""
    rss = hwm = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, rest = line.partition(":")
            if key == "VmRSS":
                rss += int(rest.split()[0])
            elif key == "VmHWM":
                hwm += int(rest.split()[0])
    return Memory(rss, hwm)


def udp_socket(port: int) -> UdpSocket | None:
    """The UDP socket(s) bound to 127.0.0.1:``port``, summed, or None.

    With ``--workers`` several sockets share the port (SO_REUSEPORT).
    """
    suffix = f":{port:04X}"
    found = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(suffix) and fields[1].startswith("0100007F"):
            found.append(UdpSocket(int(fields[4].split(":")[1], 16), int(fields[12])))
    if not found:
        return None
    return UdpSocket(sum(f.queued_bytes for f in found), sum(f.drops for f in found))


def kernel_rcvbuf(port: int) -> int | None:
    """The receive buffer the kernel gives the UDP socket on 127.0.0.1:``port`` (``rb`` of
    ``ss -m``: twice what SO_RCVBUF was granted, since the kernel counts its overhead)."""
    try:
        out = subprocess.run(
            ["ss", "-uamnH", "sport", "=", f":{port}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\brb(\d+)", out)
    return int(m.group(1)) if m else None


class Receiver:
    """A StatsD receiver under benchmark: its process, its UDP port, what /proc says of it."""

    def __init__(self, proc: subprocess.Popen[bytes], udp_port: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.udp_port = udp_port

    def cpu_seconds(self) -> float:
        """utime + stime so far, from /proc/PID/stat."""
        return process_cpu_seconds(self.pid)

    def memory(self) -> Memory:
        return process_memory(self.pid)

    def udp_queued_bytes(self) -> int | None:
        """Bytes waiting in its UDP receive queue (/proc/net/udp rx_queue)."""
        sock = udp_socket(self.udp_port)
        return None if sock is None else sock.queued_bytes


class GatewayProcess(Receiver):
    def __init__(self, proc: subprocess.Popen[bytes], udp_port: int, http_port: int) -> None:
        super().__init__(proc, udp_port)
        self.http_port = http_port
        self.log: deque[bytes] = deque(maxlen=200)
        self._reaped: Exit | None = None

    @classmethod
    def start(
        cls, extra: list[str], *, stdout: Path | None = None, timeout: float = 15.0
    ) -> GatewayProcess:
        cmd = [
            str(PYTHON),
            "-m",
            "gateway",
            "--udp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--endpoint",
            "stdout",
            *extra,
        ]
        out = open(stdout or os.devnull, "wb")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE
            )
        finally:
            out.close()
        assert proc.stderr is not None
        found: dict[str, int] = {}
        ready = threading.Event()
        log: deque[bytes] = deque(maxlen=200)

        def drain() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                log.append(raw)
                m = _ADDRESS.search(raw)
                if m:
                    found[m.group(1).decode()] = int(m.group(3))
                    if len(found) == 2:
                        ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True, name=f"gateway-{proc.pid}-stderr").start()
        ready.wait(timeout)
        if len(found) != 2:
            gw = cls(proc, 0, 0)
            gw.log = log
            gw.stop()
            tail = b"".join(log).decode(errors="replace")
            raise RuntimeError(f"gateway did not report its addresses in {timeout}s:\n{tail}")
        gw = cls(proc, found["udp"], found["http"])
        gw.log = log
        return gw

    def metrics(self) -> Metrics:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return parse_metrics(response.read().decode())

    def stop(self, deadline: float = 30.0) -> Exit:
        """SIGTERM this gateway's PID, SIGKILL after ``deadline`` seconds; reap it."""
        if self._reaped is not None:
            return self._reaped
        # Reaped here with wait4, never by Popen (it would lose the resource usage).
        killed = False
        signalled = False
        limit = time.monotonic() + deadline
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if not signalled:
                os.kill(self.pid, signal.SIGTERM)
                signalled = True
            if time.monotonic() > limit and not killed:
                print(f"gateway {self.pid}: no exit after SIGTERM, SIGKILL", file=sys.stderr)
                os.kill(self.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.02)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._reaped = Exit(self.proc.returncode, usage.ru_maxrss, killed)
        return self._reaped
