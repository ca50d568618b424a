"""Which event loop runs the gateway (``--event-loop``): uvloop or asyncio's own.

uvloop is a dependency on Linux, and asyncio's loop is the fallback where it is not
installed.  The listener reads its sockets with a transport of its own on either loop
(``gateway.listener.DrainingTransport``), so reading a datagram costs about the same on
both (``bench/handover.py``: 1.52 µs a datagram on uvloop, 1.55 µs on asyncio's loop, on
2026-12-08).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventLoop:
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    """None: asyncio's own loop."""
    description: str


def event_loop(choice: str) -> EventLoop | str:
    """The loop ``--event-loop`` asks for, or the one-line problem when it cannot be had.

    auto: uvloop when it is installed (a dependency on Linux), else asyncio's own loop.
    """
    if choice == "asyncio":
        return EventLoop(None, "asyncio (--event-loop asyncio)")
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            return "--event-loop uvloop: uvloop is not installed (pip install uvloop)"
        return EventLoop(None, "asyncio (uvloop is not installed)")
    return EventLoop(uvloop.new_event_loop, "uvloop")
