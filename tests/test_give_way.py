"""Encoding a closed window gives way to intake while datagrams wait in the socket.

Real loopback sockets; the gateway is not started, so nothing reads what is sent and the
socket stays behind for as long as the test wants.  What is checked is how long the
encoder stays out of the way (lower bounds only: a loaded machine only makes waits longer).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from gateway.app import Gateway
from gateway.clock import SystemClock
from gateway.config import Settings
from gateway.encoder import INTAKE_SHARE_CATCHING_UP, INTAKE_SHARE_MAX
from gateway.listener import INTAKE_PAUSE, DatagramListener
from gateway.options import Address
from gateway.sinks import StdoutSink
from gateway.sockets import open_udp_socket
from tests.clocks import FakeClock


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    sock, _ = open_udp_socket(Address("127.0.0.1", 0), 1 << 20)
    yield sock
    sock.close()


def send(to: socket.socket, payload: bytes = b"a:1|c") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(payload, to.getsockname())
    deadline = time.monotonic() + 2
    while not DatagramListener("udp", to, lambda *_: None, SystemClock()).pending():
        assert time.monotonic() < deadline, "loopback did not deliver the datagram"
        time.sleep(0.001)


def test_pending_says_whether_a_datagram_waits_unread(bound: socket.socket) -> None:
    listener = DatagramListener("udp", bound, lambda *_: None, SystemClock())
    assert not listener.pending()
    send(bound)
    assert listener.pending()
    bound.recv(100)
    assert not listener.pending()
    send(bound)
    bound.close()  # as at a stop, while delivery still asks
    assert not listener.pending()


def ready_gateway(sock: socket.socket, clock: FakeClock | None = None) -> Gateway:
    gateway = Gateway(Settings(), StdoutSink(), clock=clock)
    gateway.listeners.append(DatagramListener("udp", sock, gateway.intake.on_batch, gateway.clock))
    gateway._state = "ready"
    return gateway


def waited(gateway: Gateway, spent: float) -> float:
    started = time.monotonic()
    asyncio.run(gateway._give_way(spent))
    return time.monotonic() - started


def test_intake_gets_up_to_nine_times_the_slice_while_it_is_behind(bound: socket.socket) -> None:
    gateway = ready_gateway(bound)
    send(bound)
    assert waited(gateway, 0.01) >= INTAKE_SHARE_MAX * 0.01 * 0.9


def test_intake_gets_as_much_as_the_slice_once_the_next_window_is_due(
    bound: socket.socket,
) -> None:
    clock = FakeClock()  # its monotonic clock stands still: the wait ends by its count
    gateway = ready_gateway(bound, clock)
    clock.now += 3 * 60  # another window to close, while this one is still being encoded
    assert gateway.aggregator.next_close_time() <= clock.time()
    send(bound)
    spent = 0.05
    took = waited(gateway, spent)
    assert took >= INTAKE_SHARE_CATCHING_UP * spent * 0.9
    assert took < INTAKE_SHARE_MAX * spent  # bounded by the smaller share, not the larger


def test_with_nothing_waiting_encoding_resumes_after_one_pause(bound: socket.socket) -> None:
    """Only the pause itself: a wait of 9 x 0.5 s would show that the socket was polled."""
    gateway = ready_gateway(bound)
    assert waited(gateway, 0.5) < INTAKE_SHARE_MAX * 0.5
    assert INTAKE_PAUSE < 0.5
