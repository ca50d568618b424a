"""The durable on-disk spool: request bodies not yet delivered, and the open window's state.

Owns the spool directory (``--spool-dir``) and every file in it. Synchronous file I/O only
(callers use ``asyncio.to_thread``); imports no asyncio, numpy, prometheus_client, and no
gateway module but ``gateway.errors`` and ``gateway.spool_file``. Logs file names, sizes and
reasons, never a body's contents. Thread-safe: one lock serialises every public method.
docs/delivery.md ("The spool") has more.

    DIR/000000000000042.body        a pending request body, named by its sequence number
    DIR/000000000000042.body.tmp    being written; one left by a crash is removed at scan
    DIR/window.state                the open window's state, written on shutdown
    DIR/lock                        flock()ed while a gateway uses DIR (one process per DIR)
    DIR/corrupt/                    files that failed verification, kept, never read again

One file per body, not an append-only log: write temp + fsync + rename + fsync directory
leaves the whole file or none (at worst a ``.tmp``), so replay never hunts for the end of a
torn record; replay is oldest first by the sequence number in the name; dropping the oldest
or removing a delivered body is one ``unlink``, with no compaction; and damage costs only
the points of one file. Names that match none of the patterns above are left alone.

Every file has the format of ``gateway.spool_file`` (a header with CRCs, then the body): a
file that fails its checks is corrupt; it is moved into ``corrupt/`` and counted, with its
points when the header was intact. ``window.state`` does not count towards ``max_bytes``
(its size follows the live series).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import GatewayError
from gateway.spool_file import SpoolFormatError, decode, encode

logger = logging.getLogger(__name__)

STATE_NAME = "window.state"
CORRUPT_DIR = "corrupt"
LOCK_NAME = "lock"
_TMP = ".tmp"
_BODY_RE = re.compile(r"^([0-9]{15,})\.body$")
_TMP_RE = re.compile(r"^(?:([0-9]{15,})\.body|window\.state)\.tmp$")


class SpoolError(GatewayError):
    """The spool directory cannot be created, locked or written; one line for the operator."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One stored request body."""

    seq: int  # increases across restarts: a new Spool continues after the highest found
    points: int
    timestamp: int  # the oldest point timestamp in the body, Unix seconds
    size: int  # bytes on disk, header included
    path: Path


@dataclass(slots=True)
class SpoolStats:
    """What was lost, for the caller to count in /metrics and log.

    ``dropped_entries``: the entries behind ``dropped_full_*`` (a body ``put`` refused has
    none), so a caller holding them in memory can forget them instead of delivering points
    already counted. ``corrupt_points`` sums the points of corrupt files with an intact
    header; None while there was no such file.
    """

    dropped_full_points: int = 0
    dropped_full_files: int = 0
    corrupt_files: int = 0
    corrupt_points: int | None = None
    dropped_entries: list[SpoolEntry] = field(default_factory=list)

    def add(self, other: SpoolStats) -> None:
        """Fold ``other`` into this one."""
        self.dropped_full_points += other.dropped_full_points
        self.dropped_full_files += other.dropped_full_files
        self.dropped_entries.extend(other.dropped_entries)
        self.count_corrupt(other.corrupt_points, files=other.corrupt_files)

    def count_corrupt(self, points: int | None, *, files: int = 1) -> None:
        """Count corrupt files and, when known, their points."""
        self.corrupt_files += files
        if points is not None:
            self.corrupt_points = (self.corrupt_points or 0) + points


