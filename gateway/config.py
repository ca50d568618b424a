"""The gateway's settings: one frozen object built from flags, environment, TOML and defaults.

Owns ``Settings``, ``LoadedConfig``, ``ConfigError``, ``load_config`` and ``describe``.
Precedence, per option: command-line flag > ``GATEWAY_<NAME>`` environment variable >
the TOML file of ``--config`` / ``GATEWAY_CONFIG`` > default. Every value is read as text
and converted here, so that every problem is collected and reported together, one line
each, naming the option and where the value came from. Which options exist, their
defaults and their single-value rules come from the table in ``gateway.options``; this
module adds the rules that span options (static dimensions, ``{region}``).

Does no logging: warnings are returned to the CLI, which owns the handlers.
Must not import asyncio, numpy, httpx, or any gateway module but ``options``, ``names``
and ``errors``.
Credentials are not configuration: they never pass through here.
"""

from __future__ import annotations

import argparse
import difflib
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from gateway import __version__
from gateway.errors import GatewayError
from gateway.names import sanitize
from gateway.options import BY_NAME, OPTIONS, Address, Option, TomlType

__all__ = ["Address", "ConfigError", "LoadedConfig", "Settings", "describe", "load_config"]

API_WINDOW = 60
"""The window length the API expects; any other ``--window`` is a warning."""

_DEFAULT_UDP = Address("0.0.0.0", 8125)
_DEFAULT_HTTP = Address("0.0.0.0", 9102)


@dataclass(frozen=True, slots=True)
class Settings:
    """Effective settings. ``Settings()`` gives every default, with the host dimension
    fixed to ``host=localhost``; ``load_config`` computes it from NODE_NAME or the hostname."""

    udp: Address | None = _DEFAULT_UDP
    unix: str | None = None
    unix_mode: int = 0o622
    udp_rcvbuf: int = 8 * 1024 * 1024
    workers: int = 1
    event_loop: str = "auto"
    http: Address | None = _DEFAULT_HTTP
    endpoint: str = "https://monitor.cn-north-1.jdcloud-api.com/v1/customMetrics"
    region: str = "cn-north-1"
    namespace: str = "statsd"
    dimensions: tuple[tuple[str, str], ...] = (("host", "localhost"),)
    max_dimensions: int = 5
    max_dimension_bytes: int = 255
    max_series: int = 600_000
    window: int = API_WINDOW
    window_grace: float = 2.0
    gauge_ttl: float = 3600.0
    signature_version: int = 2
    point_type: int = 2
    request_timeout: float = 10.0
    ca_bundle: str | None = None
    max_pending_points: int = 1_000_000
    max_point_age: float = 604_800.0
    send_jitter: float = 10.0
    max_requests_per_minute: float = 1000.0
    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    shutdown_timeout: float = 20.0
    log_level: str = "info"
    log_format: str = "text"
    config_file: str | None = None


