"""Credential loading: environment first, then the jdc CLI's ~/.jdc profile; masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.credentials import CredentialsError, load_credentials, masked
from gateway.signer import Credentials

SECRET = "sk-very-secret-value"
PROFILES = f"""\
[default]
access_key = AK_DEFAULT
secret_key = {SECRET}
region_id = cn-north-1
endpoint = www.jdcloud-api.com
scheme = https
timeout = 20

[work]
access_key = AK_WORK
secret_key = SK_WORK%literal
security_token = TOKEN_WORK
"""


def _home(tmp_path: Path, config: str | bytes | None, current: str | None = None) -> Path:
    jdc = tmp_path / ".jdc"
    jdc.mkdir()
    if isinstance(config, bytes):
        (jdc / "config").write_bytes(config)
    elif config is not None:
        (jdc / "config").write_text(config, encoding="utf-8")
    if current is not None:
        (jdc / "current").write_text(current, encoding="utf-8")
    return tmp_path


ENV_AK_SK = {"JDCLOUD_ACCESS_KEY": "AK_ENV", "JDCLOUD_SECRET_KEY": "SK_ENV"}


@pytest.mark.parametrize(
    ("environ", "config", "current", "expected"),
    [
        pytest.param(ENV_AK_SK, None, None, Credentials("AK_ENV", "SK_ENV"), id="env"),
        pytest.param(
            {**ENV_AK_SK, "JDCLOUD_SECURITY_TOKEN": "TOK"},
            None,
            None,
            Credentials("AK_ENV", "SK_ENV", "TOK"),
            id="env-with-token",
        ),
        pytest.param(
            {**ENV_AK_SK, "JDCLOUD_SECURITY_TOKEN": ""},
            None,
            None,
            Credentials("AK_ENV", "SK_ENV"),
            id="env-empty-token-is-none",
        ),
        pytest.param(ENV_AK_SK, PROFILES, None, Credentials("AK_ENV", "SK_ENV"), id="env-wins"),
        pytest.param({}, None, None, None, id="nothing"),
        pytest.param({}, PROFILES, None, Credentials("AK_DEFAULT", SECRET), id="default-profile"),
        pytest.param(
            {}, PROFILES, "", Credentials("AK_DEFAULT", SECRET), id="empty-current-is-default"
        ),
        pytest.param(
            {},
            PROFILES,
            "work\n",
            Credentials("AK_WORK", "SK_WORK%literal", "TOKEN_WORK"),
            id="current-profile-raw-values",
        ),
        pytest.param(
            {"JDCLOUD_ACCESS_KEY": "", "JDCLOUD_SECRET_KEY": "  "},
            PROFILES,
            None,
            Credentials("AK_DEFAULT", SECRET),
            id="empty-env-counts-as-unset",
        ),
    ],
)
def test_load_credentials(
    tmp_path: Path,
    environ: dict[str, str],
    config: str | None,
    current: str | None,
    expected: Credentials | None,
) -> None:
    home = _home(tmp_path, config, current)
    assert load_credentials(environ, home) == expected


@pytest.mark.parametrize(
    ("environ", "config", "current", "message"),
    [
        pytest.param(
            {"JDCLOUD_ACCESS_KEY": "AK_ENV"},
            PROFILES,
            None,
            "JDCLOUD_ACCESS_KEY is set but JDCLOUD_SECRET_KEY is not",
            id="only-access-key",
        ),
        pytest.param(
            {"JDCLOUD_SECRET_KEY": SECRET},
            PROFILES,
            None,
            "JDCLOUD_SECRET_KEY is set but JDCLOUD_ACCESS_KEY is not",
            id="only-secret-key",
        ),
        pytest.param(
            {"JDCLOUD_SECURITY_TOKEN": "TOK"},
            None,
            None,
            "JDCLOUD_SECURITY_TOKEN is set",
            id="only-token",
        ),
        pytest.param({}, PROFILES, "missing", r"profile \[missing\] not found", id="no-profile"),
        pytest.param(
            {},
            f"[default]\naccess_key = AK\nsecret_key = {SECRET}\n[default]\n",
            None,
            "malformed",
            id="duplicate-section",
        ),
        pytest.param({}, f"secret_key = {SECRET}\n", None, "malformed", id="no-section-header"),
        pytest.param(
            {},
            f"[default]\naccess_key = AK\n  secret_key {SECRET}\n!!! {SECRET}\n",
            None,
            "malformed",
            id="garbage-line",
        ),
        pytest.param(
            {}, "[default]\naccess_key = AK\n", None, "has no secret_key", id="no-secret-key"
        ),
        pytest.param(
            {}, f"[default]\nsecret_key = {SECRET}\n", None, "has no access_key", id="no-access"
        ),
        pytest.param(
            {}, f"[default]\naccess_key =\nsecret_key = {SECRET}\n", None, "access_key", id="blank"
        ),
        pytest.param({}, b"[default]\n\xff\xfe\n", None, "not UTF-8", id="not-utf8"),
    ],
)
def test_load_credentials_errors(
    tmp_path: Path,
    environ: dict[str, str],
    config: str | bytes | None,
    current: str | None,
    message: str,
) -> None:
    home = _home(tmp_path, config, current)
    with pytest.raises(CredentialsError, match=message) as info:
        load_credentials(environ, home)
    text = str(info.value)
    assert SECRET not in text
    assert "\n" not in text


def test_unreadable_config_is_one_line_error(tmp_path: Path) -> None:
    home = _home(tmp_path, None)
    (home / ".jdc" / "config").mkdir()  # a directory where the file should be
    with pytest.raises(CredentialsError, match="cannot read") as info:
        load_credentials({}, home)
    assert "\n" not in str(info.value)


def test_home_defaults_to_environ_home(tmp_path: Path) -> None:
    home = _home(tmp_path, PROFILES, "work")
    creds = load_credentials({"HOME": str(home)})
    assert creds is not None
    assert creds.access_key == "AK_WORK"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", "****", id="empty"),
        pytest.param("abc", "****", id="short"),
        pytest.param("abcd", "****", id="four"),
        pytest.param("abcdefg", "****", id="seven"),
        pytest.param("abcdefgh", "abcd****", id="eight"),
        pytest.param("AKIDEXAMPLE1234567890", "AKID****", id="long"),
    ],
)
def test_masked(value: str, expected: str) -> None:
    assert masked(value) == expected
