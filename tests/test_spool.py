"""The durable spool: format, round trips across restarts, limits, corruption, crash safety."""

from __future__ import annotations

import logging
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.spool import Spool, SpoolEntry, SpoolError, SpoolStats
from gateway.spool_file import HEADER_LENGTH, SpoolFormatError, decode, encode

TS = 1_700_000_000


def body(n: int, size: int = 200) -> bytes:
    """A distinct request-like body of ``size`` bytes."""
    head = b'{"metricDataList":[%d' % n
    return head + b" " * (size - len(head) - 2) + b"]}"


def file_size(size: int) -> int:
    return HEADER_LENGTH + size


OPENED: list[Spool] = []


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Callable[..., Spool]]:
    """Opens spools (not scanned) on tmp_path/spool by default; all are closed at the end."""

    def open_spool(directory: Path | None = None, max_bytes: int = 1 << 20) -> Spool:
        spool = Spool(directory or tmp_path / "spool", max_bytes=max_bytes)
        OPENED.append(spool)
        return spool

    yield open_spool
    while OPENED:
        OPENED.pop().close()


def restart(spool: Spool, max_bytes: int | None = None) -> tuple[Spool, SpoolStats]:
    """Close a spool and open and scan a new one on its directory, as a new process would."""
    spool.close()
    again = Spool(spool.directory, max_bytes=max_bytes or spool.max_bytes)
    OPENED.append(again)
    _, stats = again.scan()
    return again, stats


def fill(spool: Spool, count: int, size: int = 200) -> list[SpoolEntry]:
    entries = []
    for n in range(count):
        entry, stats = spool.put(body(n, size), points=n + 1, timestamp=TS + 60 * n)
        assert entry is not None
        assert stats == SpoolStats()
        entries.append(entry)
    return entries


# The format, byte by byte, as the module docstring documents it.


@pytest.mark.parametrize(
    ("data", "points", "timestamp"),
    [
        pytest.param(body(1), 50, TS, id="body"),
        pytest.param(b"", 0, 0, id="empty-state"),
        pytest.param(b"\x00\xff" * 1000, 7, -5, id="binary-negative-ts"),
    ],
)
def test_format_layout(data: bytes, points: int, timestamp: int) -> None:
    raw = encode(data, points=points, timestamp=timestamp)
    assert raw[0:8] == b"SGSPOOL1"
    assert struct.unpack(">H", raw[8:10]) == (1,)
    assert struct.unpack(">H", raw[10:12]) == (40,)
    assert struct.unpack(">I", raw[12:16]) == (points,)
    assert struct.unpack(">q", raw[16:24]) == (timestamp,)
    assert struct.unpack(">Q", raw[24:32]) == (len(data),)
    assert struct.unpack(">I", raw[32:36]) == (zlib.crc32(data),)
    assert struct.unpack(">I", raw[36:40]) == (zlib.crc32(raw[0:36]),)
    assert raw[40:] == data
    assert decode(raw) == (data, points, timestamp)


# Round trips and order.


def test_round_trip_across_restart(opened: Callable[..., Spool]) -> None:
    spool = opened()
    assert spool.scan() == ([], SpoolStats())
    entries = fill(spool, 3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.path.name for e in entries] == [f"00000000000000{n}.body" for n in (1, 2, 3)]
    assert spool.bytes_used == 3 * file_size(200)

    again, stats = restart(spool)
    assert stats == SpoolStats()
    assert again.entries() == entries
    assert again.bytes_used == 3 * file_size(200)
    assert [again.read(e) for e in entries] == [body(0), body(1), body(2)]

    again.remove(entries[1])
    new, _ = again.put(body(9), points=9, timestamp=TS)
    assert new is not None and new.seq == 4  # continues after the highest found

    third, stats = restart(again)
    assert stats == SpoolStats()
    assert [(e.seq, e.points, e.timestamp) for e in third.entries()] == [
        (1, 1, TS),
        (3, 3, TS + 120),
        (4, 9, TS),
    ]
    assert third.read(third.entries()[-1]) == body(9)


def test_seq_continues_after_removing_everything(opened: Callable[..., Spool]) -> None:
    spool = opened()
    spool.scan()
    for old in fill(spool, 2):
        spool.remove(old)
    again, _ = restart(spool)
    entry, _ = again.put(body(0), points=1, timestamp=TS)
    # Nothing left on disk to continue from: numbering starts over, which is safe because
    # every earlier file is gone.
    assert entry is not None and entry.seq == 1


