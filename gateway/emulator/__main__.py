"""Command line: ``python -m gateway.emulator --listen 127.0.0.1:0 [options]``.

Owns argument parsing, logging setup, the serve-until-signal loop and the one line on
stdout that tells scripts the bound address (``emulator listening on http://HOST:PORT``).
Exit status: 0 after SIGTERM/SIGINT, 2 for bad options or an address that cannot be bound.
Never prints or logs the secret key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from gateway.emulator.replies import ErrorStyle
from gateway.emulator.server import start_emulator
from gateway.emulator.verify import DEFAULT_MAX_SKEW_SECONDS
from gateway.rules import Limits

logger = logging.getLogger("gateway.emulator")

_DEFAULT_LIMITS = Limits()


def _listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.emulator",
        description="Local emulator of JD Cloud's putMetricData API (see docs/emulator.md).",
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="address to serve on; port 0 picks a free one",
    )
    parser.add_argument("--access-key", help="check signatures for this access key")
    parser.add_argument("--secret-key", help="the secret key for --access-key")
    parser.add_argument(
        "--max-skew-seconds",
        type=float,
        default=DEFAULT_MAX_SKEW_SECONDS,
        help="largest accepted difference of x-jdcloud-date from now",
    )
    parser.add_argument(
        "--error-style",
        choices=[s.value for s in ErrorStyle],
        default=ErrorStyle.ERR_METRIC_DATA_LIST.value,
        help="spelling of the per-point error list in 400 answers",
    )
    parser.add_argument("--max-dimensions", type=int, default=_DEFAULT_LIMITS.max_dimensions)
    parser.add_argument(
        "--max-dimension-bytes", type=int, default=_DEFAULT_LIMITS.max_dimension_bytes
    )
    parser.add_argument("--max-age-seconds", type=int, default=_DEFAULT_LIMITS.max_age_seconds)
    parser.add_argument(
        "--max-future-seconds", type=int, default=_DEFAULT_LIMITS.max_future_seconds
    )
    faults = parser.add_argument_group("faults (also settable at run time: /control/faults)")
    faults.add_argument(
        "--fault-status",
        type=int,
        metavar="CODE",
        help="answer putMetricData requests with this HTTP status",
    )
    faults.add_argument(
        "--fault-status-count",
        type=int,
        metavar="N",
        help="for the next N requests (default 1; 0: until cleared)",
    )
    faults.add_argument(
        "--fault-retry-after",
        type=int,
        metavar="SECONDS",
        help="send Retry-After with the injected status",
    )
    faults.add_argument(
        "--fault-latency",
        type=float,
        metavar="SECONDS",
        help="delay putMetricData answers by this much",
    )
    faults.add_argument(
        "--fault-latency-count",
        type=int,
        metavar="N",
        help="for the next N requests (default 0: until cleared)",
    )
    faults.add_argument(
        "--fault-drop",
        type=int,
        metavar="N",
        help="close the connection without an answer for the next N requests",
    )
    faults.add_argument(
        "--fault-reject-metric",
        metavar="REGEX",
        help="refuse points whose metric matches REGEX with a per-point 400",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def _fault_spec(args: argparse.Namespace) -> dict[str, Any]:
    names = {
        "fault_status": "status",
        "fault_status_count": "status_count",
        "fault_retry_after": "retry_after",
        "fault_latency": "latency",
        "fault_latency_count": "latency_count",
        "fault_drop": "drop",
        "fault_reject_metric": "reject_metric",
    }
    return {
        key: getattr(args, attr) for attr, key in names.items() if getattr(args, attr) is not None
    }


async def _serve(args: argparse.Namespace) -> int:
    credentials = None
    if args.access_key or args.secret_key:
        credentials = (args.access_key, args.secret_key)
    host, port = args.listen
    try:
        running = await start_emulator(
            host,
            port,
            credentials=credentials,
            error_style=args.error_style,
            limits=Limits(
                max_dimensions=args.max_dimensions,
                max_dimension_bytes=args.max_dimension_bytes,
                max_age_seconds=args.max_age_seconds,
                max_future_seconds=args.max_future_seconds,
            ),
            faults=_fault_spec(args),
            max_skew_seconds=args.max_skew_seconds,
        )
    except (OSError, ValueError) as exc:
        logger.error("emulator cannot start: %s", exc)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        print(f"emulator listening on {running.url}", flush=True)
        logger.info(
            "emulator listening on %s (signatures %s, error style %s)",
            running.url,
            "checked" if credentials else "not checked",
            args.error_style,
        )
        await stop.wait()
        logger.info("emulator stopping")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await running.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if bool(args.access_key) != bool(args.secret_key):
        parser.print_usage(sys.stderr)
        print("error: --access-key and --secret-key go together", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
