"""Where the gateway's JD Cloud credentials come from, and how they are shown masked.

Owns: reading ``JDCLOUD_ACCESS_KEY`` / ``JDCLOUD_SECRET_KEY`` (+ ``JDCLOUD_SECURITY_TOKEN``)
from a given environment mapping, else the active profile of the ``jdc`` CLI's
``~/.jdc/config``; and ``masked`` for ``--check-config`` output.

The ``jdc`` layout assumed (as the jdc CLI writes it): ``~/.jdc/config`` is an INI file with
one section per profile holding ``access_key`` and ``secret_key`` (plus ``region_id``,
``endpoint``, ``scheme``, ``timeout``, which are ignored here); ``~/.jdc/current`` holds the
active profile's name (surrounding whitespace ignored) and, when missing or empty, the
profile is ``default``. Values are read raw (no ``%`` interpolation). An optional
``security_token`` key in the profile is honoured (jdc itself never writes one).

Empty environment variables count as unset. Errors are ``CredentialsError`` with a one-line
message naming the variable, file or key at fault and never a secret value.

Reads files, so not pure; imports only ``gateway.signer``. No logging of anything secret.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path

from gateway.errors import GatewayError
from gateway.signer import Credentials

ENV_ACCESS_KEY = "JDCLOUD_ACCESS_KEY"
ENV_SECRET_KEY = "JDCLOUD_SECRET_KEY"
ENV_SECURITY_TOKEN = "JDCLOUD_SECURITY_TOKEN"
DEFAULT_PROFILE = "default"

_MASK = "****"
_SHOWN = 4
_MIN_LEN_TO_SHOW = 8
"""Values shorter than this are fully masked, so at least half of a value stays hidden."""


class CredentialsError(GatewayError):
    """Credentials are present but incomplete or unreadable. The message holds no secret."""


def masked(value: str) -> str:
    """First four characters then ``****``; just ``****`` for values under 8 characters."""
    if len(value) < _MIN_LEN_TO_SHOW:
        return _MASK
    return value[:_SHOWN] + _MASK


def load_credentials(environ: Mapping[str, str], home: Path | None = None) -> Credentials | None:
    """Credentials from ``environ``, else from ``home``/.jdc; None when neither has any.

    ``home`` defaults to ``environ["HOME"]`` and then to the user's home directory.
    """
    access_key = environ.get(ENV_ACCESS_KEY, "").strip()
    secret_key = environ.get(ENV_SECRET_KEY, "").strip()
    token = environ.get(ENV_SECURITY_TOKEN, "").strip() or None
    if access_key and secret_key:
        return Credentials(access_key=access_key, secret_key=secret_key, security_token=token)
    if access_key:
        raise CredentialsError(f"{ENV_ACCESS_KEY} is set but {ENV_SECRET_KEY} is not")
    if secret_key:
        raise CredentialsError(f"{ENV_SECRET_KEY} is set but {ENV_ACCESS_KEY} is not")
    if token is not None:
        raise CredentialsError(
            f"{ENV_SECURITY_TOKEN} is set but {ENV_ACCESS_KEY} and {ENV_SECRET_KEY} are not"
        )
    base = home if home is not None else _home_dir(environ)
    if base is None:
        return None
    return _load_profile(base / ".jdc")


def _home_dir(environ: Mapping[str, str]) -> Path | None:
    if environ.get("HOME"):
        return Path(environ["HOME"])
    try:
        return Path.home()
    except RuntimeError:
        return None


def _load_profile(jdc_dir: Path) -> Credentials | None:
    config_path = jdc_dir / "config"
    try:
        config_text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read {config_path}: {_reason(exc)}") from None
    profile = _active_profile(jdc_dir / "current")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(config_text, source=str(config_path))
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CredentialsError(f"malformed {config_path}: {first_line}") from None
    if not parser.has_section(profile):
        raise CredentialsError(f"profile [{profile}] not found in {config_path}")
    section = parser[profile]
    access_key = section.get("access_key", "").strip()
    secret_key = section.get("secret_key", "").strip()
    token = section.get("security_token", "").strip() or None
    for key, value in (("access_key", access_key), ("secret_key", secret_key)):
        if not value:
            raise CredentialsError(f"profile [{profile}] in {config_path} has no {key}")
    return Credentials(access_key=access_key, secret_key=secret_key, security_token=token)


def _active_profile(current_path: Path) -> str:
    try:
        name = current_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return DEFAULT_PROFILE
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read {current_path}: {_reason(exc)}") from None
    return name or DEFAULT_PROFILE


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return type(exc).__name__
