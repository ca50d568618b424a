"""Loss-vs-offered-rate ladder: the gateway and etsy statsd, both datagram shapes, N series.

One command, loopback only, bounded in time (a program, not a test):

    .venv/bin/python bench/ladder.py --shapes packed,single --series 10000,100000,1000000 \\
        --seconds 10 --repeat 3 --window 10 --out docs/benchmarks.md

For each shape and series count, each receiver in turn (the gateway, then etsy statsd
when Node is available and ``--no-etsy`` is not given) is started fresh, warmed up (every
series sent once at ``--warm-rate``, not counted), and driven by ``bench/loadgen.py`` at
each offered rate for ``--seconds``; the whole ladder is repeated ``--repeat`` times
(rates interleaved).  Loss is counted three ways: the sender's ledger against what the
receiver counted (the gateway's ``lines_received_total``, etsy statsd's own ``packet``
events), the kernel's drop counter for the receiving socket (/proc/net/udp), and the
gateway's own drop and rejection counters.  A backlog still queued after the settle
counts as lost.  The receiver's CPU share and RSS are
recorded at every step.  ``bench/report.py`` writes the tables and the plot.

Kills only the PIDs it started.  Standard library and ``bench`` only (matplotlib, optional, in
``bench/report.py``); never imports ``gateway``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import etsy, report
from bench.gwproc import GatewayProcess, Memory, kernel_rcvbuf, udp_socket
from bench.intake import DATAGRAMS, DROPS, LINES, REJECTED, loadgen, settle_on, total

logger = logging.getLogger(__name__)
SERIES_DROPPED = 'statsd_gateway_samples_dropped_total{reason="series_limit"}'
DEFAULT_RATES = {
    "packed": [300_000, 600_000, 900_000, 1_200_000, 1_500_000],
    "single": [50_000, 100_000, 150_000, 200_000, 250_000],
}
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reading:
    """A receiver's own counters at one moment."""

    lines: int
    datagrams: int
    own_drops: int | None
    """The gateway's ``udp_kernel_drops_total`` (None for etsy statsd)."""
    rejected: int
    """Lines the receiver refused: the gateway's rejected lines, etsy statsd's bad lines."""
    series_dropped: int


class Subject:
    """A running receiver under test: its counters, /proc readings and how it stops."""

    def __init__(
        self,
        name: str,
        proc: GatewayProcess | etsy.EtsyStatsd,
        read: Callable[[], Reading],
        phase0: float,
    ) -> None:
        self.name = name
        self.proc = proc
        self.read = read
        self.phase0 = phase0
        """Wall-clock origin of its flush cycle: window edges for the gateway, start for etsy."""

    @property
    def udp_port(self) -> int:
        return self.proc.udp_port

    def cpu_seconds(self) -> float:
        return self.proc.cpu_seconds()

    def memory(self) -> Memory:
        return self.proc.memory()

    def queued(self) -> int | None:
        return self.proc.udp_queued_bytes()

    def stop(self) -> str:
        if isinstance(self.proc, GatewayProcess):
            end = self.proc.stop()
            return f"exit={end.returncode} lifetime peak RSS={end.max_rss_kib / 1024:.1f} MiB"
        return f"exit={self.proc.stop()}"


def start_gateway(args: argparse.Namespace) -> Subject:
    extra = ["--window", str(args.window), "--max-series", str(args.max_series)]
    extra += ["--udp-rcvbuf", str(args.rcvbuf), *args.gateway_arg]
    gw = GatewayProcess.start(extra)

    def read() -> Reading:
        m = gw.metrics()
        return Reading(
            int(m[LINES]),
            int(m.get(DATAGRAMS, 0)),
            int(m.get(DROPS, 0)),
            int(total(m, REJECTED)),
            int(m.get(SERIES_DROPPED, 0)),
        )

    return Subject("gateway", gw, read, 0.0)


def start_etsy(args: argparse.Namespace, package: Path, workdir: Path) -> Subject:
    proc = etsy.EtsyStatsd.start(package, workdir, flush_s=args.window, rcvbuf=args.rcvbuf)
    phase0 = time.time()

    def read() -> Reading:
        c = proc.counts()
        return Reading(c.lines, c.datagrams, None, c.bad_lines, 0)

    return Subject("etsy", proc, read, phase0)


class DropWatch:
    """Samples the socket's kernel drop counter every 0.2 s; bins new drops by the phase of
    the receiver's flush cycle (seconds since the last window edge / flush) so that loss at
    window close shows up as a peak."""

    def __init__(self, subject: Subject, window: int) -> None:
        self.subject, self.window = subject, window
        self.bins = [0] * window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="dropwatch")

    def __enter__(self) -> DropWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last = None
        while not self._stop.wait(0.2):
            sock = udp_socket(self.subject.udp_port)
            if sock is None:
                continue
            if last is not None and sock.drops > last:
                phase = (time.time() - self.subject.phase0) % self.window
                self.bins[int(phase)] += sock.drops - last
            last = sock.drops


