"""How many points a second one gateway process delivers to the local emulator.

    .venv/bin/python bench/delivery.py [--series 50000] [--repeat 3] [--window 10]

Starts the emulator (``python -m gateway.emulator``) with a throw-away key pair, so every
request is signed by the gateway and verified by the emulator, and one gateway reporting to
it.  For each run it waits for the start of a window, sends one counter line for each of
``--series`` distinct series (packed datagrams), checks that every line was counted, and
then polls ``/metrics`` while the window closes: the delivery rate is the number of points
divided by the time from the window being turned into points (``points_built`` reaching N)
to the last point delivered (``points_sent`` reaching N).  Bodies hold 50 points.  Pacing
and the send delay are turned off: this measures what the client can do, not the paced
default of 1,000 requests a minute.  Both
processes share this machine's cores.  Prints each run and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from gwproc import PYTHON, ROOT, GatewayProcess

_URL = re.compile(rb"emulator listening on (http://\S+)")


def start_emulator(access: str, secret: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [str(PYTHON), "-m", "gateway.emulator", "--listen", "127.0.0.1:0",
         "--access-key", access, "--secret-key", secret],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = _URL.search(line)
    if not m:
        proc.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return proc, m.group(1).decode()


def datagrams(run: int, series: int, size: int = 1400) -> list[bytes]:
    out, chunk, used = [], [], 0
    for i in range(series):
        line = f"deliver.r{run}.m{i}:1|c".encode()
        if used + len(line) + 1 > size:
            out.append(b"\n".join(chunk))
            chunk, used = [], 0
        chunk.append(line)
        used += len(line) + 1
    out.append(b"\n".join(chunk))
    return out


def one_run(gw: GatewayProcess, run: int, series: int, window: int) -> float:
    before = gw.metrics()
    built0 = before.get("statsd_gateway_points_built_total", 0.0)
    sent0 = before.get("statsd_gateway_points_sent_total", 0.0)
    lines0 = before.get("statsd_gateway_lines_received_total", 0.0)
    time.sleep(window - time.time() % window + 0.2)  # just after a window starts
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, datagram in enumerate(datagrams(run, series)):
            s.sendto(datagram, ("127.0.0.1", gw.udp_port))
            if i % 200 == 199:
                time.sleep(0.002)  # stay far below the intake limit: no line may be lost
    deadline = time.monotonic() + 3 * window + 60
    built_at = None
    while time.monotonic() < deadline:
        m = gw.metrics()
        now = time.monotonic()
        built = m.get("statsd_gateway_points_built_total", 0.0) - built0
        sent = m.get("statsd_gateway_points_sent_total", 0.0) - sent0
        if built_at is None and built >= series:
            built_at = now
        if built_at is not None and sent >= series:
            lines = m["statsd_gateway_lines_received_total"] - lines0
            if lines != series:
                raise RuntimeError(f"sent {series} lines, gateway counted {lines}")
            return series / max(now - built_at, 1e-3)
        time.sleep(0.05)
    raise RuntimeError("the points were not delivered in time")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", type=int, default=10)
    args = ap.parse_args()
    access, secret = "AKBENCH" + secrets.token_hex(5).upper(), secrets.token_hex(16)
    emulator, url = start_emulator(access, secret)
    os.environ.update(JDCLOUD_ACCESS_KEY=access, JDCLOUD_SECRET_KEY=secret)
    try:
        # Capacity, not the paced default: no send delay, and a request budget far above
        # the account quota (by default the gateway sends at most 1,000 requests a minute).
        gw = GatewayProcess.start(
            ["--endpoint", f"{url}/v1/customMetrics", "--window", str(args.window),
             "--gauge-ttl", "1", "--send-jitter", "0", "--max-requests-per-minute", "1000000"]
        )  # fmt: skip
    except BaseException:  # the emulator must not outlive a failed start
        emulator.terminate()
        emulator.wait(10)
        raise
    try:
        rates = []
        for run in range(args.repeat):
            rate = one_run(gw, run, args.series, args.window)
            rates.append(rate)
            print(f"run {run + 1}: {args.series} points in {args.series / rate:.2f} s "
                  f"= {rate:,.0f} points/s")  # fmt: skip
        with urllib.request.urlopen(f"{url}/stats", timeout=5) as answer:
            stats = json.load(answer)
    finally:
        gw.stop()
        emulator.terminate()
        emulator.wait(10)
    median = statistics.median(rates)
    print(f"median: {median:,.0f} points/s ({median / 50:,.0f} requests/s of 50 points), "
          "signed and verified")  # fmt: skip
    print(f"emulator: requests {stats['requests_by_status']}, "
          f"accepted {stats['points_accepted']}, signature failures "
          f"{stats['signature_failures']}, overwrites {stats['overwrites']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    sys.exit(main())
