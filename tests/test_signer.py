"""JD Cloud signer: the published vectors, the httpx auth, and Authorization parsing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from gateway.signer import (
    Credentials,
    JDCloudAuth,
    ParsedAuthorization,
    canonical_query,
    canonical_uri,
    compute_signature,
    parse_authorization,
    sign_request,
)

VECTORS_NAME = "signing-vectors.json"


def _vectors_path() -> Path:
    override = os.environ.get("GATEWAY_SHARED_DIR")
    if override:
        return Path(override) / "spec" / VECTORS_NAME
    return Path(__file__).resolve().parents[1].parent / "shared" / "spec" / VECTORS_NAME


def _load_vectors() -> list[dict[str, Any]]:
    path = _vectors_path()
    if not path.is_file():
        return []
    loaded: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


VECTORS = _load_vectors()
GOLDEN = [v for v in VECTORS if v["name"].startswith("putMetricData golden")]


def test_vectors_file_present() -> None:
    path = _vectors_path()
    assert path.is_file(), (
        f"signing vectors not found at {path}; set GATEWAY_SHARED_DIR to the directory "
        "holding spec/signing-vectors.json"
    )
    assert len(VECTORS) == 27, f"expected 27 signing vectors in {path}, found {len(VECTORS)}"
    assert len(GOLDEN) == 2, "expected the two putMetricData golden vectors"


def _version(vector: dict[str, Any]) -> int:
    return {"JDCLOUD2-HMAC-SHA256": 2, "JDCLOUD3-HMAC-SHA256": 3}[vector["algorithm"]]


def _vector_query(vector: dict[str, Any]) -> str:
    query = vector["query"]
    # One SDK vector gives its query as a dict of parameters: the SDK url-encodes it.
    return query if isinstance(query, str) else urlencode(query)


def _vector_headers(vector: dict[str, Any]) -> dict[str, str | tuple[str, ...]]:
    headers: dict[str, str | tuple[str, ...]] = dict(vector["headers"])
    if vector["host"] is not None:
        headers["host"] = vector["host"]
    headers["x-jdcloud-date"] = vector["date"]
    nonce = vector["nonce"]
    headers["x-jdcloud-nonce"] = nonce if isinstance(nonce, str) else tuple(nonce)
    return headers


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["name"]) for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    signature, signed = compute_signature(
        version=_version(vector),
        secret_key=vector["secret_key"],
        method=vector["method"],
        path=vector["path"],
        query=_vector_query(vector),
        headers=_vector_headers(vector),
        payload_hash=hashlib.sha256(vector["body"].encode()).hexdigest(),
        date=vector["date"],
        region=vector["region"],
        service=vector["service"],
    )
    assert signed == vector["signed_headers"]
    assert signature == vector["signature"]


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["name"]) for v in GOLDEN])
def test_sign_request_reproduces_golden(vector: dict[str, Any]) -> None:
    creds = Credentials(access_key=vector["access_key"], secret_key=vector["secret_key"])
    added = sign_request(
        credentials=creds,
        version=_version(vector),
        method=vector["method"],
        url=f"https://{vector['host']}:443{vector['path']}",
        headers={"Content-Type": vector["headers"]["content-type"], "User-Agent": "x"},
        body=vector["body"].encode(),
        date=vector["date"],
        nonce=vector["nonce"],
        region=vector["region"],
        service=vector["service"],
    )
    assert added["x-jdcloud-date"] == vector["date"]
    assert added["x-jdcloud-nonce"] == vector["nonce"]
    assert added["x-jdcloud-content-sha256"] == hashlib.sha256(vector["body"].encode()).hexdigest()
    assert "x-jdcloud-security-token" not in added
    parsed = parse_authorization(added["authorization"])
    assert parsed.signature == vector["signature"]
    assert ";".join(parsed.signed_headers) == vector["signed_headers"]
    assert parsed.access_key == vector["access_key"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("", "/", id="empty"),
        pytest.param("v1", "/v1", id="no-leading-slash"),
        pytest.param("//a///b/", "/a/b/", id="collapse-slashes"),
        pytest.param("/a+b/c%20d", "/a%20b/c%20d", id="plus-and-space"),
        pytest.param("/a%2Fb", "/a/b", id="encoded-slash"),
        pytest.param("/x/%zz", "/x/%25zz", id="bad-percent-kept"),
        pytest.param("/~a:b", "/~a%3Ab", id="tilde-safe"),
    ],
)
def test_canonical_uri(path: str, expected: str) -> None:
    assert canonical_uri(path) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("", "", id="empty"),
        pytest.param("b=2&a=1", "a=1&b=2", id="sorted"),
        pytest.param("=x&a", "a=", id="empty-key-dropped-bare-key"),
        pytest.param("a=x=y", "a=x%3Dy", id="split-at-first-equals"),
        pytest.param("k=a+b%2B", "k=a%20b%2B", id="plus-is-space"),
        pytest.param("a=2&a=1", "a=1&a=2", id="repeat-sorted-by-value"),
    ],
)
def test_canonical_query(query: str, expected: str) -> None:
    assert canonical_query(query) == expected


def _base_signature(**overrides: Any) -> tuple[str, str]:
    args: dict[str, Any] = {
        "version": 2,
        "secret_key": "sk",
        "method": "POST",
        "path": "/v1/customMetrics",
        "query": "",
        "headers": {"host": "h", "x-jdcloud-date": "20240101T000000Z", "x-jdcloud-nonce": "n"},
        "payload_hash": hashlib.sha256(b"{}").hexdigest(),
        "date": "20240101T000000Z",
        "region": "jdcloud-api",
        "service": "monitor",
    }
    args.update(overrides)
    return compute_signature(**args)


@pytest.mark.parametrize(
    "override",
    [
        pytest.param({"version": 3}, id="version"),
        pytest.param({"secret_key": "sk2"}, id="secret"),
        pytest.param({"method": "PUT"}, id="method"),
        pytest.param({"path": "/v2/customMetrics"}, id="path"),
        pytest.param({"query": "a=1"}, id="query"),
        pytest.param({"payload_hash": hashlib.sha256(b"{} ").hexdigest()}, id="body"),
        pytest.param({"region": "cn-north-1"}, id="region"),
        pytest.param({"service": "vm"}, id="service"),
        pytest.param({"date": "20240101T000001Z"}, id="date"),
        pytest.param(
            {
                "headers": {
                    "host": "h2",
                    "x-jdcloud-date": "20240101T000000Z",
                    "x-jdcloud-nonce": "n",
                }
            },
            id="header-value",
        ),
    ],
)
def test_every_input_changes_signature(override: dict[str, Any]) -> None:
    assert _base_signature(**override)[0] != _base_signature()[0]


def test_header_names_any_case_and_trimmed() -> None:
    lower = _base_signature()
    mixed = _base_signature(
        headers={"Host": " h ", "X-JDCloud-Date": "20240101T000000Z", "X-Jdcloud-Nonce": "n"}
    )
    assert mixed == lower
    assert lower[1] == "host;x-jdcloud-date;x-jdcloud-nonce"


@pytest.mark.parametrize(
    "override",
    [
        pytest.param({"version": 4}, id="version"),
        pytest.param({"date": "2024-01-01T00:00:00Z"}, id="date-format"),
        pytest.param({"payload_hash": "abc"}, id="payload-hash"),
        pytest.param({"headers": {"Host": "a", "host": "b"}}, id="duplicate-header"),
    ],
)
def test_compute_signature_rejects(override: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _base_signature(**override)


# --- JDCloudAuth over httpx.MockTransport -------------------------------------------------


class FakeClock:
    """Moves forward one second per call, so every attempt sees a new date."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(seconds=1)
        return current