class ConfigError(GatewayError):
    """Bad configuration; ``problems`` holds one line per problem, all of them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    settings: Settings
    warnings: tuple[str, ...]
    check_config: bool


@dataclass(frozen=True, slots=True)
class _Raw:
    """The text of one option's value and where it came from (for problem lines)."""

    label: str
    items: tuple[str, ...]  # one item, or any number for a repeatable option


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError([f"command line: {message}"])


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser: every option as a string flag defaulting to None (not given)."""
    parser = _Parser(
        prog="statsd-gateway",
        allow_abbrev=False,
        description="StatsD aggregation gateway: UDP in, JD Cloud putMetricData out.",
        epilog="Precedence: flag > GATEWAY_<NAME> environment variable > --config file > "
        "default. Credentials: JDCLOUD_ACCESS_KEY / JDCLOUD_SECRET_KEY (optional "
        "JDCLOUD_SECURITY_TOKEN), else the active profile of ~/.jdc/config.",
    )
    for option in OPTIONS:
        default = option.default or "none"
        parser.add_argument(
            option.flag,
            metavar=option.metavar,
            action="append" if option.repeatable else "store",
            help=f"{option.help} (default: {default}; env {option.env})".replace("%", "%%"),
        )
    parser.add_argument(
        "--config", metavar="PATH", help="TOML file of options (env GATEWAY_CONFIG)"
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate everything, print the effective settings, exit 0 or 2",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def load_config(
    argv: Sequence[str], environ: Mapping[str, str], *, hostname: str | None = None
) -> LoadedConfig:
    """Build the settings from ``argv`` (without the program name) and ``environ``.

    Raises ConfigError carrying every problem found. ``--help`` and ``--version`` print and
    raise SystemExit(0), as argparse does. ``hostname`` replaces socket.gethostname().
    """
    problems: list[str] = []
    args, extras = build_parser().parse_known_args(list(argv))
    if extras:
        problems.append(f"command line: unrecognized arguments: {' '.join(extras)}")
    config_file: str | None = args.config or environ.get("GATEWAY_CONFIG") or None
    in_file = _read_file(config_file, problems) if config_file else {}
    where = f"config file {config_file}"

    values: dict[str, Any] = {}
    raws: dict[str, _Raw] = {}
    for option in OPTIONS:
        raw = _pick(option, vars(args)[option.name], environ, in_file, where)
        if raw is not None:
            raws[option.name] = raw
        if option.repeatable:
            continue  # the only one, --dimension, is settled in _dimensions
        if raw is None:
            values[option.field] = option.parse(option.default) if option.default else None
            continue
        try:
            values[option.field] = option.parse(raw.items[0])
        except ValueError as e:
            problems.append(f"{raw.label}: {e}")

    if "endpoint" in values:
        values["endpoint"] = values["endpoint"].replace(
            "{region}", values.get("region", BY_NAME["region"].default)
        )
    values["dimensions"] = _dimensions(raws.get("dimension"), values, environ, hostname, problems)

    if problems:
        raise ConfigError(problems)
    warnings: list[str] = []
    if values["window"] != API_WINDOW:
        label = raws["window"].label
        warnings.append(
            f"{label}: window is {values['window']} s; JD Cloud expects {API_WINDOW} s points, "
            "so other lengths may be refused or misread"
        )
    settings = Settings(**values, config_file=config_file)
    return LoadedConfig(settings, tuple(warnings), bool(args.check_config))


def describe(settings: Settings) -> list[str]:
    """``key = value`` lines of the effective settings (URL user info masked)."""
    lines = [f"{o.name} = {o.show(getattr(settings, o.field))}" for o in OPTIONS]
    lines.append(f"config_file = {settings.config_file or '(none)'}")
    return lines


def _pick(
    option: Option,
    flag: str | list[str] | None,
    environ: Mapping[str, str],
    in_file: Mapping[str, tuple[str, ...]],
    where: str,
) -> _Raw | None:
    """The value in effect for ``option``: flag, else environment, else file, else None."""
    if flag is not None:
        return _Raw(option.flag, tuple(flag) if isinstance(flag, list) else (flag,))
    text = environ.get(option.env, "")
    if text:  # an empty variable counts as unset
        items = tuple(i.strip() for i in text.split(",")) if option.repeatable else (text,)
        return _Raw(option.env, items)
    if option.name in in_file:
        return _Raw(f"{where}: {option.name}", in_file[option.name])
    return None


_TOML_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}


def _read_file(path: str, problems: list[str]) -> dict[str, tuple[str, ...]]:
    """The file's values as text items by key; its problems are appended to ``problems``."""
    where = f"config file {path}"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        problems.append(f"{where}: cannot read: {e.strerror or e}")
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{where}: invalid TOML: {' '.join(str(e).split())}")
        return {}
    found: dict[str, tuple[str, ...]] = {}
    for key, value in data.items():
        option = BY_NAME.get(key)
        if option is None:
            close = difflib.get_close_matches(key, list(BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}: unknown key {key!r}{hint}")
            continue
        items = _toml_items(option.toml, value)
        if items is None:
            kind = _TOML_TYPES.get(type(value), "table" if isinstance(value, dict) else "value")
            problems.append(f"{where}: {key}: must be {option.toml.value}, got {kind} {value!r}")
        else:
            found[key] = items
    return found


def _toml_items(want: TomlType, value: object) -> tuple[str, ...] | None:
    """The text items of a TOML value of type ``want``, or None when it has another type."""
    if isinstance(value, bool):
        return None
    if want is TomlType.INT and isinstance(value, int):
        return (str(value),)
    if want is TomlType.NUMBER and isinstance(value, int | float):
        return (str(value),)
    if want is TomlType.STRING and isinstance(value, str):
        return (value,)
    if want is TomlType.PAIRS:
        if isinstance(value, list) and all(isinstance(i, str) for i in value):
            return tuple(value)
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return tuple(f"{k}={v}" for k, v in value.items())
    return None


def _dimensions(
    raw: _Raw | None,
    values: Mapping[str, Any],
    environ: Mapping[str, str],
    hostname: str | None,
    problems: list[str],
) -> tuple[tuple[str, str], ...]:
    """The static dimensions: ``host=`` NODE_NAME or the hostname (sanitised), first, then
    the given ones; giving ``host`` yourself replaces the default one.

    The host dimension is kept when others are added (as Telegraf's global tags and
    DogStatsD's tags do): without it, the gateways of several nodes would write the same
    series and overwrite each other's points at the API.
    """
    option = BY_NAME["dimension"]
    node = environ.get("NODE_NAME") or hostname or socket.gethostname()
    default = f"host={sanitize(node.encode(errors='replace'))}"
    if raw is None:
        raw = _Raw("--dimension (default)", (default,))
    elif not any(item.partition("=")[0] == "host" for item in raw.items):
        raw = _Raw(raw.label, (default, *raw.items))
    pairs: list[tuple[str, str]] = []
    for item in raw.items:
        try:
            key, value = option.parse(item)
        except ValueError as e:
            problems.append(f"{raw.label}: {e}")
            continue
        if any(key == k for k, _ in pairs):
            problems.append(f"{raw.label}: duplicate key {key!r}")
        else:
            pairs.append((key, value))
    limit, byte_limit = values.get("max_dimensions"), values.get("max_dimension_bytes")
    if limit is not None and len(pairs) > limit:
        problems.append(
            f"{raw.label}: {len(pairs)} static dimensions, over --max-dimensions ({limit})"
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in pairs)
    if byte_limit is not None and size > byte_limit:
        problems.append(
            f"{raw.label}: static dimensions take {size} bytes, "
            f"over --max-dimension-bytes ({byte_limit})"
        )
    return tuple(pairs)