def kernel_drops(subject: Subject) -> int:
    sock = udp_socket(subject.udp_port)
    return 0 if sock is None else sock.drops


def run_load(subject: Subject, extra: list[str], args: argparse.Namespace) -> Row:
    """One load (a step or the warm-up) with readings before and after the settle."""
    before, kd0 = subject.read(), kernel_drops(subject)
    with DropWatch(subject, args.window) as watch:
        ledger, usage = loadgen(subject, extra, timeout=args.seconds + 120)
        settle_on(lambda: subject.read().lines, subject.queued, args.settle)
    after, kd1 = subject.read(), kernel_drops(subject)
    mem = subject.memory()
    sent, counted = ledger["lines"], after.lines - before.lines
    own = None if after.own_drops is None else after.own_drops - (before.own_drops or 0)
    return {
        "sent_lines": sent,
        "sent_dgrams": ledger["datagrams"],
        "sent_per_s": ledger["sent_lines_per_s"],
        "counted": counted,
        "counted_dgrams": after.datagrams - before.datagrams,
        "loss_pct": 100.0 * (sent - counted) / sent if sent else 0.0,
        "lost_dgrams": ledger["datagrams"] - (after.datagrams - before.datagrams),
        "kdrops": kd1 - kd0,
        "own_kdrops": own,
        "rejected": after.rejected - before.rejected,
        "series_dropped": after.series_dropped - before.series_dropped,
        "queued_bytes": subject.queued(),
        "cpu_pct": 100.0 * usage["gw_cpu"] / usage["wall"],
        "gen_cpu_pct": 100.0 * ledger["sender_cpu_s"] / usage["wall"],
        "other_cpu_pct": 100.0
        * (usage["all_cpu"] - usage["gw_cpu"] - ledger["sender_cpu_s"])
        / usage["wall"],
        "rss_mib": mem.rss_kib / 1024,
        "hwm_mib": mem.hwm_kib / 1024,
        "drop_phase": watch.bins,
    }


def ladder_for(subject: Subject, shape: str, series: int, args: argparse.Namespace) -> list[Row]:
    rates = rates_for(args, shape, series)
    common = ["--shape", shape, "--series", str(series), "--processes", str(args.processes)]
    base = {"receiver": subject.name, "shape": shape, "series": series}
    rb = kernel_rcvbuf(subject.udp_port)
    warm_rate = str(min(rates[0], args.warm_rate))
    warm = run_load(
        subject,
        [*common, "--once", "--pool-lines", "1", "--rate", warm_rate, "--seconds", "600"],
        args,
    )
    print(
        f"{subject.name} shape={shape} series={series:,} kernel rb={rb} warm-up: "
        f"{warm['sent_lines']:,} lines, loss {warm['loss_pct']:.2f} %, "
        f"RSS {warm['rss_mib']:.0f} MiB",
        flush=True,
    )
    rows: list[Row] = []
    for r in range(args.repeat):
        for rate in rates:
            extra = [*common, "--rate", str(rate), "--seconds", str(args.seconds)]
            row = {**base, "repeat": r + 1, "offered": rate, "rcvbuf_rb": rb}
            row.update(run_load(subject, extra, args))
            rows.append(row)
            print(run_line(row), flush=True)
    return rows


def run_line(row: Row) -> str:
    peak = max(row["drop_phase"]) if any(row["drop_phase"]) else 0
    at = row["drop_phase"].index(peak) if peak else None
    own = "" if row["own_kdrops"] is None else f" own_kdrops={row['own_kdrops']}"
    return (
        f"  {row['receiver']:7} {row['shape']:6} series={row['series']:>9,} run {row['repeat']} "
        f"offered={row['offered']:>9,} sent/s={row['sent_per_s']:>9,} loss={row['loss_pct']:7.3f}% "
        f"lost_dgrams={row['lost_dgrams']} kdrops={row['kdrops']}{own} "
        f"rejected={row['rejected']} queued={row['queued_bytes']} cpu={row['cpu_pct']:.0f}% "
        f"gen={row['gen_cpu_pct']:.0f}% other={row['other_cpu_pct']:.0f}% "
        f"rss={row['rss_mib']:.0f}MiB"
        + (f" drop-peak={peak} at +{at}s of the cycle" if peak else "")
    )


