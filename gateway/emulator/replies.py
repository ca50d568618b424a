"""The JSON bodies the emulator answers with, in JD Cloud's shapes.

Owns ``ErrorStyle`` (the three spellings of the per-point error list in
``spec/jdcloud-api.md``), ``PointError``, and the builders of success, per-point error,
request error, access error and injected-status bodies.
No aiohttp, no I/O, no logging.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any


class ErrorStyle(enum.StrEnum):
    """How a 400 with per-point errors spells its list (``result.<style>``).

    - ``errMetricDataList``: ``[{"errMetricData": "<point as JSON text>", "errDetail": ...}]``
      (JD's API reference; the default).
    - ``metricDataList``: ``[{"data": <point object>, "errDetail": ...}]`` (the seed's sample).
    - ``ErrMetricData``: ``[{"errMetricData": "<point as JSON text>", "errDetail": ...}]``
      under the key ``ErrMetricData`` (the SDK model's type name used as the key; JD's docs
      give no sample of this spelling, so the emulator chooses this shape).
    """

    ERR_METRIC_DATA_LIST = "errMetricDataList"
    METRIC_DATA_LIST = "metricDataList"
    ERR_METRIC_DATA = "ErrMetricData"


@dataclass(frozen=True, slots=True)
class PointError:
    """One refused point: the item as received and the reasons joined by ``"; "``."""

    point: object
    detail: str


# Google-style status names, as JD Cloud's OpenAPI uses them.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "ACCESS_ERROR",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RATE_LIMIT",
    500: "INTERNAL",
    502: "BAD_GATEWAY",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def new_request_id() -> str:
    """A fresh random request id (32 lowercase hex digits)."""
    return uuid.uuid4().hex


def status_name(code: int) -> str:
    return _STATUS_NAMES.get(code, "UNKNOWN")


def success_body(request_id: str) -> dict[str, Any]:
    return {"requestId": request_id, "result": {"success": True, "errMetricDataList": []}}


def point_errors_body(
    request_id: str, errors: Sequence[PointError], total: int, style: ErrorStyle
) -> dict[str, Any]:
    """The 400 body for a request in which some points were refused."""
    entries: list[dict[str, Any]]
    if style is ErrorStyle.METRIC_DATA_LIST:
        entries = [{"data": e.point, "errDetail": e.detail} for e in errors]
    else:
        entries = [{"errMetricData": point_text(e.point), "errDetail": e.detail} for e in errors]
    return {
        "requestId": request_id,
        "result": {"success": False, style.value: entries},
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": f"{len(errors)} of {total} points are invalid",
            "details": None,
        },
    }


def request_error_body(request_id: str, message: str) -> dict[str, Any]:
    """The 400 body for a request refused as a whole (no per-point list)."""
    return {
        "requestId": request_id,
        "error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message, "details": None},
    }


def access_error_body(request_id: str, message: str) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "error": {"status": "ACCESS_ERROR", "code": 401, "message": message},
    }


def injected_status_body(request_id: str, code: int) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "status"
    return {
        "requestId": request_id,
        "error": {
            "code": code,
            "status": status_name(code),
            "message": f"{phrase} (injected fault)",
        },
    }


def point_text(point: object) -> str:
    """A received point as compact JSON text (for ``errMetricData``)."""
    return json.dumps(point, separators=(",", ":"), ensure_ascii=False)