def test_oldest_first_by_number_not_by_name(opened: Callable[..., Spool]) -> None:
    first = opened()
    for seq in (10**15, 2, 10**15 - 1):  # as text, the 16-digit name sorts before 999...
        name = f"{seq:015d}.body"
        (first.directory / name).write_bytes(encode(body(seq), points=seq % 97, timestamp=TS))
    spool, _ = restart(first)
    assert [e.seq for e in spool.entries()] == [2, 10**15 - 1, 10**15]
    entry, _ = spool.put(body(0), points=1, timestamp=TS)
    assert entry is not None and entry.seq == 10**15 + 1


def test_put_before_scan_is_a_programming_error(opened: Callable[..., Spool]) -> None:
    with pytest.raises(RuntimeError, match="scan"):
        opened().put(body(0), points=1, timestamp=TS)


# Bounds.


def test_full_spool_drops_oldest_and_counts_points(opened: Callable[..., Spool]) -> None:
    spool = opened(max_bytes=3 * file_size(200))
    spool.scan()
    first = fill(spool, 3)
    entry, stats = spool.put(body(7, 300), points=50, timestamp=TS)
    # 300 bytes more needs two 200-byte bodies gone.
    assert entry is not None
    assert stats.dropped_full_files == 2
    assert stats.dropped_full_points == first[0].points + first[1].points
    assert stats.dropped_entries == first[:2]
    assert stats.corrupt_files == 0
    assert spool.entries() == [first[2], entry]
    assert spool.bytes_used == file_size(200) + file_size(300) <= spool.max_bytes
    assert not first[0].path.exists() and not first[1].path.exists()
    assert spool.read(first[0]) is None  # dropped: gone, already counted as dropped
    assert spool.stats_since_last() == SpoolStats()


def test_scan_drops_oldest_when_the_limit_shrank(opened: Callable[..., Spool]) -> None:
    spool = opened()
    spool.scan()
    entries = fill(spool, 4)
    again, stats = restart(spool, max_bytes=2 * file_size(200))
    assert again.entries() == entries[2:]
    assert stats.dropped_full_files == 2
    assert stats.dropped_full_points == 1 + 2
    assert sorted(p.name for p in again.directory.glob("*.body")) == [
        e.path.name for e in entries[2:]
    ]


@pytest.mark.parametrize(
    "extra", [pytest.param(1, id="one-byte-over"), pytest.param(10_000, id="far-over")]
)
def test_oversized_body_refused_and_counted(opened: Callable[..., Spool], extra: int) -> None:
    spool = opened(max_bytes=file_size(200) * 2)
    spool.scan()
    kept = fill(spool, 1)
    entry, stats = spool.put(body(1, 2 * 200 + HEADER_LENGTH + extra), points=42, timestamp=TS)
    assert entry is None
    assert (stats.dropped_full_files, stats.dropped_full_points) == (1, 42)
    assert stats.dropped_entries == []
    assert spool.entries() == kept  # refusing it dropped nothing else
    assert sorted(spool.directory.glob("*.body*")) == [kept[0].path]


def test_body_exactly_max_bytes_fits(opened: Callable[..., Spool]) -> None:
    spool = opened(max_bytes=file_size(500))
    spool.scan()
    entry, stats = spool.put(body(0, 500), points=3, timestamp=TS)
    assert entry is not None and stats == SpoolStats()
    assert spool.bytes_used == spool.max_bytes


# Corruption: moved aside, counted, never a crash, neighbours unharmed.


def truncate(at: int) -> Callable[[bytes], bytes]:
    return lambda raw: raw[:at]


def flip(offset: int) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        at = offset if offset >= 0 else len(raw) + offset
        return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]

    return damage


