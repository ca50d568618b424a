"""StatsD intake over UDP or a Unix datagram socket, in batches, through asyncio-dgram's stream.

The sockets themselves are opened by ``gateway.sockets``.

The event loops' datagram transports read one datagram per callback into the protocol, with
the sender's address, and asyncio-dgram's protocol and stream then hand out one datagram per
``recv()`` through an ``asyncio.Queue``: together several microseconds a datagram, more than
parsing a single-line datagram.  So the listener gives asyncio-dgram's stream
(``DatagramServer``: ``recv()``, ``close()``, ``TransportClosed``) a transport of its own,
``DrainingTransport``: when the socket becomes readable it reads what the socket holds, up to
``READS_PER_WAKEUP`` datagrams or ``MAX_BATCH_BYTES``, in one plain loop of ``recv`` calls,
and puts the list into a ``DatagramInbox`` in place of the queue.  One ``recv()`` of the
stream then returns every datagram that arrived since the last one, in arrival order.

Datagrams are collected into a batch and handed to ``on_batch(datagrams, arrived_at)`` when
the batch reaches 4,096 datagrams or 1 MiB, or every 10 ms, whichever comes first (a batch
can go past those by what one wake-up read: at most ``READS_PER_WAKEUP`` datagrams and
1 MiB plus one datagram, so at most about 2 MiB in all); the parser then works on whole
batches.  Each batch has a cost of its own in the parser and the aggregator (numpy calls,
dict and set work), so single-line datagrams want large batches: ``bench/pipeline.py
--batch 1024,4096`` put parse+add at 1.15 µs a single-line datagram in batches of 1,024
and 0.79 µs in batches of 4,096 (packed datagrams reach 1 MiB first, at about 750).
``arrived_at`` is the clock time of the batch's first datagram, so a sample's window is its
arrival time to within 10 ms.

A Unix datagram socket (``--unix PATH``, DogStatsD's UDS mode) takes the same lines; its
file is removed on stop.

Moves bytes only: no parsing, no counting, no numpy.  Needs a loop with ``add_reader`` (any
event loop on Linux and macOS; the gateway does not run on Windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any, cast

import asyncio_dgram

from gateway.clock import Clock

logger = logging.getLogger(__name__)

UDP_READ_SIZE = 64 * 1024
"""Bytes asked for per UDP read: more than any UDP payload (65,507 bytes over IPv4, 65,527
over IPv6), so a UDP datagram is never cut, and under glibc's default mmap threshold
(128 KiB), so a read costs no ``mmap`` whatever the allocator's settings."""
READ_SIZE = 256 * 1024
"""Bytes asked for per Unix datagram read (as asyncio's own transport reads): a longer Unix
datagram is cut to this and counted as truncated.  The gateway's allocator tuning
(``gateway.malloc``) keeps these reads on the heap."""
MAX_BATCH_DATAGRAMS = 4096
MAX_BATCH_BYTES = 1 << 20
READS_PER_WAKEUP = 256
"""Most datagrams one wake-up of ``DrainingTransport`` reads (about 0.3 ms of reads), so
that timers and the health server get their turn while the socket stays full."""
FLUSH_INTERVAL = 0.01
INTAKE_PAUSE = 0.002
"""Seconds other work in the loop (encoding, delivery) waits while intake is behind
(``DatagramListener.pending``) before it goes on."""

_NO_BYTES = struct.pack("i", 0)

OnBatch = Callable[[list[bytes], float], None]


class DatagramInbox:
    """Takes the place of asyncio-dgram's receive queue: ``DrainingTransport`` puts lists of
    datagrams in, the stream's ``recv()`` awaits ``get()``.

    ``get()`` returns ``(datagrams, None)``: every datagram put in since the last ``get()``,
    oldest first, as one list (the sender's address is not kept).  After ``close()`` (the
    transport closed), ``get()`` returns what is left and then ``(None, None)``, which the
    stream turns into ``TransportClosed``.  (``recv()`` raises ``TransportClosed`` without
    calling ``get()`` as soon as the transport is closing: the listener closes the stream only
    after ``drain`` has taken what the socket held.)

    One reader at a time, unlike ``asyncio.Queue``: the listener's ``run`` and ``drain`` never
    overlap (``stop_receiving`` awaits the cancelled ``run`` before it drains).
    """

    __slots__ = ("_closed", "_datagrams", "_waiter")

    def __init__(self) -> None:
        self._datagrams: list[bytes] = []
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def take(self) -> list[bytes]:
        """Everything put in since the last ``get()`` or ``take()``, at once."""
        datagrams, self._datagrams = self._datagrams, []
        return datagrams

    def put(self, datagrams: list[bytes]) -> None:
        self._datagrams += datagrams
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> tuple[list[bytes] | None, None]:
        while not self._datagrams:
            if self._closed:
                return None, None
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self.take(), None


