"""The putMetricData client: one signed POST of one body, and what the API answered.

``JDCloudClient.put`` makes exactly one attempt and returns a typed ``PutResult`` or raises
``DeliveryError`` for time-outs and connection errors.  What to do with the outcome (retry,
give up, hold) is the caller's decision (``gateway.delivery``), so the delivery rules can
change without touching the client.

``parse_response`` is pure.  It accepts the three spellings of the per-point error list
that JD Cloud's documents use: ``errMetricDataList``/``errMetricData`` (a JSON string),
``metricDataList``/``data`` (an object) and ``ErrMetricData``.

No numpy, no prometheus; credentials never leave ``JDCloudAuth``.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import certifi
import httpx

from gateway import __version__
from gateway.errors import DeliveryError
from gateway.signer import Credentials, JDCloudAuth

USER_AGENT = f"statsd-gateway/{__version__}"
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class PointError:
    """One point the API refused: why, and the point as it was echoed back."""

    detail: str
    point: str


@dataclass(frozen=True, slots=True)
class PutResult:
    status: int
    success: bool
    request_id: str | None = None
    rejected: tuple[PointError, ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES

    def describe(self) -> str:
        """A one-line account for logs: status, error, requestId."""
        parts = [f"status={self.status}"]
        if self.error_code:
            parts.append(f"error={self.error_code}")
        if self.error_message:
            parts.append(f"message={self.error_message[:200]!r}")
        parts.append(f"requestId={self.request_id or '-'}")
        return " ".join(parts)


def parse_response(status: int, body: bytes, retry_after: str | None = None) -> PutResult:
    """Interpret a putMetricData answer; never raises on a malformed body."""
    try:
        document: Any = json.loads(body) if body else {}
    except ValueError:
        document = None
    if not isinstance(document, dict):
        text = body[:200].decode("utf-8", "replace")
        return PutResult(status, False, error_message=text, retry_after=_seconds(retry_after))
    result = document.get("result")
    result = result if isinstance(result, dict) else {}
    error = document.get("error")
    error = error if isinstance(error, dict) else {}
    request_id = document.get("requestId")
    code = error.get("status") or error.get("code")
    return PutResult(
        status=status,
        success=status == 200 and result.get("success", True) is not False,
        request_id=str(request_id) if request_id is not None else None,
        rejected=tuple(_point_errors(result)),
        error_code=str(code) if code is not None else None,
        error_message=str(error["message"]) if error.get("message") is not None else None,
        retry_after=_seconds(retry_after),
    )


def _point_errors(result: dict[str, Any]) -> list[PointError]:
    for key, point_key in (
        ("errMetricDataList", "errMetricData"),
        ("metricDataList", "data"),
        ("ErrMetricData", "errMetricData"),
    ):
        entries = result.get(key)
        if isinstance(entries, list) and entries:
            return [_point_error(entry, point_key) for entry in entries]
    return []


def _point_error(entry: object, point_key: str) -> PointError:
    if not isinstance(entry, dict):
        return PointError(detail="", point=json.dumps(entry))
    point = entry.get(point_key, entry.get("data", entry.get("errMetricData", "")))
    if not isinstance(point, str):
        point = json.dumps(point, separators=(",", ":"))
    return PointError(detail=str(entry.get("errDetail", "")), point=point)


def _seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is not used by JD Cloud)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification always on; ``--ca-bundle`` adds a CA to the public ones."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class JDCloudClient:
    """A pooled, keep-alive HTTP client for one putMetricData endpoint."""

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials,
        *,
        signature_version: int = 2,
        timeout: float = 10.0,
        ca_bundle: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(
            auth=JDCloudAuth(credentials, version=signature_version),
            timeout=httpx.Timeout(timeout),
            verify=tls_context(ca_bundle),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
            transport=transport,
        )

    async def put(self, body: bytes) -> PutResult:
        """POST one body (signed afresh); raises DeliveryError when no answer came."""
        try:
            response = await self._http.post(self.endpoint, content=body)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timeout: {type(exc).__name__}", retryable=True) from None
        except httpx.RequestError as exc:  # connection, protocol, decoding: no usable answer
            raise DeliveryError(
                f"connection error: {type(exc).__name__}: {exc}", retryable=True
            ) from None
        return parse_response(
            response.status_code, response.content, response.headers.get("retry-after")
        )

    async def aclose(self) -> None:
        await self._http.aclose()
