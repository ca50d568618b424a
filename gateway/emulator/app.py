"""The emulator's HTTP routes: putMetricData, the read API and fault control.

Owns ``EmulatorConfig`` and ``build_app`` (an ``aiohttp.web.Application`` over a store,
stats, faults and an optional signature verifier). The order of checks for
``POST /v{1,2}/customMetrics``: injected faults (latency, drop, status), body size,
signature, Content-Type, strict JSON, request shape, then ``rules.check_point`` per point.
Must not import the gateway's delivery or aggregation modules; never logs credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.emulator.faults import FaultSpecError, FaultState
from gateway.emulator.replies import (
    ErrorStyle,
    PointError,
    access_error_body,
    injected_status_body,
    new_request_id,
    point_errors_body,
    request_error_body,
    success_body,
)
from gateway.emulator.store import EmulatorStats, PointStore
from gateway.emulator.verify import SignatureVerifier
from gateway.rules import MAX_BODY_BYTES, MAX_POINTS_PER_REQUEST, Limits, check_point

logger = logging.getLogger(__name__)

API_PATHS = ("/v1/customMetrics", "/v2/customMetrics")
CLIENT_MAX_SIZE = 4 * MAX_BODY_BYTES
"""Bodies up to this size are read in full; larger ones are not, but still get the same 400."""


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How the emulator judges requests. ``clock`` gives Unix seconds."""

    error_style: ErrorStyle = ErrorStyle.ERR_METRIC_DATA_LIST
    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], float] = time.time