def run_all(args: argparse.Namespace, etsy_pkg: Path | None, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    for shape in args.shapes:
        for series in args.series:
            if f"{shape}:{series}" in args.skip:
                continue
            starters: list[Callable[[], Subject]] = [lambda: start_gateway(args)]
            if etsy_pkg is not None and series <= args.etsy_max_series:
                starters.append(functools.partial(start_etsy, args, etsy_pkg, workdir))
            for start in starters:
                subject = start()
                try:
                    rows += ladder_for(subject, shape, series, args)
                finally:
                    print(f"{subject.name} stopped: {subject.stop()}", flush=True)
    return rows


def medians(rows: list[Row]) -> list[Row]:
    """One row per receiver × shape × series × offered rate: the median over repeats."""
    keys = ("receiver", "shape", "series", "offered")
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for group in groups.values():
        med: Row = {k: group[0][k] for k in (*keys, "rcvbuf_rb")}
        for k, v in group[0].items():
            if k not in med and isinstance(v, int | float) and not isinstance(v, bool):
                med[k] = statistics.median(g[k] for g in group)
        med["runs"] = len(group)
        med["drop_phase"] = [
            sum(g["drop_phase"][i] for g in group) for i in range(len(group[0]["drop_phase"]))
        ]
        out.append(med)
    return out


def _rates(text: str) -> dict[str, list[int]]:
    """``packed=100000,200000;single=25000,50000;packed@1000000=200000,400000``: rates per
    shape, optionally for one series count only (either part optional)."""
    out = dict(DEFAULT_RATES)
    for part in text.split(";"):
        key, _, values = part.partition("=")
        key = key.strip()
        if key.partition("@")[0] not in DEFAULT_RATES or not values:
            raise argparse.ArgumentTypeError(f"bad --rates part {part!r}")
        out[key] = [int(float(v)) for v in values.split(",")]
    return out


def rates_for(args: argparse.Namespace, shape: str, series: int) -> list[int]:
    rates: list[int] = args.rates.get(f"{shape}@{series}", args.rates[shape])
    return rates


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="packed,single", help="packed,single")
    ap.add_argument("--series", default="10000,100000,1000000", help="series counts")
    ap.add_argument(
        "--rates",
        type=_rates,
        default=DEFAULT_RATES,
        help="per shape, e.g. 'packed=100000,400000;single=25000,100000' (lines/s; "
        "datagrams/s for single)",
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="per step (max 600)")
    ap.add_argument("--repeat", type=int, default=3, help="ladder repeats; tables give medians")
    ap.add_argument("--window", type=int, default=10, help="gateway window = etsy flushInterval, s")
    ap.add_argument("--rcvbuf", type=int, default=8 << 20, help="receive buffer asked by both")
    ap.add_argument("--max-series", type=int, default=2_000_000, help="gateway --max-series")
    ap.add_argument("--processes", type=int, default=1, help="load generator senders")
    ap.add_argument(
        "--warm-rate",
        type=int,
        default=50_000,
        help="lines/s of the warm-up, which creates every series once (at most the first "
        "rate); a new series costs the gateway about 16 us",
    )
    ap.add_argument("--settle", type=float, default=3.0, help="max wait after each step, s")
    ap.add_argument("--no-etsy", action="store_true", help="do not run etsy statsd")
    ap.add_argument("--etsy-spec", default="statsd", help="npm spec, e.g. statsd@0.9.0")
    ap.add_argument("--etsy-max-series", type=int, default=10**9, help="skip etsy above this")
    ap.add_argument(
        "--skip", default="", help="shape:series pairs to leave out, e.g. single:1000000"
    )
    ap.add_argument("--gateway-arg", action="append", default=[], help="extra gateway option")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--plot", type=Path, help="PNG (default: img/loss-vs-rate.png next to --out)")
    ap.add_argument("--json", type=Path, help="also write every run as JSON here")
    ap.add_argument("--label", default="", help="e.g. 'reduced run': shown in the report")
    args = ap.parse_args(argv)
    args.shapes = [s.strip() for s in args.shapes.split(",")]
    args.series = [int(float(s)) for s in args.series.split(",")]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if any(s not in DEFAULT_RATES for s in args.shapes):
        ap.error("--shapes: packed and/or single")
    if not 0 < args.seconds <= 600 or not 1 <= args.repeat <= 20 or not 1 <= args.window <= 600:
        ap.error("--seconds in (0, 600], --repeat in 1..20, --window in 1..600")
    args.plot = args.plot or args.out.parent / "img" / "loss-vs-rate.png"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = arguments(argv)
    command = " ".join([".venv/bin/python bench/ladder.py", *(argv or sys.argv[1:])])
    started, t0 = time.time(), time.monotonic()
    machine = report.machine()
    steps = args.repeat * sum(
        len(rates_for(args, shape, n))
        for shape in args.shapes
        for n in args.series
        if f"{shape}:{n}" not in args.skip
    )
    print(f"{steps} gateway steps of {args.seconds:g} s (x2 with etsy statsd)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as tmp:
        etsy_pkg, etsy_note = None, "not run (--no-etsy)"
        if not args.no_etsy:
            node = etsy.node_version()
            if node is None:
                etsy_note = "not run: Node is not available"
            else:
                etsy_pkg, version = etsy.install(Path(tmp) / "etsy", args.etsy_spec)
                etsy_note = f"statsd {version} on Node {node} (npm, temporary directory)"
        print(f"etsy statsd: {etsy_note}", flush=True)
        rows = run_all(args, etsy_pkg, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    elapsed = time.monotonic() - t0
    med = medians(rows)
    print("\n" + report.summary_text(med), flush=True)
    plot_note = report.plot(med, args.plot)
    print(plot_note, flush=True)
    report.write(args, med, machine, command, etsy_note, plot_note, started, elapsed)
    print(f"wrote {args.out}; total {elapsed:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
