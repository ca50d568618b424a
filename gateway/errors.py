"""The gateway's exception tree.

    GatewayError                 anything the gateway raises on purpose
    ├── ConfigError              bad configuration: every problem, one line each (exit 2)
    ├── StartupError             a listener cannot bind (exit 2)
    ├── CredentialsError         credentials incomplete or unreadable (exit 2)
    ├── SpoolError               the spool directory cannot be used or written (exit 2 at start)
    └── DeliveryError            a request failed; carries status, retryable, request_id

Malformed StatsD lines are not exceptions: the parser returns them as reason-coded data.
``ConfigError``, ``CredentialsError`` and ``SpoolError`` live beside what they describe
(``gateway.config``, ``gateway.credentials``, ``gateway.spool``) and derive from
``GatewayError``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class StartupError(GatewayError):
    """The gateway cannot start as configured; the message is one line for the operator."""


class DeliveryError(GatewayError):
    """A putMetricData request failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.request_id = request_id
