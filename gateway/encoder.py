"""A closed window becomes request bodies in the event loop, giving way to intake.

The same pacing serves the rest of a close's work that can be split (``in_slices``:
evicting the series that went idle).

Not in a worker thread: a CPU-bound thread holds the GIL, and the event loop, which gives
it up at every socket read, waits up to the switch interval (5 ms) to get it back, so
intake collapses while a large window is encoded (the convoy effect; the ladder benchmark
lost 15-22 % of single-line datagrams at 100,000 series).  So the window is encoded in
slices of ENCODE_SLICE rows (about 2 ms each), and intake gets the loop between them
(``give_way``).

No sockets of its own: whether intake is behind is asked through a callable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.batches import Body, Packer
from gateway.clock import Clock
from gateway.listener import INTAKE_PAUSE
from gateway.points import BuildResult, PointBuilder
from gateway.window import WindowSnapshot

ENCODE_SLICE = 1024
"""Rows of a closed window encoded at a time (about 2 ms)."""
INTAKE_SHARE_MAX = 9.0
"""While datagrams wait, intake gets up to this many times each slice's time: 90 % of the
loop, so a window still closes within ten times its CPU time."""
INTAKE_SHARE_CATCHING_UP = 1.0
"""The same once the next window is due as well: encoding gets half the loop."""


async def encode(
    snapshot: WindowSnapshot,
    builder: PointBuilder,
    clock: Clock,
    after_slice: Callable[[float], Awaitable[None]],
) -> tuple[list[Body], BuildResult, int]:
    """The window's bodies, what building its points found, and how many points were
    built; ``after_slice(seconds the slice took)`` is awaited after each slice."""
    built, packer, points = BuildResult(), Packer(), 0
    bodies: list[Body] = []
    now = clock.time()
    for part in snapshot.columns(ENCODE_SLICE):
        started = clock.monotonic()
        builder.build_columns(part, snapshot.start, now=now, into=built)
        # Packed as they come: all points and all bodies are never held at once.
        points += len(built.points)
        bodies.extend(packer.feed(built.points))
        built.points.clear()
        await after_slice(clock.monotonic() - started)
    bodies.extend(packer.finish())
    return bodies, built, points


async def in_slices(
    step: Callable[[], bool], clock: Clock, after_slice: Callable[[float], Awaitable[None]]
) -> None:
    """Call ``step()`` until it returns False (nothing left), awaiting ``after_slice(seconds
    the call took)`` after each call that leaves more to do."""
    while True:
        started = clock.monotonic()
        if not step():
            return
        await after_slice(clock.monotonic() - started)


async def give_way(
    spent: float, clock: Clock, intake_behind: Callable[[], bool], *, catching_up: bool
) -> None:
    """Let intake run after an encoding slice that took ``spent`` seconds.

    At least INTAKE_PAUSE, then more while ``intake_behind()``: intake, not the report,
    decides how much of the loop it needs, up to INTAKE_SHARE_MAX times the slice.  A fixed
    share could not fit every load: 40 % of the loop lost 11 % of single-line datagrams at
    50,000/s, and 60 % would lose packed lines at 1 M/s, which need about 75 % of a core.
    ``catching_up``: the next window is due before this one is reported, so closes are
    falling behind and open windows would pile up in memory; intake then gets
    INTAKE_SHARE_CATCHING_UP.
    """
    share = INTAKE_SHARE_CATCHING_UP if catching_up else INTAKE_SHARE_MAX
    until = clock.monotonic() + share * spent
    await asyncio.sleep(INTAKE_PAUSE)
    for _ in range(int(share * spent / INTAKE_PAUSE)):  # bounded by count as well
        if clock.monotonic() >= until or not intake_behind():
            break
        await asyncio.sleep(INTAKE_PAUSE)
