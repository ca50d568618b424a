"""Running the gateway as a process: signals, the garbage collector, start to clean stop.

The first SIGTERM or SIGINT starts the clean stop of CONTRACT 7; a second one, a second
or more later, ends the process at once.  The CLI calls ``serve``; the pipeline itself is
``gateway.app``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

from gateway.app import Gateway
from gateway.config import Settings
from gateway.malloc import tune_collector
from gateway.sinks import Sink

logger = logging.getLogger(__name__)


SECOND_SIGNAL_AFTER = 1.0
"""A signal this soon after the first is the same request (a Ctrl-C that reaches both
``make`` and the gateway, and that ``make`` forwards), not a second one."""


def install_signal_handlers(stop: asyncio.Event) -> Callable[[], None]:
    """The first SIGTERM/SIGINT starts a clean stop; a second one, a second or more
    later, ends the process at once."""
    loop = asyncio.get_running_loop()
    first_at = 0.0

    def second() -> None:
        if time.monotonic() - first_at < SECOND_SIGNAL_AFTER:
            return
        logger.error("second signal: exiting at once, without delivering what is pending")
        os._exit(1)

    def first() -> None:
        nonlocal first_at
        first_at = time.monotonic()
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, second)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, first)

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    return remove


async def serve(settings: Settings, sink: Sink) -> None:
    """Start a gateway, serve until SIGTERM/SIGINT, shut down cleanly."""
    stop = asyncio.Event()
    remove = install_signal_handlers(stop)
    tune_collector()
    try:
        gateway = Gateway(settings, sink)
        await gateway.start()
        await gateway.run(stop)
    finally:
        remove()
