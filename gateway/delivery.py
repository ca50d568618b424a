"""The delivery loop (CONTRACT 6): a bounded backlog, paced, with an optional spool.

``Delivery`` keeps the ``Outbox`` and sends the oldest body when its send delay, the pause
after a failure (``gateway.policy``) and the token bucket all allow.  It never gives up on a
body that can still be delivered; what it drops (backlog full, too old, spool full or
corrupt, or left at shutdown without a spool) is counted by reason.  With a spool, pending
bodies are written to disk after a failed attempt and at shutdown, and read back at the next
start.  Sleeps go through the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from gateway.batches import Body
from gateway.clock import Clock
from gateway.listener import INTAKE_PAUSE
from gateway.metrics import GatewayMetrics
from gateway.outbox import Drop, Outbox, Pending, TokenBucket
from gateway.policy import Action
from gateway.sinks import Attempt, Sink
from gateway.spool import Spool, SpoolEntry, SpoolError, SpoolStats

logger = logging.getLogger(__name__)

FAILING_AFTER = 3
"""Consecutive failed attempts after which ``/readyz`` reports delivery as failing."""


class Delivery:
    """The sending loop over a bounded backlog, paced, with an optional spool.

    Only the event loop touches the outbox.  Spool file I/O runs in worker threads, one
    batch at a time under ``_disk``; what it returns is applied back on the event loop.
    """

    def __init__(
        self,
        sink: Sink,
        clock: Clock,
        metrics: GatewayMetrics,
        *,
        max_points: int,
        max_age: float,
        per_minute: float | None,
        send_jitter: float,
        spool: Spool | None = None,
        rng: Callable[[], float] = random.random,
        intake_behind: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sink = sink
        self._intake_behind = intake_behind
        self._clock = clock
        self._metrics = metrics
        self._outbox = Outbox(max_points=max_points, max_age=max_age)
        # None: no pacing (stdout has no quota); else the account's request budget.
        self._bucket = TokenBucket(per_minute, clock.monotonic()) if per_minute else None
        self._jitter = rng() * send_jitter  # one delay per process, so nodes spread out
        self._spool = spool
        self._disk = asyncio.Lock()
        self._paused_until = 0.0
        self._failures = 0
        self._held = False
        self._wake = asyncio.Event()
        self._deadline: float | None = None
        self._stopping = asyncio.Event()

    def begin_shutdown(self, timeout: float) -> None:
        """From now on every attempt, the one under way included, ends by the deadline."""
        self._deadline = self._clock.monotonic() + timeout
        self._stopping.set()

    @property
    def failing(self) -> bool:
        """Failing persistently: 3 failed attempts in a row, or refused credentials."""
        return self._held or self._failures >= FAILING_AFTER

    @property
    def pending_points(self) -> int:
        return self._outbox.points

    async def enqueue(self, bodies: list[Body], timestamp: int, *, delay: bool = True) -> None:
        """Queue one window's bodies; they go after the per-process send delay."""
        ready_at = self._clock.monotonic() + (self._jitter if delay else 0.0)
        dropped: list[Pending] = []
        for body in bodies:
            dropped += self._outbox.add(Pending(body, timestamp, ready_at))
        await self._drop(dropped, Drop.BACKLOG_FULL)
        self._update_gauges()
        self._wake.set()

    async def resume_spooled(self) -> None:
        """At start: queue what an earlier process left in the spool, oldest first."""
        if self._spool is None:
            return
        entries, stats = await asyncio.to_thread(self._spool.scan)
        self.count_spool(stats)
        dropped: list[Pending] = []
        for entry in entries:
            dropped += self._outbox.add(
                Pending(Body(b"", entry.points), entry.timestamp, 0.0, entry)
            )
        await self._drop(dropped, Drop.BACKLOG_FULL)
        if entries:
            logger.info("spool: resuming bodies=%d points=%d", len(entries), self._outbox.points)
        self._update_gauges()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set; an attempt under way is finished first."""
        while not stop.is_set():
            try:
                wait = await self._step(honour_jitter=True)
            except Exception:  # a bug must not stop delivery for good: log it, go on
                logger.exception("delivery step failed; retrying in 1 s")
                self._failures += 1
                wait = 1.0
            if wait == 0:
                if self._intake_behind():
                    # A lost datagram is lost for good; a body can wait.  Up to 500
                    # bodies a second go while intake is behind (a window of a million
                    # series is 20,000 bodies, sent in one burst to stdout).
                    await asyncio.sleep(INTAKE_PAUSE)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_for(stop), wait)

    async def _wait_for(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def finish(self, timeout: float) -> None:
        """Shutdown: send what is pending (no send delay) until done or ``timeout`` passes;
        then spool what is left, or log it as lost."""
        if self._deadline is None:
            self.begin_shutdown(timeout)
        deadline = self._deadline
        assert deadline is not None
        while True:
            wait = await self._step(honour_jitter=False)
            if wait is None or self._clock.monotonic() + wait >= deadline:
                break
            if wait > 0:
                await self._clock.sleep(wait)
        if not self._outbox.points:
            return
        if self._spool is not None:
            await self._spool_pending()
        kept = sum(item.body.points for item in self._outbox if item.spooled is not None)
        lost = self._outbox.points - kept
        if kept:
            logger.warning("shutdown: points left in the spool for the next start count=%d", kept)
        if lost:
            logger.error(
                "shutdown timeout: points not delivered count=%d after %.1fs", lost, timeout
            )
            self._metrics.points_dropped.labels("shutdown").inc(lost)
        self._outbox.clear()
        self._update_gauges()

    async def _step(self, *, honour_jitter: bool) -> float | None:
        """Attempt the oldest body if it may go now; else how long to wait (None: empty)."""
        await self._drop(self._outbox.expire(self._clock.time()), Drop.TOO_OLD)
        item = self._outbox.first()
        if item is None:
            self._update_gauges()
            return None
        now = self._clock.monotonic()
        ready = max(item.ready_at if honour_jitter else now, self._paused_until)
        wait = max(ready - now, self._bucket.delay(now) if self._bucket else 0.0)
        if wait > 0:
            return wait
        self._outbox.in_flight = item
        try:
            body = await self._body(item)
            if body is None:
                return 0.0
            if self._bucket:
                self._bucket.take(now)
            attempt = await self._bounded_attempt(body)
        finally:
            self._outbox.in_flight = None
        self._record(attempt)
        if attempt.action.final:
            self._outbox.remove(item)
            await self._forget([item])
            if attempt.action is not Action.REJECTED:
                self._failures, self._held = 0, False
                if self._bucket:
                    self._bucket.succeeded()
        else:
            self._failures += 1
            self._held = attempt.action is Action.HOLD
            self._paused_until = self._clock.monotonic() + attempt.delay
            if attempt.status == "429" and self._bucket:
                self._bucket.throttled()
            if self._spool is not None:  # the API cannot be reached now: keep the backlog on disk
                await self._spool_pending()
        self._update_gauges()
        return 0.0

    async def _bounded_attempt(self, body: Body) -> Attempt:
        """One attempt; once shutdown has begun it is cut short at the deadline and counts
        as not delivered (it may have reached the API: then it is sent again, same values)."""
        task = asyncio.ensure_future(self._sink.attempt(body))
        if self._deadline is None:
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if task.done():
                return task.result()
        assert self._deadline is not None
        try:
            return await asyncio.wait_for(task, max(0.0, self._deadline - self._clock.monotonic()))
        except TimeoutError:
            logger.warning("shutdown deadline reached during a request; it is kept as pending")
            return Attempt(Action.RETRY, "error", delay=0.0)

    async def _body(self, item: Pending) -> Body | None:
        if item.body.data or item.spooled is None or self._spool is None:
            return item.body
        try:
            data = await asyncio.to_thread(self._spool.read, item.spooled)
        except SpoolError as exc:
            logger.error("spool: cannot read a pending body: %s", exc)
            data = None
        if data is None:  # moved aside as corrupt by the spool, which counted it
            self._outbox.remove(item)
            self.count_spool(self._spool.stats_since_last())
            return None
        return Body(data, item.body.points)

    async def _spool_pending(self) -> None:
        """Write every pending body that is only in memory to the spool (off the loop)."""
        assert self._spool is not None
        spool = self._spool
        async with self._disk:
            todo = [item for item in self._outbox if item.spooled is None]
            if not todo:
                return
            bodies = [(item.body.data, item.body.points, item.timestamp) for item in todo]
            written, stats, error = await asyncio.to_thread(_put_all, spool, bodies)
            if error:
                logger.error("spool: cannot write pending points: %s", error)
            self.count_spool(stats)
            self.count_spool(spool.stats_since_last())
            gone = []
            for item, entry in zip(todo, written, strict=False):
                if entry is None:  # refused by the spool (counted in stats): cannot be kept
                    self._outbox.remove(item)
                elif item not in self._outbox:  # dropped while it was being written
                    gone.append(entry)
                else:  # still pending: keep it on disk only
                    item.spooled = entry
                    item.body = Body(b"", item.body.points)
            evicted = {entry.seq for entry in stats.dropped_entries}
            for item in list(self._outbox):  # entries the full spool dropped are gone for good
                if item.spooled is not None and item.spooled.seq in evicted:
                    self._outbox.remove(item)
            if gone:
                await asyncio.to_thread(_remove_all, spool, gone)

    async def _forget(self, items: list[Pending]) -> None:
        """Remove the spool files of bodies that are done with (off the loop)."""
        entries = [item.spooled for item in items if item.spooled is not None]
        if self._spool is not None and entries:
            async with self._disk:
                error = await asyncio.to_thread(_remove_all, self._spool, entries)
            if error:
                logger.error("spool: cannot remove delivered bodies: %s", error)

    def count_spool(self, stats: SpoolStats) -> None:
        m = self._metrics
        if stats.dropped_full_points:
            m.points_dropped.labels("spool_full").inc(stats.dropped_full_points)
        if stats.corrupt_files:
            m.spool_corrupt_files.inc(stats.corrupt_files)
            m.points_dropped.labels("spool_corrupt").inc(stats.corrupt_points or 0)

    def _record(self, attempt: Attempt) -> None:
        m = self._metrics
        m.requests.labels(attempt.status).inc()
        m.request_seconds.observe(attempt.seconds)
        m.points_sent.inc(attempt.delivered)
        if attempt.rejected:
            m.points_rejected.labels("api").inc(attempt.rejected)

    async def _drop(self, items: list[Pending], reason: Drop) -> None:
        if not items:
            return
        points = sum(item.body.points for item in items)
        self._metrics.points_dropped.labels(reason.value).inc(points)
        logger.warning("points dropped reason=%s count=%d", reason.value, points)
        await self._forget(items)

    def _update_gauges(self) -> None:
        m = self._metrics
        m.pending_points.set(self._outbox.points)
        oldest = self._outbox.oldest_timestamp()
        m.oldest_pending_age.set(0 if oldest is None else max(0.0, self._clock.time() - oldest))
        m.request_rate_factor.set(self._bucket.factor if self._bucket else 1.0)


def _put_all(
    spool: Spool, bodies: list[tuple[bytes, int, int]]
) -> tuple[list[SpoolEntry | None], SpoolStats, str | None]:
    """Runs in a worker thread: store each body; stops at the first disk error."""
    written: list[SpoolEntry | None] = []
    total = SpoolStats()
    for data, points, timestamp in bodies:
        try:
            entry, stats = spool.put(data, points=points, timestamp=timestamp)
        except SpoolError as exc:
            return written, total, str(exc)
        total.add(stats)
        written.append(entry)
    return written, total, None


def _remove_all(spool: Spool, entries: list[SpoolEntry]) -> str | None:
    """Runs in a worker thread: unlink delivered or dropped bodies."""
    try:
        for entry in entries:
            spool.remove(entry)
    except (SpoolError, OSError) as exc:
        return str(exc)
    return None
