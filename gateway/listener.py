"""StatsD intake over UDP: a bound socket, read by asyncio-dgram, handed on in batches.

The socket is created here so that its receive buffer can be enlarged before it is bound
(``--udp-rcvbuf``): a full buffer, not the CPU, is what makes StatsD daemons lose data during
a flush pause.  Linux caps the request at ``net.core.rmem_max`` unless the process may force
it; the size actually granted is logged, with a warning when it was capped.

Datagrams are collected into a batch and handed to ``on_batch(datagrams, arrived_at)`` when
the batch reaches 256 datagrams or 1 MiB, or every 10 ms, whichever comes first; the parser
then works on whole batches.  ``arrived_at`` is the clock time of the batch's first
datagram, so a sample's window is its arrival time to within 10 ms.

Moves bytes only: no parsing, no counting, no numpy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import asyncio_dgram

from gateway.clock import Clock
from gateway.errors import StartupError
from gateway.options import Address

logger = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
"""What the standard datagram transport reads at once: more than any UDP datagram."""
MAX_BATCH_DATAGRAMS = 256
MAX_BATCH_BYTES = 1 << 20
FLUSH_INTERVAL = 0.01
_SO_RCVBUFFORCE = 33  # Linux; needs CAP_NET_ADMIN, else SO_RCVBUF capped by rmem_max

OnBatch = Callable[[list[bytes], float], None]


def open_udp_socket(address: Address, rcvbuf: int) -> tuple[socket.socket, int]:
    """A non-blocking UDP socket bound to ``address``, and the receive buffer granted."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"--udp {address}: cannot resolve host: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        granted = _enlarge_receive_buffer(sock, rcvbuf)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise StartupError(f"--udp {address}: cannot bind: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock, granted


def _enlarge_receive_buffer(sock: socket.socket, wanted: int) -> int:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, wanted)
    if _granted(sock) < wanted:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    granted = _granted(sock)
    if granted < wanted:
        logger.warning(
            "udp receive buffer capped: requested=%d granted=%d; raise net.core.rmem_max "
            "(sysctl -w net.core.rmem_max=%d) or packets will be dropped during bursts",
            wanted,
            granted,
            wanted,
        )
    else:
        logger.info("udp receive buffer granted=%d", granted)
    return granted


def _granted(sock: socket.socket) -> int:
    size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # Linux reports twice the size asked for (it counts its own bookkeeping).
    return size // 2 if sys.platform.startswith("linux") else size


def kernel_drops(sock: socket.socket) -> int | None:
    """The kernel's drop count for ``sock`` from /proc/net/udp{,6}; None where unavailable."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[9] == inode:
                return int(fields[12])
    return None


class UdpListener:
    """Reads datagrams from a bound socket and hands them on in batches."""

    def __init__(self, sock: socket.socket, on_batch: OnBatch, clock: Clock) -> None:
        self.socket = sock
        self._on_batch = on_batch
        self._clock = clock
        self._stream: asyncio_dgram.aio.DatagramStream | None = None
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._batch_started = 0.0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    async def run(self) -> None:
        """Receive until cancelled; call ``drain`` afterwards to take in what is queued."""
        self._stream = stream = await asyncio_dgram.from_socket(self.socket)
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            while True:
                data, _ = await stream.recv()
                self._take(data)
        finally:
            flusher.cancel()

    async def drain(self, *, idle: float = 0.05, limit: float = 1.0) -> None:
        """Take in datagrams already received until the socket is quiet for ``idle`` seconds
        (at most ``limit`` seconds), hand on the last batch and close the socket."""
        stream = self._stream
        if stream is not None:
            deadline = self._clock.monotonic() + limit
            while self._clock.monotonic() < deadline:
                try:
                    data, _ = await asyncio.wait_for(stream.recv(), idle)
                except (TimeoutError, asyncio_dgram.TransportClosed):
                    break
                self._take(data)
        self.flush()
        if stream is not None:
            stream.close()
        else:
            self.socket.close()

    def _take(self, data: bytes) -> None:
        if not self._batch:
            self._batch_started = self._clock.time()
        self._batch.append(data)
        self._batch_bytes += len(data)
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
