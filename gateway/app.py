"""Wiring: the one place that knows every stage, and the gateway's lifecycle.

    listener --batches--> parser --columns--> aggregator --snapshots--> points --> bodies
        --> outbox --> sink (stdout or the JD Cloud client)

Intake runs in the event loop.  A closed window is turned into bodies in the loop too,
1,024 rows at a time, giving way to intake after each slice for as long as datagrams wait
(``gateway.encoder``), so intake never stops for long while a window is reported; a delivery
task drains the outbox, and also waits while intake is behind.  Each stage returns what
happened (rejects, conflicts, invalid points, send results) and this module counts
it in ``GatewayMetrics``.

On SIGTERM or SIGINT (CONTRACT 7): stop reading, take in what was already received, close
every window up to and including the open one (with ``--spool-dir``: save the open ones
instead), deliver until ``--shutdown-timeout``, spool or count what is left, return 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import socket
from collections import Counter
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway import window_state
from gateway.aggregator import EVICT_SLICE, Aggregator
from gateway.batches import Body
from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.delivery import Delivery
from gateway.encoder import encode, give_way, in_slices
from gateway.health import HealthServer
from gateway.intake import Intake
from gateway.listener import DatagramListener, any_pending, stop_receiving
from gateway.metrics import GatewayMetrics
from gateway.points import BuildResult, PointBuilder
from gateway.pool import Cardinality, WorkerPool
from gateway.rules import Limits
from gateway.sinks import Sink
from gateway.sockets import kernel_drops, open_udp_socket, open_unix_socket
from gateway.spool import Spool, SpoolError
from gateway.window import WindowSnapshot
from gateway.window_state import AggregatorState

logger = logging.getLogger(__name__)

TOP_PREFIXES = 10
"""How many metric prefixes ``/metrics`` names for new and refused series."""


class Gateway:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = GatewayMetrics(registry or CollectorRegistry())
        self._sink = sink
        self.intake = Intake(settings, self.metrics, self.clock.time())
        self.aggregator = self.intake.aggregator
        self._builder = PointBuilder(
            namespace=settings.namespace,
            point_type=settings.point_type,
            limits=Limits(
                max_dimensions=settings.max_dimensions,
                max_dimension_bytes=settings.max_dimension_bytes,
            ),
        )
        self._spool = (
            Spool(Path(settings.spool_dir), max_bytes=settings.spool_max_bytes)
            if settings.spool_dir
            else None
        )
        to_stdout = settings.endpoint == "stdout"
        self.delivery = Delivery(
            sink,
            self.clock,
            self.metrics,
            max_points=settings.max_pending_points,
            max_age=settings.max_point_age,
            # Pacing and the send delay share an account's API quota; stdout has none.
            per_minute=None if to_stdout else settings.max_requests_per_minute,
            send_jitter=0.0 if to_stdout else settings.send_jitter,
            spool=self._spool,
            intake_behind=self._intake_behind,
        )
        self._pool = (
            WorkerPool(settings, self.metrics, self.clock, self._report_one)
            if settings.workers > 1
            else None
        )
        self._state = "starting"
        self.listeners: list[DatagramListener] = []
        self.health: HealthServer | None = None

    # --- windows -------------------------------------------------------------------------

    async def close_windows(self, stop: asyncio.Event) -> None:
        """Close each window when its grace has passed, until ``stop`` is set."""
        while not stop.is_set():
            delay = self.aggregator.next_close_time() - self.clock.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(delay, 1.0))
                continue
            try:
                await self.report(self.aggregator.close(self.clock.time()))
                evict = functools.partial(self.aggregator.evict_idle, EVICT_SLICE)
                await in_slices(evict, self.clock, self._give_way)
            except Exception:  # a bug must not stop windows from closing: log it, go on
                logger.exception("reporting a closed window failed")

    async def report(self, snapshots: list[WindowSnapshot]) -> None:
        """Report windows this process aggregated."""
        for snapshot in snapshots:
            aggregator = self.aggregator
            figures = Cardinality(aggregator.live_series, *aggregator.take_tallies())
            await self._report_one(snapshot, figures)

    async def _report_one(self, snapshot: WindowSnapshot, figures: Cardinality) -> None:
        """Turn one closed window (this process's, or merged from workers) into bodies."""
        started = self.clock.monotonic()
        bodies, built, points = await self._encode(snapshot)
        m = self.metrics
        m.window_close_seconds.observe(self.clock.monotonic() - started)
        m.windows_closed.inc()
        m.live_series.set(figures.live)
        self._report_cardinality(figures.created, figures.refused)
        m.points_built.inc(points)
        m.values_clamped.inc(built.clamped)
        if built.invalid:
            m.points_dropped.labels("invalid").inc(built.invalid)
            logger.error(
                "points dropped as invalid count=%d window=%d examples=%s",
                built.invalid,
                snapshot.start,
                built.problems,
            )
        await self.delivery.enqueue(bodies, snapshot.start, delay=self._state == "ready")
        # What survived a window (series keys, cache entries) lives on: take it out of
        # the cyclic collector's reach, or every full collection walks it all in the
        # event loop (see gateway.encoder). It is freed by reference counting as usual.
        gc.freeze()
        logger.info(
            "window closed start=%d series=%d points=%d requests=%d",
            snapshot.start,
            len(snapshot),
            points,
            len(bodies),
        )

    def _report_cardinality(self, created: Counter[str], refused: Counter[str]) -> None:
        """Name the metric prefixes that create the most series (and hit --max-series)."""
        m = self.metrics
        m.series_created_top.clear()
        for name, count in created.most_common(TOP_PREFIXES):
            m.series_created_top.labels(name).set(count)
        m.series_refused_top.clear()
        for name, count in refused.most_common(TOP_PREFIXES):
            m.series_refused_top.labels(name).set(count)
        if refused:
            logger.warning(
                "series limit reached max_series=%d: samples of new series refused=%d; "
                "top prefixes: %s",
                self.settings.max_series,
                sum(refused.values()),
                ", ".join(f"{name}={count}" for name, count in refused.most_common(5)),
            )
        elif created and sum(created.values()) >= self.settings.max_series // 10:
            logger.info(
                "many new series in one window count=%d; top prefixes: %s",
                sum(created.values()),
                ", ".join(f"{name}={count}" for name, count in created.most_common(5)),
            )

    async def _encode(self, snapshot: WindowSnapshot) -> tuple[list[Body], BuildResult, int]:
        return await encode(snapshot, self._builder, self.clock, self._give_way)

    async def _give_way(self, spent: float) -> None:
        """Intake's turn after an encoding slice; none once stopping (a million series
        would spend seconds of the shutdown deadline in pauses)."""
        if self._state != "ready" or not self.listeners:
            await asyncio.sleep(0)
            return
        catching_up = self.aggregator.next_close_time() <= self.clock.time()
        await give_way(spent, self.clock, self._intake_behind, catching_up=catching_up)

    def _intake_behind(self) -> bool:
        """Whether a datagram waits unread in one of this process's sockets."""
        return any_pending(self.listeners)

    def readiness(self) -> tuple[bool, str]:
        if self._state != "ready":
            return False, self._state
        if self.delivery.failing:
            return False, "delivery failing"
        return True, "ready"

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener; raises StartupError (exit 2) when one cannot be bound."""
        s = self.settings
        if self._pool is not None:
            self._pool.bind()
            try:
                await self._start_health()
            except BaseException:
                self._pool.close_sockets()
                raise
            return
        try:
            if s.udp is not None:
                udp, granted = open_udp_socket(s.udp, s.udp_rcvbuf)
                self.metrics.udp_rcvbuf.set(granted)
                self.metrics.watch_kernel_drops(lambda: kernel_drops(udp))
                self._listen("udp", udp)
            if s.unix is not None:
                unix, _ = open_unix_socket(s.unix, s.unix_mode, s.udp_rcvbuf)
                self._listen("unix", unix)
            await self._start_health()
        except BaseException:
            for listener in self.listeners:
                listener.socket.close()
            raise

    async def _start_health(self) -> None:
        if self.settings.http is not None:
            self.health = HealthServer(self.settings.http, self.metrics.registry, self.readiness)
            await self.health.start()

    def _listen(self, name: str, sock: socket.socket) -> None:
        on_batch = functools.partial(self.intake.on_batch, name)
        listener = DatagramListener(name, sock, on_batch, self.clock)
        self.listeners.append(listener)
        logger.info("%s listening address=%s", name, listener.address)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down as CONTRACT 7 says."""
        await self._resume()
        if self._pool is not None:
            await self._run_workers(self._pool, stop)
            return
        for listener in self.listeners:
            await listener.open()
        receiving = [asyncio.create_task(listener.run()) for listener in self.listeners]
        closing = asyncio.create_task(self.close_windows(stop))
        delivering = asyncio.create_task(self.delivery.run(stop))
        self._state = "ready"
        logger.info(
            "gateway started window=%ds endpoint=%s", self.settings.window, self.settings.endpoint
        )
        await stop.wait()
        logger.info("stopping: draining intake and closing the open window")
        self._state = "stopping"
        await stop_receiving(self.listeners, receiving)
        self.delivery.begin_shutdown(self.settings.shutdown_timeout)
        await closing
        await delivering  # it stops after the attempt under way, cut short at the deadline
        await self._close_or_save(self.clock.time())
        await self._finish()

    async def _run_workers(self, pool: WorkerPool, stop: asyncio.Event) -> None:
        """``--workers N``: the workers receive and aggregate; this process merges, reports
        and delivers.  At a stop every window is reported (the open one is not saved)."""
        if self._spool is not None:
            logger.warning(
                "--workers with --spool-dir: pending bodies are spooled, but the open window "
                "is reported at a stop rather than saved (docs/delivery.md)"
            )
        try:
            await pool.start()
        except BaseException:
            await pool.stop()
            raise
        serving = asyncio.create_task(pool.run(stop))
        delivering = asyncio.create_task(self.delivery.run(stop))
        self._state = "ready"
        logger.info(
            "gateway started window=%ds endpoint=%s workers=%d",
            self.settings.window,
            self.settings.endpoint,
            self.settings.workers,
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():  # the pool's task ended on its own: a bug; stop, not run blind
            logger.critical("the worker pool stopped unexpectedly: %r", serving.exception())
            stop.set()
        logger.info("stopping: the workers drain intake and close the open window")
        self._state = "stopping"
        with contextlib.suppress(Exception):
            await serving  # what it raised is logged above
        self.delivery.begin_shutdown(self.settings.shutdown_timeout)
        try:
            await pool.stop()  # the workers' last windows are merged and queued
        finally:
            await delivering
            await self._finish()

    async def _finish(self) -> None:
        await self.delivery.finish(self.settings.shutdown_timeout)
        if self.health is not None:
            await self.health.stop()
        await self._sink.aclose()
        if self._spool is not None:
            self._spool.close()

    async def _close_or_save(self, now: float) -> None:
        """Without a spool, report every window now; with one, save the open windows."""
        if self._spool is None:
            await self.report(self.aggregator.close_all(now))
            return
        await self.report(self.aggregator.close(now))  # what is due is reported as usual
        self.aggregator.evict_idle()  # idle series need not be saved
        saved = self.aggregator.export_state()
        if not saved.windows and not saved.gauge_live.any():
            return  # nothing open, nothing held: no state to keep
        try:
            state = window_state.dump(saved)
            await asyncio.to_thread(self._spool.save_state, state)
        except SpoolError as exc:
            logger.error("spool: cannot save the open window (%s); reporting it now", exc)
            await self.report(self.aggregator.close_all(now))
        else:
            logger.info("open window saved to the spool series=%d", self.aggregator.series)

    async def _resume(self) -> None:
        """With a spool: queue the bodies and take over the windows an earlier run left."""
        if self._spool is None:
            return
        await self.delivery.resume_spooled()
        data = await asyncio.to_thread(self._spool.load_state)
        self.delivery.count_spool(self._spool.stats_since_last())  # a corrupt state file
        if data is None:
            return
        try:
            saved = window_state.load(data)
        except ValueError as exc:
            logger.error("spool: saved window unreadable, not resumed: %s", exc)
            self.metrics.spool_corrupt_files.inc()
        else:
            await self._take_over(saved)
        await asyncio.to_thread(self._spool.clear_state)

    async def _take_over(self, saved: AggregatorState) -> None:
        if saved.length == self.aggregator.length and self._pool is None:
            self.aggregator.restore_state(saved, self.clock.time())
            logger.info(
                "spool: resumed saved windows series=%d starts=%s",
                len(saved.keys),
                sorted(saved.windows),
            )
            return
        # --window changed between runs, or --workers now splits intake over processes:
        # report the saved windows at once, as they were.
        logger.warning(
            "spool: saved windows (%d s long) cannot be resumed with window=%d s workers=%d: "
            "reporting them now",
            saved.length,
            self.aggregator.length,
            self.settings.workers,
        )
        old = Aggregator(
            window=saved.length,
            grace=self.settings.window_grace,
            gauge_ttl=self.settings.gauge_ttl,
            now=saved.next_close,
        )
        old.restore_state(saved, saved.next_close)
        await self.report(old.close_all(max(saved.windows, default=saved.next_close)))
