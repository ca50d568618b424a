"""One intake worker of ``--workers N``: a process that receives, parses and aggregates.

The parent (``gateway.pool``) binds every socket and passes each worker its own; the UDP
sockets share one port through ``SO_REUSEPORT``.  A worker runs the same ``Intake`` as the
single-process gateway, and instead of turning its closed windows into points it sends
them to the parent, which merges the workers' windows (``gateway.merge``) and delivers.

Messages go over a ``multiprocessing`` pipe, pickled, in this order per worker: ``Ready``
once; then ``Closed`` for each closed window, and ``Progress`` every second and after each
close (nothing more will come for windows before ``open_from``; the counter totals); at
the end ``Done``.  The parent writes ``STOP``; a worker whose parent has gone (the pipe
closes) stops too.  Workers ignore SIGINT and SIGTERM: a Ctrl-C reaches the whole process
group, and the parent decides when they stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import pickle
import signal
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry

from gateway.aggregator import EVICT_SLICE
from gateway.clock import SystemClock
from gateway.config import Settings
from gateway.encoder import give_way, in_slices
from gateway.intake import Intake
from gateway.listener import DatagramListener, any_pending, stop_receiving
from gateway.logs import setup_logging
from gateway.loops import event_loop
from gateway.malloc import tune_allocator, tune_collector
from gateway.metrics import CounterTotals, GatewayMetrics
from gateway.window import WindowSnapshot

logger = logging.getLogger(__name__)

STOP = "stop"
PROGRESS_EVERY = 1.0
"""Seconds between ``Progress`` messages: how stale the parent's ``/metrics`` may be."""


@dataclass(frozen=True, slots=True)
class Ready:
    worker: int


@dataclass(frozen=True, slots=True)
class Closed:
    """One window the worker closed, and its series figures as of the close."""

    worker: int
    snapshot: WindowSnapshot
    live_series: int
    created: Counter[str]
    refused: Counter[str]


@dataclass(frozen=True, slots=True)
class Progress:
    """Nothing more will come for windows that start before ``open_from``."""

    worker: int
    open_from: int
    totals: CounterTotals


@dataclass(frozen=True, slots=True)
class Done:
    worker: int


Message = Ready | Closed | Progress | Done


def worker_main(
    worker: int,
    settings: Settings,
    sockets: list[tuple[str, socket.socket]],
    conn: Connection,
) -> None:
    """The worker process's entry point (``multiprocessing`` spawns it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    setup_logging(settings.log_level, settings.log_format)
    tune_allocator(os.environ)  # a spawned worker is a fresh interpreter
    tune_collector()
    loop = event_loop(settings.event_loop)
    factory = None if isinstance(loop, str) else loop.factory  # the parent checked it
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_Worker(worker, settings, sockets, conn).run())
    except (BrokenPipeError, ConnectionResetError):  # the parent is gone: nobody to report to
        logger.warning("worker %d: the parent process is gone; exiting", worker)


class _Worker:
    def __init__(
        self,
        worker: int,
        settings: Settings,
        sockets: list[tuple[str, socket.socket]],
        conn: Connection,
    ) -> None:
        self.worker = worker
        self.clock = SystemClock()
        self.metrics = GatewayMetrics(CollectorRegistry())
        self.intake = Intake(settings, self.metrics, self.clock.time())
        self.aggregator = self.intake.aggregator
        self.listeners = [
            DatagramListener(name, sock, functools.partial(self.intake.on_batch, name), self.clock)
            for name, sock in sockets
        ]
        self._conn = conn
        self._sending = asyncio.Lock()

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._watch_parent, args=(loop, stop), name="parent-watch", daemon=True
        ).start()
        for listener in self.listeners:
            await listener.open()
        receiving = [asyncio.create_task(listener.run()) for listener in self.listeners]
        await self._send(Ready(self.worker))
        await self._send_progress()
        await self._close_due(stop)
        await stop_receiving(self.listeners, receiving)
        await self._send_closed(self.aggregator.close_all(self.clock.time()))
        await self._send(Done(self.worker))

    def _watch_parent(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """Block on the pipe; a STOP, or the parent going away, stops the worker."""
        with contextlib.suppress(EOFError, OSError):
            while self._conn.recv() != STOP:
                pass
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop.set)

    async def _close_due(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = self.aggregator.next_close_time() - self.clock.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(delay, PROGRESS_EVERY))
                await self._send_progress()
                continue
            await self._send_closed(self.aggregator.close(self.clock.time()))
            evict = functools.partial(self.aggregator.evict_idle, EVICT_SLICE)
            await in_slices(evict, self.clock, functools.partial(self._give_way, stop))

    async def _give_way(self, stop: asyncio.Event, spent: float) -> None:
        """Intake's turn between slices of evicting idle series (see gateway.encoder); none
        once stopping, when the worker should drain and send its last window instead."""
        if stop.is_set():
            await asyncio.sleep(0)
            return
        behind = functools.partial(any_pending, self.listeners)
        await give_way(spent, self.clock, behind, catching_up=False)

    async def _send_closed(self, snapshots: list[WindowSnapshot]) -> None:
        for snapshot in snapshots:
            created, refused = self.aggregator.take_tallies()
            live = self.aggregator.live_series
            await self._send(Closed(self.worker, snapshot, live, created, refused))
        await self._send_progress()
        if snapshots:
            gc.freeze()  # as in gateway.app: what survives a window leaves the collector's scans

    async def _send_progress(self) -> None:
        totals = self.metrics.counter_totals()
        await self._send(Progress(self.worker, self.aggregator.open_from, totals))

    async def _send(self, message: Message) -> None:
        # Pickled here (fast, in C); written from a thread, which lets the loop read the
        # socket while a large window goes down the pipe.
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._sending:
            await asyncio.to_thread(self._conn.send_bytes, data)
