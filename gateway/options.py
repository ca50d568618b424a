"""The gateway's option table and the parsers of single option values.

Owns: ``OPTIONS``, the one table (name, metavar, default, help, parser, TOML type) that
drives argparse, the environment and TOML lookups, ``--help``, the docs table and
``describe()``; ``Address``; and the pure text-to-value parsers. Each parser takes the text
form of one value and returns the typed value or raises ``ValueError`` whose message is the
rule and the offending text (``must be an integer from 1 to 3600, got '0'``).

Must not import: logging, asyncio, numpy, or any gateway module but ``gateway.names``.
Cross-option rules (dimension limits, ``{region}``) live in
``gateway.config``.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.names import MAX_NAME_BYTES, is_api_name

API_CHARSET = "[0-9A-Za-z._]"
DEFAULT_ENDPOINT = "https://monitor.{region}.jdcloud-api.com/v1/customMetrics"
DEFAULT_REGION = "cn-north-1"


@dataclass(frozen=True, slots=True)
class Address:
    """A listening address; ``host`` holds an IPv6 literal without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class TomlType(enum.Enum):
    """What a TOML value must be for an option; the value is the wording in problems."""

    INT = "an integer"
    NUMBER = "a number"
    STRING = "a string"
    PAIRS = 'a list of "KEY=VALUE" strings or a table of strings'


def _bad(rule: str, text: str) -> ValueError:
    return ValueError(f"{rule}, got {text!r}")


_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """A parser of decimal integers from ``low`` to ``high`` inclusive."""

    def parse(text: str) -> int:
        if _INT.fullmatch(text) is None or not low <= int(text) <= high:
            raise _bad(f"must be an integer from {low} to {high}", text)
        return int(text)

    return parse


def number(*, above: float | None = None, at_least: float | None = None) -> Callable[[str], float]:
    """A parser of finite decimal numbers, ``> above`` or ``>= at_least``."""
    rule = f"must be a number > {above:g}" if above is not None else "must be a number"
    if at_least is not None:
        rule = f"must be a number >= {at_least:g}"

    def parse(text: str) -> float:
        if _NUMBER.fullmatch(text) is None:
            raise _bad(rule, text)
        value = float(text)
        if (
            not math.isfinite(value)
            or (above is not None and value <= above)
            or (at_least is not None and value < at_least)
        ):
            raise _bad(rule, text)
        return value

    return parse


def choice(*choices: str) -> Callable[[str], str]:
    """A parser accepting one of ``choices``, case-insensitively; returns it lower-cased."""

    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise _bad("must be one of " + ", ".join(choices), text)
        return text.lower()

    return parse


def int_choice(*choices: int) -> Callable[[str], int]:
    """A parser accepting one of the integers ``choices``."""
    names = [str(c) for c in choices]

    def parse(text: str) -> int:
        if text not in names:
            raise _bad("must be " + " or ".join(names), text)
        return int(text)

    return parse


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _check_host(host: str) -> str | None:
    """Why ``host`` is not an IPv4 literal or a hostname, or None when it is one."""
    if not host:
        return "host is missing (0.0.0.0 listens on every interface)"
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    if len(host) > 253 or _HOSTNAME.fullmatch(host) is None:
        return "host must be an IPv4 address, [IPV6] or a hostname"
    if host.rstrip(".").rsplit(".", 1)[-1].isdigit():
        return "host is not a valid IPv4 address"
    return None


