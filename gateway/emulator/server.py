"""Running the emulator inside an event loop: ``start_emulator`` and ``RunningEmulator``.

Owns binding the listening socket (port 0 allowed; the bound address is read back from the
live socket) and shutting it down. Must not parse command lines or configure logging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from gateway.emulator.app import EmulatorConfig, build_app
from gateway.emulator.faults import FaultState
from gateway.emulator.replies import ErrorStyle
from gateway.emulator.store import EmulatorStats, PointStore
from gateway.emulator.verify import (
    DEFAULT_MAX_SKEW_SECONDS,
    DEFAULT_NONCE_CAPACITY,
    SignatureVerifier,
)
from gateway.rules import Limits


@dataclass(slots=True)
class RunningEmulator:
    """A started emulator. ``url`` is the base (``http://127.0.0.1:43121``) without a path."""

    host: str
    port: int
    store: PointStore
    stats: EmulatorStats
    faults: FaultState
    verifier: SignatureVerifier | None
    _runner: web.AppRunner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def endpoint(self, version: int = 1) -> str:
        """The putMetricData URL: ``.../v1/customMetrics`` or ``.../v2/customMetrics``."""
        if version not in (1, 2):
            raise ValueError("putMetricData path version must be 1 or 2")
        return f"{self.url}/v{version}/customMetrics"

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningEmulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    credentials: tuple[str, str] | None = None,
    error_style: ErrorStyle | str = ErrorStyle.ERR_METRIC_DATA_LIST,
    limits: Limits | None = None,
    faults: Mapping[str, Any] | None = None,
    max_skew_seconds: float = DEFAULT_MAX_SKEW_SECONDS,
    nonce_capacity: int = DEFAULT_NONCE_CAPACITY,
    clock: Callable[[], float] = time.time,
) -> RunningEmulator:
    """Bind and serve; ``credentials`` = (access key, secret key) turns on signature checks.

    ``faults`` is a control JSON object (see ``faults.py``) in force from the first request.
    Raises ``OSError`` when the address cannot be bound and ``ValueError`` for bad options.
    """
    fault_state = FaultState()
    if faults:
        fault_state.update(faults)
    verifier = None
    if credentials is not None:
        verifier = SignatureVerifier(
            credentials[0],
            credentials[1],
            max_skew_seconds=max_skew_seconds,
            nonce_capacity=nonce_capacity,
        )
    config = EmulatorConfig(
        error_style=ErrorStyle(error_style),
        limits=limits if limits is not None else Limits(),
        clock=clock,
    )
    store = PointStore()
    stats = EmulatorStats()
    app = build_app(config, store=store, stats=stats, faults=fault_state, verifier=verifier)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
    except BaseException:
        await runner.cleanup()
        raise
    return RunningEmulator(
        host=str(bound_host),
        port=int(bound_port),
        store=store,
        stats=stats,
        faults=fault_state,
        verifier=verifier,
        _runner=runner,
    )
