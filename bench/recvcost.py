"""What one datagram read costs the standard event loop, by glibc allocator setting.

A program that prints figures, not a test:

    .venv/bin/python bench/recvcost.py --repeat 5
    .venv/bin/python bench/recvcost.py --strace      # system calls per read (needs strace)

asyncio's datagram transport reads every datagram with ``sock.recvfrom(256 KiB)``.  Each
setting below runs in a fresh interpreter (the thresholds are process-wide, and glibc's
dynamic mmap threshold depends on what the process has freed before), sends itself
single-line datagrams over 127.0.0.1 in rounds of ``--batch`` and times the reads with
``time.process_time`` (CPU, user + system):

- ``glibc-defaults``: nothing changed; only ``socket`` imported.
- ``gateway-imports``: nothing changed, but the gateway's modules imported first, as in the
  gateway process.
- ``mmap-threshold-only``: ``mallopt(M_MMAP_THRESHOLD, 1 MiB)``, which is what
  ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576`` does.
- ``gateway``: ``gateway.malloc.tune_allocator`` (mmap and trim thresholds).
- ``preallocated``: no allocator change; ``recv_into`` a buffer made once, then a copy of the
  datagram's bytes (what a transport with its own buffer does, as uvloop does).

``--strace`` runs each setting under ``strace -c`` instead and prints the ``mmap``,
``mremap``, ``munmap`` and ``brk`` calls per read, less those of a child that starts the
same way and reads nothing (timing under strace means nothing).
Loopback only; imports ``gateway.malloc`` in the child that uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("glibc-defaults", "gateway-imports", "mmap-threshold-only", "gateway", "preallocated")
READ_SIZE = 256 * 1024
LINE = b"app.req.1:1|c|#env:prod,shard:1"
TRACED = ("mmap", "mremap", "munmap", "brk")


def child(mode: str, rounds: int, batch: int) -> dict[str, float]:
    """Runs in the fresh interpreter: set the allocator up as ``mode`` says, time the reads."""
    import socket

    if mode == "gateway-imports":
        import gateway.cli  # noqa: F401  - only its import side effects
    elif mode == "mmap-threshold-only":
        import ctypes

        from gateway.malloc import M_MMAP_THRESHOLD

        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    elif mode == "gateway":
        from gateway.malloc import tune_allocator

        if not tune_allocator({}):
            raise SystemExit("tune_allocator did nothing here (not glibc?)")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    per_read: list[float] = []
    for _ in range(rounds):
        for _ in range(batch):
            sender.send(LINE)
        start = time.process_time()
        if mode == "preallocated":
            for _ in range(batch):
                n, _ = receiver.recvfrom_into(buffer)
                bytes(view[:n])
        else:
            for _ in range(batch):
                receiver.recvfrom(READ_SIZE)
        per_read.append((time.process_time() - start) / batch)
    median = statistics.median(per_read) if per_read else 0.0
    return {"us_per_read": median * 1e6, "reads": rounds * batch}


def run_child(mode: str, args: argparse.Namespace, prefix: Sequence[str] = ()) -> dict[str, float]:
    cmd = [*prefix, sys.executable, __file__, "--child", mode]
    cmd += ["--rounds", str(args.rounds), "--batch", str(args.batch)]
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "PYTHONPATH")}
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: exit {done.returncode}: {done.stderr.strip()}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def syscalls_per_read(mode: str, args: argparse.Namespace) -> dict[str, float]:
    """Calls per read: a child that reads, minus one that only starts up (rounds 0)."""
    reads, calls = _traced(mode, args)
    _, startup = _traced(mode, argparse.Namespace(rounds=0, batch=args.batch))
    return {name: (calls[name] - startup[name]) / reads for name in TRACED}


def _traced(mode: str, args: argparse.Namespace) -> tuple[float, dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "strace.txt"
        prefix = ["strace", "-c", "-f", "-o", str(out), "-e", "trace=" + ",".join(TRACED)]
        reads = run_child(mode, args, prefix)["reads"]
        counts = dict.fromkeys(TRACED, 0)
        for line in out.read_text().splitlines():
            fields = line.split()  # % time, seconds, usecs/call, calls, [errors], syscall
            if len(fields) >= 5 and fields[-1] in counts:
                counts[fields[-1]] = int(fields[3])
    return reads, counts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="rounds of --batch reads per child")
    ap.add_argument("--batch", type=int, default=1000, help="datagrams sent, then read, per round")
    ap.add_argument("--repeat", type=int, default=3, help="children per setting (median)")
    ap.add_argument("--strace", action="store_true", help="count system calls instead")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rounds, args.batch)))
        return 0
    if args.strace:
        if shutil.which("strace") is None:
            ap.error("strace is not installed")
        print(f"{'setting':<20}" + "".join(f"{name + '/read':>12}" for name in TRACED))
        for mode in MODES:
            per = syscalls_per_read(mode, args)
            print(f"{mode:<20}" + "".join(f"{per[name]:>12.3f}" for name in TRACED))
        return 0
    runs: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.repeat):  # settings interleaved, so that a busy moment hits them all
        for mode in MODES:
            runs[mode].append(run_child(mode, args)["us_per_read"])
    print(f"CPU µs per recvfrom({READ_SIZE // 1024} KiB) of a {len(LINE)}-byte datagram")
    print(f"median over {args.repeat} children x {args.rounds} rounds x {args.batch} reads")
    print(f"{'setting':<20}{'median':>8}   runs")
    for mode, values in runs.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{mode:<20}{statistics.median(values):>8.2f}   {shown}")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