class DrainingTransport(asyncio.DatagramTransport):
    """Receive-only datagram transport that reads many datagrams per wake-up of the loop.

    Registered with ``loop.add_reader`` (the socket is made non-blocking); each time the
    socket is readable it calls ``sock.recv`` until the socket is empty,
    ``READS_PER_WAKEUP`` datagrams were read or ``MAX_BATCH_BYTES`` reached, and puts the
    list into ``inbox``, also when the reads end in an exception.  A read error other than
    "nothing to read" is logged (at most once a minute, with how many there were) and the
    listener goes on: the datagrams before and after it are kept.  ``close()`` stops
    reading, closes the inbox and closes the socket, at once.
    """

    def __init__(self, sock: socket.socket, inbox: DatagramInbox) -> None:
        super().__init__({"socket": sock, "sockname": sock.getsockname(), "peername": None})
        sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._read_size = READ_SIZE if sock.family == socket.AF_UNIX else UDP_READ_SIZE
        self._inbox = inbox
        self._closing = False
        self._errors = 0
        self._error_logged_at: float | None = None
        self._loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        recv = self._sock.recv
        read_size = self._read_size
        datagrams: list[bytes] = []
        append = datagrams.append
        size = 0
        try:
            for _ in range(READS_PER_WAKEUP):
                datagram = recv(read_size)
                append(datagram)
                size += len(datagram)
                if size >= MAX_BATCH_BYTES:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._read_failed(exc)
        finally:
            if datagrams:
                self._inbox.put(datagrams)

    def _read_failed(self, exc: OSError) -> None:
        self._errors += 1
        now = self._loop.time()
        if self._error_logged_at is None or now - self._error_logged_at >= 60:
            logger.warning(
                "reading the socket failed: %s (%d such errors since the last report); "
                "receiving goes on",
                exc,
                self._errors,
            )
            self._errors, self._error_logged_at = 0, now

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._inbox.close()
        self._sock.close()


def _open_stream(sock: socket.socket, inbox: DatagramInbox) -> asyncio_dgram.aio.DatagramServer:
    """asyncio-dgram's stream on ``sock``, read by a ``DrainingTransport`` into ``inbox``
    (its receive queue).  Only receives: nothing is ever sent on it.  Read errors are the
    transport's to handle, so the stream's error queue stays empty."""
    errors: asyncio.Queue[Exception] = asyncio.Queue()
    drained = asyncio.Event()
    drained.set()
    transport = DrainingTransport(sock, inbox)
    # cast: asyncio-dgram's stub types the transport as a protocol and the queue as a Queue.
    return asyncio_dgram.aio.DatagramServer(cast(Any, transport), cast(Any, inbox), errors, drained)


async def _receive(stream: asyncio_dgram.aio.DatagramServer) -> list[bytes]:
    """The datagrams that arrived since the last call (waits for at least one)."""
    datagrams, _ = await stream.recv()
    return cast(list[bytes], datagrams)


class DatagramListener:
    """Reads datagrams from a bound socket and hands them on in batches."""

    def __init__(self, name: str, sock: socket.socket, on_batch: OnBatch, clock: Clock) -> None:
        self.name = name
        self.socket = sock
        self._on_batch = on_batch
        self._clock = clock
        self._inbox = DatagramInbox()
        self._stream: asyncio_dgram.aio.DatagramServer | None = None
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._batch_started = 0.0

    @property
    def address(self) -> str:
        """``host:port`` for UDP (as bound, port 0 resolved), the path for Unix."""
        bound = self.socket.getsockname()
        if isinstance(bound, str):
            return bound
        return f"{bound[0]}:{bound[1]}"

    async def open(self) -> None:
        """Attach the socket to the event loop; from now on datagrams queue up for ``run``.

        Done at start-up, outside the receiving task, so that a stop can never cancel it
        halfway (the loop would hold the socket while no stream refers to it).
        """
        if self._stream is None:
            self._stream = _open_stream(self.socket, self._inbox)

    async def run(self) -> None:
        """Receive until cancelled; call ``drain`` afterwards to take in what is queued."""
        stream = self._stream
        assert stream is not None, "open() first"
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            while True:
                self._take(await _receive(stream))
        finally:
            flusher.cancel()

    async def drain(self, *, idle: float = 0.05, limit: float = 1.0) -> None:
        """Take in datagrams already received until the socket is quiet for ``idle`` seconds
        (at most ``limit`` seconds), hand on the last batch and close the socket."""
        await self.open()  # a no-op unless the stop came before start-up finished
        stream = self._stream
        assert stream is not None
        deadline = self._clock.monotonic() + limit
        while self._clock.monotonic() < deadline:
            try:
                datagrams = await asyncio.wait_for(_receive(stream), idle)
            except (TimeoutError, asyncio_dgram.TransportClosed):
                break
            self._take(datagrams)
        # What a read put in as the wait timed out (the wait gives up its get()).
        leftover = self._inbox.take()
        if leftover:
            self._take(leftover)
        self.flush()
        path = self.socket.getsockname() if self.socket.family == socket.AF_UNIX else None
        stream.close()
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def pending(self) -> bool:
        """Whether a datagram waits in the socket, not yet read: intake is behind.

        ``FIONREAD`` on a datagram socket gives the size of the next datagram (0 when there
        is none; an empty datagram also reads as none, which costs nothing to miss).
        """
        fd = self.socket.fileno()
        if fd < 0:  # closed: stopping
            return False
        try:
            size = fcntl.ioctl(fd, termios.FIONREAD, _NO_BYTES)
        except OSError:
            return False
        return size != _NO_BYTES

    def _take(self, datagrams: list[bytes]) -> None:
        if not self._batch:
            self._batch_started = self._clock.time()
        self._batch += datagrams
        self._batch_bytes += sum(map(len, datagrams))
        if len(self._batch) >= MAX_BATCH_DATAGRAMS or self._batch_bytes >= MAX_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._on_batch(batch, self._batch_started)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()


def any_pending(listeners: list[DatagramListener]) -> bool:
    """Whether a datagram waits unread in one of ``listeners``' sockets: intake is behind."""
    return any(listener.pending() for listener in listeners)


async def stop_receiving(
    listeners: list[DatagramListener], receiving: list[asyncio.Task[None]]
) -> None:
    """Cancel each listener's ``run`` task, then take in what its socket already holds."""
    for task in receiving:
        task.cancel()
    for task, listener in zip(receiving, listeners, strict=True):
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.drain()
