"""``make demo``: the bundled emulator and a gateway, a few StatsD lines, the points that arrive.

Starts ``python -m gateway.emulator`` with a throw-away key pair, a gateway that signs with
that pair and reports every 5 seconds, sends sample lines over UDP, waits for the emulator
to accept points, prints them, and stops both processes (by their PIDs).
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.processes import EmulatorProcess, start_gateway

LINES = b"""demo.requests:1|c|#route:home
demo.requests:3|c|@0.5|#route:home
demo.latency:120|ms|#route:home
demo.latency:80|ms|#route:home
demo.queue:7|g
demo.users:alice|s
demo.users:bob|s
"""


def main() -> int:
    access, secret = "AKDEMO" + secrets.token_hex(6).upper(), secrets.token_hex(16)
    emulator = EmulatorProcess("--access-key", access, "--secret-key", secret)
    print(f"emulator: {emulator.url}/v1/customMetrics (verifying signatures)")
    gateway = start_gateway(
        f"{emulator.url}/v1/customMetrics",
        "--window",
        "5",
        "--gauge-ttl",
        "5",
        env={"JDCLOUD_ACCESS_KEY": access, "JDCLOUD_SECRET_KEY": secret},
    )
    try:
        print(f"gateway: StatsD on udp {gateway.udp[0]}:{gateway.udp[1]}, window 5 s")  # type: ignore[index]
        gateway.send(LINES)
        print("sent:\n  " + LINES.decode().strip().replace("\n", "\n  "))
        print("waiting for the window to close and the points to arrive ...")
        deadline = time.monotonic() + 30
        points: list[dict[str, object]] = []
        while time.monotonic() < deadline and not points:
            time.sleep(0.5)
            points = httpx.get(f"{emulator.url}/points", timeout=5).json()
        stats = httpx.get(f"{emulator.url}/stats", timeout=5).json()
    finally:
        gateway.stop()
        emulator.stop()
    if not points:
        print("no points arrived within 30 s; gateway log:\n" + "\n".join(gateway.stderr))
        return 1
    print(f"the emulator accepted {len(points)} points:")
    for point in points:
        dims = ",".join(f"{k}={v}" for k, v in point["dimensions"].items())  # type: ignore[attr-defined]
        print(f"  {point['metric']:<14} {dims:<28} {json.dumps(point['values'])}")
    print(
        f"requests by status: {stats['requests_by_status']}, "
        f"signature failures: {stats['signature_failures']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