CORRUPTIONS = [
    # (damage, reason logged, points counted: the middle file has 2 points, or None=unknown)
    pytest.param(truncate(0), "short_header", None, id="empty-file"),
    pytest.param(truncate(5), "short_header", None, id="cut-in-magic"),
    pytest.param(truncate(20), "short_header", None, id="cut-in-header"),
    pytest.param(truncate(HEADER_LENGTH - 1), "short_header", None, id="cut-before-crc-end"),
    pytest.param(truncate(HEADER_LENGTH), "bad_length", 2, id="header-only"),
    pytest.param(truncate(HEADER_LENGTH + 100), "bad_length", 2, id="cut-in-body"),
    pytest.param(truncate(-1), "bad_length", 2, id="last-byte-missing"),
    pytest.param(lambda raw: raw + b"\n", "bad_length", 2, id="trailing-garbage"),
    pytest.param(flip(HEADER_LENGTH + 10), "bad_body_checksum", 2, id="flipped-body-byte"),
    pytest.param(flip(-1), "bad_body_checksum", 2, id="flipped-last-byte"),
    pytest.param(flip(14), "bad_header_checksum", None, id="flipped-points-byte"),
    pytest.param(flip(30), "bad_header_checksum", None, id="flipped-length-byte"),
    pytest.param(flip(37), "bad_header_checksum", None, id="flipped-header-crc"),
    pytest.param(lambda raw: b"XXSPOOL1" + raw[8:], "bad_magic", None, id="wrong-magic"),
    pytest.param(lambda raw: raw[:8] + b"\x00\x02" + raw[10:], "unknown_version", None, id="v2"),
    pytest.param(lambda raw: b"\x00" * len(raw), "bad_magic", None, id="zeroed"),
]


@pytest.mark.parametrize(("damage", "reason", "points"), CORRUPTIONS)
def test_corrupt_file_at_scan(
    opened: Callable[..., Spool],
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
    reason: str,
    points: int | None,
) -> None:
    spool = opened()
    spool.scan()
    first, middle, last = fill(spool, 3)
    damaged = damage(middle.path.read_bytes())
    middle.path.write_bytes(damaged)

    with caplog.at_level(logging.WARNING, logger="gateway.spool"):
        again, stats = restart(spool)

    assert (stats.corrupt_files, stats.corrupt_points) == (1, points)
    assert (stats.dropped_full_files, stats.dropped_full_points) == (0, 0)
    assert again.entries() == [first, last]
    assert again.bytes_used == first.size + last.size
    assert [again.read(e) for e in again.entries()] == [body(0), body(2)]
    assert not middle.path.exists()
    assert (again.directory / "corrupt" / middle.path.name).read_bytes() == damaged
    assert any(f"reason={reason}" in r.getMessage() for r in caplog.records)
    entry, _ = again.put(body(5), points=1, timestamp=TS)
    assert entry is not None and entry.seq == 4


@pytest.mark.parametrize(("damage", "reason", "points"), CORRUPTIONS)
def test_decode_rejects_each_corruption(
    damage: Callable[[bytes], bytes], reason: str, points: int | None
) -> None:
    with pytest.raises(SpoolFormatError) as caught:
        decode(damage(encode(body(0), points=2, timestamp=TS)))
    assert (caught.value.reason, caught.value.points) == (reason, points)


@pytest.mark.parametrize(
    ("damage", "counted_points"),
    [
        pytest.param(flip(HEADER_LENGTH + 3), 2, id="flipped-body-byte"),
        pytest.param(truncate(10), 2, id="truncated"),
        pytest.param(None, 2, id="deleted"),
    ],
)
def test_read_finds_a_file_damaged_after_scan(
    opened: Callable[..., Spool],
    damage: Callable[[bytes], bytes] | None,
    counted_points: int,
) -> None:
    spool = opened()
    spool.scan()
    first, middle, last = fill(spool, 3)
    if damage is None:
        middle.path.unlink()
    else:
        middle.path.write_bytes(damage(middle.path.read_bytes()))

    assert spool.read(middle) is None
    stats = spool.stats_since_last()
    assert (stats.corrupt_files, stats.corrupt_points) == (1, counted_points)
    assert spool.stats_since_last() == SpoolStats()  # reported once
    assert spool.entries() == [first, last]
    assert spool.bytes_used == first.size + last.size
    assert spool.read(middle) is None  # no longer ours: not counted twice
    assert spool.stats_since_last() == SpoolStats()
    assert (spool.directory / "corrupt" / middle.path.name).exists() == (damage is not None)


def test_corrupt_names_do_not_collide(opened: Callable[..., Spool]) -> None:
    spool = opened()
    spool.scan()
    entry = fill(spool, 1)[0]
    (spool.directory / "corrupt" / entry.path.name).write_bytes(b"from an earlier run")
    entry.path.write_bytes(b"junk")
    again, stats = restart(spool)
    assert stats.corrupt_files == 1
    corrupt = again.directory / "corrupt"
    assert (corrupt / entry.path.name).read_bytes() == b"from an earlier run"
    assert (corrupt / f"{entry.path.name}.1").read_bytes() == b"junk"


