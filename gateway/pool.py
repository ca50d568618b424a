"""The parent side of ``--workers N``: bind, start and watch the intake workers, merge their
windows and hand each merged window to the reporting of ``gateway.app``.

The parent binds every socket itself (so a port in use is one clear line and exit 2, and a
port of 0 is resolved once for all), opens ``N`` UDP sockets on one port with
``SO_REUSEPORT`` and gives one to each worker; the Unix socket, if any, goes to worker 0.
It keeps its own copies open: the kernel's drop counters are read from them, and a worker
that dies is started again on the same socket, so the port never closes.

A window is merged when every live worker has said it sent all it had for it
(``Progress.open_from``).  A worker that dies loses what it had not sent yet (like a
SIGKILL of the single-process gateway); the others go on, and the pool starts a new worker.

No numpy here; the merging is ``gateway.merge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import socket
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from gateway.clock import Clock
from gateway.config import Settings
from gateway.errors import StartupError
from gateway.listener import kernel_drops, open_udp_socket, open_unix_socket
from gateway.merge import Merger
from gateway.metrics import GatewayMetrics
from gateway.options import Address
from gateway.window import WindowSnapshot
from gateway.workers import STOP, Closed, Done, Message, Progress, Ready, worker_main

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0
"""Seconds a worker may take to import and report ready."""
STOP_TIMEOUT = 10.0
"""Seconds the workers get to drain their sockets and send their last windows."""
RESTART_PAUSE = 1.0


@dataclass(slots=True)
class Cardinality:
    """Series figures of one reported window: live series and new series by prefix."""

    live: int = 0
    created: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)


Report = Callable[[WindowSnapshot, Cardinality], Awaitable[None]]


@dataclass(slots=True)
class _Child:
    process: BaseProcess
    conn: Connection
    open_from: int | None = None
    ready: bool = False
    done: bool = False


class WorkerPool:
    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, clock: Clock, report: Report
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._report = report
        self._context = multiprocessing.get_context("spawn")
        self._sockets: list[list[tuple[str, socket.socket]]] = []
        self._children: dict[int, _Child] = {}
        self._inbox: asyncio.Queue[tuple[int, Message | None]] = asyncio.Queue()
        start = self._window_start(clock.time())
        self._merger = Merger(
            length=settings.window, gauge_ttl=settings.gauge_ttl, first_start=start
        )
        self._cardinality: dict[int, Cardinality] = {}
        self._stopping = False
        self.address = ""

    def _window_start(self, t: float) -> int:
        return int(t // self.settings.window) * self.settings.window

    # --- sockets -----------------------------------------------------------------------

    def bind(self) -> None:
        """Open every worker's sockets; raises StartupError (exit 2) when one cannot be."""
        s = self.settings
        try:
            for worker in range(s.workers):
                mine: list[tuple[str, socket.socket]] = []
                self._sockets.append(mine)
                if s.udp is not None:
                    address = s.udp
                    if worker > 0:  # the same port as worker 0's, even when 0 was asked
                        address = Address(s.udp.host, self._sockets[0][0][1].getsockname()[1])
                    udp, granted = open_udp_socket(address, s.udp_rcvbuf, reuse_port=True)
                    mine.append(("udp", udp))
                    self.metrics.udp_rcvbuf.set(granted)
                if s.unix is not None and worker == 0:
                    unix, _ = open_unix_socket(s.unix, s.unix_mode, s.udp_rcvbuf)
                    mine.append(("unix", unix))
        except BaseException:
            self.close_sockets()
            raise
        udp_sockets = [sock for mine in self._sockets for name, sock in mine if name == "udp"]
        if udp_sockets:
            self.metrics.watch_kernel_drops(lambda: _total_drops(udp_sockets))
            bound = udp_sockets[0].getsockname()
            self.address = f"{bound[0]}:{bound[1]}"
            logger.info("udp listening address=%s workers=%d", self.address, s.workers)
        if s.unix is not None:
            logger.info("unix listening address=%s (worker 0)", s.unix)

    def close_sockets(self) -> None:
        for mine in self._sockets:
            for _, sock in mine:
                sock.close()

    # --- workers -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each has attached its sockets."""
        for worker in range(self.settings.workers):
            self._spawn(worker)
        deadline = self.clock.monotonic() + START_TIMEOUT
        while not all(child.open_from is not None for child in self._children.values()):
            remaining = deadline - self.clock.monotonic()
            try:
                worker, message = await asyncio.wait_for(self._inbox.get(), remaining)
            except TimeoutError:
                raise StartupError("--workers: a worker did not start in time") from None
            if message is None:
                raise StartupError(f"--workers: worker {worker} exited while starting")
            await self._handle(worker, message)
        logger.info("workers started count=%d", len(self._children))

    def _spawn(self, worker: int) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main,
            args=(worker, self.settings, self._sockets[worker], child_end),
            name=f"statsd-gateway-worker-{worker}",
            daemon=True,
        )
        process.start()
        child_end.close()
        self._children[worker] = _Child(process, parent_end)
        threading.Thread(
            target=self._read, args=(worker, parent_end, asyncio.get_running_loop()), daemon=True
        ).start()

    def _read(self, worker: int, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: every message of one worker into the inbox; None when it ends."""
        while True:
            try:
                message: Message | None = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                message = None
            with contextlib.suppress(RuntimeError):  # the loop has ended
                loop.call_soon_threadsafe(self._inbox.put_nowait, (worker, message))
            if message is None or isinstance(message, Done):
                return

    async def run(self, stop: asyncio.Event) -> None:
        """Take in the workers' messages until ``stop`` is set."""
        waiting = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.create_task(self._inbox.get())
                await asyncio.wait({getting, waiting}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    break
                await self._handle(*getting.result())
        finally:
            waiting.cancel()

    async def stop(self) -> None:
        """Ask every worker to stop, take in their last windows and report everything."""
        self._stopping = True
        for child in self._children.values():
            with contextlib.suppress(OSError):
                child.conn.send(STOP)
        deadline = self.clock.monotonic() + STOP_TIMEOUT
        while not all(child.done for child in self._children.values()):
            remaining = deadline - self.clock.monotonic()
            try:
                worker, message = await asyncio.wait_for(self._inbox.get(), max(remaining, 0))
            except TimeoutError:
                late = [w for w, child in self._children.items() if not child.done]
                logger.error("workers did not stop in time, their last windows are lost: %s", late)
                break
            await self._handle(worker, message)
        for child in self._children.values():
            await asyncio.to_thread(child.process.join, 5.0)
            if child.process.is_alive():
                child.process.kill()
            child.conn.close()
        await self._report_before(None)
        self.close_sockets()

    async def _handle(self, worker: int, message: Message | None) -> None:
        child = self._children[worker]
        if message is None:
            await self._lost(worker, child)
        elif isinstance(message, Closed):
            self._merger.add(message.snapshot)
            self._count(message)
        elif isinstance(message, Progress):
            child.open_from = message.open_from
            self.metrics.add_totals(worker, message.totals)
            await self._report_before(self._merge_limit())
        elif isinstance(message, Done):
            child.done = True
        elif isinstance(message, Ready):
            child.ready = True
            self._count_ready()
            logger.info("worker ready worker=%d pid=%s", worker, child.process.pid)

    def _count(self, closed: Closed) -> None:
        figures = self._cardinality.setdefault(closed.snapshot.start, Cardinality())
        figures.live += closed.live_series
        figures.created.update(closed.created)
        figures.refused.update(closed.refused)

    def _count_ready(self) -> None:
        ready = sum(c.ready and not c.done for c in self._children.values())
        self.metrics.workers_ready.set(ready)

    async def _lost(self, worker: int, child: _Child) -> None:
        child.done = True
        self._count_ready()
        if self._stopping:
            return
        await asyncio.to_thread(child.process.join, 5.0)
        logger.error(
            "worker %d exited (exit code %s); what it had not reported is lost; starting it again",
            worker,
            child.process.exitcode,
        )
        self.metrics.worker_restarts.inc()
        child.conn.close()
        await asyncio.sleep(RESTART_PAUSE)
        self._spawn(worker)
        await self._report_before(self._merge_limit())

    def _merge_limit(self) -> int | None:
        """Windows before this start are complete: every live worker has moved past them."""
        froms = [c.open_from for c in self._children.values() if not c.done]
        if not froms or any(f is None for f in froms):
            return None
        return min(f for f in froms if f is not None)

    async def _report_before(self, limit: int | None) -> None:
        """Report every merged window before ``limit`` (None at the end: all of them)."""
        if limit is None and not self._stopping:
            return
        if limit is None:  # through the current window, whose held gauges are reported too
            now = self._window_start(self.clock.time())
            limit = max(self._merger.last_start(), now) + self.settings.window
        for merged in self._merger.merge_before(limit):
            start = merged.snapshot.start
            figures = self._cardinality.pop(start, Cardinality())
            if merged.conflicts:
                self.metrics.samples_dropped.labels("type_conflict").inc(merged.conflicts)
            await self._report(merged.snapshot, figures)


def _total_drops(sockets: list[socket.socket]) -> int | None:
    found = [kernel_drops(sock) for sock in sockets]
    known = [n for n in found if n is not None]
    return sum(known) if known else None
