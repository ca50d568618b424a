"""Log handlers, set up once by the CLI: plain text, or one JSON object per line (Kubernetes)."""

from __future__ import annotations

import json
import logging
import sys
import time

from gateway.clock import Clock


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Each request is logged by the gateway with its outcome; httpx's own line repeats it.
    for name in ("aiohttp", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class LogLimiter:
    """Allows at most ``per_minute`` log lines a minute; says how many were held back."""

    def __init__(self, clock: Clock, *, per_minute: int) -> None:
        self._clock = clock
        self._per_minute = per_minute
        self._minute = -1
        self._used = 0
        self.suppressed = 0

    def allow(self) -> bool:
        minute = int(self._clock.monotonic() // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0
        if self._used < self._per_minute:
            self._used += 1
            return True
        self.suppressed += 1
        return False