def test_foreign_files_are_left_alone(opened: Callable[..., Spool]) -> None:
    spool = opened()
    spool.scan()
    kept = fill(spool, 1)
    foreign = ["README", "12.body", "000000000000009.body.bak", ".hidden", "x.tmp"]
    for name in foreign:
        (spool.directory / name).write_bytes(b"not ours")
    (spool.directory / "000000000000010.body.d").mkdir()
    (spool.directory / "000000000000011.body").mkdir()  # our pattern, but a directory

    again, stats = restart(spool)
    assert stats == SpoolStats()
    assert again.entries() == kept
    for name in foreign:
        assert (again.directory / name).read_bytes() == b"not ours"
    assert (again.directory / "000000000000011.body").is_dir()
    assert list((again.directory / "corrupt").iterdir()) == []


# Crash safety.


@pytest.mark.parametrize(
    ("content", "points"),
    [
        pytest.param(lambda raw: raw, 50, id="complete-before-rename"),
        pytest.param(lambda raw: raw[:100], 50, id="half-written"),
        pytest.param(lambda raw: raw[:12], None, id="header-half-written"),
        pytest.param(lambda raw: b"", None, id="created-empty"),
    ],
)
def test_crash_between_temp_write_and_rename(
    opened: Callable[..., Spool], content: Callable[[bytes], bytes], points: int | None
) -> None:
    spool = opened()
    spool.scan()
    kept = fill(spool, 2)
    spool.save_state(b"window")
    # What a SIGKILL between write and rename leaves behind, for a body and for the state.
    tmp = spool.directory / "000000000000003.body.tmp"
    tmp.write_bytes(content(encode(body(3), points=50, timestamp=TS)))
    state_tmp = spool.directory / "window.state.tmp"
    state_tmp.write_bytes(b"half a state")

    again, stats = restart(spool)
    assert stats.corrupt_files == 2
    assert stats.corrupt_points == points  # the half state has no readable header
    assert not tmp.exists() and not state_tmp.exists()
    assert list((again.directory / "corrupt").iterdir()) == []  # removed, not kept
    assert again.entries() == kept
    assert [again.read(e) for e in kept] == [body(0), body(1)]
    assert again.load_state() == b"window"  # the last complete state survives
    entry, _ = again.put(body(4), points=1, timestamp=TS)
    assert entry is not None and entry.seq == 4  # never reuses the crashed number


