"""StatsD load generator for the gateway's intake benchmarks (a program, not a test).

Sends only to a loopback address (127.0.0.0/8 or ::1), for at most ``--seconds`` seconds,
then stops by itself and writes a ledger of what it actually sent (JSON):

    .venv/bin/python bench/loadgen.py --target 127.0.0.1:8125 --shape packed \\
        --series 1000 --rate 200000 --seconds 10 --ledger -

The datagrams are built before sending starts, into a pool that covers every series at least
once (see ``bench/pool.py``); the send loop only sends on a connected socket and paces
itself in small bursts against the monotonic clock.  On Linux it sends up to 64 datagrams
per system call with ``sendmmsg`` (``bench/mmsg.py``), laid out before sending starts;
``--call send`` sends one datagram per ``socket.send`` instead, as the generator did
before 2026-12-08 (and does where ``sendmmsg`` is missing).  ``--processes P`` forks P senders,
each offering ``rate / P`` lines/s from its own place in the pool.  ``--once`` sends the pool
exactly once (split between the senders) instead of cycling through it for ``--seconds``.

The ledger counts only datagrams the kernel accepted: datagrams, lines, lines per StatsD
type, the exact sum of the counter values, and the timer weight (sum of ``1/rate``).

``--wait-go`` prints ``READY`` on stderr once the pool is built and waits for a line on stdin
before sending, so a driver can take its "before" readings right before the load starts.

Imports only the standard library, ``bench.pool`` and ``bench.mmsg``; never imports
``gateway``.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import mmsg
from bench.pool import Pool, Shape, Tally, build_pool

MAX_SECONDS = 600.0
TICK = 0.0005
"""Pacing step: the sender sleeps this long whenever it is ahead of its schedule."""
CHUNK = 64
"""Most datagrams per ``sendmmsg`` call: at 250,000 datagrams/s, a quarter of a millisecond."""
CALLS = ("sendmmsg", "send")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one sender process does."""

    host: str
    port: int
    order: Sequence[int]
    """Pool indices in sending order; cycled unless ``once``."""
    rate: float
    """Lines per second for this sender; 0 means as fast as possible."""
    seconds: float
    once: bool
    sockets: int = 1
    """Connected sockets (source ports) used in turn."""
    call: str = "sendmmsg"
    """``sendmmsg``: up to ``CHUNK`` datagrams per system call; ``send``: one."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A plan's datagrams in sending order, laid out before the go signal."""

    plan: Plan
    datagrams: list[bytes]
    lines: list[int]
    messages: mmsg.MessageArray | None


def prepare(pool: Pool, plan: Plan) -> Prepared:
    datagrams = [pool.datagrams[i] for i in plan.order]
    lines = [pool.tallies[i].lines for i in plan.order]
    messages = mmsg.MessageArray(datagrams) if plan.call == "sendmmsg" else None
    return Prepared(plan, datagrams, lines, messages)


@dataclass(frozen=True, slots=True)
class Sent:
    """What one sender actually sent: per-index visits minus failures, and its timing."""

    tally: Tally
    attempts: int
    errors: int
    elapsed: float
    cpu: float


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[::1]:PORT`` with a loopback host; raises ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"target {text!r}: expected HOST:PORT")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"target {text!r}: only loopback addresses (127.0.0.0/8, ::1) allowed")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"target {text!r}: bad port")
    return host, number


def send(pool: Pool, prepared: Prepared) -> Sent:
    """Send datagrams from ``pool`` as the prepared plan says; the hot loop of the generator."""
    plan = prepared.plan
    family = socket.AF_INET6 if ":" in plan.host else socket.AF_INET
    socks = []
    for _ in range(plan.sockets):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect((plan.host, plan.port))
        socks.append(sock)
    # Several source ports: the kernel spreads SO_REUSEPORT receivers (--workers) by them.
    sends = [s.send for s in socks]
    fds = [s.fileno() for s in socks]
    k = len(sends)
    datagrams, lines, messages = prepared.datagrams, prepared.lines, prepared.messages
    first_lines = list(itertools.accumulate(lines, initial=0))
    m = len(datagrams)
    failed: dict[int, int] = {}
    sock_send = sends[0]
    calls = 0
    clock = time.monotonic
    rate = plan.rate
    cpu_start = time.process_time()
    start = clock()
    deadline = start + plan.seconds
    sent_lines = 0
    attempts = 0
    j = 0
    while True:
        now = clock()
        if now >= deadline:
            break
        if rate:
            due = (now - start) * rate
            if sent_lines >= due:
                time.sleep(TICK)
                continue
        else:
            due = sent_lines + 10_000
        # A burst: send until caught up with the schedule (checked every call). One of the
        # two loops runs: sendmmsg's when the datagrams were laid out for it, else send's.
        while messages is not None and sent_lines < due:
            count = min(CHUNK, m - j)
            try:
                count = messages.send(fds[calls % k], j, count)
            except OSError:
                failed[j] = failed.get(j, 0) + 1
                count = 1
            calls += 1
            sent_lines += first_lines[j + count] - first_lines[j]
            attempts += count
            j += count
            if j == m:
                if plan.once:
                    break
                j = 0
        while messages is None and sent_lines < due:
            if k > 1:
                sock_send = sends[attempts % k]
            try:
                sock_send(datagrams[j])
            except OSError:
                failed[j] = failed.get(j, 0) + 1
            sent_lines += lines[j]
            attempts += 1
            j += 1
            if j == m:
                if plan.once:
                    break
                j = 0
        if plan.once and attempts >= m:
            break
    elapsed = clock() - start
    cpu = time.process_time() - cpu_start
    for sock in socks:
        sock.close()
    tally = _tally(pool, plan.order, attempts, failed)
    return Sent(tally, attempts, sum(failed.values()), elapsed, cpu)


