"""The ``statsd-gateway`` command: configuration in, exit status out.

    statsd-gateway [options]            run the gateway
    statsd-gateway --check-config       validate, print the effective settings, exit 0 or 2
    statsd-gateway emulator [options]   run the local putMetricData emulator

Exit status: 0 after a clean stop, 2 for bad configuration or a listener that cannot be
bound (one line per problem on stderr, never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from gateway.client import JDCloudClient
from gateway.clock import SystemClock
from gateway.config import ConfigError, Settings, describe, load_config
from gateway.credentials import CredentialsError, load_credentials, masked
from gateway.errors import GatewayError
from gateway.logs import setup_logging
from gateway.loops import event_loop
from gateway.malloc import tune_allocator
from gateway.serve import serve
from gateway.signer import Credentials
from gateway.sinks import ApiSink, Sink, StdoutSink

logger = logging.getLogger("gateway")

EXIT_OK = 0
EXIT_CONFIG = 2
_NO_CREDENTIALS = (
    "no JD Cloud credentials for --endpoint {endpoint}: set JDCLOUD_ACCESS_KEY and "
    "JDCLOUD_SECRET_KEY (or a profile in ~/.jdc/config), or use --endpoint stdout"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["emulator"]:
        from gateway.emulator.__main__ import main as emulator_main

        return emulator_main(args[1:])
    try:
        loaded = load_config(args, os.environ)
    except ConfigError as exc:
        return _refuse(exc.problems)
    settings = loaded.settings
    setup_logging(settings.log_level, settings.log_format)
    for warning in loaded.warnings:
        logger.warning("%s", warning)
    to_stdout = settings.endpoint == "stdout"
    try:
        credentials = None if to_stdout else load_credentials(os.environ)
    except CredentialsError as exc:
        return _refuse([str(exc)])
    if credentials is None and not to_stdout:
        return _refuse([_NO_CREDENTIALS.format(endpoint=settings.endpoint)])
    if settings.spool_dir and (problem := _spool_problem(settings.spool_dir)):
        return _refuse([problem])
    loop = event_loop(settings.event_loop)
    if isinstance(loop, str):
        return _refuse([loop])
    if loaded.check_config:
        print("\n".join([*describe(settings), _describe_credentials(credentials)]))
        return EXIT_OK
    tune_allocator(os.environ)
    logger.info("event loop: %s", loop.description)
    try:
        with asyncio.Runner(loop_factory=loop.factory) as runner:
            runner.run(_serve(settings, credentials))
    except GatewayError as exc:  # a listener, the spool: one line, exit 2
        return _refuse([str(exc)])
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_OK
    return EXIT_OK


def _sink(settings: Settings, credentials: Credentials | None) -> Sink:
    if credentials is None:
        return StdoutSink()
    client = JDCloudClient(
        settings.endpoint,
        credentials,
        signature_version=settings.signature_version,
        timeout=settings.request_timeout,
        ca_bundle=settings.ca_bundle,
    )
    return ApiSink(client, SystemClock())


async def _serve(settings: Settings, credentials: Credentials | None) -> None:
    # The sink is built inside the event loop: the HTTP client's pool belongs to it.
    await serve(settings, _sink(settings, credentials))


def _spool_problem(directory: str) -> str | None:
    """--check-config and the start agree: the spool folder must exist or be creatable,
    and be writable."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        return f"--spool-dir {directory}: cannot create it: {exc.strerror or exc}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"--spool-dir {directory}: not writable by this user"
    return None


def _describe_credentials(credentials: Credentials | None) -> str:
    if credentials is None:
        return "credentials = (not needed for --endpoint stdout)"
    token = ", with security token" if credentials.security_token else ""
    return f"credentials = access key {masked(credentials.access_key)}{token}"


def _refuse(problems: Sequence[str]) -> int:
    for problem in problems:
        print(f"statsd-gateway: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
