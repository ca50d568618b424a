"""The format of one spool file (``gateway.spool``): a checked header, then the body.

Pure: no I/O, no logging; imports nothing from the gateway.

Every file has this format (integers big-endian)::

    offset size field
    0      8    magic          b"SGSPOOL1"
    8      2    version        uint16, 1
    10     2    header length  uint16, 40 (the body starts here)
    12     4    points         uint32, points in the body (0 in window.state)
    16     8    timestamp      int64, the oldest point's timestamp, Unix seconds (0 in state)
    24     8    body length    uint64
    32     4    body CRC32     zlib.crc32 of the body
    36     4    header CRC32   zlib.crc32 of bytes 0..35
    40     ...  body           exactly "body length" bytes; nothing may follow

CRC32, not SHA-256: the threat is accidental damage (torn writes, bit rot), which CRC32
catches at memory speed (every burst up to 32 bits, the rest with odds 1 - 2**-32);
whoever can write the spool directory could write a valid hash too. The header has its own
CRC, so a damaged count or length is never trusted. A file is corrupt when it is shorter
than a header, or has the wrong magic, an unknown version, a bad header CRC, a size other
than 40 + body length, or a bad body CRC. ``window.state`` (the open window's state) has
the same format, with 0 points and timestamp 0.
"""

from __future__ import annotations

import struct
import zlib

MAGIC = b"SGSPOOL1"
VERSION = 1
_HEAD = struct.Struct(">8sHHIqQI")  # everything before the header CRC
_HEADER_CRC = struct.Struct(">I")
HEADER_LENGTH = _HEAD.size + _HEADER_CRC.size  # 40


class SpoolFormatError(ValueError):
    """Bytes that are not an intact spool file; ``points`` is known when the header was."""

    def __init__(self, reason: str, points: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.points = points


def encode(body: bytes, *, points: int, timestamp: int) -> bytes:
    """Header plus body, ready to be written."""
    head = _HEAD.pack(MAGIC, VERSION, HEADER_LENGTH, points, timestamp, len(body), zlib.crc32(body))
    return head + _HEADER_CRC.pack(zlib.crc32(head)) + body


def decode(data: bytes) -> tuple[bytes, int, int]:
    """Verify a whole file; returns (body, points, timestamp) or raises SpoolFormatError."""
    if len(data) < HEADER_LENGTH:
        raise SpoolFormatError("short_header")
    magic, version, head_len, points, timestamp, body_len, body_crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise SpoolFormatError("bad_magic")
    if version != VERSION:
        raise SpoolFormatError("unknown_version")
    (header_crc,) = _HEADER_CRC.unpack_from(data, _HEAD.size)
    if zlib.crc32(data[: _HEAD.size]) != header_crc or head_len != HEADER_LENGTH:
        raise SpoolFormatError("bad_header_checksum")
    if len(data) != HEADER_LENGTH + body_len:
        raise SpoolFormatError("bad_length", points)
    body = data[HEADER_LENGTH:]
    if zlib.crc32(body) != body_crc:
        raise SpoolFormatError("bad_body_checksum", points)
    return body, points, timestamp
