"""The putMetricData emulator over real HTTP on 127.0.0.1 (in-process and as a subprocess)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.emulator import RunningEmulator, start_emulator
from gateway.emulator.verify import NonceCache, SignatureVerifier
from gateway.signer import DATE_FORMAT, Credentials, JDCloudAuth, sign_request

ROOT = Path(__file__).resolve().parents[1]
AK, SK = "AKEMULATORTEST", "SK-emulator-secret-do-not-echo"
JSON = {"content-type": "application/json"}


def mkpoint(metric: str = "api.requests", **changes: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "namespace": "statsd",
        "metric": metric,
        "dimensions": {"host": "node1"},
        "timestamp": int(time.time()) // 60 * 60 - 60,
        "type": 2,
        "values": {"avg": 1.5, "sum": 3, "last": 2, "max": 2, "min": 1, "count": 2},
    }
    p.update(changes)
    return p


def body_of(*points: object) -> bytes:
    return json.dumps({"metricDataList": list(points)}).encode()


Scenario = Callable[[RunningEmulator, httpx.AsyncClient], Awaitable[None]]


def run(scenario: Scenario, **options: Any) -> None:
    async def main() -> None:
        emulator = await start_emulator("127.0.0.1", 0, **options)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await scenario(emulator, client)
        finally:
            await emulator.close()

    asyncio.run(main())


async def put(
    emu: RunningEmulator, client: httpx.AsyncClient, content: bytes, version: int = 1
) -> httpx.Response:
    return await client.post(emu.endpoint(version), content=content, headers=JSON)


@pytest.mark.parametrize("version", [1, 2])
def test_valid_request_is_stored_and_readable(version: int) -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        a = mkpoint("a.b", dimensions={"host": "n1", "dc": "bj"})
        b = mkpoint("c.d", type=1, values={"value": 9223372036854775807}, unit="Count")
        resp = await put(emu, client, body_of(a, b), version)
        assert resp.status_code == 200
        reply = resp.json()
        assert reply["result"] == {"success": True, "errMetricDataList": []}
        assert len(reply["requestId"]) == 32
        points = (await client.get(f"{emu.url}/points")).json()
        assert [p["metric"] for p in points] == ["a.b", "c.d"]
        assert [p["seq"] for p in points] == [1, 2]
        assert points[0]["dimensions"] == {"host": "n1", "dc": "bj"}
        assert points[1]["values"] == {"value": 9223372036854775807}
        assert points[1]["unit"] == "Count"
        assert points[0]["path"] == f"/v{version}/customMetrics"
        assert points[0]["request_id"] == reply["requestId"]
        stats = (await client.get(f"{emu.url}/stats")).json()
        assert stats["requests_by_status"] == {"200": 1}
        assert stats["points_accepted"] == 2

    run(scenario)


@pytest.mark.parametrize(
    ("query", "metrics"),
    [
        pytest.param("", ["m1", "m2", "m3"], id="all"),
        pytest.param("?metric=m2", ["m2"], id="metric"),
        pytest.param("?namespace=other", ["m3"], id="namespace"),
        pytest.param("?dimension=dc=bj", ["m1", "m3"], id="dimension"),
        pytest.param("?dimension=dc=bj&dimension=host=x", ["m3"], id="two-dimensions"),
        pytest.param("?since=T1", ["m2", "m3"], id="since-inclusive"),
        pytest.param("?until=T1", ["m1"], id="until-exclusive"),
    ],
)
def test_points_filters(query: str, metrics: list[str]) -> None:
    t0 = int(time.time()) // 60 * 60 - 120
    query = query.replace("T1", str(t0 + 60))

    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        body = body_of(
            mkpoint("m1", timestamp=t0, dimensions={"dc": "bj", "host": "y"}),
            mkpoint("m2", timestamp=t0 + 60, dimensions={"dc": "sh"}),
            mkpoint(
                "m3", namespace="other", timestamp=t0 + 60, dimensions={"dc": "bj", "host": "x"}
            ),
        )
        assert (await put(emu, client, body)).status_code == 200
        found = (await client.get(f"{emu.url}/points{query}")).json()
        assert [p["metric"] for p in found] == metrics

    run(scenario)


def test_last_write_wins_and_overwrites_are_counted() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        first = mkpoint(dimensions={"b": "2", "a": "1"})
        second = mkpoint(dimensions={"a": "1", "b": "2"}, values={"count": 7})
        assert (await put(emu, client, body_of(first))).status_code == 200
        assert (await put(emu, client, body_of(second))).status_code == 200
        points = (await client.get(f"{emu.url}/points")).json()
        assert len(points) == 1
        assert points[0]["values"] == {"count": 7}
        assert points[0]["seq"] == 2
        stats = (await client.get(f"{emu.url}/stats")).json()
        assert (stats["overwrites"], stats["points_accepted"], stats["points_stored"]) == (1, 2, 1)
        assert (await client.delete(f"{emu.url}/points")).json() == {"deleted": 1}
        assert (await client.get(f"{emu.url}/points")).json() == []

    run(scenario)


@pytest.mark.parametrize("style", ["errMetricDataList", "metricDataList", "ErrMetricData"])
def test_per_point_rejection_in_each_error_style(style: str) -> None:
    good = mkpoint("good")
    bad = mkpoint("bad", timestamp=15305424971)

    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        resp = await put(emu, client, body_of(good, bad, "junk"))
        assert resp.status_code == 400
        reply = resp.json()
        assert reply["error"] == {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": "2 of 3 points are invalid",
            "details": None,
        }
        result = reply["result"]
        assert result["success"] is False
        assert set(result) == {"success", style}
        first, second = result[style]
        assert first["errDetail"].startswith("timestamp: must be 10 digits")
        assert second["errDetail"] == "point: must be a JSON object, got string 'junk'"
        if style == "metricDataList":
            assert (first["data"], second["data"]) == (bad, "junk")
        else:
            assert json.loads(first["errMetricData"]) == bad
            assert json.loads(second["errMetricData"]) == "junk"
        stored = (await client.get(f"{emu.url}/points")).json()
        assert [p["metric"] for p in stored] == ["good"]
        stats = (await client.get(f"{emu.url}/stats")).json()
        assert (stats["points_accepted"], stats["points_rejected"]) == (1, 2)

    run(scenario, error_style=style)


def test_all_reasons_of_a_point_are_joined() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        bad = mkpoint("a-b", type=1, values={"value": True})
        resp = await put(emu, client, body_of(bad))
        (entry,) = resp.json()["result"]["errMetricDataList"]
        assert entry["errDetail"] == (
            "metric: only [0-9A-Za-z._] allowed, got 'a-b'; "
            "values.value: must be a JSON number, got boolean"
        )

    run(scenario)


PADDED = 262144 - len(body_of(mkpoint()))


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        pytest.param(
            body_of(*[mkpoint(f"m{i}") for i in range(51)]),
            JSON,
            "metricDataList has 51 points, at most 50",
            id="51-points",
        ),
        pytest.param(
            body_of(mkpoint()) + b" " * (PADDED + 1),
            JSON,
            "body exceeds 262144 bytes",
            id="body-262145-bytes",
        ),
        pytest.param(b" " * 1_100_000, JSON, "body exceeds 262144 bytes", id="body-1.1MB"),
        pytest.param(b'{"metricDataList": [', JSON, "body is not valid JSON", id="bad-json"),
        pytest.param(
            body_of(mkpoint()).replace(b"1.5", b"NaN"),
            JSON,
            "NaN is not valid JSON",
            id="nan-literal",
        ),
        pytest.param(
            body_of(mkpoint()).replace(b"1.5", b"-Infinity"),
            JSON,
            "-Infinity is not valid JSON",
            id="infinity-literal",
        ),
        pytest.param(b"\xff\xfe{}", JSON, "body is not UTF-8", id="not-utf8"),
        pytest.param(
            json.dumps([mkpoint()]).encode(), JSON, "body must be a JSON object", id="bare-array"
        ),
        pytest.param(
            b'{"metricDataList": []}', JSON, "metricDataList must be a non-empty", id="empty-list"
        ),
        pytest.param(
            b'{"metricDataList": {}}',
            JSON,
            "metricDataList must be a non-empty",
            id="list-is-object",
        ),
        pytest.param(b"{}", JSON, "metricDataList must be a non-empty", id="no-list"),
        pytest.param(
            b'{"metricDataList": [{}], "x": 1}',
            JSON,
            "unknown body fields: x",
            id="unknown-top-level",
        ),
        pytest.param(
            body_of(mkpoint()),
            {"content-type": "text/plain"},
            "Content-Type must be application/json",
            id="content-type",
        ),
    ],
)
def test_request_level_rejections(content: bytes, headers: dict[str, str], message: str) -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        resp = await client.post(emu.endpoint(), content=content, headers=headers)
        assert resp.status_code == 400
        reply = resp.json()
        assert "result" not in reply
        assert reply["error"]["status"] == "INVALID_ARGUMENT"
        assert message in reply["error"]["message"]
        assert (await client.get(f"{emu.url}/points")).json() == []

    run(scenario)


def test_body_of_exactly_262144_bytes_is_accepted() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        content = body_of(mkpoint()) + b" " * PADDED
        assert len(content) == 262144
        assert (await put(emu, client, content)).status_code == 200

    run(scenario)


async def set_faults(emu: RunningEmulator, client: httpx.AsyncClient, **spec: Any) -> Any:
    resp = await client.post(f"{emu.url}/control/faults", json=spec)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_status_fault_for_n_requests() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        shown = await set_faults(emu, client, status=503, status_count=2)
        assert (shown["status"], shown["status_count"]) == (503, 2)
        statuses = [(await put(emu, client, body_of(mkpoint()))).status_code for _ in range(3)]
        assert statuses == [503, 503, 200]
        assert (await client.get(f"{emu.url}/control/faults")).json()["status"] is None
        stats = (await client.get(f"{emu.url}/stats")).json()
        assert stats["requests_by_status"] == {"200": 1, "503": 2}
        assert stats["points_accepted"] == 1

    run(scenario)


@pytest.mark.parametrize("status", [500, 401, 403])
def test_status_fault_from_start_options(status: int) -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        resp = await put(emu, client, body_of(mkpoint()))
        assert resp.status_code == status
        assert resp.json()["error"]["code"] == status
        assert (await put(emu, client, body_of(mkpoint()))).status_code == 200

    run(scenario, faults={"status": status})


def test_429_with_retry_after() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        resp = await put(emu, client, body_of(mkpoint()))
        assert resp.status_code == 429
        assert resp.headers["Retry-After"] == "7"
        assert resp.json()["error"]["status"] == "RATE_LIMIT"
        assert (await put(emu, client, body_of(mkpoint()))).status_code == 200

    run(scenario, faults={"status": 429, "retry_after": 7})


def test_status_fault_until_cleared() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        await set_faults(emu, client, status=502, status_count=0)
        for _ in range(3):
            assert (await put(emu, client, body_of(mkpoint()))).status_code == 502
        assert (await client.delete(f"{emu.url}/control/faults")).json()["status"] is None
        assert (await put(emu, client, body_of(mkpoint()))).status_code == 200

    run(scenario)


def test_latency_fault() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        await set_faults(emu, client, latency=0.3, latency_count=1)
        started = time.monotonic()
        assert (await put(emu, client, body_of(mkpoint()))).status_code == 200
        assert time.monotonic() - started >= 0.29
        assert (await client.get(f"{emu.url}/control/faults")).json()["latency"] == 0

    run(scenario)


def test_dropped_connection() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        await set_faults(emu, client, drop=1)
        with pytest.raises(httpx.RemoteProtocolError):
            await put(emu, client, body_of(mkpoint()))
        assert (await put(emu, client, body_of(mkpoint()))).status_code == 200
        stats = (await client.get(f"{emu.url}/stats")).json()
        assert stats["connections_dropped"] == 1
        assert stats["requests_by_status"] == {"200": 1, "dropped": 1}

    run(scenario)


def test_reject_points_by_metric() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        await set_faults(emu, client, reject_metric=r"^bad\.")
        resp = await put(emu, client, body_of(mkpoint("bad.one"), mkpoint("good.bad.x")))
        assert resp.status_code == 400
        (entry,) = resp.json()["result"]["errMetricDataList"]
        assert json.loads(entry["errMetricData"])["metric"] == "bad.one"
        assert "injected fault" in entry["errDetail"]
        stored = (await client.get(f"{emu.url}/points")).json()
        assert [p["metric"] for p in stored] == ["good.bad.x"]

    run(scenario)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"stauts": 500}, id="unknown-key"),
        pytest.param({"status": 700}, id="status-out-of-range"),
        pytest.param({"status": "500"}, id="status-string"),
        pytest.param({"status": 500, "drop": -1}, id="negative-count"),
        pytest.param({"latency": -1}, id="negative-latency"),
        pytest.param({"reject_metric": "("}, id="bad-regex"),
        pytest.param([1], id="not-an-object"),
    ],
)
def test_bad_fault_specs_change_nothing(spec: object) -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        before = (await client.get(f"{emu.url}/control/faults")).json()
        resp = await client.post(f"{emu.url}/control/faults", json=spec)
        assert resp.status_code == 400
        assert resp.json()["error"]
        assert (await client.get(f"{emu.url}/control/faults")).json() == before

    run(scenario)


@pytest.mark.parametrize("query", ["?since=yesterday", "?dimension=nokey", "?until=1.5"])
def test_bad_points_queries(query: str) -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        assert (await client.get(f"{emu.url}/points{query}")).status_code == 400

    run(scenario)


# --- signatures ---------------------------------------------------------------------------


def signed_headers(
    emu: RunningEmulator,
    body: bytes,
    *,
    secret: str = SK,
    access_key: str = AK,
    version: int = 2,
    date: datetime | None = None,
    nonce: str | None = None,
    service: str = "monitor",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    base = dict(JSON if headers is None else headers)
    added = sign_request(
        credentials=Credentials(access_key, secret),
        version=version,
        method="POST",
        url=emu.endpoint(),
        headers=base,
        body=body,
        date=(date or datetime.now(UTC)).strftime(DATE_FORMAT),
        nonce=nonce or str(uuid.uuid4()),
        service=service,
    )
    return {**base, **added}


@pytest.mark.parametrize(("version", "path"), [(2, 1), (3, 1), (2, 2), (3, 2)])
def test_correctly_signed_requests_are_accepted(version: int, path: int) -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        auth = JDCloudAuth(Credentials(AK, SK), version=version)
        for metric in ("first", "second"):
            resp = await client.post(
                emu.endpoint(path), content=body_of(mkpoint(metric)), headers=JSON, auth=auth
            )
            assert resp.status_code == 200, resp.text
        assert len((await client.get(f"{emu.url}/points")).json()) == 2

    run(scenario, credentials=(AK, SK))


BODY = body_of(mkpoint())
STALE = datetime.now(UTC) - timedelta(minutes=16)


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


@pytest.mark.parametrize(
    ("make_headers", "content", "reason"),
    [
        pytest.param(lambda e: JSON, BODY, "missing Authorization", id="unsigned"),
        pytest.param(
            lambda e: signed_headers(e, BODY, secret="wrong"),
            BODY,
            "signature does not match",
            id="wrong-secret",
        ),
        pytest.param(
            lambda e: signed_headers(e, BODY, access_key="AKOTHER"),
            BODY,
            "unknown access key",
            id="wrong-access-key",
        ),
        pytest.param(
            lambda e: signed_headers(e, BODY),
            BODY.replace(b"1.5", b"2.5"),
            "x-jdcloud-content-sha256",
            id="tampered-body",
        ),
        pytest.param(
            lambda e: _without(signed_headers(e, BODY), "x-jdcloud-content-sha256"),
            BODY,
            "x-jdcloud-content-sha256",
            id="missing-content-sha256",
        ),
        pytest.param(
            lambda e: _without(signed_headers(e, BODY), "x-jdcloud-nonce"),
            BODY,
            "missing from the request: x-jdcloud-nonce",
            id="missing-nonce-header",
        ),
        pytest.param(
            lambda e: {**signed_headers(e, BODY), "content-type": "application/json; x=1"},
            BODY,
            "signature does not match",
            id="changed-signed-header",
        ),
        pytest.param(
            lambda e: signed_headers(e, BODY, headers={}),
            BODY,
            "SignedHeaders must include content-type",
            id="content-type-not-signed",
        ),
        pytest.param(
            lambda e: signed_headers(e, BODY, date=STALE),
            BODY,
            "away from the server clock",
            id="stale-date",
        ),
        pytest.param(
            lambda e: signed_headers(e, BODY, service="vm"),
            BODY,
            "credential scope",
            id="wrong-service",
        ),
        pytest.param(
            lambda e: {**JSON, "authorization": "Bearer x"},
            BODY,
            "authorization:",
            id="malformed-authorization",
        ),
    ],
)
def test_bad_signatures_are_refused(
    make_headers: Callable[[RunningEmulator], dict[str, str]], content: bytes, reason: str
) -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        resp = await client.post(emu.endpoint(), content=content, headers=make_headers(emu))
        assert resp.status_code == 401
        reply = resp.json()
        assert reply["error"]["status"] == "ACCESS_ERROR"
        assert reply["error"]["code"] == 401
        assert reason in reply["error"]["message"]
        assert SK not in resp.text
        assert (await client.get(f"{emu.url}/points")).json() == []
        assert (await client.get(f"{emu.url}/stats")).json()["signature_failures"] == 1

    run(scenario, credentials=(AK, SK))


def test_replayed_nonce_is_refused() -> None:
    async def scenario(emu: RunningEmulator, client: httpx.AsyncClient) -> None:
        headers = signed_headers(emu, BODY)
        first = await client.post(emu.endpoint(), content=BODY, headers=headers)
        again = await client.post(emu.endpoint(), content=BODY, headers=headers)
        assert (first.status_code, again.status_code) == (200, 401)
        assert "x-jdcloud-nonce was already used" in again.json()["error"]["message"]

    run(scenario, credentials=(AK, SK))


# --- as a program -------------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                return proc.stdout.readline().decode()
    raise AssertionError("emulator did not print its address in time")


def test_runs_as_a_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.emulator", "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = _read_line(proc, time.monotonic() + 15)
        assert line.startswith("emulator listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        resp = httpx.post(f"{url}/v2/customMetrics", content=BODY, headers=JSON, timeout=10)
        assert resp.status_code == 200
        assert resp.json()["result"]["success"] is True
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        _, stderr = proc.communicate(timeout=5)
        assert b"status=200" in stderr
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# --- the verifier and nonce cache on their own ------------------------------------------

GOLDEN_BODY = (
    b'{"metricDataList":[{"namespace":"statsd_gw","metric":"req.count","dimensions":'
    b'{"host":"h1"},"timestamp":1704067200,"type":1,"values":{"value":42}}]}'
)
GOLDEN_NOW = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("version", "path", "signature"),
    [
        pytest.param(
            2,
            "/v1/customMetrics",
            "a8d270483fc6ee5a8dcdce7a05c527657da6e4d904411c9f5e7685eacc39758b",
            id="golden-jdcloud2-v1",
        ),
        pytest.param(
            3,
            "/v2/customMetrics",
            "906f7801074d9ec253019cf6c40bf5d7a9bb28f1dd2450271218510af00948d4",
            id="golden-jdcloud3-v2",
        ),
    ],
)
def test_verifier_accepts_published_putmetricdata_vectors(
    version: int, path: str, signature: str
) -> None:
    def headers(sig: str) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "host": "monitor.cn-north-1.jdcloud-api.com",
            "x-jdcloud-date": "20240101T000000Z",
            "x-jdcloud-nonce": "ebc5f2f6-0d3c-4d0a-9b8e-2f2a6a0d7e11",
            "x-jdcloud-content-sha256": hashlib.sha256(GOLDEN_BODY).hexdigest(),
            "authorization": (
                f"JDCLOUD{version}-HMAC-SHA256 Credential=AKTEST/20240101/jdcloud-api/monitor/"
                f"jdcloud{version}_request, SignedHeaders=content-type;host;x-jdcloud-date;"
                f"x-jdcloud-nonce, Signature={sig}"
            ),
        }

    def verify(sig: str) -> str | None:
        return SignatureVerifier("AKTEST", "SKTEST").verify(
            method="POST",
            path=path,
            query="",
            headers=headers(sig),
            body=GOLDEN_BODY,
            now=GOLDEN_NOW,
        )

    assert verify(signature) is None
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert verify(flipped) == "signature does not match"


def test_nonce_cache_forgets_oldest_past_capacity() -> None:
    cache = NonceCache(capacity=3)
    for i in range(5):
        cache.add(f"n{i}", expires_at=1000.0, now=0.0)
    assert len(cache) == 3
    assert [f"n{i}" in cache for i in range(5)] == [False, False, True, True, True]


def test_nonce_cache_forgets_expired_nonces() -> None:
    cache = NonceCache(capacity=100)
    cache.add("old", expires_at=10.0, now=0.0)
    cache.add("new", expires_at=30.0, now=20.0)
    assert "old" not in cache
    assert "new" in cache