def _nonces() -> Callable[[], str]:
    counter: Iterator[int] = iter(range(1_000_000))
    return lambda: f"nonce-{next(counter)}"


def _verify(request: httpx.Request, secret_key: str) -> ParsedAuthorization:
    """What a server does: recompute the signature from what it received."""
    parsed = parse_authorization(request.headers["authorization"])
    received = {name: request.headers[name] for name in parsed.signed_headers}
    signature, signed = compute_signature(
        version=parsed.version,
        secret_key=secret_key,
        method=request.method,
        path=request.url.raw_path.split(b"?")[0].decode(),
        query=request.url.query.decode(),
        headers=received,
        payload_hash=hashlib.sha256(request.content).hexdigest(),
        date=request.headers["x-jdcloud-date"],
        region=parsed.region,
        service=parsed.service,
    )
    assert signed == ";".join(parsed.signed_headers)
    assert signature == parsed.signature, "signature does not verify"
    assert (
        request.headers["x-jdcloud-content-sha256"] == hashlib.sha256(request.content).hexdigest()
    )
    return parsed


def _client(auth: JDCloudAuth, seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"requestId": "r", "result": {"success": True}})

    return httpx.Client(auth=auth, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("version", [pytest.param(2, id="v2"), pytest.param(3, id="v3")])
def test_auth_fresh_date_and_nonce_per_send(version: int) -> None:
    creds = Credentials(access_key="AK", secret_key="SK")
    clock = FakeClock(datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC))
    auth = JDCloudAuth(creds, version=version, clock=clock, nonce=_nonces())
    seen: list[httpx.Request] = []
    body = b'{"metricDataList":[]}'
    with _client(auth, seen) as client:
        for _ in range(2):
            client.post(
                "http://monitor.example:8080/v1/customMetrics",
                content=body,
                headers={"Content-Type": "application/json"},
            )
    assert len(seen) == 2
    first, second = seen
    assert first.headers["x-jdcloud-nonce"] == "nonce-0"
    assert second.headers["x-jdcloud-nonce"] == "nonce-1"
    assert first.headers["x-jdcloud-date"] == "20240101T235959Z"
    assert second.headers["x-jdcloud-date"] == "20240102T000000Z"
    assert first.headers["authorization"] != second.headers["authorization"]
    for request in seen:
        assert request.content == body
        parsed = _verify(request, "SK")
        assert parsed.version == version
        assert parsed.access_key == "AK"
        assert (parsed.region, parsed.service) == ("jdcloud-api", "monitor")
        assert parsed.signed_headers == (
            "content-type",
            "host",
            "x-jdcloud-date",
            "x-jdcloud-nonce",
        )
        assert request.headers["host"] == "monitor.example:8080"
    assert _verify(second, "SK").date == "20240102"