class _Handlers:
    def __init__(
        self,
        config: EmulatorConfig,
        store: PointStore,
        stats: EmulatorStats,
        faults: FaultState,
        verifier: SignatureVerifier | None,
    ) -> None:
        self.config = config
        self.store = store
        self.stats = stats
        self.faults = faults
        self.verifier = verifier

    async def put_metric_data(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        decision = self.faults.take()
        if decision.latency > 0:
            await asyncio.sleep(decision.latency)
        too_large = False
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body, too_large = b"", True
        except ConnectionError:  # the client gave up (e.g. its time-out during the latency)
            self.stats.count_request("client_gone")
            logger.info(
                "putMetricData %s: client disconnected before its body was read", request.path
            )
            return web.Response(status=499)
        if decision.drop:
            self.stats.count_request("dropped")
            self.stats.connections_dropped += 1
            logger.info("putMetricData %s dropped connection (injected)", request.path)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if decision.status is not None:
            headers = {}
            if decision.retry_after is not None:
                headers["Retry-After"] = str(decision.retry_after)
            return self._reply(
                request,
                request_id,
                decision.status,
                injected_status_body(request_id, decision.status),
                headers=headers,
                note="injected",
            )
        if too_large or len(body) > MAX_BODY_BYTES:
            return self._refuse(request, request_id, f"body exceeds {MAX_BODY_BYTES} bytes")
        if self.verifier is not None:
            problem = self.verifier.verify(
                method=request.method,
                path=request.rel_url.raw_path,
                query=request.rel_url.raw_query_string,
                headers=_lower_headers(request),
                body=body,
                now=self.config.clock(),
            )
            if problem is not None:
                self.stats.signature_failures += 1
                return self._reply(
                    request, request_id, 401, access_error_body(request_id, problem), note=problem
                )
        if request.content_type != "application/json":
            return self._refuse(request, request_id, "Content-Type must be application/json")
        document, problem = _parse_strict_json(body)
        if problem is not None:
            return self._refuse(request, request_id, problem)
        points, problem = _point_list(document)
        if problem is not None:
            return self._refuse(request, request_id, problem)
        return self._judge_points(request, request_id, points)

    def _judge_points(
        self, request: web.Request, request_id: str, points: list[object]
    ) -> web.Response:
        now = self.config.clock()
        errors: list[PointError] = []
        valid: list[Mapping[str, Any]] = []
        for point in points:
            reasons = check_point(point, now=now, limits=self.config.limits)
            if isinstance(point, Mapping):
                injected = self.faults.rejects(point.get("metric"))
                if injected is not None:
                    reasons.append(injected)
            if reasons:
                errors.append(PointError(point, "; ".join(reasons)))
            else:
                assert isinstance(point, Mapping)
                valid.append(point)
        for point in valid:
            _, overwrote = self.store.add(
                point, request_id=request_id, path=request.path, received_at=now
            )
            self.stats.overwrites += overwrote
        self.stats.points_accepted += len(valid)
        self.stats.points_rejected += len(errors)
        if errors:
            body = point_errors_body(request_id, errors, len(points), self.config.error_style)
            status = 400
        else:
            body = success_body(request_id)
            status = 200
        return self._reply(
            request,
            request_id,
            status,
            body,
            note=f"points={len(points)} accepted={len(valid)} rejected={len(errors)}",
        )

    def _refuse(self, request: web.Request, request_id: str, message: str) -> web.Response:
        return self._reply(
            request, request_id, 400, request_error_body(request_id, message), note=message
        )

    def _reply(
        self,
        request: web.Request,
        request_id: str,
        status: int,
        body: dict[str, Any],
        *,
        note: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self.stats.count_request(status)
        logger.info(
            "putMetricData %s status=%d %s requestId=%s", request.path, status, note, request_id
        )
        return web.json_response(body, status=status, headers=headers)

    async def get_points(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        dims: dict[str, str] = {}
        for item in query.getall("dimension", []):
            key, eq, value = item.partition("=")
            if not eq or not key:
                return _bad_query(f"dimension must be KEY=VALUE, got {item!r}")
            dims[key] = value
        bounds: dict[str, int | None] = {}
        for name in ("since", "until"):
            raw = query.get(name)
            try:
                bounds[name] = None if raw in (None, "") else int(raw)
            except ValueError:
                return _bad_query(f"{name} must be an integer of Unix seconds, got {raw!r}")
        found = self.store.query(
            namespace=query.get("namespace") or None,
            metric=query.get("metric") or None,
            dimensions=dims,
            since=bounds["since"],
            until=bounds["until"],
        )
        return web.json_response([p.to_json() for p in found])

    async def delete_points(self, request: web.Request) -> web.Response:
        return web.json_response({"deleted": self.store.clear()})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.to_json(points_stored=len(self.store)))

    async def delete_stats(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response(self.stats.to_json(points_stored=len(self.store)))

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json())

    async def post_faults(self, request: web.Request) -> web.Response:
        document, problem = _parse_strict_json(await request.read())
        if problem is None and not isinstance(document, dict):
            problem = "fault control body must be a JSON object"
        if problem is not None:
            return _bad_query(problem)
        assert isinstance(document, dict)
        try:
            self.faults.update(document)
        except FaultSpecError as exc:
            return _bad_query(str(exc))
        logger.info("faults set: %s", json.dumps(self.faults.to_json(), sort_keys=True))
        return web.json_response(self.faults.to_json())

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        logger.info("faults cleared")
        return web.json_response(self.faults.to_json())


def build_app(
    config: EmulatorConfig,
    *,
    store: PointStore,
    stats: EmulatorStats,
    faults: FaultState,
    verifier: SignatureVerifier | None,
) -> web.Application:
    """The emulator's application; the caller owns the runner and the listening socket."""
    handlers = _Handlers(config, store, stats, faults, verifier)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    for path in API_PATHS:
        app.router.add_post(path, handlers.put_metric_data)
    app.router.add_get("/points", handlers.get_points)
    app.router.add_delete("/points", handlers.delete_points)
    app.router.add_get("/stats", handlers.get_stats)
    app.router.add_delete("/stats", handlers.delete_stats)
    app.router.add_get("/control/faults", handlers.get_faults)
    app.router.add_post("/control/faults", handlers.post_faults)
    app.router.add_delete("/control/faults", handlers.delete_faults)
    return app


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _parse_strict_json(body: bytes) -> tuple[object, str | None]:
    """The decoded document, or an error: UTF-8 only, no NaN/Infinity literals."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not UTF-8"
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except RecursionError:
        return None, "body is not valid JSON: nested too deeply"
    except ValueError as exc:
        return None, f"body is not valid JSON: {exc}"


def _point_list(document: object) -> tuple[list[object], str | None]:
    if not isinstance(document, dict):
        return [], 'body must be a JSON object {"metricDataList": [...]}'
    extra = sorted(k for k in document if k != "metricDataList")
    if extra:
        return [], f"unknown body fields: {', '.join(extra)}"
    points = document.get("metricDataList")
    if not isinstance(points, list) or not points:
        return [], "metricDataList must be a non-empty array"
    if len(points) > MAX_POINTS_PER_REQUEST:
        return [], f"metricDataList has {len(points)} points, at most {MAX_POINTS_PER_REQUEST}"
    return points, None


def _lower_headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def _bad_query(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
