"""The benchmarks' load generator: its ledger is what a loopback receiver got, on either call.

Every loss figure in docs/benchmarks.md is the ledger minus what the gateway counted, so the
ledger must count exactly what reached the socket.  Real loopback sockets; nothing else.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from bench import mmsg
from bench.loadgen import CHUNK, Plan, prepare, send
from bench.pool import Shape, build_pool

CALLS = ["send", *(["sendmmsg"] if mmsg.available() else [])]


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[bytes]:
    """What ``sock`` holds, read until it has been quiet for its timeout."""
    got = []
    while True:
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            return got


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("shape", list(Shape))
def test_sending_the_pool_once_delivers_each_datagram_once_and_the_ledger_says_so(
    receiver: socket.socket, call: str, shape: Shape
) -> None:
    # 300 single-line datagrams take about 250 KB of receive buffer: they fit the kernel's
    # default limit (rmem_max 212,992, doubled), so nothing needs reading while sending.
    pool = build_pool(shape, series=300, datagram_bytes=1400, min_lines=1)
    host, port = receiver.getsockname()
    plan = Plan(host, port, range(len(pool.datagrams)), 0.0, 10.0, True, sockets=3, call=call)
    sent = send(pool, prepare(pool, plan))
    got = received(receiver)
    assert Counter(got) == Counter(pool.datagrams)
    assert sent.errors == 0
    assert sent.tally.datagrams == len(got)
    assert sent.tally.lines == pool.total.lines == 300
    assert sent.tally.counter_sum == pool.total.counter_sum


def test_a_refused_datagram_is_not_in_the_ledger() -> None:
    """Nothing listens: loopback answers each datagram with ICMP, and ``send`` reports the
    refusal on the next one, which is then not sent.  (``sendmmsg`` stops its call at that
    datagram instead, and the next call sends it: see the next test.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        host, port = closed.getsockname()
    pool = build_pool(Shape.SINGLE, series=CHUNK * 4, datagram_bytes=1400, min_lines=1)
    plan = Plan(host, port, range(len(pool.datagrams)), 0.0, 10.0, True, call="send")
    sent = send(pool, prepare(pool, plan))
    assert sent.errors > 0
    assert sent.tally.datagrams == len(pool.datagrams) - sent.errors
    assert sent.attempts == len(pool.datagrams)


@pytest.mark.skipif(not mmsg.available(), reason="no sendmmsg on this platform")
def test_sendmmsg_stops_at_a_refused_datagram_and_raises_when_it_is_the_first(
    receiver: socket.socket,
) -> None:
    too_big = b"x" * 70_000  # over UDP's 65,507 bytes: EMSGSIZE
    messages = mmsg.MessageArray([b"a:1|c", too_big, b"b:1|c"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.connect(receiver.getsockname())
        assert messages.send(sender.fileno(), 0, 3) == 1
        with pytest.raises(OSError) as refused:
            messages.send(sender.fileno(), 1, 2)
        assert refused.value.errno == errno.EMSGSIZE
        assert messages.send(sender.fileno(), 2, 1) == 1
    assert received(receiver) == [b"a:1|c", b"b:1|c"]