def _tally(pool: Pool, order: Sequence[int], attempts: int, failed: dict[int, int]) -> Tally:
    m = len(order)
    rounds, partial = divmod(attempts, m)
    total = Tally()
    if rounds:
        for i in order:
            total = total.add(pool.tallies[i], rounds)
    for i in order[:partial]:
        total = total.add(pool.tallies[i], 1)
    for j, n in failed.items():
        total = total.add(pool.tallies[order[j]], -n)
    return total


def plans(pool: Pool, args: argparse.Namespace, host: str, port: int) -> list[Plan]:
    """One plan per sender: a slice of the pool (``--once``) or a rotation of it."""
    p = args.processes
    m = len(pool.datagrams)
    result = []
    for k in range(p):
        if args.once:
            order: Sequence[int] = range(k, m, p)
        else:
            offset = k * m // p
            order = list(range(offset, m)) + list(range(offset))
        rate = args.rate / p
        plan = Plan(host, port, order, rate, args.seconds, args.once, args.sockets, args.call)
        result.append(plan)
    return [plan for plan in result if len(plan.order)]


def _worker(pool: Pool, prepared: Prepared, results: multiprocessing.SimpleQueue[Sent]) -> None:
    results.put(send(pool, prepared))


def run(pool: Pool, all_plans: list[Prepared]) -> list[Sent]:
    if len(all_plans) == 1:
        return [send(pool, all_plans[0])]
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.SimpleQueue[Sent] = ctx.SimpleQueue()
    workers = [ctx.Process(target=_worker, args=(pool, p, results)) for p in all_plans]
    for w in workers:
        w.start()
    sent = [results.get() for _ in workers]
    limit = time.monotonic() + 10
    for w in workers:
        w.join(max(0.0, limit - time.monotonic()))
        if w.is_alive():
            w.kill()
            w.join()
    return sent


def ledger(pool: Pool, args: argparse.Namespace, sent: list[Sent]) -> dict[str, object]:
    total = Tally()
    for s in sent:
        total = total.add(s.tally, 1)
    elapsed = max(s.elapsed for s in sent)
    return {
        "shape": args.shape.value,
        "series": args.series,
        "offered_lines_per_s": args.rate or None,
        "seconds": args.seconds,
        "processes": len(sent),
        "call": args.call,
        "once": args.once,
        "pool_datagrams": len(pool.datagrams),
        "pool_lines": pool.total.lines,
        "datagrams": total.datagrams,
        "lines": total.lines,
        "lines_by_type": {"c": total.c, "g": total.g, "ms": total.ms, "s": total.s},
        "counter_sum": total.counter_sum,
        "timer_weight_sum": total.timer_weight,
        "send_errors": sum(s.errors for s in sent),
        "elapsed_s": round(elapsed, 4),
        "sent_lines_per_s": round(total.lines / elapsed) if elapsed > 0 else None,
        "sender_cpu_s": round(sum(s.cpu for s in sent), 3),
    }


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT on loopback")
    ap.add_argument("--shape", type=Shape, choices=list(Shape), default=Shape.PACKED)
    ap.add_argument("--series", type=int, default=1000, help="distinct series (default 1000)")
    ap.add_argument("--rate", type=float, default=0.0, help="lines/s offered; 0 = unlimited")
    ap.add_argument("--seconds", type=float, default=10.0, help=f"at most {MAX_SECONDS:.0f}")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--sockets", type=int, default=1, help="source ports per sender, in turn")
    ap.add_argument("--datagram-bytes", type=int, default=1400, help="packed datagram size")
    ap.add_argument("--pool-lines", type=int, default=65536, help="minimum lines in the pool")
    ap.add_argument("--once", action="store_true", help="send the pool exactly once")
    ap.add_argument("--wait-go", action="store_true", help="READY on stderr, wait for stdin")
    ap.add_argument("--ledger", default="-", help="file for the JSON ledger; - = stdout")
    ap.add_argument(
        "--call",
        choices=CALLS,
        default=CALLS[0] if mmsg.available() else CALLS[1],
        help="system call: sendmmsg (up to 64 datagrams a call; Linux) or send (one)",
    )
    args = ap.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--seconds must be in (0, {MAX_SECONDS:.0f}]")
    if not 1 <= args.processes <= 64 or args.series < 1 or args.rate < 0:
        ap.error("--processes in 1..64, --series >= 1, --rate >= 0")
    if not 64 <= args.datagram_bytes <= 65507:
        ap.error("--datagram-bytes in 64..65507")
    if args.call == "sendmmsg" and not mmsg.available():
        ap.error("--call sendmmsg: this platform has no sendmmsg; use --call send")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    try:
        host, port = parse_target(args.target)
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    pool = build_pool(args.shape, args.series, args.datagram_bytes, args.pool_lines)
    all_plans = [prepare(pool, plan) for plan in plans(pool, args, host, port)]
    if args.wait_go:
        print("READY", file=sys.stderr, flush=True)
        sys.stdin.readline()
    result = ledger(pool, args, run(pool, all_plans))
    text = json.dumps(result, indent=2)
    if args.ledger == "-":
        print(text, flush=True)
    else:
        with open(args.ledger, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