def test_auth_signature_covers_exact_body_bytes() -> None:
    creds = Credentials(access_key="AK", secret_key="SK")
    fixed = datetime(2024, 1, 1, tzinfo=UTC)
    seen: list[httpx.Request] = []
    with _client(JDCloudAuth(creds, clock=lambda: fixed, nonce=lambda: "n"), seen) as client:
        client.post("https://monitor.example/v1/customMetrics", content=b'{"a":1}')
        client.post("https://monitor.example/v1/customMetrics", content=b'{"a":2}')
    first, second = seen
    _verify(first, "SK")
    _verify(second, "SK")
    assert first.headers["authorization"] != second.headers["authorization"]
    # Same date, nonce and headers: only the body differs, and the signature follows it.
    tampered = httpx.Request("POST", first.url, headers=first.headers, content=b'{"a":2}')
    with pytest.raises(AssertionError, match="does not verify"):
        _verify(tampered, "SK")


def test_auth_wrong_secret_does_not_verify() -> None:
    seen: list[httpx.Request] = []
    auth = JDCloudAuth(Credentials(access_key="AK", secret_key="SK"))
    with _client(auth, seen) as client:
        client.post("https://monitor.example/v1/customMetrics", content=b"{}")
    _verify(seen[0], "SK")
    with pytest.raises(AssertionError, match="does not verify"):
        _verify(seen[0], "SK-other")