class Spool:
    """One gateway's spool directory; see the module docstring for layout and format.

    Call ``scan()`` once at start, before ``put``; ``close()`` releases the directory lock.
    """

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._corrupt_dir = self.directory / CORRUPT_DIR
        self._lock = threading.Lock()
        self._index: dict[int, SpoolEntry] = {}  # by seq, oldest first
        self._bytes = 0
        self._next_seq = 1
        self._scanned = False
        self._pending = SpoolStats()
        self._lock_fd: int | None = None
        try:
            self._corrupt_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
            self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory}: {_why(exc)}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            msg = f"spool directory {self.directory} is in use by another process"
            raise SpoolError(msg) from None

    def close(self) -> None:
        """Release the directory lock; the files stay for the next start."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def bytes_used(self) -> int:
        """Bytes on disk of the stored bodies (``window.state`` not included)."""
        return self._bytes

    def entries(self) -> list[SpoolEntry]:
        """The stored bodies, oldest first."""
        with self._lock:
            return list(self._index.values())

    def stats_since_last(self) -> SpoolStats:
        """What ``read``, ``load_state`` and failed ``put`` calls dropped since the last call."""
        with self._lock:
            stats, self._pending = self._pending, SpoolStats()
            return stats

    def scan(self) -> tuple[list[SpoolEntry], SpoolStats]:
        """Index every valid body, oldest first; corrupt ones are moved aside, leftover temp
        files removed, all of it counted. Never raises because of a bad file (SpoolError only
        when the directory itself cannot be listed)."""
        stats = SpoolStats()
        with self._lock:
            try:
                names = sorted(os.listdir(self.directory))
            except OSError as exc:
                raise SpoolError(f"spool directory {self.directory}: {_why(exc)}") from None
            self._index.clear()
            self._bytes = 0
            found: list[tuple[int, Path]] = []
            for name in names:
                path = self.directory / name
                if (body := _BODY_RE.match(name)) is not None and path.is_file():
                    found.append((int(body[1]), path))
                    self._next_seq = max(self._next_seq, int(body[1]) + 1)
                elif (tmp := _TMP_RE.match(name)) is not None and path.is_file():
                    self._next_seq = max(self._next_seq, int(tmp[1] or 0) + 1)
                    self._discard_temp(path, stats)
                elif name not in (STATE_NAME, LOCK_NAME, CORRUPT_DIR):
                    logger.debug("spool ignoring foreign file=%s", name)
            for seq, path in sorted(found):
                try:
                    data = path.read_bytes()
                    _, points, timestamp = decode(data)
                except (OSError, SpoolFormatError) as exc:
                    self._move_aside(path, exc, stats)
                    continue
                self._index[seq] = SpoolEntry(seq, points, timestamp, len(data), path)
                self._bytes += len(data)
            self._evict(0, stats)
            self._scanned = True
            return list(self._index.values()), stats

    def put(
        self, body: bytes, *, points: int, timestamp: int
    ) -> tuple[SpoolEntry | None, SpoolStats]:
        """Store a body durably; returns its entry (None when refused) and what was dropped.

        The oldest bodies are unlinked first when the new one would take the spool past
        ``max_bytes``; a body larger than ``max_bytes`` on its own is refused and counted.
        Raises SpoolError when the write fails: nothing of it is left behind, and whatever
        was dropped to make room is reported by ``stats_since_last``.
        """
        data = encode(body, points=points, timestamp=timestamp)
        stats = SpoolStats()
        with self._lock:
            if not self._scanned:
                raise RuntimeError("Spool.scan() must run before Spool.put()")
            if len(data) > self.max_bytes:
                stats.dropped_full_points += points
                stats.dropped_full_files += 1
                logger.warning("spool refused body bytes=%d (max_bytes)", len(data))
                return None, stats
            self._evict(len(data), stats)
            seq = self._next_seq
            self._next_seq += 1
            path = self.directory / f"{seq:015d}.body"
            try:
                self._write(path, data)
            except SpoolError:
                self._pending.add(stats)
                raise
            entry = self._index[seq] = SpoolEntry(seq, points, timestamp, len(data), path)
            self._bytes += entry.size
            return entry, stats

    def read(self, entry: SpoolEntry) -> bytes | None:
        """The body, verified; None when it is gone or corrupt (then moved aside and counted
        in ``stats_since_last``). An entry already dropped or removed gives None, uncounted."""
        with self._lock:
            if self._index.get(entry.seq) != entry:
                return None
            try:
                return decode(entry.path.read_bytes())[0]
            except (OSError, SpoolFormatError) as exc:
                del self._index[entry.seq]
                self._bytes -= entry.size
                self._move_aside(entry.path, exc, self._pending, entry.points)
                return None

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a body after delivery or a drop; a missing file is fine."""
        with self._lock:
            if self._index.get(entry.seq) == entry:
                del self._index[entry.seq]
                self._bytes -= entry.size
            self._unlink(entry.path)

    def save_state(self, data: bytes) -> None:
        """Write the open window's state atomically and durably, replacing any previous one."""
        with self._lock:
            self._write(self.directory / STATE_NAME, encode(data, points=0, timestamp=0))

    def load_state(self) -> bytes | None:
        """The saved window state; None when absent or corrupt (moved aside and counted)."""
        path = self.directory / STATE_NAME
        with self._lock:
            try:
                return decode(path.read_bytes())[0]
            except FileNotFoundError:
                return None
            except (OSError, SpoolFormatError) as exc:
                self._move_aside(path, exc, self._pending)
                return None

    def clear_state(self) -> None:
        """Delete the saved window state; absent is fine."""
        with self._lock:
            self._unlink(self.directory / STATE_NAME)

    # Internals: every caller holds self._lock.

    def _evict(self, incoming: int, stats: SpoolStats) -> None:
        dropped = 0
        while self._index and self._bytes + incoming > self.max_bytes:
            oldest = self._index.pop(next(iter(self._index)))
            self._bytes -= oldest.size
            try:
                self._unlink(oldest.path)
            except SpoolError as exc:
                logger.warning("%s", exc)  # counted as dropped all the same
            stats.dropped_full_points += oldest.points
            stats.dropped_full_files += 1
            stats.dropped_entries.append(oldest)
            dropped += oldest.points
        if dropped:
            logger.warning("spool full, dropped oldest points=%d", dropped)

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + _TMP)
        renamed = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            renamed = True
            self._sync_dir()
        except OSError as exc:
            # A failed write leaves nothing behind that a restart could replay.
            with contextlib.suppress(OSError):
                (path if renamed else tmp).unlink()
            raise SpoolError(f"spool cannot write {path}: {_why(exc)}") from None

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
            self._sync_dir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SpoolError(f"spool cannot remove {path}: {_why(exc)}") from None

    def _discard_temp(self, path: Path, stats: SpoolStats) -> None:
        try:
            points: int | None = decode(path.read_bytes())[1]
        except (OSError, SpoolFormatError) as exc:
            points = getattr(exc, "points", None)
        with contextlib.suppress(OSError):
            path.unlink()
        stats.count_corrupt(points)
        logger.warning("spool removed unfinished %s points=%s", path.name, points)

    def _move_aside(
        self,
        path: Path,
        exc: OSError | SpoolFormatError,
        stats: SpoolStats,
        points: int | None = None,
    ) -> None:
        if isinstance(exc, SpoolFormatError):
            reason, points = exc.reason, points if exc.points is None else exc.points
        else:
            reason = _why(exc)
        stats.count_corrupt(points)
        target = self._corrupt_dir / path.name
        n = 0
        while target.exists():
            n += 1
            target = self._corrupt_dir / f"{path.name}.{n}"
        try:
            os.rename(path, target)
            self._sync_dir()
        except OSError as err:
            with contextlib.suppress(OSError):
                path.unlink()  # never read it again, even when it cannot be kept
            logger.warning("spool dropped file=%s reason=%s: %s", path.name, reason, _why(err))
            return
        logger.warning("spool moved %s aside reason=%s points=%s", path.name, reason, points)

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