@pytest.mark.parametrize(
    "failing", [pytest.param(False, id="file-fsync"), pytest.param(True, id="directory-fsync")]
)
def test_failed_write_leaves_nothing_and_reports_drops(
    opened: Callable[..., Spool], monkeypatch: pytest.MonkeyPatch, failing: bool
) -> None:
    spool = opened(max_bytes=2 * file_size(200))
    spool.scan()
    old = fill(spool, 2)
    real_fsync = os.fsync

    def broken_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) != failing:
            return real_fsync(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(SpoolError, match="Input/output error") as caught:
        spool.put(body(9), points=9, timestamp=TS)
    assert "\n" not in str(caught.value)
    with pytest.raises(SpoolError):
        spool.save_state(b"state")
    monkeypatch.undo()

    assert sorted(p.name for p in spool.directory.iterdir()) == sorted(
        ["corrupt", "lock", old[1].path.name]
    )
    assert spool.entries() == old[1:]
    stats = spool.stats_since_last()  # the body dropped to make room is still reported
    assert (stats.dropped_full_files, stats.dropped_full_points) == (1, old[0].points)
    again, stats = restart(spool)
    assert stats == SpoolStats()
    assert again.entries() == old[1:]
    assert again.load_state() is None


def test_writes_are_fsynced_before_and_after_rename(
    opened: Callable[..., Spool], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opened()
    spool.scan()
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)

    entry, _ = spool.put(body(0), points=1, timestamp=TS)
    assert events == ["fsync-file", "rename", "fsync-dir"]
    events.clear()
    spool.save_state(b"state")
    assert events == ["fsync-file", "rename", "fsync-dir"]
    events.clear()
    assert entry is not None
    spool.remove(entry)
    assert events == ["fsync-dir"]  # a delivered body stays deleted after a power cut
    events.clear()
    spool.clear_state()
    assert events == ["fsync-dir"]


# Window state.


def test_state_save_load_clear(opened: Callable[..., Spool]) -> None:
    spool = opened(max_bytes=file_size(200))
    assert spool.load_state() is None
    spool.clear_state()  # absent is fine
    spool.save_state(b"first")
    spool.save_state(b"\x00" * 5000)  # replaces, and is not bounded by max_bytes
    spool.scan()
    fill(spool, 1)  # the state file does not take room from bodies
    again, stats = restart(spool)
    assert stats == SpoolStats()
    assert again.load_state() == b"\x00" * 5000
    again.clear_state()
    assert again.load_state() is None
    third, _ = restart(again)
    assert third.load_state() is None
    assert third.stats_since_last() == SpoolStats()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(flip(HEADER_LENGTH + 1), "bad_body_checksum", id="flipped-byte"),
        pytest.param(truncate(30), "short_header", id="truncated"),
        pytest.param(lambda raw: b"", "short_header", id="empty"),
        pytest.param(lambda raw: b"SGSPOOL0" + raw[8:], "bad_magic", id="wrong-magic"),
    ],
)
def test_corrupt_state_is_moved_aside(
    opened: Callable[..., Spool],
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
    reason: str,
) -> None:
    spool = opened()
    spool.save_state(b"state of the open window")
    path = spool.directory / "window.state"
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="gateway.spool"):
        assert spool.load_state() is None
    stats = spool.stats_since_last()
    assert stats.corrupt_files == 1
    assert stats.dropped_full_points == 0
    assert (spool.directory / "corrupt" / "window.state").read_bytes() == damaged
    assert not path.exists()
    assert spool.load_state() is None
    assert spool.stats_since_last() == SpoolStats()
    assert any(f"reason={reason}" in r.getMessage() for r in caplog.records)


# The directory itself.


def test_creates_missing_directories(tmp_path: Path, opened: Callable[..., Spool]) -> None:
    spool = opened(tmp_path / "a" / "b" / "spool")
    assert (tmp_path / "a" / "b" / "spool" / "corrupt").is_dir()
    assert spool.scan() == ([], SpoolStats())


@pytest.mark.parametrize(
    "relative",
    [
        pytest.param("file/spool", id="under-a-regular-file"),
        pytest.param("file", id="is-a-regular-file"),
    ],
)
def test_unusable_directory_raises_spool_error(tmp_path: Path, relative: str) -> None:
    (tmp_path / "file").write_bytes(b"a regular file")
    with pytest.raises(SpoolError) as caught:
        Spool(tmp_path / relative, max_bytes=1000)
    assert isinstance(caught.value, GatewayError)
    message = str(caught.value)
    assert str(tmp_path / relative) in message and "\n" not in message


def test_one_process_per_directory(opened: Callable[..., Spool]) -> None:
    first = opened()
    with pytest.raises(SpoolError, match="in use"):
        Spool(first.directory, max_bytes=1000)
    first.close()
    first.close()  # closing twice is harmless
    second = opened(first.directory)
    assert second.scan() == ([], SpoolStats())


def test_concurrent_puts_get_distinct_numbers(opened: Callable[..., Spool]) -> None:
    spool = opened()
    spool.scan()

    def worker(base: int) -> None:
        for n in range(25):
            spool.put(body(base + n), points=1, timestamp=TS)

    threads = [threading.Thread(target=worker, args=(100 * t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [e.seq for e in spool.entries()]
    assert seqs == list(range(1, 101))
    again, stats = restart(spool)
    assert stats == SpoolStats()
    assert len(again.entries()) == 100
    assert again.bytes_used == spool.bytes_used


# SpoolStats arithmetic.


def test_stats_add_keeps_unknown_points_apart() -> None:
    total = SpoolStats()
    unknown = SpoolStats()
    unknown.count_corrupt(None)
    total.add(unknown)
    assert (total.corrupt_files, total.corrupt_points) == (1, None)
    known = SpoolStats(dropped_full_points=3, dropped_full_files=1)
    known.count_corrupt(50)
    total.add(known)
    assert total == SpoolStats(
        dropped_full_points=3, dropped_full_files=1, corrupt_files=2, corrupt_points=50
    )
