"""Tests of gateway.config and gateway.options: sources, precedence, problems, describe()."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gateway.config import (
    Address,
    ConfigError,
    LoadedConfig,
    Settings,
    describe,
    load_config,
)
from gateway.options import OPTIONS, Option, markdown_table, parse_address

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def load(
    tmp_path: Path,
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    toml: str | None = None,
    hostname: str = "test-host",
) -> LoadedConfig:
    """load_config with an optional TOML file, written to tmp_path and given by --config."""
    args = list(argv)
    if toml is not None:
        path = tmp_path / "gateway.toml"
        path.write_text(toml)
        args += ["--config", str(path)]
    return load_config(args, dict(env or {}), hostname=hostname)


def problems_of(tmp_path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def test_defaults(tmp_path: Path) -> None:
    loaded = load(tmp_path)
    assert loaded.settings == Settings(dimensions=(("host", "test_host"),))
    assert loaded.warnings == ()
    assert loaded.check_config is False


@pytest.mark.parametrize("option", [o for o in OPTIONS if not o.repeatable], ids=lambda o: o.name)
def test_table_default_matches_settings_default(option: Option) -> None:
    """The text default in the table (shown in --help and docs) is the Settings default."""
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    loaded = load_config([], {}, hostname="h").settings
    assert getattr(loaded, option.field) == fields[option.field]


@pytest.mark.parametrize(
    ("argv", "env", "toml", "field", "expected"),
    [
        pytest.param(
            ["--window", "30"], {"GATEWAY_WINDOW": "20"}, "window = 10", "window", 30,
            id="int-flag-wins",
        ),
        pytest.param([], {"GATEWAY_WINDOW": "20"}, "window = 10", "window", 20, id="int-env-wins"),
        pytest.param([], {}, "window = 10", "window", 10, id="int-file"),
        pytest.param([], {}, "", "window", 60, id="int-default"),
        pytest.param(
            ["--window-grace", "1.5"], {"GATEWAY_WINDOW_GRACE": "3"}, "window_grace = 4",
            "window_grace", 1.5, id="float-flag-wins",
        ),
        pytest.param(
            [], {"GATEWAY_WINDOW_GRACE": "3"}, "window_grace = 4", "window_grace", 3.0,
            id="float-env-wins",
        ),
        pytest.param([], {}, "window_grace = 0.25", "window_grace", 0.25, id="float-file"),
        pytest.param([], {}, "gauge_ttl = 10", "gauge_ttl", 10.0, id="float-file-integer"),
        pytest.param(
            ["--namespace", "a"], {"GATEWAY_NAMESPACE": "b"}, 'namespace = "c"', "namespace",
            "a", id="str-flag-wins",
        ),
        pytest.param(
            [], {"GATEWAY_NAMESPACE": "b"}, 'namespace = "c"', "namespace", "b",
            id="str-env-wins",
        ),
        pytest.param([], {}, 'namespace = "c"', "namespace", "c", id="str-file"),
        pytest.param(
            ["--udp", "off"], {"GATEWAY_UDP": "127.0.0.1:1"}, 'udp = "[::1]:2"', "udp", None,
            id="address-flag-off",
        ),
        pytest.param(
            [], {"GATEWAY_UDP": "127.0.0.1:1"}, 'udp = "[::1]:2"', "udp",
            Address("127.0.0.1", 1), id="address-env-wins",
        ),
        pytest.param([], {}, 'udp = "[::1]:2"', "udp", Address("::1", 2), id="address-file"),
        pytest.param(
            [], {"GATEWAY_UDP": ""}, 'udp = "[::1]:2"', "udp", Address("::1", 2),
            id="empty-env-is-unset",
        ),
        pytest.param(
            ["--dimension", "a=1", "--dimension", "b=2"], {"GATEWAY_DIMENSION": "c=3"},
            'dimension = ["d=4"]', "dimensions", (("host", "test_host"), ("a", "1"), ("b", "2")),
            id="dimensions-flag-replace",
        ),
        pytest.param(
            [], {"GATEWAY_DIMENSION": "c=3, e=5"}, 'dimension = ["d=4"]', "dimensions",
            (("host", "test_host"), ("c", "3"), ("e", "5")), id="dimensions-env-comma",
        ),
        pytest.param(
            [], {}, 'dimension = ["d=4", "host=x"]', "dimensions", (("d", "4"), ("host", "x")),
            id="dimensions-file-list",
        ),
        pytest.param(
            [], {}, 'dimension = {env = "prod", host = "x"}', "dimensions",
            (("env", "prod"), ("host", "x")), id="dimensions-file-table",
        ),
        pytest.param(
            ["--signature-version", "3"], {}, "signature_version = 2", "signature_version", 3,
            id="choice-int",
        ),
        pytest.param(
            [], {"GATEWAY_LOG_LEVEL": "DEBUG"}, 'log_level = "error"', "log_level", "debug",
            id="choice-case-insensitive",
        ),
        pytest.param(
            [], {"GATEWAY_REGION": "cn-east-2"}, "", "endpoint",
            "https://monitor.cn-east-2.jdcloud-api.com/v1/customMetrics",
            id="endpoint-region-substituted",
        ),
        pytest.param(
            ["--endpoint", "http://127.0.0.1:8080/{region}/x"], {}, 'region = "r1"', "endpoint",
            "http://127.0.0.1:8080/r1/x", id="endpoint-custom",
        ),
        pytest.param(["--endpoint", "stdout"], {}, "", "endpoint", "stdout", id="stdout"),
    ],
)  # fmt: skip
def test_precedence(
    tmp_path: Path,
    argv: list[str],
    env: dict[str, str],
    toml: str,
    field: str,
    expected: object,
) -> None:
    settings = load(tmp_path, argv, env, toml).settings
    assert getattr(settings, field) == expected


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("window = 60\nnamespace = 'from_file'\n")
    settings = load_config([], {"GATEWAY_CONFIG": str(path)}, hostname="h").settings
    assert (settings.namespace, settings.config_file) == ("from_file", str(path))


MISSING = "/nonexistent/gateway.toml"


@pytest.mark.parametrize(
    ("argv", "env", "toml", "expected"),
    [
        pytest.param(["--udp", ":99999"], {}, None,
                     "--udp: port must be an integer from 0 to 65535, got ':99999'", id="bad-port"),
        pytest.param(["--http", "nope"], {}, None,
                     "--http: must be HOST:PORT, [IPV6]:PORT or 'off', got 'nope'", id="no-port"),
        pytest.param([], {"GATEWAY_UDP": "1.2.3.4:"}, None,
                     "GATEWAY_UDP: port is missing (HOST:PORT), got '1.2.3.4:'", id="empty-port"),
        pytest.param(["--namespace", "my-app"], {}, None,
                     "--namespace: must be 1 to 255 characters of [0-9A-Za-z._], got 'my-app'",
                     id="namespace-dash"),
        pytest.param(["--namespace", "a" * 256], {}, None,
                     "--namespace: must be 1 to 255 characters of [0-9A-Za-z._], got "
                     f"'{'a' * 256}'",
                     id="namespace-long"),
        pytest.param(["--window", "0"], {}, None,
                     "--window: must be an integer from 1 to 3600, got '0'", id="window-zero"),
        pytest.param(["--window", "abc"], {}, None,
                     "--window: must be an integer from 1 to 3600, got 'abc'", id="window-text"),
        pytest.param([], {"GATEWAY_WINDOW_GRACE": "nan"}, None,
                     "GATEWAY_WINDOW_GRACE: must be a number >= 0, got 'nan'", id="grace-nan"),
        pytest.param(["--window-grace", "-1"], {}, None,
                     "--window-grace: must be a number >= 0, got '-1'", id="grace-negative"),
        pytest.param(["--gauge-ttl", "0"], {}, None,
                     "--gauge-ttl: must be a number > 0, got '0'", id="ttl-zero"),
        pytest.param(["--signature-version", "4"], {}, None,
                     "--signature-version: must be 2 or 3, got '4'", id="signature-version"),
        pytest.param(["--log-format", "xml"], {}, None,
                     "--log-format: must be one of text, json, got 'xml'", id="log-format"),
        pytest.param(["--region", "CN_North"], {}, None,
                     "--region: must use only [a-z0-9-] (as cn-north-1), got 'CN_North'",
                     id="region"),
        pytest.param(["--endpoint", "ftp://x"], {}, None,
                     "--endpoint: must be 'stdout' or an http:// or https:// URL with a host, "
                     "got 'ftp://x'", id="endpoint-scheme"),
        pytest.param(["--endpoint", "https://{zone}.x"], {}, None,
                     "--endpoint: only {region} is substituted in the endpoint, "
                     "got 'https://{zone}.x'", id="endpoint-placeholder"),
        pytest.param(["--ca-bundle", "/nonexistent/ca.pem"], {}, None,
                     "--ca-bundle: must be an existing file, got '/nonexistent/ca.pem'",
                     id="ca-bundle-missing"),
        pytest.param(["--udp-rcvbuf", "1024"], {}, None,
                     "--udp-rcvbuf: must be an integer from 4096 to 2147483647, got '1024'",
                     id="rcvbuf"),
        pytest.param([], {}, "foo = 1",
                     "config file {path}: unknown key 'foo'", id="toml-unknown-key"),
        pytest.param([], {}, "dimensions = ['a=b']",
                     "config file {path}: unknown key 'dimensions' (did you mean 'dimension'?)",
                     id="toml-unknown-key-hint"),
        pytest.param([], {}, "window = '60'",
                     "config file {path}: window: must be an integer, got string '60'",
                     id="toml-string-for-int"),
        pytest.param([], {}, "window = true",
                     "config file {path}: window: must be an integer, got boolean True",
                     id="toml-bool-for-int"),
        pytest.param([], {}, "namespace = 5",
                     "config file {path}: namespace: must be a string, got integer 5",
                     id="toml-int-for-str"),
        pytest.param([], {}, "dimension = 'a=b'",
                     "config file {path}: dimension: must be a list of \"KEY=VALUE\" strings "
                     "or a table of strings, got string 'a=b'", id="toml-bad-dimension-type"),
        pytest.param([], {}, "window = 0",
                     "config file {path}: window: must be an integer from 1 to 3600, got '0'",
                     id="toml-value"),
        pytest.param([], {}, "window = [",
                     "config file {path}: invalid TOML: Invalid value (at end of document)",
                     id="toml-invalid"),
        pytest.param(["--config", MISSING], {}, None,
                     f"config file {MISSING}: cannot read: No such file or directory",
                     id="toml-missing"),
        pytest.param(["--dimension", "env=pre-prod"], {}, None,
                     "--dimension: value 'pre-prod' must be non-empty and use only "
                     "[0-9A-Za-z._], got 'env=pre-prod'", id="dimension-value-charset"),
        pytest.param(["--dimension", "k y=1"], {}, None,
                     "--dimension: key 'k y' must be non-empty and use only [0-9A-Za-z._], "
                     "got 'k y=1'", id="dimension-key-charset"),
        pytest.param(["--dimension", "host"], {}, None,
                     "--dimension: must be KEY=VALUE, got 'host'", id="dimension-no-equals"),
        pytest.param([], {"GATEWAY_DIMENSION": "a=1,,b=2"}, None,
                     "GATEWAY_DIMENSION: must be KEY=VALUE, got ''", id="dimension-empty-item"),
        pytest.param(["--dimension", "a=1", "--dimension", "a=2"], {}, None,
                     "--dimension: duplicate key 'a'", id="dimension-duplicate"),
        pytest.param(["--max-dimensions", "2", "--dimension", "a=1", "--dimension", "b=2",
                      "--dimension", "c=3"], {}, None,
                     "--dimension: 4 static dimensions, over --max-dimensions (2)",
                     id="too-many-dimensions"),
        pytest.param(["--max-dimension-bytes", "10", "--dimension", "host=abcdefg"], {}, None,
                     "--dimension: static dimensions take 11 bytes, over --max-dimension-bytes "
                     "(10)", id="dimensions-too-long"),
        pytest.param([], {"NODE_NAME": "n" * 300}, None,
                     "--dimension (default): static dimensions take 304 bytes, over "
                     "--max-dimension-bytes (255)", id="default-host-too-long"),
        pytest.param(["--bogus", "1"], {}, None,
                     "command line: unrecognized arguments: --bogus 1", id="unknown-flag"),
        pytest.param(["--window"], {}, None,
                     "command line: argument --window: expected one argument",
                     id="flag-without-value"),
    ],
)  # fmt: skip
def test_problem(
    tmp_path: Path, argv: list[str], env: dict[str, str], toml: str | None, expected: str
) -> None:
    problems = problems_of(tmp_path, argv=argv, env=env, toml=toml)
    assert problems == [expected.replace("{path}", str(tmp_path / "gateway.toml"))]


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(
            tmp_path,
            ["--window", "0", "--udp", ":99999", "--dimension", "a-b=1"],
            {"GATEWAY_NAMESPACE": "my-app", "GATEWAY_GAUGE_TTL": "-1"},
            "foo = 1\nregion = 7\n",
        )
    path = tmp_path / "gateway.toml"
    assert info.value.problems == [
        f"config file {path}: unknown key 'foo'",
        f"config file {path}: region: must be a string, got integer 7",
        "--udp: port must be an integer from 0 to 65535, got ':99999'",
        "GATEWAY_NAMESPACE: must be 1 to 255 characters of [0-9A-Za-z._], got 'my-app'",
        "--window: must be an integer from 1 to 3600, got '0'",
        "GATEWAY_GAUGE_TTL: must be a number > 0, got '-1'",
        "--dimension: key 'a-b' must be non-empty and use only [0-9A-Za-z._], got 'a-b=1'",
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_unknown_gateway_environment_is_ignored(tmp_path: Path) -> None:
    """Kubernetes service links for a Service named 'gateway' must not matter."""
    env = {
        "GATEWAY_PORT": "tcp://10.0.0.7:9102",
        "GATEWAY_SERVICE_HOST": "10.0.0.7",
        "GATEWAY_SERVICE_PORT": "9102",
        "GATEWAY_PORT_9102_TCP": "tcp://10.0.0.7:9102",
        "GATEWAY_PORT_9102_TCP_ADDR": "10.0.0.7",
        "GATEWAY_CHECK_CONFIG": "1",
        "GATEWAY_NOT_AN_OPTION": "x",
    }
    loaded = load(tmp_path, env=env)
    assert loaded.settings == Settings(dimensions=(("host", "test_host"),))
    assert loaded.check_config is False


@pytest.mark.parametrize(
    ("env", "hostname", "expected"),
    [
        pytest.param({"NODE_NAME": "ip-10-0-0-1.ec2.internal"}, "pod-7f9c",
                     "ip_10_0_0_1.ec2.internal", id="node-name-sanitised"),
        pytest.param({"NODE_NAME": ""}, "pod-7f9c", "pod_7f9c", id="empty-node-name"),
        pytest.param({}, "café.local", "caf__.local", id="hostname-utf8-bytes"),
    ],
)  # fmt: skip
def test_default_host_dimension(
    tmp_path: Path, env: dict[str, str], hostname: str, expected: str
) -> None:
    settings = load(tmp_path, env=env, hostname=hostname).settings
    assert settings.dimensions == (("host", expected),)


def test_given_dimensions_add_to_the_host_dimension(tmp_path: Path) -> None:
    settings = load(tmp_path, ["--dimension", "env=prod"], {"NODE_NAME": "node-1"}).settings
    assert settings.dimensions == (("host", "node_1"), ("env", "prod"))


def test_a_given_host_replaces_the_default_one(tmp_path: Path) -> None:
    settings = load(tmp_path, ["--dimension", "env=prod", "--dimension", "host=web1"]).settings
    assert settings.dimensions == (("env", "prod"), ("host", "web1"))


def test_no_dimensions_given_still_has_the_host(tmp_path: Path) -> None:
    assert load(tmp_path, toml="dimension = []").settings.dimensions == (("host", "test_host"),)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["--window", "30"], ("--window: window is 30 s; JD Cloud expects 60 s points, "
                                         "so other lengths may be refused or misread",),
                     id="window-30"),
        pytest.param(["--window", "60"], (), id="window-60"),
    ],
)  # fmt: skip
def test_window_warning(tmp_path: Path, argv: list[str], expected: tuple[str, ...]) -> None:
    assert load(tmp_path, argv).warnings == expected


def test_check_config_flag(tmp_path: Path) -> None:
    assert load(tmp_path, ["--check-config"]).check_config is True


def test_ca_bundle_existing_file(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not checked for content\n")
    assert load(tmp_path, ["--ca-bundle", str(bundle)]).settings.ca_bundle == str(bundle)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("off", None, id="off"),
        pytest.param("OFF", None, id="off-upper"),
        pytest.param("127.0.0.1:8125", Address("127.0.0.1", 8125), id="ipv4"),
        pytest.param("[::1]:0", Address("::1", 0), id="ipv6"),
        pytest.param("metrics.example-1.com:65535", Address("metrics.example-1.com", 65535),
                     id="hostname"),
    ],
)  # fmt: skip
def test_parse_address(text: str, expected: Address | None) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("::1:8125", "an IPv6 address must be in brackets", id="bare-ipv6"),
        pytest.param("[zz]:1", "host in brackets must be an IPv6 address", id="bad-ipv6"),
        pytest.param("1.2.3.999:1", "host is not a valid IPv4 address", id="bad-ipv4"),
        pytest.param("a_b:1", "host must be an IPv4 address", id="underscore-host"),
        pytest.param(":8125", "host is missing", id="no-host"),
        pytest.param("h:+1", "port must be an integer", id="signed-port"),
    ],
)  # fmt: skip
def test_parse_address_problems(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^" + problem):
        parse_address(text)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        pytest.param(Address("0.0.0.0", 8125), "0.0.0.0:8125", id="v4"),
        pytest.param(Address("::1", 8125), "[::1]:8125", id="v6"),
    ],
)
def test_address_str(address: Address, text: str) -> None:
    assert str(address) == text


def test_describe() -> None:
    settings = Settings(
        udp=None,
        endpoint="https://user:pa55@monitor.example.com:8443/v1/customMetrics",
        dimensions=(("host", "n1"), ("env", "prod")),
        window_grace=0.5,
        config_file="/etc/gateway.toml",
    )
    assert describe(settings) == [
        "udp = off",
        "udp_rcvbuf = 8388608",
        "workers = 1",
        "event_loop = auto",
        "unix = (none)",
        "unix_mode = 0622",
        "http = 0.0.0.0:9102",
        "endpoint = https://***@monitor.example.com:8443/v1/customMetrics",
        "region = cn-north-1",
        "namespace = statsd",
        "dimension = host=n1,env=prod",
        "max_dimensions = 5",
        "max_dimension_bytes = 255",
        "max_series = 600000",
        "window = 60",
        "window_grace = 0.5",
        "gauge_ttl = 3600",
        "signature_version = 2",
        "point_type = 2",
        "request_timeout = 10",
        "ca_bundle = (none)",
        "max_pending_points = 1000000",
        "max_point_age = 604800",
        "send_jitter = 10",
        "max_requests_per_minute = 1000",
        "spool_dir = (none)",
        "spool_max_bytes = 1073741824",
        "shutdown_timeout = 20",
        "log_level = info",
        "log_format = text",
        "config_file = /etc/gateway.toml",
    ]


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_config(["--help"], {})
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        assert option.flag in out
        assert f"env {option.env}" in out
    assert "(default: 8388608;" in out


def test_docs_table_matches_options() -> None:
    assert markdown_table() in DOCS.read_text(encoding="utf-8")
