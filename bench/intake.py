"""Intake benchmark: how many StatsD lines/s the gateway takes in, and its memory per series.

A program that prints figures, not a test.  Two modes:

    .venv/bin/python bench/intake.py --rates 100000,200000,400000,800000 --seconds 10 --repeat 3
    .venv/bin/python bench/intake.py --series-rss 10000,100000 --repeat 3

Ladder (default): one gateway (``--window 60``, ``--endpoint stdout`` to /dev/null) is fed by
``bench/loadgen.py`` at each offered rate for ``--seconds``, the whole ladder ``--repeat``
times (rates interleaved).  Around each step it reads /metrics, /proc/PID/stat and
/proc/PID/status; after the generator stops it waits until the line counter is still and the
socket's receive queue is empty (at most ``--settle`` s): what is not counted by then is lost.
The table gives the median over repeats and the highest offered rate whose median loss is
under 0.1 %.

Series RSS (``--series-rss N,...``): for each N a fresh gateway gets every one of N series
exactly once inside one window; peak RSS (VmHWM) is read after intake, and the lifetime peak
(``ru_maxrss``, which includes closing the window and encoding the N points at shutdown)
after SIGTERM.  A fresh gateway that received nothing is the baseline.

Kills only the gateway PIDs it started (SIGTERM, SIGKILL after a deadline).  Standard library
and ``bench`` only; never imports ``gateway``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.gwproc import GatewayProcess, Metrics, system_busy_seconds

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
LINES = "statsd_gateway_lines_received_total"
DATAGRAMS = 'statsd_gateway_datagrams_received_total{listener="udp"}'
DROPS = "statsd_gateway_udp_kernel_drops_total"
REJECTED = "statsd_gateway_lines_rejected_total{"
SAMPLES = "statsd_gateway_samples_total{"
SERIES = "statsd_gateway_series_created_total"
RCVBUF = "statsd_gateway_udp_receive_buffer_bytes"
LOSS_LIMIT = 0.1  # percent
Row = dict[str, Any]


def total(m: Metrics, prefix: str) -> float:
    return sum(v for k, v in m.items() if k.startswith(prefix))


class Receiver(Protocol):
    """What the generator needs of the process under test (a gateway, or etsy statsd)."""

    @property
    def udp_port(self) -> int: ...

    def cpu_seconds(self) -> float: ...


def loadgen(gw: Receiver, extra: list[str], timeout: float) -> tuple[Row, Row]:
    """Run the generator against ``gw``; returns its ledger and, from "go" to the generator's
    exit, the wall time and the CPU seconds of the receiver and of the whole machine."""
    cmd = [sys.executable, str(LOADGEN), "--target", f"127.0.0.1:{gw.udp_port}", "--wait-go"]
    proc = subprocess.Popen(
        [*cmd, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stderr.readline()  # the pool is built when READY arrives
        if first.strip() != b"READY":
            raise RuntimeError(f"loadgen did not start: {first!r} {proc.stderr.read()!r}")
        cpu0, busy0, t0 = gw.cpu_seconds(), system_busy_seconds(), time.monotonic()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()  # communicate() closes it
        out, err = proc.communicate(timeout=timeout)
        cpu1, busy1, t1 = gw.cpu_seconds(), system_busy_seconds(), time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {err.decode()}")
    return json.loads(out), {
        "wall": t1 - t0,
        "gw_cpu": cpu1 - cpu0,
        "all_cpu": busy1 - busy0,
        "gw_cpu_start": cpu0,
    }


def settle(gw: GatewayProcess, limit: float) -> tuple[Metrics, int | None]:
    """Wait until the line counter has not moved for 1.5 s and the receive queue is empty,
    at most ``limit`` s; returns the last metrics and the bytes still queued.

    1.5 s: with ``--workers`` the parent's counters move once a second (each worker's
    progress report), so a shorter quiet spell could end a step before its last lines
    were counted."""
    settle_on(lambda: gw.metrics()[LINES], gw.udp_queued_bytes, limit)
    return gw.metrics(), gw.udp_queued_bytes()


def settle_on(
    count: Callable[[], float],
    queued: Callable[[], int | None],
    limit: float,
    quiet: float = 1.5,
) -> None:
    """Poll every 0.1 s until ``count()`` has not moved for ``quiet`` s and ``queued()`` is
    empty, at most ``limit`` s (any receiver: the gateway's /metrics, etsy's counters)."""
    deadline = time.monotonic() + limit
    last = count()
    still = 0
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = count()
        still = still + 1 if now == last and not queued() else 0
        last = now
        if still * 0.1 >= quiet:
            break


def step(gw: GatewayProcess, rate: float, args: argparse.Namespace) -> Row:
    extra = ["--shape", args.shape, "--series", str(args.series), "--rate", str(rate)]
    extra += ["--seconds", str(args.seconds), "--processes", str(args.processes)]
    extra += ["--sockets", str(args.sockets)]
    before = gw.metrics()
    ledger, usage = loadgen(gw, extra, timeout=args.seconds + 60)
    after, queued = settle(gw, args.settle)
    mem = gw.memory()
    cpu_with_settle = gw.cpu_seconds() - usage["gw_cpu_start"]
    sent = ledger["lines"]
    counted = after[LINES] - before[LINES]
    return {
        "offered": rate,
        "sent_lines": sent,
        "sent_per_s": ledger["sent_lines_per_s"],
        "counted": int(counted),
        "loss_pct": 100.0 * (sent - counted) / sent if sent else 0.0,
        "dgrams_sent": ledger["datagrams"],
        "dgrams_counted": int(after.get(DATAGRAMS, 0) - before.get(DATAGRAMS, 0)),
        "kernel_drops": int(after.get(DROPS, 0) - before.get(DROPS, 0)),
        "rejected": int(total(after, REJECTED) - total(before, REJECTED)),
        "samples": int(total(after, SAMPLES) - total(before, SAMPLES)),
        "queued_bytes": queued,
        "counted_per_s": counted / usage["wall"],
        "per_cpu_s": counted / cpu_with_settle if cpu_with_settle else 0.0,
        "gw_cpu_pct": 100.0 * usage["gw_cpu"] / usage["wall"],
        "gen_cpu_pct": 100.0 * ledger["sender_cpu_s"] / usage["wall"],
        "other_cpu_pct": 100.0
        * (usage["all_cpu"] - usage["gw_cpu"] - ledger["sender_cpu_s"])
        / usage["wall"],
        "rss_mib": mem.rss_kib / 1024,
        "hwm_mib": mem.hwm_kib / 1024,
    }


def ladder(args: argparse.Namespace) -> list[Row]:
    gw = GatewayProcess.start(["--window", str(args.window), *args.gateway_arg])
    rows: list[Row] = []
    try:
        m = gw.metrics()
        print(
            f"gateway pid={gw.pid} udp=127.0.0.1:{gw.udp_port} window={args.window}s "
            f"rcvbuf={int(m.get(RCVBUF, 0))} shape={args.shape} series={args.series} "
            f"senders={args.processes} cpus={os.cpu_count()}",
            flush=True,
        )
        for r in range(args.repeat):
            for rate in args.rates:
                row = step(gw, rate, args)
                row["repeat"] = r + 1
                rows.append(row)
                print(_run_line(row), flush=True)
    finally:
        end = gw.stop()
        print(f"gateway exit={end.returncode} lifetime peak rss={end.max_rss_kib / 1024:.1f} MiB")
    return rows


def _run_line(row: Row) -> str:
    return (
        f"  run {row['repeat']} offered={_rate(row['offered'])} sent/s={row['sent_per_s']} "
        f"sent={row['sent_lines']} counted={row['counted']} loss={row['loss_pct']:.3f}% "
        f"drops={row['kernel_drops']} queued={row['queued_bytes']} "
        f"gw_cpu={row['gw_cpu_pct']:.0f}% gen_cpu={row['gen_cpu_pct']:.0f}% "
        f"other_cpu={row['other_cpu_pct']:.0f}%"
    )


def _rate(rate: float) -> str:
    return "max" if not rate else f"{rate:,.0f}"


def median_table(rows: list[Row]) -> tuple[str, float | None]:
    cols: list[tuple[str, str, Callable[[float], str]]] = [
        ("offered/s", "offered", _rate),
        ("sent/s", "sent_per_s", lambda v: f"{v:,.0f}"),
        ("sent lines", "sent_lines", lambda v: f"{v:,.0f}"),
        ("counted", "counted", lambda v: f"{v:,.0f}"),
        ("counted/s", "counted_per_s", lambda v: f"{v:,.0f}"),
        ("loss %", "loss_pct", lambda v: f"{v:.3f}"),
        ("kdrops", "kernel_drops", lambda v: f"{v:,.0f}"),
        ("gw CPU %", "gw_cpu_pct", lambda v: f"{v:.0f}"),
        ("lines/gw CPU-s", "per_cpu_s", lambda v: f"{v:,.0f}"),
        ("gen CPU %", "gen_cpu_pct", lambda v: f"{v:.0f}"),
        ("other CPU %", "other_cpu_pct", lambda v: f"{v:.0f}"),
        ("RSS MiB", "rss_mib", lambda v: f"{v:.1f}"),
        ("HWM MiB", "hwm_mib", lambda v: f"{v:.1f}"),
    ]
    rates = list(dict.fromkeys(r["offered"] for r in rows))
    table = [[title for title, _, _ in cols]]
    best: float | None = None
    for rate in rates:
        runs = [r for r in rows if r["offered"] == rate]
        med = {key: statistics.median(r[key] for r in runs) for _, key, _ in cols}
        table.append([fmt(med[key]) for _, key, fmt in cols])
        if med["loss_pct"] < LOSS_LIMIT and (best is None or _order(rate) > _order(best)):
            best = rate
    return _render(table), best


def _order(rate: float) -> float:
    return rate if rate else float("inf")


def _render(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def series_rss(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        for r in range(args.repeat):
            for n in [0, *args.series_rss]:
                row = one_series_run(n, args, Path(tmp) / f"out-{n}-{r}.jsonl")
                row["repeat"] = r + 1
                rows.append(row)
                print(
                    f"  run {r + 1} series={n:,} created={row['created']:,} "
                    f"points={row['points']:,} lost_lines={row['lost']} "
                    f"intake_hwm={row['intake_hwm_mib']:.1f} MiB "
                    f"lifetime_peak={row['peak_mib']:.1f} MiB "
                    f"counter_sum ok={row['counter_sum_ok']}",
                    flush=True,
                )
                if n and (row["points"] != n or row["lost"] or not row["counter_sum_ok"]):
                    print(
                        f"  CHECK FAILED for {n:,} series: every series must come out as "
                        "exactly one point with the exact counter sum and no lost line",
                        flush=True,
                    )
    return rows


def one_series_run(n: int, args: argparse.Namespace, out: Path) -> Row:
    gw = GatewayProcess.start(["--window", str(args.window), *args.gateway_arg], stdout=out)
    try:
        before = gw.metrics()
        ledger: Row = {"lines": 0, "counter_sum": 0}
        if n:
            _avoid_window_edge(args.window, n / args.series_rate + 3)
            extra = ["--shape", args.shape, "--series", str(n), "--once", "--pool-lines", "1"]
            extra += ["--rate", str(args.series_rate), "--seconds", "120"]
            ledger, _ = loadgen(gw, extra, timeout=180)
        after, _ = settle(gw, args.settle)
        mem = gw.memory()
    finally:
        end = gw.stop()
    points, counter_sum = _read_points(out)
    return {
        "series": n,
        "created": int(after[SERIES] - before[SERIES]),
        "lost": int(ledger["lines"] - (after[LINES] - before[LINES])),
        "points": points,
        "counter_sum_ok": counter_sum == ledger["counter_sum"],
        "intake_rss_mib": mem.rss_kib / 1024,
        "intake_hwm_mib": mem.hwm_kib / 1024,
        "peak_mib": end.max_rss_kib / 1024,
    }


def _avoid_window_edge(window: int, needed: float) -> None:
    """Sleep past the next window boundary if feeding might straddle it."""
    left = window - time.time() % window
    if left < needed and left < window:
        time.sleep(left + 0.2)


def _read_points(path: Path) -> tuple[int, float]:
    points, counter_sum = 0, 0.0
    with path.open("rb") as f:
        for raw in f:
            for point in json.loads(raw)["metricDataList"]:
                points += 1
                if point["metric"].startswith("app.req."):
                    counter_sum += point["values"]["sum"]
    return points, counter_sum


def series_table(rows: list[Row]) -> str:
    head = ["series", "created", "points", "intake HWM MiB", "peak MiB"]
    table = [[*head, "+intake B/series", "+peak B/series"]]
    base = [r for r in rows if r["series"] == 0]
    base_hwm = statistics.median(r["intake_hwm_mib"] for r in base)
    base_peak = statistics.median(r["peak_mib"] for r in base)
    for n in dict.fromkeys(r["series"] for r in rows):
        runs = [r for r in rows if r["series"] == n]
        hwm = statistics.median(r["intake_hwm_mib"] for r in runs)
        peak = statistics.median(r["peak_mib"] for r in runs)
        per = [(hwm - base_hwm) * 2**20 / n, (peak - base_peak) * 2**20 / n] if n else [0, 0]
        created = statistics.median(r["created"] for r in runs)
        points = statistics.median(r["points"] for r in runs)
        table.append(
            [f"{n:,}", f"{created:,.0f}", f"{points:,.0f}", f"{hwm:.1f}", f"{peak:.1f}"]
            + ([f"{per[0]:,.0f}", f"{per[1]:,.0f}"] if n else ["(baseline)", "(baseline)"])
        )
    return _render(table)


def _ints(text: str) -> list[int]:
    return [0 if part.strip() == "max" else int(float(part)) for part in text.split(",")]


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=_ints, default=_ints("100000,200000,400000,800000"))
    ap.add_argument("--seconds", type=float, default=10.0, help="per step (max 600)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shape", choices=["packed", "single"], default="packed")
    ap.add_argument("--series", type=int, default=1000, help="distinct series in the ladder")
    ap.add_argument("--processes", type=int, default=1, help="load generator senders")
    ap.add_argument(
        "--sockets", type=int, default=1, help="source ports per sender (spread over --workers)"
    )
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--settle", type=float, default=3.0, help="max wait after each step, s")
    ap.add_argument("--series-rss", type=_ints, help="e.g. 10000,100000: memory mode")
    ap.add_argument("--series-rate", type=float, default=100000, help="lines/s, memory mode")
    ap.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        help="extra gateway option (keep --log-level at info: the addresses are read from the log)",
    )
    ap.add_argument("--json", type=Path, help="also write every run as JSON here")
    args = ap.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 1 <= args.repeat <= 20:
        ap.error("--seconds in (0, 600], --repeat in 1..20")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    started = time.monotonic()
    if args.series_rss:
        rows = series_rss(args)
        print(f"\nmedian of {args.repeat}; baseline = fresh gateway, no series")
        print(series_table(rows))
    else:
        rows = ladder(args)
        text, best = median_table(rows)
        print(f"\nmedian of {args.repeat} x {args.seconds:g} s per rate, shape={args.shape}")
        print(text)
        best_text = "none" if best is None else _rate(best)
        print(f"highest offered rate with median loss < {LOSS_LIMIT} %: {best_text} lines/s")
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