def parse_address(text: str) -> Address | None:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``off`` (None); no DNS look-up."""
    if text.lower() == "off":
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
            problem = None
        except ValueError:
            problem = "host in brackets must be an IPv6 address"
    else:
        host, sep, port = text.rpartition(":")
        problem = _check_host(host)
        if ":" in host:
            problem = "an IPv6 address must be in brackets, as [::1]:8125"
    if not sep:
        raise _bad("must be HOST:PORT, [IPV6]:PORT or 'off'", text)
    if not port:
        raise _bad("port is missing (HOST:PORT)", text)
    if _INT.fullmatch(port) is None or not 0 <= int(port) <= 65535:
        raise _bad("port must be an integer from 0 to 65535", text)
    if problem is not None:
        raise _bad(problem, text)
    return Address(host, int(port))


def parse_endpoint(text: str) -> str:
    """``stdout`` or an http(s) URL with a host, possibly holding ``{region}`` (kept as is)."""
    if text == "stdout":
        return text
    rule = "must be 'stdout' or an http:// or https:// URL with a host"
    url = text.replace("{region}", DEFAULT_REGION)
    if "{" in url or "}" in url:
        raise _bad("only {region} is substituted in the endpoint", text)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _bad(rule, text) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(rule, text)
    return text


def mask_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


_REGION = re.compile(r"[a-z0-9-]+")


def parse_region(text: str) -> str:
    if _REGION.fullmatch(text) is None:
        raise _bad("must use only [a-z0-9-] (as cn-north-1)", text)
    return text


def parse_namespace(text: str) -> str:
    if not is_api_name(text) or len(text.encode()) > MAX_NAME_BYTES:
        raise _bad(f"must be 1 to {MAX_NAME_BYTES} characters of {API_CHARSET}", text)
    return text


def parse_dimension(text: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` pair; key and value both in the API charset."""
    key, sep, value = text.partition("=")
    if not sep:
        raise _bad("must be KEY=VALUE", text)
    for part, what in ((key, "key"), (value, "value")):
        if not is_api_name(part):
            raise _bad(f"{what} {part!r} must be non-empty and use only {API_CHARSET}", text)
    return key, value


def parse_socket_path(text: str) -> str:
    """Where to create a Unix socket: its folder must exist; the kernel allows 107 bytes."""
    if len(os.fsencode(text)) > 107:
        raise _bad("must be at most 107 bytes (the kernel's limit for socket paths)", text)
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise _bad(f"folder {folder} must exist", text)
    return text


def parse_mode(text: str) -> int:
    """File permissions in octal, e.g. ``0622``."""
    if re.fullmatch(r"0?[0-7]{3}", text) is None:
        raise _bad("must be octal permissions like 0622", text)
    return int(text, 8)


def show_mode(value: int) -> str:
    return f"0{value:03o}"


def parse_file(text: str) -> str:
    if not os.path.isfile(text):
        raise _bad("must be an existing file", text)
    return text


