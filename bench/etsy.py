"""etsy statsd (the Node reference daemon) as a receiver under benchmark (a bench helper).

``install`` puts the npm package ``statsd`` into a temporary directory with
``npm install --no-save`` (never into the repository).  ``EtsyStatsd.start`` writes three
small files next to it and runs ``node stats.js config.js``:

- ``config.js``: UDP on 127.0.0.1:PORT, the management interface on 127.0.0.1:MGMT,
  ``flushInterval`` = the gateway's window, and only the counting backend below (no Graphite,
  no console output per flush);
- ``rcvbuf-udp.js``: the package's own ``servers/udp.js`` (create a dgram socket, bind it) plus
  one option, ``recvBufferSize``.  The stock server never sets a receive buffer, so the socket
  gets ``net.core.rmem_default``; Node sets ``SO_RCVBUF``, which the kernel caps at
  ``net.core.rmem_max`` (Node has no ``SO_RCVBUFFORCE``).  ``rb`` in ``ss -m`` tells what it got;
- ``count-backend.js``: a backend that listens to the daemon's own ``packet`` event (emitted
  for every datagram before it is parsed) and counts datagrams and non-empty lines, exactly
  as the daemon's ``metrics_received`` does; it also sums ``statsd.metrics_received`` at each
  flush as a cross-check.  It reports both through the management interface: the ``stats``
  command prints ``benchcount.lines: N`` and so on.

``stop`` sends SIGTERM to the one PID it started, SIGKILL after a deadline.  Standard library
and ``bench.gwproc`` only; never imports ``gateway``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gwproc import Receiver, udp_socket

logger = logging.getLogger(__name__)

_SERVER_JS = """\
// servers/udp.js of the statsd package, plus recvBufferSize (bench/etsy.py).
const dgram = require('dgram');
exports.start = function (config, callback) {
  const server = dgram.createSocket(
    {type: 'udp4', recvBufferSize: config.recvBufferSize}, callback);
  server.bind(config.port, config.address);
  this.server = server;
  return true;
};
"""

_BACKEND_JS = """\
// Counts what the daemon received (bench/etsy.py); reported by the mgmt "stats" command.
let datagrams = 0, lines = 0, flushes = 0, flushedMetrics = 0;
exports.init = function (startup, config, events) {
  events.on('packet', function (msg) {
    datagrams += 1;
    let start = 0;
    for (;;) {
      const nl = msg.indexOf(10, start);
      const end = nl === -1 ? msg.length : nl;
      if (end > start) lines += 1;
      if (nl === -1) break;
      start = nl + 1;
    }
  });
  events.on('flush', function (ts, metrics) {
    flushes += 1;
    flushedMetrics += metrics.counters['statsd.metrics_received'] || 0;
  });
  events.on('status', function (write) {
    write(null, 'benchcount', 'datagrams', datagrams);
    write(null, 'benchcount', 'lines', lines);
    write(null, 'benchcount', 'flushes', flushes);
    write(null, 'benchcount', 'flushed_metrics_received', flushedMetrics);
  });
  return true;
};
"""


@dataclass(frozen=True, slots=True)
class Counts:
    datagrams: int
    lines: int
    flushes: int
    flushed_lines: int
    bad_lines: int


def node_version() -> str | None:
    """``node --version``, or None when Node is not available."""
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def install(directory: Path, spec: str = "statsd", timeout: float = 180.0) -> tuple[Path, str]:
    """``npm install --no-save SPEC`` into ``directory``; returns the package dir and version."""
    directory.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--no-save", "--no-audit", "--no-fund", "--ignore-scripts", spec]
    done = subprocess.run(
        cmd, cwd=directory, capture_output=True, text=True, timeout=timeout, check=False
    )
    package = directory / "node_modules" / "statsd"
    if done.returncode != 0 or not (package / "stats.js").exists():
        raise RuntimeError(f"npm install {spec} failed: {done.stderr[-2000:]}")
    version = json.loads((package / "package.json").read_text())["version"]
    return package, str(version)


def free_port(kind: int) -> int:
    """A port on 127.0.0.1 that was free a moment ago (SOCK_DGRAM or SOCK_STREAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtsyStatsd(Receiver):
    def __init__(self, proc: subprocess.Popen[bytes], udp_port: int, mgmt_port: int) -> None:
        super().__init__(proc, udp_port)
        self.mgmt_port = mgmt_port

    @classmethod
    def start(
        cls, package: Path, workdir: Path, *, flush_s: float, rcvbuf: int, timeout: float = 20.0
    ) -> EtsyStatsd:
        udp_port = free_port(socket.SOCK_DGRAM)
        mgmt_port = free_port(socket.SOCK_STREAM)
        server, backend, config = (
            workdir / n for n in ("rcvbuf-udp.js", "count-backend.js", "config.js")
        )
        server.write_text(_SERVER_JS)
        backend.write_text(_BACKEND_JS)
        settings = {
            "mgmt_address": "127.0.0.1",
            "mgmt_port": mgmt_port,
            "flushInterval": int(flush_s * 1000),
            "backends": [str(backend)],
            "servers": [
                {
                    "server": str(server),
                    "address": "127.0.0.1",
                    "port": udp_port,
                    "recvBufferSize": rcvbuf,
                }
            ],
            "automaticConfigReload": False,
        }
        config.write_text(json.dumps(settings, indent=1) + "\n")
        log = open(workdir / f"etsy-{udp_port}.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                ["node", "stats.js", str(config)],
                cwd=package,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        etsy = cls(proc, udp_port, mgmt_port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if udp_socket(udp_port) is not None:
                    etsy.counts()
                    return etsy
            except OSError:
                pass
            time.sleep(0.1)
        etsy.stop()
        tail = (workdir / f"etsy-{udp_port}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"etsy statsd did not start in {timeout}s:\n{tail}")

    def _command(self, cmd: str) -> str:
        with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=10) as s:
            s.sendall(cmd.encode() + b"\n")
            chunks: list[bytes] = []
            while not b"".join(chunks).endswith(b"END\n\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def counts(self) -> Counts:
        """What the daemon received so far, from the management interface's ``stats``."""
        values: dict[str, int] = {}
        for line in self._command("stats").splitlines():
            key, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                values[key] = int(value)
        return Counts(
            values["benchcount.datagrams"],
            values["benchcount.lines"],
            values["benchcount.flushes"],
            values["benchcount.flushed_metrics_received"],
            values.get("messages.bad_lines_seen", 0),
        )

    def stop(self, deadline: float = 10.0) -> int:
        """SIGTERM this PID, SIGKILL after ``deadline`` seconds; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(deadline)
            except subprocess.TimeoutExpired:
                logger.warning("etsy statsd %d: no exit after SIGTERM, SIGKILL", self.pid)
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        return int(self.proc.returncode)
