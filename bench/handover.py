"""CPU time from a datagram in the socket to the parser's batch, by receive path and event loop.

A program that prints figures, not a test:

    .venv/bin/python bench/handover.py --repeat 5

Each round sends ``--batch`` single-line datagrams to a loopback socket (before the clock
starts), then times with ``time.process_time`` (CPU, user + system) how long the event loop
takes to hand all of them to an ``on_batch`` that only counts. Three receive paths:

- ``queue``: asyncio-dgram as ``from_socket`` builds it, one ``await stream.recv()`` per
  datagram (how the listener read until 2026-12-08).
- ``protocol``: the event loop's own datagram transport and asyncio-dgram's protocol, one
  ``datagram_received`` per datagram, into a ``DatagramInbox`` whose ``get()`` returns every
  datagram since the last one (the listener from 79a41cd to d47a0a0; here the inbox is
  reached through a small adapter that wraps each datagram in a list, a few percent of the
  path).
- ``listener``: ``gateway.listener.DatagramListener`` as the gateway runs it: its
  ``DrainingTransport`` reads what the socket holds in one loop of ``recv`` calls per
  wake-up.

The allocator is tuned as in the gateway (``gateway.malloc``). Each combination runs in its
own interpreter, ``--repeat`` times; the median of the rounds' medians is printed. Parsing
is not included: see ``bench/pipeline.py`` for that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("queue", "protocol", "listener")
LOOPS = ("uvloop", "asyncio")
LINE = b"app.req.1:1|c|#env:prod,shard:1"


class _Counter:
    def __init__(self) -> None:
        self.datagrams = 0
        self.wanted = 0
        self.done = asyncio.Event()

    def on_batch(self, datagrams: list[bytes], _arrived_at: float) -> None:
        self.datagrams += len(datagrams)
        if self.datagrams >= self.wanted:
            self.done.set()


async def _queue_path(sock: socket.socket, counter: _Counter) -> None:
    """asyncio-dgram's own queue: one ``recv()`` per datagram, batched as the listener does."""
    import asyncio_dgram

    from gateway.listener import MAX_BATCH_DATAGRAMS

    stream = await asyncio_dgram.from_socket(sock)
    batch: list[bytes] = []

    async def flush_periodically() -> None:
        nonlocal batch
        while True:
            await asyncio.sleep(0.01)
            if batch:
                batch, taken = [], batch
                counter.on_batch(taken, 0.0)

    flusher = asyncio.create_task(flush_periodically())
    try:
        while True:
            data, _ = await stream.recv()
            batch.append(data)
            if len(batch) >= MAX_BATCH_DATAGRAMS:
                batch, taken = [], batch
                counter.on_batch(taken, 0.0)
    finally:
        flusher.cancel()


class _InboxQueue:
    """A ``DatagramInbox`` behind the per-datagram ``put_nowait`` that asyncio-dgram's
    protocol calls."""

    def __init__(self) -> None:
        from gateway.listener import DatagramInbox

        self.inbox = DatagramInbox()

    def put_nowait(self, item: tuple[bytes | None, object]) -> None:
        if item[0] is None:
            self.inbox.close()
        else:
            self.inbox.put([item[0]])

    async def get(self) -> tuple[list[bytes] | None, None]:
        return await self.inbox.get()


async def _protocol_path(sock: socket.socket, counter: _Counter) -> None:
    """The loop's transport and asyncio-dgram's protocol into an inbox, batched by the
    listener's own code (its stream replaced by this one)."""
    import asyncio_dgram

    from gateway.clock import SystemClock
    from gateway.listener import DatagramListener

    queue = _InboxQueue()
    errors: asyncio.Queue[Exception] = asyncio.Queue()
    drained = asyncio.Event()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: asyncio_dgram.aio.Protocol(queue, errors, drained), sock=sock
    )
    listener = DatagramListener("udp", sock, counter.on_batch, SystemClock())
    listener._stream = asyncio_dgram.aio.DatagramServer(transport, queue, errors, drained)
    await listener.run()


async def _listener_path(sock: socket.socket, counter: _Counter) -> None:
    from gateway.clock import SystemClock
    from gateway.listener import DatagramListener

    listener = DatagramListener("udp", sock, counter.on_batch, SystemClock())
    await listener.open()
    await listener.run()


async def _measure(path: str, rounds: int, batch: int) -> dict[str, float]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    counter = _Counter()
    run = {"queue": _queue_path, "protocol": _protocol_path, "listener": _listener_path}[path]
    task = asyncio.create_task(run(receiver, counter))
    await asyncio.sleep(0.05)
    per_datagram: list[float] = []
    for _ in range(rounds):
        counter.done.clear()
        counter.wanted = counter.datagrams + batch
        for _ in range(batch):
            sender.send(LINE)
        start = time.process_time()
        await asyncio.wait_for(counter.done.wait(), 10)
        per_datagram.append((time.process_time() - start) / batch)
    task.cancel()
    return {"us_per_datagram": statistics.median(per_datagram) * 1e6}


def child(path: str, loop: str, rounds: int, batch: int) -> dict[str, float]:
    from gateway.malloc import tune_allocator

    tune_allocator({})  # as the gateway does at start-up
    if loop == "uvloop":
        import uvloop

        return uvloop.run(_measure(path, rounds, batch))
    return asyncio.run(_measure(path, rounds, batch))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="rounds per interpreter")
    ap.add_argument("--batch", type=int, default=4096, help="datagrams sent, then taken, a round")
    ap.add_argument("--repeat", type=int, default=3, help="interpreters per combination")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "LOOP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.rounds, args.batch)))
        return 0
    print(f"{'event loop':<10}{'receive path':<14}{'µs/datagram (median)':>22}{'runs':>30}")
    for loop in LOOPS:
        medians: dict[str, float] = {}
        for path in PATHS:
            runs = []
            for _ in range(args.repeat):
                cmd = [sys.executable, __file__, "--child", path, loop]
                cmd += ["--rounds", str(args.rounds), "--batch", str(args.batch)]
                done = subprocess.run(
                    cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, check=True
                )
                runs.append(json.loads(done.stdout.splitlines()[-1])["us_per_datagram"])
            medians[path] = statistics.median(runs)
            shown = ", ".join(f"{r:.2f}" for r in runs)
            print(f"{loop:<10}{path:<14}{medians[path]:>22.2f}{shown:>30}")
        for slower in ("queue", "protocol"):
            ratio = medians[slower] / medians["listener"]
            print(f"{loop:<10}{slower + ' / listener':<24}{ratio:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
