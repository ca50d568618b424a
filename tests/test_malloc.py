"""gateway.malloc: when the allocator is tuned, and that a datagram read then stays on the heap.

The observation runs in a fresh interpreter (the thresholds are process-wide and glibc's
dynamic threshold depends on what the process freed before).  It reads one datagram the
way asyncio's transport does, ``recvfrom(256 KiB)``, and asks glibc (``mallinfo2``) where
the memory went: an mmapped chunk per datagram alive (``hblks``) and whether the free space
at the top of the heap was kept after the read or given back (``keepcost``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping

import pytest

from gateway.malloc import Outcome, decide, glibc_version
from tests.processes import ROOT

GLIBC = "glibc 2.36"

_PROBE = """
import ctypes, json, socket, sys
from gateway.malloc import M_MMAP_THRESHOLD, tune_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
mode = sys.argv[1]
applied = False
if mode == "gateway":
    applied = tune_allocator({})
elif mode == "mmap-threshold-only":
    applied = libc.mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.connect(receiver.getsockname())
before = libc.mallinfo2().hblks
held = []
for _ in range(8):
    sender.send(b"app.req.1:1|c")
    held.append(receiver.recvfrom(256 * 1024)[0])
mmapped_while_held = libc.mallinfo2().hblks - before
del held
sender.send(b"app.req.1:1|c")
receiver.recvfrom(256 * 1024)
print(json.dumps({"applied": applied, "mmapped": mmapped_while_held,
                  "keepcost": libc.mallinfo2().keepcost}))
"""


def _probe(mode: str) -> dict[str, int | bool]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    result: dict[str, int | bool] = json.loads(done.stdout)
    return result


needs_glibc = pytest.mark.skipif(glibc_version() is None, reason="glibc only")


@needs_glibc
@pytest.mark.parametrize(
    ("mode", "applied", "mmapped", "heap_top_kept"),
    [
        # glibc's defaults in a fresh interpreter: each datagram alive is an mmapped chunk.
        pytest.param("untouched", False, 8, False, id="glibc-defaults-mmap-per-datagram"),
        # The mmap threshold alone: on the heap, but the top is trimmed (brk) after each read.
        pytest.param("mmap-threshold-only", True, 0, False, id="mmap-threshold-only-trims"),
        pytest.param("gateway", True, 0, True, id="tune-allocator-heap-kept"),
    ],
)
def test_a_datagram_read_stays_on_the_heap_only_when_tuned(
    mode: str, applied: bool, mmapped: int, heap_top_kept: bool
) -> None:
    seen = _probe(mode)
    assert seen["applied"] is applied
    assert seen["mmapped"] == mmapped, seen
    # After a 256 KiB read shrinks to a few bytes, about 256 KiB is free at the heap's top:
    # kept when the trim threshold is raised, given back (below 128 KiB left) otherwise.
    assert (int(seen["keepcost"]) >= 200 * 1024) is heap_top_kept, seen


@pytest.mark.parametrize(
    ("environ", "libc", "outcome"),
    [
        pytest.param({}, GLIBC, None, id="glibc-tuned"),
        pytest.param({"GATEWAY_MALLOC_TUNING": "1"}, GLIBC, None, id="switch-on"),
        pytest.param({"GATEWAY_MALLOC_TUNING": "0"}, GLIBC, Outcome.SWITCHED_OFF, id="switch-off"),
        pytest.param({}, None, Outcome.NOT_GLIBC, id="musl-or-macos"),
        pytest.param(
            {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=262144"},
            GLIBC,
            Outcome.OPERATOR_TUNABLES,
            id="operator-mmap-tunable",
        ),
        pytest.param(
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0"},
            GLIBC,
            Outcome.OPERATOR_TUNABLES,
            id="operator-trim-tunable",
        ),
        pytest.param(
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, None, id="other-tunable"
        ),
    ],
)
def test_decide(environ: Mapping[str, str], libc: str | None, outcome: Outcome | None) -> None:
    assert decide(environ, libc) is outcome


@needs_glibc
def test_glibc_version_names_glibc() -> None:
    found = glibc_version()
    assert found is not None and found.startswith("glibc 2.")