def show_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def show_dimensions(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{key}={value}" for key, value in pairs)


def show_endpoint(value: str) -> str:
    return mask_url(value)


def show_address(value: Address | None) -> str:
    return "off" if value is None else str(value)


def show_path(value: str | None) -> str:
    return "(none)" if value is None else value


@dataclass(frozen=True, slots=True)
class Option:
    """One row of the option table; ``name`` is the TOML key and the Settings field."""

    name: str
    metavar: str
    default: str  # text form, as a user would write it; shown in --help and the docs
    help: str
    parse: Callable[[str], Any]
    toml: TomlType = TomlType.STRING
    show: Callable[[Any], str] = str
    repeatable: bool = False
    attr: str = ""  # the Settings field, when it is not ``name``

    @property
    def field(self) -> str:
        return self.attr or self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "GATEWAY_" + self.name.upper()


_I, _N = TomlType.INT, TomlType.NUMBER

OPTIONS: tuple[Option, ...] = (
    Option("udp", "HOST:PORT", "0.0.0.0:8125", "StatsD over UDP; 'off' disables",
           parse_address, show=show_address),
    Option("udp_rcvbuf", "BYTES", "8388608",
           "kernel receive buffer asked for the UDP (and Unix) socket",
           int_in(4096, 2147483647), _I),
    Option("workers", "N", "1", "intake processes sharing the UDP port (SO_REUSEPORT); their "
           "windows are merged exactly before reporting", int_in(1, 64), _I),
    Option("event_loop", "LOOP", "auto", "auto (uvloop when installed), uvloop or asyncio",
           choice("auto", "uvloop", "asyncio")),
    Option("unix", "PATH", "", "StatsD over a Unix datagram socket at PATH (DogStatsD's UDS "
           "mode); off unless given", parse_socket_path, show=show_path),
    Option("unix_mode", "OCTAL", "0622", "permissions of the Unix socket file (write is "
           "what senders need)", parse_mode, show=show_mode),
    Option("http", "HOST:PORT", "0.0.0.0:9102", "/metrics, /healthz and /readyz; 'off' disables",
           parse_address, show=show_address),
    Option("endpoint", "URL", DEFAULT_ENDPOINT,
           "where points go, {region} substituted; 'stdout' prints each request body instead",
           parse_endpoint, show=show_endpoint),
    Option("region", "REGION", DEFAULT_REGION, "JD Cloud region", parse_region),
    Option("namespace", "NAME", "statsd", "the API namespace of every point", parse_namespace),
    Option("dimension", "KEY=VALUE", "host=$NODE_NAME, else the hostname",
           "static dimension, repeatable; added after the default host dimension, which a "
           "given host=... replaces (environment: k=v,k2=v2)", parse_dimension, TomlType.PAIRS,
           show_dimensions, repeatable=True, attr="dimensions"),
    Option("max_dimensions", "N", "5", "most dimensions on one point",
           int_in(1, 64), _I),
    Option("max_dimension_bytes", "BYTES", "255",
           "most bytes of dimension keys and values on one point", int_in(1, 65535), _I),
    Option("max_series", "N", "600000", "live series budget (about 1 GiB of memory); new "
           "series past it are dropped and counted", int_in(1, 100_000_000), _I),
    Option("window", "SECONDS", "60", "window length; the API wants 60", int_in(1, 3600), _I),
    Option("window_grace", "SECONDS", "2", "wait after a window ends before closing it",
           number(at_least=0), _N, show_number),
    Option("gauge_ttl", "SECONDS", "3600", "stop reporting a gauge not updated for this long",
           number(above=0), _N, show_number),
    Option("signature_version", "2|3", "2", "JDCLOUD2 or JDCLOUD3 request signing",
           int_choice(2, 3), _I),
    Option("point_type", "1|2", "2",
           "the 'type' of every point: 2 aggregated (avg, sum, ...), 1 raw value",
           int_choice(1, 2), _I),
    Option("request_timeout", "SECONDS", "10", "time limit of one API request",
           number(above=0), _N, show_number),
    Option("ca_bundle", "PATH", "", "PEM file of extra CA certificates to trust, besides "
           "the public ones", parse_file, show=show_path),
    Option("max_pending_points", "N", "1000000", "points kept for delivery; past it the "
           "oldest are dropped and counted", int_in(50, 1_000_000_000), _I),
    Option("max_point_age", "SECONDS", "604800", "points older than this are dropped and "
           "counted (the API refuses them)", number(above=0), _N, show_number),
    Option("send_jitter", "SECONDS", "10", "each process waits a random share of this after "
           "a window closes before sending it (not with --endpoint stdout)",
           number(at_least=0), _N, show_number),
    Option("max_requests_per_minute", "N", "1000", "request pace; JD Cloud limits calls per "
           "account", number(above=0), _N, show_number),
    Option("spool_dir", "DIR", "", "keep undelivered points and the open window on disk "
           "across restarts", str, show=show_path),
    Option("spool_max_bytes", "BYTES", "1073741824", "most bytes the spool may hold; past it "
           "the oldest are dropped and counted", int_in(1 << 20, 2**50), _I),
    Option("shutdown_timeout", "SECONDS", "20",
           "time allowed after SIGTERM to deliver what is pending", number(at_least=0), _N,
           show_number),
    Option("log_level", "LEVEL", "info", "debug, info, warning or error",
           choice("debug", "info", "warning", "error")),
    Option("log_format", "FORMAT", "text", "text or json (one object per line)",
           choice("text", "json")),
)  # fmt: skip

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def markdown_table() -> str:
    """The docs table of every option, rendered from ``OPTIONS``."""
    rows = [
        "| flag | environment | TOML key | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for o in OPTIONS:
        default = f"`{o.default}`" if o.default else "(none)"
        cells = (f"`{o.flag} {o.metavar}`", f"`{o.env}`", f"`{o.name}`", default, o.help)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
