"""``/metrics``, ``/healthz`` and ``/readyz`` on ``--http``, served by aiohttp inside the
gateway's event loop (CONTRACT 5).

``/healthz`` answers 200 whenever the event loop runs (answering proves it).  ``/readyz``
reads state the pipeline already keeps, through ``readiness()``; it never makes a round trip.

No numpy; knows nothing of the pipeline beyond the two callables it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway.errors import StartupError
from gateway.options import Address

logger = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, reason); the reason is the body of the answer."""


class HealthServer:
    def __init__(self, address: Address, registry: CollectorRegistry, readiness: Readiness) -> None:
        self._address = address
        self._readiness = readiness
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry, disable_compression=True))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._address.host, self._address.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise StartupError(
                f"--http {self._address}: cannot bind: {exc.strerror or exc}"
            ) from None
        host, port = self._runner.addresses[0][:2]
        self.bound = (host, port)
        logger.info("http listening address=%s:%d paths=/metrics,/healthz,/readyz", host, port)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, reason = self._readiness()
        return web.Response(status=200 if ready else 503, text=reason + "\n")
