"""Opening the intake's sockets: UDP (``--udp``) and Unix datagram (``--unix``).

The socket is created here so that its receive buffer can be enlarged before it is bound
(``--udp-rcvbuf``): a full buffer, not the CPU, is what makes StatsD daemons lose data during
a flush pause.  Linux caps the request at ``net.core.rmem_max`` unless the process may force
it; the size actually granted is logged, with a warning when it was capped.

For ``--unix``, a stale socket file left by a previous process is removed at start; a path
that is not a socket, or a socket another process still receives on, is refused.

Also reads a UDP socket's kernel drop count.  Reading the sockets is ``gateway.listener``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.errors import StartupError
from gateway.options import Address

logger = logging.getLogger(__name__)

_SO_RCVBUFFORCE = 33  # Linux; needs CAP_NET_ADMIN, else SO_RCVBUF capped by rmem_max


def open_unix_socket(path: str, mode: int, rcvbuf: int) -> tuple[socket.socket, int]:
    """A non-blocking Unix datagram socket bound at ``path`` with permissions ``mode``."""
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def bind() -> int:
        granted = _enlarge_receive_buffer(sock, rcvbuf, "unix")
        sock.bind(path)
        os.chmod(path, mode)
        return granted

    return _bound(sock, f"--unix {path}", bind)


def _remove_stale_socket(path: str) -> None:
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise StartupError(f"--unix {path}: exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:  # nobody receives there: left by a process that died
        os.unlink(path)
        logger.info("removed stale socket path=%s", path)
        return
    except OSError as exc:
        raise StartupError(f"--unix {path}: cannot check the existing socket: {exc}") from None
    finally:
        probe.close()
    raise StartupError(f"--unix {path}: another process is receiving on this socket")


def open_udp_socket(
    address: Address, rcvbuf: int, *, reuse_port: bool = False
) -> tuple[socket.socket, int]:
    """A non-blocking UDP socket bound to ``address``, and the receive buffer granted.

    With ``reuse_port`` several sockets bind the same port (``--workers``); the kernel
    spreads datagrams over them by a hash of the sender's address and port.
    """
    family, sockaddr = _resolve(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)

    def bind() -> int:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        granted = _enlarge_receive_buffer(sock, rcvbuf, "udp")
        sock.bind(sockaddr)
        return granted

    return _bound(sock, f"--udp {address}", bind)


def _bound(sock: socket.socket, option: str, bind: Callable[[], int]) -> tuple[socket.socket, int]:
    """``sock`` after ``bind()`` (which returns the receive buffer granted), non-blocking;
    on an OSError the socket is closed and the option named in a StartupError."""
    try:
        granted = bind()
    except OSError as exc:
        sock.close()
        raise StartupError(f"{option}: cannot bind: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock, granted


def probe_udp_port(address: Address) -> int:
    """The port ``address`` names (port 0: one the kernel picks), checked to be free.

    Bound without ``SO_REUSEPORT``, which fails while any other socket holds the port, with
    or without ``SO_REUSEPORT``: so a second gateway with ``--workers`` is refused instead
    of quietly taking a share of the traffic.
    """
    family, sockaddr = _resolve(address)
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise StartupError(f"--udp {address}: cannot bind: {exc.strerror or exc}") from None
        port: int = probe.getsockname()[1]
        return port


def _resolve(address: Address) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"--udp {address}: cannot resolve host: {exc.strerror}") from None
    return family, sockaddr


def _enlarge_receive_buffer(sock: socket.socket, wanted: int, name: str) -> int:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, wanted)
    if _granted(sock) < wanted:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    granted = _granted(sock)
    if granted < wanted:
        logger.warning(
            "%s receive buffer capped: requested=%d granted=%d; raise net.core.rmem_max "
            "(sysctl -w net.core.rmem_max=%d) or packets will be dropped during bursts",
            name,
            wanted,
            granted,
            wanted,
        )
    else:
        logger.info("%s receive buffer granted=%d", name, granted)
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