def test_auth_default_clock_and_nonce_are_fresh() -> None:
    seen: list[httpx.Request] = []
    with _client(JDCloudAuth(Credentials(access_key="AK", secret_key="SK")), seen) as client:
        client.post("https://monitor.example/v1/customMetrics", content=b"{}")
        client.post("https://monitor.example/v1/customMetrics", content=b"{}")
    nonces = {r.headers["x-jdcloud-nonce"] for r in seen}
    assert len(nonces) == 2
    stamp = datetime.strptime(seen[0].headers["x-jdcloud-date"], "%Y%m%dT%H%M%SZ")
    assert abs(stamp.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=5)


def test_auth_converts_clock_to_utc() -> None:
    seen: list[httpx.Request] = []
    plus8 = timezone(timedelta(hours=8))
    auth = JDCloudAuth(
        Credentials(access_key="AK", secret_key="SK"),
        clock=lambda: datetime(2024, 1, 1, 8, 0, 0, tzinfo=plus8),
    )
    with _client(auth, seen) as client:
        client.post("https://monitor.example/v1/customMetrics", content=b"{}")
    assert seen[0].headers["x-jdcloud-date"] == "20240101T000000Z"


def test_auth_rejects_naive_clock() -> None:
    auth = JDCloudAuth(
        Credentials(access_key="AK", secret_key="SK"), clock=lambda: datetime(2024, 1, 1)
    )
    with _client(auth, []) as client, pytest.raises(ValueError, match="timezone-aware"):
        client.post("https://monitor.example/v1/customMetrics", content=b"{}")


def test_security_token_is_sent_and_signed() -> None:
    creds = Credentials(access_key="AK", secret_key="SK", security_token="TOKEN-1")
    seen: list[httpx.Request] = []
    with _client(JDCloudAuth(creds, version=3), seen) as client:
        client.post(
            "https://monitor.example/v2/customMetrics",
            content=b"{}",
            headers={"Content-Type": "application/json"},
        )
    request = seen[0]
    assert request.headers["x-jdcloud-security-token"] == "TOKEN-1"
    parsed = _verify(request, "SK")
    assert "x-jdcloud-security-token" in parsed.signed_headers
    swapped = httpx.Request(
        "POST",
        request.url,
        headers={**request.headers, "x-jdcloud-security-token": "TOKEN-2"},
        content=request.content,
    )
    with pytest.raises(AssertionError, match="does not verify"):
        _verify(swapped, "SK")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param("https://m.example/v1/x", "m.example", id="https-default"),
        pytest.param("https://m.example:443/v1/x", "m.example", id="https-explicit-443"),
        pytest.param("http://m.example:80/v1/x", "m.example", id="http-explicit-80"),
        pytest.param("http://127.0.0.1:8125/v1/x", "127.0.0.1:8125", id="port-kept"),
        pytest.param("http://[::1]:9000/v1/x", "[::1]:9000", id="ipv6"),
    ],
)
def test_sign_request_host_from_url(url: str, host: str) -> None:
    creds = Credentials(access_key="AK", secret_key="SK")
    common: dict[str, Any] = {
        "credentials": creds,
        "version": 2,
        "method": "POST",
        "body": b"{}",
        "date": "20240101T000000Z",
        "nonce": "n",
    }
    from_url = sign_request(url=url, headers={}, **common)
    explicit = sign_request(url=url, headers={"Host": host}, **common)
    assert from_url["authorization"] == explicit["authorization"]


# --- Credentials and Authorization parsing -------------------------------------------------


