"""Cost of the pure pipeline stages per line and per datagram, without sockets.

    .venv/bin/python bench/pipeline.py [--series 10000] [--seconds 3] [--repeat 5]
    .venv/bin/python bench/pipeline.py --batch 256,1024,4096 --intake-only   # batch size

Builds packed (~1,400-byte, ~35-line) datagrams and single-line datagrams over N series
(mixed counters with rates, gauges, timers, sets, DogStatsD tags), then times
``Parser.parse`` and ``Aggregator.add`` on batches of the listener's size
(``MAX_BATCH_DATAGRAMS``, or each size of ``--batch``), and the closing of a window with
N series (snapshot, points, bodies; and ``Aggregator.close`` alone, the part intake has to
wait for), also when every series goes idle at that close.  Prints medians.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence

# Measure the checkout this file is in, not whichever copy of ``gateway`` is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.aggregator import EVICT_SLICE, Aggregator
from gateway.batches import pack
from gateway.encoder import ENCODE_SLICE
from gateway.intake import MIN_PARSER_CACHE
from gateway.listener import MAX_BATCH_DATAGRAMS
from gateway.malloc import tune_collector
from gateway.parser import Parser
from gateway.points import BuildResult, PointBuilder
from gateway.series import SeriesNamer

NOW = 1_800_000_000.0


def lines(series: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(series):
        tags = f"#env:prod,shard:{i % 16}"
        kind = i % 4
        if kind == 0:
            out.append(f"app.req.{i}:{rng.randint(1, 9)}|c|@0.5|{tags}")
        elif kind == 1:
            out.append(f"app.gauge.{i}:{rng.randint(0, 999)}|g|{tags}")
        elif kind == 2:
            out.append(f"app.lat.{i}:{rng.random() * 100:.3f}|ms|{tags}")
        else:
            out.append(f"app.users.{i}:u{rng.randint(0, 50)}|s|{tags}")
    return [line.encode() for line in out]


def packed(pool: list[bytes], size: int = 1400) -> list[bytes]:
    datagrams: list[bytes] = []
    chunk: list[bytes] = []
    used = 0
    for line in pool:
        if used + len(line) + 1 > size and chunk:
            datagrams.append(b"\n".join(chunk))
            chunk, used = [], 0
        chunk.append(line)
        used += len(line) + 1
    if chunk:
        datagrams.append(b"\n".join(chunk))
    return datagrams


def time_intake(datagrams: list[bytes], seconds: float, size: int) -> tuple[float, float]:
    """Seconds per line and per datagram for parse + add, on batches of ``size`` datagrams
    (the listener's batches are up to MAX_BATCH_DATAGRAMS)."""
    namer = SeriesNamer((("host", "bench"),))
    parser = Parser(namer, cache_size=cache_size(datagrams))
    aggregator = Aggregator(window=60, grace=2, gauge_ttl=3600, now=NOW)
    batches = [datagrams[i : i + size] for i in range(0, len(datagrams), size)]
    for batch in batches:  # warm the caches and the series index
        aggregator.add(parser.parse(batch), NOW)
    n_lines = n_datagrams = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            parsed = parser.parse(batch)
            aggregator.add(parsed, NOW)
            n_lines += parsed.lines
            n_datagrams += len(batch)
    elapsed = time.perf_counter() - started
    return elapsed / n_lines, elapsed / n_datagrams


def cache_size(datagrams: list[bytes]) -> int:
    """The gateway's template cache for as many series as there are lines (with
    ``--max-series`` at least that): ``max(MIN_PARSER_CACHE, --max-series)``."""
    return max(MIN_PARSER_CACHE, sum(d.count(b"\n") + 1 for d in datagrams))


def time_close(series_lines: list[bytes]) -> tuple[float, float, int]:
    """Seconds for ``Aggregator.close`` alone (what intake waits for), seconds for the whole
    close into bodies, and the bodies, for a window where every series had a sample.

    The next window has a sample of every series too, as under steady load: the close then
    frees no series."""
    parser = Parser(SeriesNamer((("host", "bench"),)), cache_size=cache_size(series_lines))
    aggregator = Aggregator(window=60, grace=2, gauge_ttl=3600, now=NOW)
    for now in (NOW, NOW + 60):
        for batch in range(0, len(series_lines), 8192):
            aggregator.add(parser.parse([b"\n".join(series_lines[batch : batch + 8192])]), now)
    builder = PointBuilder(namespace="statsd")
    tune_collector()  # as the gateway does after every window
    started = time.perf_counter()
    (snapshot,) = aggregator.close(NOW + 62)
    closed = time.perf_counter()
    built = BuildResult()
    for part in snapshot.columns(ENCODE_SLICE):
        builder.build_columns(part, snapshot.start, now=NOW, into=built)
    bodies = list(pack(built.points))
    return closed - started, time.perf_counter() - started, len(bodies)


def time_churn_close(series_lines: list[bytes]) -> tuple[float, float, float]:
    """A close after which every series is idle (a rollout that renamed every sender): seconds
    for ``Aggregator.close`` alone, for evicting the rest in the gateway's slices, and for
    the longest slice."""
    parser = Parser(SeriesNamer((("host", "bench"),)), cache_size=cache_size(series_lines))
    aggregator = Aggregator(window=60, grace=2, gauge_ttl=3600, now=NOW, evict_at_close=EVICT_SLICE)
    for batch in range(0, len(series_lines), 8192):
        aggregator.add(parser.parse([b"\n".join(series_lines[batch : batch + 8192])]), NOW)
    tune_collector()
    started = time.perf_counter()
    aggregator.close(NOW + 62)
    closed = time.perf_counter() - started
    slices = []
    more = True
    while more:
        started = time.perf_counter()
        more = aggregator.evict_idle(EVICT_SLICE)
        slices.append(time.perf_counter() - started)
    return closed, sum(slices), max(slices)


def medians(runs: Sequence[tuple[float, ...]]) -> list[float]:
    """The median of each figure over the repeats (``runs``: one tuple per repeat)."""
    return [statistics.median(figure) for figure in zip(*runs, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--batch",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[MAX_BATCH_DATAGRAMS],
        help="datagrams per batch, e.g. 256,1024,4096 (default: the listener's limit)",
    )
    ap.add_argument("--intake-only", action="store_true", help="skip the window closes")
    args = ap.parse_args()
    tune_collector()  # as the gateway does at start
    pool = lines(args.series, random.Random(1))
    shapes = {"packed (~1,400 B)": packed(pool), "one line per datagram": pool}
    print(f"series={args.series} repeat={args.repeat} seconds={args.seconds} (medians)")
    for name, datagrams in shapes.items():
        for size in args.batch:
            runs = [time_intake(datagrams, args.seconds, size) for _ in range(args.repeat)]
            per_line, per_datagram = medians(runs)
            print(
                f"{name:24s} batch {size:>5} parse+add: {per_line * 1e6:6.2f} us/line  "
                f"{per_datagram * 1e6:7.2f} us/datagram  = {1 / per_line / 1e6:5.2f} M lines/s "
                f"on one core"
            )
    if args.intake_only:
        return
    closes = [time_close(pool) for _ in range(args.repeat)]
    close_only, seconds, bodies = medians(closes)
    print(
        f"close one window of {args.series} series -> points -> {bodies:.0f} bodies: "
        f"{seconds * 1e3:.0f} ms ({seconds / args.series * 1e6:.1f} us/series), "
        f"of which Aggregator.close (intake waits) {close_only * 1e3:.0f} ms"
    )
    closed, evicting, longest = medians([time_churn_close(pool) for _ in range(args.repeat)])
    print(
        f"close after which all {args.series} series are idle: Aggregator.close "
        f"{closed * 1e3:.0f} ms, then evicting the rest {evicting * 1e3:.0f} ms in slices of "
        f"{EVICT_SLICE} (longest {longest * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
