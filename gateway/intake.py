"""Intake: datagrams in, aggregated open windows out, each outcome counted.

One ``Intake`` is what a process that receives StatsD owns: the parser, the aggregator and
the counting of what each of them did with a batch.  The single-process gateway has one
(``gateway.app``); with ``--workers N`` every worker process has one (``gateway.workers``)
and the parent merges their closed windows.

No sockets, no asyncio: listeners call ``on_batch``.
"""

from __future__ import annotations

import logging

from gateway.aggregator import EVICT_SLICE, AddResult, Aggregator
from gateway.config import Settings
from gateway.listener import READ_SIZE
from gateway.metrics import GatewayMetrics
from gateway.parser import ParsedBatch, Parser
from gateway.series import SeriesNamer

logger = logging.getLogger(__name__)

MIN_PARSER_CACHE = 262_144
"""Repeated lines cached by the parser, at least; more when --max-series is larger."""


class Intake:
    def __init__(self, settings: Settings, metrics: GatewayMetrics, now: float) -> None:
        self.metrics = metrics
        namer = SeriesNamer(
            settings.dimensions,
            max_dimensions=settings.max_dimensions,
            max_dimension_bytes=settings.max_dimension_bytes,
        )
        # One cache entry per live series: a series that misses the cache costs about ten
        # times as much to parse, so a cache smaller than the series budget is a cliff.
        self.parser = Parser(namer, cache_size=max(MIN_PARSER_CACHE, settings.max_series))
        self.aggregator = Aggregator(
            window=settings.window,
            grace=settings.window_grace,
            gauge_ttl=settings.gauge_ttl,
            now=now,
            max_series=settings.max_series,
            evict_at_close=EVICT_SLICE,  # the rest: evict_idle, between intake's turns
        )

    def on_batch(self, listener: str, datagrams: list[bytes], arrived_at: float) -> None:
        m = self.metrics
        m.datagrams.labels(listener).inc(len(datagrams))
        m.bytes.labels(listener).inc(sum(map(len, datagrams)))
        if max(map(len, datagrams), default=0) >= READ_SIZE:  # rare: count them then
            m.truncated.labels(listener).inc(sum(1 for d in datagrams if len(d) >= READ_SIZE))
        parsed = self.parser.parse(datagrams)
        self._count_parsed(parsed)
        self._count_added(self.aggregator.add(parsed, arrived_at))

    def _count_parsed(self, parsed: ParsedBatch) -> None:
        m = self.metrics
        m.lines.inc(parsed.lines)
        for reason, n in parsed.rejects.items():
            m.rejected.labels(reason.value).inc(n)
        for kind, n in parsed.ignored.items():
            m.ignored.labels(kind.value).inc(n)
        for tag_reason, n in parsed.dropped_tags.items():
            m.tags_dropped.labels(tag_reason).inc(n)
        if parsed.rejects and logger.isEnabledFor(logging.DEBUG):
            logger.debug("lines rejected %s", dict(parsed.rejects))

    def _count_added(self, added: AddResult) -> None:
        m = self.metrics
        for kind, n in added.samples.items():
            m.samples.labels(kind.name.lower()).inc(n)
        if added.late:
            m.samples_dropped.labels("late").inc(added.late)
        if added.conflicts:
            m.samples_dropped.labels("type_conflict").inc(added.conflicts)
        if added.over_budget:
            m.samples_dropped.labels("series_limit").inc(added.over_budget)
        if added.new_series:
            m.series_created.inc(added.new_series)
