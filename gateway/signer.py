"""JD Cloud OpenAPI request signing (``JDCLOUD2-HMAC-SHA256`` / ``JDCLOUD3-HMAC-SHA256``).

Owns: the credentials record, the canonical request (URI, query, headers), the signature,
the ``Authorization`` header (building and parsing it) and the ``httpx.Auth`` that signs
every attempt of a request afresh. See ``spec/jdcloud-api.md`` ("Signing").

The functions ``canonical_uri``, ``canonical_query``, ``compute_signature``,
``sign_request`` and ``parse_authorization`` are pure: no I/O, no logging, no clock, no
randomness. Only ``JDCloudAuth`` reads a clock and draws nonces, both injectable.
Must not import other gateway modules, asyncio, numpy or prometheus; never log secrets.

Verification (the emulator's side): parse the received ``Authorization`` with
``parse_authorization``, then call ``compute_signature`` with the received method, raw path
and raw query string, ``{name: value}`` for exactly the names in ``signed_headers`` (repeated
headers joined with ``,`` or passed as a tuple) and the SHA-256 hex of the received body,
and compare both the signature and the signed-header list.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote_plus, urlsplit

import httpx

DATE_FORMAT = "%Y%m%dT%H%M%SZ"
"""Format of ``x-jdcloud-date``."""

SUPPORTED_VERSIONS = (2, 3)

HEADER_DATE = "x-jdcloud-date"
HEADER_NONCE = "x-jdcloud-nonce"
HEADER_CONTENT_SHA256 = "x-jdcloud-content-sha256"
HEADER_SECURITY_TOKEN = "x-jdcloud-security-token"
HEADER_AUTHORIZATION = "authorization"

_SIGNED_FROM_REQUEST = ("content-type",)
"""Request headers ``sign_request`` signs besides host, date, nonce and token."""

_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_ALGORITHM_RE = re.compile(r"JDCLOUD([0-9]+)-HMAC-SHA256")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_SCOPE_DATE_RE = re.compile(r"[0-9]{8}")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_DEFAULT_PORTS = frozenset({80, 443})

HeaderValue = str | tuple[str, ...] | list[str]


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key pair, optionally with an STS session token. Never shows its secrets."""

    access_key: str
    secret_key: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.access_key:
            raise ValueError("access key is empty")
        if not self.secret_key:
            raise ValueError("secret key is empty")
        if self.security_token == "":
            raise ValueError("security token is empty (use None for no token)")

    def __repr__(self) -> str:
        token = "None" if self.security_token is None else "'****'"
        return (
            f"Credentials(access_key={self.access_key!r}, secret_key='****',"
            f" security_token={token})"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ParsedAuthorization:
    """The parts of a received ``Authorization`` header."""

    algorithm: str
    version: int
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def algorithm_name(version: int) -> str:
    """``JDCLOUD2-HMAC-SHA256`` or ``JDCLOUD3-HMAC-SHA256``; ValueError for other versions."""
    _check_version(version)
    return f"JDCLOUD{version}-HMAC-SHA256"


def canonical_uri(path: str) -> str:
    """Decode the path (``+`` is a space), collapse repeated ``/``, re-encode; ``""`` is ``/``.

    Undecodable ``%`` sequences are kept as literal text (and so re-encoded as ``%25``).
    """
    decoded = unquote_plus(path)
    collapsed = re.sub(r"/{2,}", "/", decoded)
    if not collapsed.startswith("/"):
        collapsed = "/" + collapsed
    return quote(collapsed, safe="/~")


def canonical_query(query: str) -> str:
    """Decode and re-encode every ``key=value`` pair, drop empty keys, sort, join with ``&``."""
    pairs: list[tuple[str, str]] = []
    for piece in query.split("&"):
        key, _, value = piece.partition("=")
        key_enc = _encode_query_part(key)
        if not key_enc:
            continue
        pairs.append((key_enc, _encode_query_part(value)))
    pairs.sort()
    return "&".join(f"{key}={value}" for key, value in pairs)


def compute_signature(
    *,
    version: int,
    secret_key: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, HeaderValue],
    payload_hash: str,
    date: str,
    region: str,
    service: str,
) -> tuple[str, str]:
    """Sign exactly ``headers``; return ``(signature hex, "a;b;c" signed header list)``.

    ``date`` is the ``x-jdcloud-date`` value; it must also be among ``headers`` for a real
    request, but that is the caller's business (the vectors sign it as given).
    """
    _check_version(version)
    if _DATE_RE.fullmatch(date) is None:
        raise ValueError("date must look like 20190917T064708Z")
    if _HEX64_RE.fullmatch(payload_hash) is None:
        raise ValueError("payload hash must be 64 lowercase hex digits")
    header_block, signed = _canonical_headers(headers)
    canonical_request = "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            header_block,
            signed,
            payload_hash,
        )
    )
    scope = _scope(version, date[:8], region, service)
    string_to_sign = "\n".join(
        (algorithm_name(version), date, scope, _sha256_hex(canonical_request.encode()))
    )
    key = _signing_key(version, secret_key, date[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return signature, signed


def sign_request(
    *,
    credentials: Credentials,
    version: int,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    date: str,
    nonce: str,
    region: str = "jdcloud-api",
    service: str = "monitor",
) -> dict[str, str]:
    """Return the headers to add to a request so that JD Cloud accepts it.

    Signed: ``content-type`` (when in ``headers``), ``host``, ``x-jdcloud-date``,
    ``x-jdcloud-nonce`` and, with a token, ``x-jdcloud-security-token``. Other entries of
    ``headers`` are not signed (proxies may rewrite them). The host comes from ``url`` (with
    ``:port`` unless 80/443) unless ``headers`` holds a ``host``, which then wins, so that a
    client can sign exactly the ``Host`` it sends.
    """
    if not nonce:
        raise ValueError("nonce is empty")
    parts = urlsplit(url)
    given = {name.lower(): value for name, value in headers.items()}
    host = given.get("host") or _host_from_url(url)
    payload_hash = _sha256_hex(body)
    added: dict[str, str] = {
        HEADER_DATE: date,
        HEADER_NONCE: nonce,
        HEADER_CONTENT_SHA256: payload_hash,
    }
    if credentials.security_token is not None:
        added[HEADER_SECURITY_TOKEN] = credentials.security_token
    to_sign: dict[str, str] = {n: given[n] for n in _SIGNED_FROM_REQUEST if n in given}
    to_sign["host"] = host
    to_sign[HEADER_DATE] = date
    to_sign[HEADER_NONCE] = nonce
    if credentials.security_token is not None:
        to_sign[HEADER_SECURITY_TOKEN] = credentials.security_token
    signature, signed = compute_signature(
        version=version,
        secret_key=credentials.secret_key,
        method=method,
        path=parts.path,
        query=parts.query,
        headers=to_sign,
        payload_hash=payload_hash,
        date=date,
        region=region,
        service=service,
    )
    scope = _scope(version, date[:8], region, service)
    added[HEADER_AUTHORIZATION] = (
        f"{algorithm_name(version)} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return added


def parse_authorization(value: str) -> ParsedAuthorization:
    """Split an ``Authorization`` header; ValueError (never quoting the value) if malformed."""
    algorithm, sep, rest = value.strip().partition(" ")
    if not sep:
        raise ValueError("authorization: expected '<algorithm> Credential=..., ...'")
    match = _ALGORITHM_RE.fullmatch(algorithm)
    if match is None:
        raise ValueError("authorization: unknown algorithm (want JDCLOUD2/3-HMAC-SHA256)")
    version = int(match.group(1))
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"authorization: unsupported signature version {version}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, field_value = part.strip().partition("=")
        if not eq or name not in ("Credential", "SignedHeaders", "Signature"):
            raise ValueError("authorization: expected Credential, SignedHeaders and Signature")
        if name in fields:
            raise ValueError(f"authorization: {name} given twice")
        fields[name] = field_value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    if missing:
        raise ValueError(f"authorization: missing {', '.join(missing)}")
    scope_parts = fields["Credential"].rsplit("/", 4)
    if len(scope_parts) != 5 or not all(scope_parts):
        raise ValueError("authorization: Credential must be access_key/date/region/service/term")
    access_key, date, region, service, terminator = scope_parts
    if _SCOPE_DATE_RE.fullmatch(date) is None:
        raise ValueError("authorization: credential scope date must be 8 digits (YYYYMMDD)")
    if terminator != f"jdcloud{version}_request":
        raise ValueError(f"authorization: credential scope must end in jdcloud{version}_request")
    signed_headers = tuple(fields["SignedHeaders"].split(";"))
    if not all(_HEADER_NAME_RE.fullmatch(name) for name in signed_headers):
        raise ValueError("authorization: SignedHeaders must be lower-case names joined by ';'")
    if _HEX64_RE.fullmatch(fields["Signature"]) is None:
        raise ValueError("authorization: Signature must be 64 lowercase hex digits")
    return ParsedAuthorization(
        algorithm=algorithm,
        version=version,
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=fields["Signature"],
    )


class JDCloudAuth(httpx.Auth):
    """Signs each attempt of a request with a fresh date and nonce (retries included)."""

    requires_request_body = True

    def __init__(
        self,
        credentials: Credentials,
        *,
        version: int = 2,
        region: str = "jdcloud-api",
        service: str = "monitor",
        clock: Callable[[], datetime] | None = None,
        nonce: Callable[[], str] | None = None,
    ) -> None:
        _check_version(version)
        self._credentials = credentials
        self._version = version
        self._region = region
        self._service = service
        self._clock = clock if clock is not None else _utc_now
        self._nonce = nonce if nonce is not None else _uuid_nonce

    def __repr__(self) -> str:
        return (
            f"JDCloudAuth(access_key={self._credentials.access_key!r}, version={self._version},"
            f" region={self._region!r}, service={self._service!r})"
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("JDCloudAuth clock must return a timezone-aware datetime")
        added = sign_request(
            credentials=self._credentials,
            version=self._version,
            method=request.method,
            url=str(request.url),
            headers=request.headers,
            body=request.content,
            date=now.astimezone(UTC).strftime(DATE_FORMAT),
            nonce=self._nonce(),
            region=self._region,
            service=self._service,
        )
        request.headers.update(added)
        yield request


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"signature version must be 2 or 3, not {version!r}")


def _encode_query_part(text: str) -> str:
    return quote(unquote_plus(text), safe="~")


def _canonical_headers(headers: Mapping[str, HeaderValue]) -> tuple[str, str]:
    lines: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.strip().lower()
        if not lower:
            raise ValueError("header name is empty")
        if lower in lines:
            raise ValueError(f"header {lower} given twice")
        values: Sequence[str] = (value,) if isinstance(value, str) else value
        lines[lower] = ",".join(v.strip() for v in values)
    names = sorted(lines)
    block = "".join(f"{name}:{lines[name]}\n" for name in names)
    return block, ";".join(names)


def _scope(version: int, day: str, region: str, service: str) -> str:
    return f"{day}/{region}/{service}/jdcloud{version}_request"


def _signing_key(version: int, secret_key: str, day: str, region: str, service: str) -> bytes:
    key = f"JDCLOUD{version}{secret_key}".encode()
    for part in (day, region, service, f"jdcloud{version}_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _host_from_url(url: str) -> str:
    parts = urlsplit(url)
    hostname = parts.hostname
    if not hostname:
        raise ValueError("url has no host")
    host = f"[{hostname}]" if ":" in hostname else hostname
    port = parts.port
    return host if port is None or port in _DEFAULT_PORTS else f"{host}:{port}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _uuid_nonce() -> str:
    return str(uuid.uuid4())
