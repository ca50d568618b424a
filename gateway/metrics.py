"""The gateway's own health figures, on an injected prometheus-client registry (CONTRACT 5).

Every place where data can be lost has a counter named for its reason; ``docs/metrics.md``
lists them all.  Stages never touch these objects: the app reads what each stage returns
(a parsed batch, an add result, a build result, a send result) and counts it here.

No asyncio, no numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.protocol import Ignored, Kind, Reject
from gateway.series import TagDrop

PREFIX = "statsd_gateway"

CounterTotals = dict[tuple[str, tuple[str, ...]], float]
"""Counter values by (name without prefix, label values)."""


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            made = Counter(f"{PREFIX}_{name}", doc, labels, registry=registry)
            self._counters[name] = made
            return made

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, labels, registry=registry)

        # The *_created series double the output and say nothing an operator needs.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        self._counters: dict[str, Counter] = {}
        self._seen: dict[int, CounterTotals] = {}
        Info(f"{PREFIX}_build", "Version of the running gateway.", registry=registry).info(
            {"version": __version__}
        )
        self.datagrams = counter(
            "datagrams_received", "Datagrams read from the StatsD sockets.", ("listener",)
        )
        self.bytes = counter("received_bytes", "Bytes of datagrams read.", ("listener",))
        self.truncated = counter(
            "datagrams_truncated",
            "Datagrams that filled the read buffer and may have been cut (LOSS).",
            ("listener",),
        )
        self.lines = counter("lines_received", "Non-empty StatsD lines received.")
        self.rejected = counter(
            "lines_rejected", "Lines rejected as malformed, by reason (LOSS).", ("reason",)
        )
        self.ignored = counter(
            "lines_ignored", "Events and service checks: valid but not reported.", ("kind",)
        )
        self.samples = counter("samples", "Samples aggregated, by StatsD type.", ("type",))
        self.samples_dropped = counter(
            "samples_dropped",
            "Samples dropped after parsing: late |T stamps, type conflicts (LOSS).",
            ("reason",),
        )
        self.tags_dropped = counter(
            "tags_dropped",
            "Tags that did not become dimensions: static key, count or byte limit (LOSS).",
            ("reason",),
        )
        self.series_created = counter("series_created", "Series seen for the first time.")
        self.series_created_top = gauge(
            "series_created_by_prefix",
            "New series in the last closed window, for the 10 metric prefixes creating most.",
            ("prefix",),
        )
        self.series_refused_top = gauge(
            "series_refused_by_prefix",
            "Samples of new series refused over --max-series in the last closed window, "
            "for the 10 prefixes refused most (LOSS).",
            ("prefix",),
        )
        self.live_series = gauge(
            "live_series", "Series with samples in an open window, or held gauges."
        )
        self.windows_closed = counter("windows_closed", "Windows closed and turned into points.")
        self.window_close_seconds = Histogram(
            f"{PREFIX}_window_close_seconds",
            "Time to turn a closed window into encoded request bodies.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.points_built = counter("points_built", "Points built from closed windows.")
        self.values_clamped = counter(
            "values_clamped", "Values clamped to +-9223372036854775807 (changed, not lost)."
        )
        self.points_sent = counter("points_sent", "Points delivered (or written to stdout).")
        self.points_rejected = counter(
            "points_rejected", "Points the API refused for good (LOSS).", ("reason",)
        )
        self.points_dropped = counter(
            "points_dropped", "Points dropped before delivery, by reason (LOSS).", ("reason",)
        )
        self.requests = counter("requests", "putMetricData requests, by outcome.", ("status",))
        self.request_seconds = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "putMetricData request latency.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.pending_points = gauge("pending_points", "Points built and not yet delivered.")
        self.oldest_pending_age = gauge(
            "oldest_pending_age_seconds", "Age of the oldest pending point (0 when none)."
        )
        self.request_rate_factor = gauge(
            "request_rate_factor",
            "Share of --max-requests-per-minute in force; below 1 after 429 answers.",
        )
        self.spool_corrupt_files = counter(
            "spool_corrupt_files", "Spool files found corrupt or truncated and moved aside."
        )
        self.worker_restarts = counter(
            "worker_restarts", "Intake workers (--workers) that died and were started again."
        )
        self.workers_ready = gauge(
            "workers_ready", "Intake workers running and receiving (--workers)."
        )
        self.udp_rcvbuf = gauge(
            "udp_receive_buffer_bytes", "Receive buffer the kernel granted the UDP socket."
        )
        # Pre-create the labelled children so every reason shows as 0 before it happens.
        for reason in Reject:
            self.rejected.labels(reason.value)
        for ignored in Ignored:
            self.ignored.labels(ignored.value)
        for kind in Kind:
            self.samples.labels(kind.name.lower())
        for drop in ("late", "type_conflict", "series_limit"):
            self.samples_dropped.labels(drop)
        for tag_drop in TagDrop:
            self.tags_dropped.labels(tag_drop.value)
        self.points_dropped.labels("invalid")
        for drop in ("shutdown", "backlog_full", "too_old", "spool_full", "spool_corrupt"):
            self.points_dropped.labels(drop)
        for listener in ("udp", "unix"):
            self.truncated.labels(listener)
            self.datagrams.labels(listener)
            self.bytes.labels(listener)
        self.points_rejected.labels("api")

    def counter_totals(self) -> CounterTotals:
        """Every counter's current value, by (name, label values): what a worker sends."""
        totals: CounterTotals = {}
        for name, made in self._counters.items():
            for family in made.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        totals[(name, tuple(sample.labels.values()))] = sample.value
        return totals

    def add_totals(self, source: int, totals: CounterTotals) -> None:
        """Add what a worker counted since its last report (``forget`` after a restart)."""
        seen = self._seen.setdefault(source, {})
        for (name, labels), value in totals.items():
            delta = value - seen.get((name, labels), 0.0)
            if delta:
                made = self._counters[name]
                (made.labels(*labels) if labels else made).inc(delta)
            seen[(name, labels)] = value

    def forget(self, source: int) -> None:
        """A worker was started again: its next totals count from zero."""
        self._seen.pop(source, None)

    def watch_kernel_drops(self, read: Callable[[], int | None]) -> None:
        """Expose the kernel's drop count for the UDP socket, read at scrape time."""
        self.registry.register(_KernelDrops(read))


class _KernelDrops(Collector):
    def __init__(self, read: Callable[[], int | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        drops = self._read()
        if drops is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_udp_kernel_drops",
                "Datagrams the kernel dropped for the UDP socket: buffer full (LOSS).",
                value=drops,
            )
