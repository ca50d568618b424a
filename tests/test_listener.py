"""The listener hands on every datagram, in arrival order, through asyncio-dgram's stream.

Real loopback sockets on both event loops the gateway can run on; ``DatagramInbox`` is also
driven directly, as ``DrainingTransport`` and asyncio-dgram's stream drive it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncio_dgram
import pytest
import uvloop

from gateway.clock import SystemClock
from gateway.listener import (
    MAX_BATCH_BYTES,
    MAX_BATCH_DATAGRAMS,
    READS_PER_WAKEUP,
    DatagramInbox,
    DatagramListener,
    stop_receiving,
)
from gateway.options import Address
from gateway.sockets import open_udp_socket

LOOPS: dict[str, Callable[[Awaitable[Any]], Any]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    sock, _ = open_udp_socket(Address("127.0.0.1", 0), 4 << 20)
    yield sock
    sock.close()


class Batches:
    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def __call__(self, datagrams: list[bytes], _arrived_at: float) -> None:
        self.batches.append(datagrams)

    @property
    def datagrams(self) -> list[bytes]:
        return [d for batch in self.batches for d in batch]


def payloads(n: int) -> list[bytes]:
    return [f"g.{i % 7}:{i}|g".encode() for i in range(n)]


def receive(loop: str, bound: socket.socket, sent: list[bytes], *, running: bool) -> Batches:
    """Send ``sent`` to a listener on ``bound`` and wait until it has handed all on.

    ``running``: the listener receives while the datagrams come, in bursts of 500 with the
    loop reading in between; else all of them wait in the socket before it starts.
    """
    seen = Batches()

    async def scenario() -> None:
        listener = DatagramListener("udp", bound, seen, SystemClock())
        await listener.open()
        receiving = asyncio.create_task(listener.run()) if running else None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for start in range(0, len(sent), 500):
                for payload in sent[start : start + 500]:
                    sender.sendto(payload, bound.getsockname())
                if running:
                    await asyncio.sleep(0.005)
        receiving = receiving or asyncio.create_task(listener.run())
        for _ in range(400):
            if len(seen.datagrams) >= len(sent):
                break
            await asyncio.sleep(0.005)
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)

    LOOPS[loop](scenario())
    return seen


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_every_datagram_reaches_on_batch_in_the_order_it_was_sent(
    bound: socket.socket, loop: str
) -> None:
    sent = payloads(5000)
    seen = receive(loop, bound, sent, running=True)
    assert seen.datagrams == sent
    assert max(map(len, seen.batches)) <= MAX_BATCH_DATAGRAMS + READS_PER_WAKEUP


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_burst_is_cut_into_batches_near_the_limit(loop: str) -> None:
    """Everything is in the socket before the loop reads: batches are cut at the limit (or
    earlier, by the 10 ms timer), never later than one wake-up past it."""
    sent = payloads(2 * MAX_BATCH_DATAGRAMS + 500)  # about 7 MB of receive buffer
    sock, granted = open_udp_socket(Address("127.0.0.1", 0), 16 << 20)
    assert granted >= 8 << 20, "needs SO_RCVBUFFORCE (root) or net.core.rmem_max >= 8 MiB"
    with sock:
        seen = receive(loop, sock, sent, running=False)
    assert seen.datagrams == sent
    assert max(map(len, seen.batches)) <= MAX_BATCH_DATAGRAMS + READS_PER_WAKEUP
    assert len(seen.batches) >= 3


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_large_datagrams_stop_a_wake_up_at_the_batch_bytes(bound: socket.socket, loop: str) -> None:
    """60 KB datagrams: one wake-up reads about 1 MiB, not READS_PER_WAKEUP of them."""
    sent = [bytes([65 + i % 26]) * 60_000 for i in range(60)]  # 3.6 MB
    seen = receive(loop, bound, sent, running=False)
    assert seen.datagrams == sent
    most = MAX_BATCH_BYTES // 60_000 + 1
    assert max(map(len, seen.batches)) <= 2 * most
    assert len(seen.batches) >= 3


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_stopping_hands_over_what_the_inbox_and_the_socket_hold(
    bound: socket.socket, loop: str
) -> None:
    """The gateway's stop: cancel ``run``, then drain; nothing is lost or reordered."""
    sent = payloads(4000)
    seen = Batches()

    async def scenario() -> None:
        listener = DatagramListener("udp", bound, seen, SystemClock())
        await listener.open()
        receiving = asyncio.create_task(listener.run())
        await asyncio.sleep(0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for payload in sent:
                sender.sendto(payload, bound.getsockname())
        await asyncio.sleep(0)  # a turn: some datagrams move from the socket to the inbox
        await stop_receiving([listener], [receiving])

    LOOPS[loop](scenario())
    assert seen.datagrams == sent
    assert bound.fileno() == -1


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_drain_takes_what_the_socket_holds_then_closes_it(bound: socket.socket, loop: str) -> None:
    sent = payloads(300)
    seen = Batches()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in sent:
            sender.sendto(payload, bound.getsockname())

    async def scenario() -> None:
        listener = DatagramListener("udp", bound, seen, SystemClock())
        await listener.drain(idle=0.1)

    LOOPS[loop](scenario())
    assert seen.datagrams == sent
    assert bound.fileno() == -1


def test_the_inbox_hands_over_all_it_holds_and_then_the_close() -> None:
    async def scenario() -> list[Any]:
        inbox = DatagramInbox()
        got: list[Any] = []
        waiting = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        inbox.put([b"a"])
        inbox.put([b"b", b"c"])
        got.append(await waiting)  # woken by the first, takes all three
        inbox.put([b"d"])
        inbox.close()  # the transport closed
        got.append(await inbox.get())  # what came before the close
        got.append(await inbox.get())
        got.append(await inbox.get())
        return got

    assert asyncio.run(scenario()) == [
        ([b"a", b"b", b"c"], None),
        ([b"d"], None),
        (None, None),
        (None, None),
    ]


def test_a_closed_stream_raises_transport_closed(bound: socket.socket) -> None:
    async def scenario() -> None:
        listener = DatagramListener("udp", bound, Batches(), SystemClock())
        await listener.open()
        await listener.drain(idle=0.01)
        assert listener._stream is not None
        with pytest.raises(asyncio_dgram.TransportClosed):
            await listener._stream.recv()

    asyncio.run(scenario())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_datagram_read_as_the_drain_times_out_is_still_handed_on(
    bound: socket.socket, loop: str
) -> None:
    """The loop is held past both drain's idle timeout and a send: the read that follows
    puts the datagram into the inbox after the wait has given up its get()."""
    seen = Batches()

    async def scenario() -> None:
        running = asyncio.get_running_loop()
        listener = DatagramListener("udp", bound, seen, SystemClock())
        await listener.open()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            draining = asyncio.create_task(listener.drain(idle=0.05))
            await asyncio.sleep(0)  # drain now waits for a datagram, up to 50 ms
            running.call_later(0.06, sender.sendto, b"late:1|c", bound.getsockname())
            running.call_later(0.01, time.sleep, 0.1)  # holds the loop until both are due
            await draining

    LOOPS[loop](scenario())
    assert seen.datagrams == [b"late:1|c"]


class FailingOnce(socket.socket):
    """A socket whose ``recv`` fails once, with ENOBUFS, on its ``fail_at``-th call."""

    fail_at = 0
    calls = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
        return super().recv(size, flags)


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_read_error_is_logged_and_receiving_goes_on(
    bound: socket.socket, loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingOnce(bound.family, bound.type, fileno=bound.detach())
    failing.fail_at = 40
    sent = payloads(100)
    with caplog.at_level(logging.WARNING, logger="gateway.listener"):
        seen = receive(loop, failing, sent, running=False)
    failing.close()
    assert seen.datagrams == sent  # the failed call took no datagram; none lost around it
    assert failing.calls > len(sent)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No buffer space" in warnings[0]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_after_the_drain_no_reader_is_left_and_a_blocking_socket_was_made_non_blocking(
    bound: socket.socket, loop: str
) -> None:
    bound.setblocking(True)
    fd = bound.fileno()

    async def scenario() -> tuple[bool, bool]:
        listener = DatagramListener("udp", bound, Batches(), SystemClock())
        await listener.open()
        blocking = bound.getblocking()
        await listener.drain(idle=0.01)
        return blocking, asyncio.get_running_loop().remove_reader(fd)

    blocking, reader_was_left = LOOPS[loop](scenario())
    assert not blocking
    assert not reader_was_left
