"""``sendmmsg(2)`` through ctypes: many prebuilt datagrams in one system call (Linux only).

The load generator's single-line sender spent most of a core on ``socket.send``: one Python
call and one system call per datagram.  ``MessageArray`` lays every datagram of the sending
order out once, as the ``struct mmsghdr`` array the kernel reads, over one contiguous copy of
the bytes; ``send(fd, start, count)`` then sends ``count`` of them from ``start`` in one call.

Imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Sequence
from errno import EINTR


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


def _libc_sendmmsg() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    function = getattr(libc, "sendmmsg", None)
    if function is None:
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


_SENDMMSG = _libc_sendmmsg()


def available() -> bool:
    """Whether this platform's C library has ``sendmmsg``."""
    return _SENDMMSG is not None


class MessageArray:
    """``datagrams`` as one ``mmsghdr`` per datagram, for sockets that are connected."""

    def __init__(self, datagrams: Sequence[bytes]) -> None:
        if _SENDMMSG is None:
            raise RuntimeError("sendmmsg is not available on this platform")
        n = len(datagrams)
        self._data = ctypes.create_string_buffer(b"".join(datagrams), sum(map(len, datagrams)))
        self._iov = (_IoVec * n)()
        self._msgs = (_MMsgHdr * n)()
        base = ctypes.addressof(self._data)
        iov_base = ctypes.addressof(self._iov)
        iov_size = ctypes.sizeof(_IoVec)
        offset = 0
        for i, datagram in enumerate(datagrams):
            iov = self._iov[i]
            iov.iov_base = base + offset
            iov.iov_len = len(datagram)
            hdr = self._msgs[i].msg_hdr
            hdr.msg_iov = iov_base + i * iov_size
            hdr.msg_iovlen = 1
            offset += len(datagram)
        self._first = ctypes.addressof(self._msgs)
        self._size = ctypes.sizeof(_MMsgHdr)

    def send(self, fd: int, start: int, count: int) -> int:
        """Send datagrams ``start`` .. ``start + count - 1`` on ``fd``: how many were sent.

        Raises ``OSError`` when the first of them fails; a later failure ends the call early
        (the kernel then reports only how many went), so the caller tries the rest again.
        """
        assert _SENDMMSG is not None
        while True:
            sent: int = _SENDMMSG(fd, self._first + start * self._size, count, 0)
            if sent >= 0:
                return sent
            errno = ctypes.get_errno()
            if errno != EINTR:  # a signal: try again, as socket.send does (PEP 475)
                raise OSError(errno, os.strerror(errno))