def test_credentials_repr_hides_secret_and_token() -> None:
    creds = Credentials(access_key="AKID", secret_key="s3cr3t-value", security_token="t0k3n")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "s3cr3t" not in text
        assert "t0k3n" not in text
        assert "AKID" in text


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"access_key": "", "secret_key": "s"}, id="empty-access-key"),
        pytest.param({"access_key": "a", "secret_key": ""}, id="empty-secret"),
        pytest.param({"access_key": "a", "secret_key": "s", "security_token": ""}, id="token"),
    ],
)
def test_credentials_reject_empty(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Credentials(**kwargs)


GOOD_SIG = "a" * 64


@pytest.mark.parametrize("version", [pytest.param(2, id="v2"), pytest.param(3, id="v3")])
def test_parse_authorization_round_trip(version: int) -> None:
    added = sign_request(
        credentials=Credentials(access_key="AK/with/slash", secret_key="SK"),
        version=version,
        method="POST",
        url="https://m.example/v1/customMetrics",
        headers={"content-type": "application/json"},
        body=b"{}",
        date="20190917T064708Z",
        nonce="n",
        region="cn-north-1",
        service="monitor",
    )
    parsed = parse_authorization(added["authorization"])
    assert parsed.algorithm == f"JDCLOUD{version}-HMAC-SHA256"
    assert parsed.version == version
    assert parsed.access_key == "AK/with/slash"
    assert parsed.date == "20190917"
    assert (parsed.region, parsed.service) == ("cn-north-1", "monitor")
    assert parsed.signed_headers == ("content-type", "host", "x-jdcloud-date", "x-jdcloud-nonce")
    assert len(parsed.signature) == 64


def _auth(
    algorithm: str = "JDCLOUD2-HMAC-SHA256",
    credential: str = "AK/20240101/jdcloud-api/monitor/jdcloud2_request",
    signed: str = "host;x-jdcloud-date",
    signature: str = GOOD_SIG,
) -> str:
    return f"{algorithm} Credential={credential}, SignedHeaders={signed}, Signature={signature}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("", "expected", id="empty"),
        pytest.param("JDCLOUD2-HMAC-SHA256", "expected", id="algorithm-only"),
        pytest.param(_auth(algorithm="AWS4-HMAC-SHA256"), "algorithm", id="aws"),
        pytest.param(_auth(algorithm="JDCLOUD4-HMAC-SHA256"), "version 4", id="version-4"),
        pytest.param(
            "JDCLOUD2-HMAC-SHA256 Credential=AK/20240101/r/s/jdcloud2_request, Signature="
            + GOOD_SIG,
            "missing SignedHeaders",
            id="no-signed-headers",
        ),
        pytest.param(_auth() + ", Extra=1", "expected Credential", id="unknown-field"),
        pytest.param(_auth() + ", Signature=" + GOOD_SIG, "twice", id="duplicate-field"),
        pytest.param(_auth(credential="AK/20240101/r/s"), "Credential must", id="short-scope"),
        pytest.param(
            _auth(credential="AK//r/s/jdcloud2_request"), "Credential must", id="empty-date"
        ),
        pytest.param(
            _auth(credential="AK/2024-01-01/r/s/jdcloud2_request"), "8 digits", id="bad-date"
        ),
        pytest.param(
            _auth(credential="AK/20240101/r/s/jdcloud3_request"), "jdcloud2_request", id="term"
        ),
        pytest.param(_auth(signed="Host;x-jdcloud-date"), "lower-case", id="upper-header"),
        pytest.param(_auth(signed="host;;date"), "lower-case", id="empty-header"),
        pytest.param(_auth(signature="xyz"), "64 lowercase hex", id="short-signature"),
        pytest.param(_auth(signature="A" * 64), "64 lowercase hex", id="upper-signature"),
    ],
)
def test_parse_authorization_malformed(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_authorization(value)
    assert str(info.value).startswith("authorization:")
    assert "AK/" not in str(info.value)


def test_auth_works_with_async_client() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async def send_twice() -> None:
        auth = JDCloudAuth(Credentials(access_key="AK", secret_key="SK"), nonce=_nonces())
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(auth=auth, transport=transport) as client:
            for body in (b'{"n":1}', b'{"n":2}'):
                await client.post("https://monitor.example/v1/customMetrics", content=body)

    asyncio.run(send_twice())
    assert [r.headers["x-jdcloud-nonce"] for r in seen] == ["nonce-0", "nonce-1"]
    for request in seen:
        _verify(request, "SK")
