"""Request bodies: at most 50 points and 262,144 bytes, every point once, in order.

``Packer`` (points fed in slices as a window is encoded) must cut exactly the bodies that
``pack`` cuts from all the points at once.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batches import Packer, pack
from gateway.rules import MAX_BODY_BYTES, MAX_POINTS_PER_REQUEST


def point(i: int, pad: int = 0) -> bytes:
    return json.dumps({"metric": f"m{i}", "pad": "x" * pad}, separators=(",", ":")).encode()


def check(points: list[bytes], bodies_data: list[bytes]) -> None:
    seen: list[object] = []
    for data in bodies_data:
        body = json.loads(data)
        assert len(data) <= MAX_BODY_BYTES
        assert 1 <= len(body["metricDataList"]) <= MAX_POINTS_PER_REQUEST
        seen += body["metricDataList"]
    assert seen == [json.loads(p) for p in points]


@pytest.mark.parametrize(
    ("n", "pad", "bodies"),
    [
        pytest.param(0, 0, 0, id="none"),
        pytest.param(1, 0, 1, id="one"),
        pytest.param(50, 0, 1, id="fifty-fill-one"),
        pytest.param(51, 0, 2, id="fifty-one-spill"),
        pytest.param(250, 0, 5, id="five-full"),
        pytest.param(50, 6000, 2, id="bytes-limit-first"),  # 50 x ~6 KB > 256 KiB
    ],
)
def test_pack_limits(n: int, pad: int, bodies: int) -> None:
    points = [point(i, pad) for i in range(n)]
    out = list(pack(points))
    assert len(out) == bodies
    assert [b.points for b in out] == [len(json.loads(b.data)["metricDataList"]) for b in out]
    check(points, [b.data for b in out])


def test_a_body_at_exactly_the_byte_limit_is_kept_whole() -> None:
    head_tail = len(b'{"metricDataList":[]}')
    one = point(0)
    pad = MAX_BODY_BYTES - head_tail - len(one)
    exact = point(0, pad)
    [body] = pack([exact])
    assert len(body.data) == MAX_BODY_BYTES
    with pytest.raises(ValueError, match="does not fit"):
        list(pack([point(0, pad + 1)]))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20_000), max_size=300),
    cuts=st.lists(st.integers(1, 80), min_size=1, max_size=20),
)
def test_packer_in_slices_cuts_the_same_bodies(sizes: list[int], cuts: list[int]) -> None:
    points = [point(i, pad) for i, pad in enumerate(sizes)]
    whole = [b.data for b in pack(points)]
    packer, sliced, i, k = Packer(), [], 0, 0
    while i < len(points):
        step = cuts[k % len(cuts)]
        sliced += [b.data for b in packer.feed(points[i : i + step])]
        i, k = i + step, k + 1
    sliced += [b.data for b in packer.finish()]
    assert sliced == whole
    check(points, sliced)
