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

from gateway.app import serve
from gateway.config import ConfigError, Settings, describe, load_config
from gateway.errors import StartupError
from gateway.logs import setup_logging
from gateway.sinks import Sink, StdoutSink

logger = logging.getLogger("gateway")

EXIT_OK = 0
EXIT_CONFIG = 2


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
    if loaded.check_config:
        print("\n".join(describe(settings)))
        return EXIT_OK
    try:
        sink = _sink(settings)
        asyncio.run(serve(settings, sink))
    except StartupError as exc:
        return _refuse([str(exc)])
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_OK
    return EXIT_OK


def _sink(settings: Settings) -> Sink:
    if settings.endpoint == "stdout":
        return StdoutSink()
    raise StartupError(
        f"--endpoint {settings.endpoint}: sending to JD Cloud is not available in this "
        "version; use --endpoint stdout"
    )


def _refuse(problems: Sequence[str]) -> int:
    for problem in problems:
        print(f"statsd-gateway: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
