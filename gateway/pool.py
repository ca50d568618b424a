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
from gateway.merge import Merger
from gateway.metrics import GatewayMetrics
from gateway.options import Address
from gateway.sockets import kernel_drops, open_udp_socket, open_unix_socket, probe_udp_port
from gateway.window import WindowSnapshot
from gateway.workers import STOP, Closed, Done, Message, Progress, Ready, worker_main

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0
"""Seconds a worker may take to import and report ready."""
STOP_TIMEOUT = 10.0
"""Seconds the workers get to drain their sockets and send their last windows."""
RESTART_PAUSE = 1.0
"""Seconds before a worker that died is started again; doubled (up to 30 s) while it keeps
dying before it reports progress."""
STALL_AFTER = 30.0
"""A worker silent this long (it reports every second) is killed and started again."""


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
    heard_at: float
    """Monotonic time of its last message."""
    open_from: int | None = None
    ready: bool = False
    done: bool = False
    pause: float = RESTART_PAUSE


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
        self._restarts: set[asyncio.Task[None]] = set()
        self.address = ""

    def _window_start(self, t: float) -> int:
        return int(t // self.settings.window) * self.settings.window

    # --- sockets -----------------------------------------------------------------------

    def bind(self) -> None:
        """Open every worker's sockets; raises StartupError (exit 2) when one cannot be."""
        s = self.settings
        try:
            # One port for all, chosen once (when 0 was asked) and checked to be free.
            udp_address = s.udp and Address(s.udp.host, probe_udp_port(s.udp))
            for worker in range(s.workers):
                mine: list[tuple[str, socket.socket]] = []
                self._sockets.append(mine)
                if udp_address is not None:
                    udp, granted = open_udp_socket(udp_address, s.udp_rcvbuf, reuse_port=True)
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
                self._children[worker].done = True
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
        self.metrics.forget(worker)  # the new process counts from zero
        self._children[worker] = _Child(process, parent_end, heard_at=self.clock.monotonic())
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
        """Take in the workers' messages until ``stop`` is set; restart silent workers."""
        waiting = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.create_task(self._inbox.get())
                await asyncio.wait({getting, waiting}, timeout=1.0, return_when="FIRST_COMPLETED")
                if getting.done():
                    await self._handle(*getting.result())
                else:
                    getting.cancel()
                self._kill_stalled()
        finally:
            waiting.cancel()

    async def stop(self) -> None:
        """Ask every worker to stop, take in their last windows and report everything."""
        self._stopping = True
        for task in self._restarts:
            task.cancel()
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
            await self._reap(child)
            child.conn.close()
        now = self._window_start(self.clock.time())  # through the current window, whose held
        await self._report_before(max(self._merger.last_start(), now) + self.settings.window)
        self.close_sockets()

    async def _reap(self, child: _Child) -> None:
        """Wait for a worker to exit; kill it if it does not."""
        await asyncio.to_thread(child.process.join, 5.0)
        if child.process.is_alive():
            child.process.kill()
            await asyncio.to_thread(child.process.join, 5.0)

    async def _handle(self, worker: int, message: Message | None) -> None:
        child = self._children[worker]
        child.heard_at = self.clock.monotonic()
        if message is None:
            await self._lost(worker, child)
        elif isinstance(message, Closed):
            self._merger.add(message.snapshot)
            self._count(message)
        elif isinstance(message, Progress):
            child.open_from = message.open_from
            child.pause = RESTART_PAUSE  # it works: a later death restarts it quickly
            self.metrics.add_totals(worker, message.totals)
            limit = self._merge_limit()
            if limit is not None:
                await self._report_before(limit)
        elif isinstance(message, Done):
            child.done = True
            self._count_ready()
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

    def _kill_stalled(self) -> None:
        """A worker that has said nothing for STALL_AFTER seconds (it reports every second)
        holds back every window: kill it, and it is started again like one that died."""
        now = self.clock.monotonic()
        for worker, child in self._children.items():
            if not child.done and now - child.heard_at > STALL_AFTER and child.process.is_alive():
                logger.error(
                    "worker %d silent for %.0f s: killing it", worker, now - child.heard_at
                )
                child.process.kill()
                child.heard_at = now  # once; its end of the pipe closing does the rest

    async def _lost(self, worker: int, child: _Child) -> None:
        child.done = True
        self._count_ready()
        if self._stopping:
            return
        await self._reap(child)
        child.conn.close()
        # Doubling pauses while it dies before reporting progress (a crash at start).
        pause = child.pause if child.open_from is not None else min(child.pause * 2, 30.0)
        logger.error(
            "worker %d exited (exit code %s); what it had not reported is lost; "
            "starting it again in %.0f s",
            worker,
            child.process.exitcode,
            pause,
        )
        self.metrics.worker_restarts.inc()
        task = asyncio.create_task(self._restart_later(worker, pause))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)
        limit = self._merge_limit()  # the others may now be complete
        if limit is not None:
            await self._report_before(limit)

    async def _restart_later(self, worker: int, pause: float) -> None:
        await asyncio.sleep(pause)
        if not self._stopping:
            self._spawn(worker)
            self._children[worker].pause = pause

    def _merge_limit(self) -> int | None:
        """Windows before this start are complete: every live worker has moved past them.
        None while a live worker has not reported its progress yet."""
        froms = [c.open_from for c in self._children.values() if not c.done]
        if not froms or any(f is None for f in froms):
            return None
        return min(f for f in froms if f is not None)

    async def _report_before(self, limit: int) -> None:
        """Report every merged window that starts before ``limit``."""
        for merged in self._merger.merge_before(limit):
            start = merged.snapshot.start
            figures = self._cardinality.pop(start, Cardinality())
            if merged.conflicts:
                self.metrics.samples_dropped.labels("type_conflict").inc(merged.conflicts)
            try:
                await self._report(merged.snapshot, figures)
            except Exception:  # a bug must not stop later windows from being reported
                logger.exception("reporting merged window start=%d failed", start)
        late = self._merger.take_late()
        if late:
            self.metrics.samples_dropped.labels("late").inc(late)
            logger.warning("a worker's samples came after their window was reported: %d", late)


def _total_drops(sockets: list[socket.socket]) -> int | None:
    found = [kernel_drops(sock) for sock in sockets]
    known = [n for n in found if n is not None]
    return sum(known) if known else None
