"""statsd-gateway: StatsD over UDP in, 60-second windows out to JD Cloud putMetricData."""

__version__ = "0.1.0"
