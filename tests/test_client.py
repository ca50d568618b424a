"""The putMetricData client: response parsing (pure) and real HTTP against the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.client import JDCloudClient, PointError, PutResult, parse_response
from gateway.emulator import start_emulator
from gateway.errors import DeliveryError
from gateway.signer import Credentials

KEYS = ("AKTESTGATEWAY01", "test-secret-not-real")
POINT = {
    "namespace": "statsd",
    "metric": "client.test",
    "dimensions": {"host": "node1"},
    "type": 2,
    "values": {"avg": 1, "sum": 2, "last": 1, "max": 1, "min": 1, "count": 2},
}


def _body(*points: dict[str, object]) -> bytes:
    return json.dumps({"metricDataList": list(points)}, separators=(",", ":")).encode()


def _point(metric: str = "client.test") -> dict[str, object]:
    return {**POINT, "metric": metric, "timestamp": int(time.time()) // 60 * 60}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(
            200,
            b'{"requestId":"r1","result":{"success":true,"errMetricDataList":[]}}',
            PutResult(200, True, "r1"),
            id="success",
        ),
        pytest.param(
            400,
            b'{"requestId":"r2","result":{"success":false,"errMetricDataList":'
            b'[{"errMetricData":"{\\"metric\\":\\"x\\"}","errDetail":"bad"}]},'
            b'"error":{"code":400,"status":"INVALID_ARGUMENT","message":"m"}}',
            PutResult(
                400, False, "r2", (PointError("bad", '{"metric":"x"}'),), "INVALID_ARGUMENT", "m"
            ),
            id="errMetricDataList",
        ),
        pytest.param(
            400,
            b'{"requestId":"r3","result":{"success":false,"metricDataList":'
            b'[{"data":{"metric":"x"},"errDetail":"Time value only allowed"}]}}',
            PutResult(400, False, "r3", (PointError("Time value only allowed", '{"metric":"x"}'),)),
            id="metricDataList",
        ),
        pytest.param(
            400,
            b'{"requestId":"r4","result":{"success":false,"ErrMetricData":'
            b'[{"errMetricData":"p","errDetail":"d"}]}}',
            PutResult(400, False, "r4", (PointError("d", "p"),)),
            id="ErrMetricData",
        ),
        pytest.param(
            401,
            b'{"requestId":"r5","error":{"status":"ACCESS_ERROR","code":401,"message":"no"}}',
            PutResult(401, False, "r5", (), "ACCESS_ERROR", "no"),
            id="auth",
        ),
        pytest.param(
            502,
            b"<html>bad gateway</html>",
            PutResult(502, False, error_message="<html>bad gateway</html>"),
            id="not-json",
        ),
        pytest.param(
            200,
            b'{"requestId":"r6","result":{"success":false}}',
            PutResult(200, False, "r6"),
            id="success-false",
        ),
    ],
)
def test_parse_response(status: int, body: bytes, expected: PutResult) -> None:
    assert parse_response(status, body) == expected


def test_retry_after_is_parsed() -> None:
    assert parse_response(429, b"{}", "7").retry_after == 7.0
    assert parse_response(429, b"{}", "soon").retry_after is None
    assert parse_response(429, b"{}").retryable


async def _with_emulator(check, **options):  # type: ignore[no-untyped-def]
    emulator = await start_emulator(**options)
    try:
        return await check(emulator)
    finally:
        await emulator.close()


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("path", [1, 2], ids=["v1", "v2"])
def test_signed_request_is_accepted(version: int, path: int) -> None:
    async def check(emulator):  # type: ignore[no-untyped-def]
        client = JDCloudClient(
            emulator.endpoint(path), Credentials(*KEYS), signature_version=version
        )
        try:
            first = await client.put(_body(_point()))
            second = await client.put(_body(_point("client.other")))
        finally:
            await client.aclose()
        return first, second, emulator.stats.signature_failures, len(emulator.store.query())

    first, second, failures, stored = asyncio.run(_with_emulator(check, credentials=KEYS))
    assert first.status == 200 and first.success and first.request_id
    assert second.success and second.request_id != first.request_id
    assert failures == 0 and stored == 2


def test_wrong_secret_gets_401_with_request_id() -> None:
    async def check(emulator):  # type: ignore[no-untyped-def]
        client = JDCloudClient(emulator.endpoint(1), Credentials(KEYS[0], "wrong-secret"))
        try:
            return await client.put(_body(_point()))
        finally:
            await client.aclose()

    result = asyncio.run(_with_emulator(check, credentials=KEYS))
    assert result.status == 401 and result.request_id and result.error_code == "ACCESS_ERROR"
    assert "wrong-secret" not in repr(result)


def test_connection_refused_is_a_retryable_delivery_error() -> None:
    async def check(emulator):  # type: ignore[no-untyped-def]
        url = emulator.endpoint(1)
        await emulator.close()
        client = JDCloudClient(url, Credentials(*KEYS), timeout=2)
        try:
            await client.put(_body(_point()))
        finally:
            await client.aclose()

    with pytest.raises(DeliveryError) as caught:
        asyncio.run(_with_emulator(check))
    assert caught.value.retryable
