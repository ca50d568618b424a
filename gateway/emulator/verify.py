"""Checking JD Cloud request signatures, as the real API gateway would.

Owns ``SignatureVerifier`` (the checks, in order, each failure one reason string) and
``NonceCache`` (seen nonces, bounded in count and time). Uses ``gateway.signer`` to
parse the ``Authorization`` header and recompute the signature.
No aiohttp, no I/O, no logging, no clock (callers pass ``now``). Reasons never contain the
secret key, the received signature or the ``Authorization`` value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.signer import (
    DATE_FORMAT,
    HEADER_CONTENT_SHA256,
    HEADER_DATE,
    HEADER_NONCE,
    HEADER_SECURITY_TOKEN,
    compute_signature,
    parse_authorization,
)

REQUIRED_SIGNED_HEADERS = ("content-type", "host", HEADER_DATE, HEADER_NONCE)
DEFAULT_MAX_SKEW_SECONDS = 900.0
DEFAULT_NONCE_CAPACITY = 100_000
_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")


class NonceCache:
    """Nonces seen recently. A nonce is remembered until its request date is out of the
    accepted skew (then the date check refuses a replay anyway), and at most ``capacity``
    nonces are kept: past that the oldest are forgotten.
    """

    def __init__(self, capacity: int = DEFAULT_NONCE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("nonce capacity must be >= 1")
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen

    def add(self, nonce: str, *, expires_at: float, now: float) -> None:
        while self._seen:
            oldest_nonce, oldest_expiry = next(iter(self._seen.items()))
            if oldest_expiry > now and len(self._seen) < self._capacity:
                break
            del self._seen[oldest_nonce]
        self._seen[nonce] = expires_at


class SignatureVerifier:
    """Verifies ``JDCLOUD2``/``JDCLOUD3-HMAC-SHA256`` signed requests for one key pair."""

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        *,
        max_skew_seconds: float = DEFAULT_MAX_SKEW_SECONDS,
        nonce_capacity: int = DEFAULT_NONCE_CAPACITY,
        region: str = "jdcloud-api",
        service: str = "monitor",
    ) -> None:
        if not access_key or not secret_key:
            raise ValueError("access key and secret key must both be non-empty")
        self._access_key = access_key
        self._secret_key = secret_key
        self._max_skew = max_skew_seconds
        self._region = region
        self._service = service
        self.nonces = NonceCache(nonce_capacity)

    def __repr__(self) -> str:
        return f"SignatureVerifier(access_key={self._access_key!r}, secret_key='****')"

    def verify(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
    ) -> str | None:
        """None when the request is correctly signed and fresh, else why not.

        ``headers`` maps lower-case names to values (repeated headers joined with ``,``);
        ``path`` and ``query`` are the raw (still percent-encoded) request target parts.
        A nonce is recorded only once the rest of the request has passed.
        """
        value = headers.get("authorization")
        if not value:
            return "missing Authorization header"
        try:
            auth = parse_authorization(value)
        except ValueError as exc:
            return str(exc)
        if not hmac.compare_digest(auth.access_key.encode(), self._access_key.encode()):
            return "unknown access key"
        if auth.region != self._region or auth.service != self._service:
            return (
                f"credential scope must be <date>/{self._region}/{self._service}/..., "
                f"got region {auth.region!r} and service {auth.service!r}"
            )
        signed = set(auth.signed_headers)
        must_sign = list(REQUIRED_SIGNED_HEADERS)
        if HEADER_SECURITY_TOKEN in headers:
            must_sign.append(HEADER_SECURITY_TOKEN)
        unsigned = [name for name in must_sign if name not in signed]
        if unsigned:
            return f"SignedHeaders must include {', '.join(unsigned)}"
        absent = [name for name in auth.signed_headers if name not in headers]
        if absent:
            return f"signed headers missing from the request: {', '.join(absent)}"
        problem = self._check_freshness(headers[HEADER_DATE], auth.date, now)
        if problem is not None:
            return problem
        payload_hash = hashlib.sha256(body).hexdigest()
        if headers.get(HEADER_CONTENT_SHA256) != payload_hash:
            return f"{HEADER_CONTENT_SHA256} is missing or is not the SHA-256 of the body"
        try:
            expected, signed_list = compute_signature(
                version=auth.version,
                secret_key=self._secret_key,
                method=method,
                path=path,
                query=query,
                headers={name: headers[name] for name in auth.signed_headers},
                payload_hash=payload_hash,
                date=headers[HEADER_DATE],
                region=auth.region,
                service=auth.service,
            )
        except ValueError as exc:
            return f"cannot compute the signature: {exc}"
        if signed_list != ";".join(auth.signed_headers):
            return "SignedHeaders must be sorted lower-case names without repeats"
        if not hmac.compare_digest(expected, auth.signature):
            return "signature does not match"
        nonce = headers[HEADER_NONCE]
        if not nonce:
            return f"{HEADER_NONCE} is empty"
        if nonce in self.nonces:
            return f"{HEADER_NONCE} was already used"
        self.nonces.add(nonce, expires_at=now + 2 * self._max_skew, now=now)
        return None

    def _check_freshness(self, date_header: str, scope_date: str, now: float) -> str | None:
        if _DATE_RE.fullmatch(date_header) is None:
            return f"{HEADER_DATE} must look like 20190917T064708Z"
        try:
            sent = datetime.strptime(date_header, DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return f"{HEADER_DATE} must look like 20190917T064708Z"
        if scope_date != date_header[:8]:
            return f"credential scope date differs from the date in {HEADER_DATE}"
        skew = abs(sent.timestamp() - now)
        if skew > self._max_skew:
            return (
                f"{HEADER_DATE} is {skew:.0f} s away from the server clock "
                f"(at most {self._max_skew:.0f} s allowed)"
            )
        return None
