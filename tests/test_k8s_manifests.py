"""The Kubernetes manifests and the Dockerfile agree with each other and with the config schema.

Static checks (no cluster, no Docker): every YAML under k8s/ parses, the ConfigMap's config.yaml
is a valid sidecar config, probes and the Service reach the sidecar's port, the pod's grace period
covers the preStop delay plus the sidecar's drain timeout, the NetworkPolicy keeps the admin port
for monitoring, and the kustomize component (built with `kubectl kustomize`) adds the same sidecar
to someone else's Deployment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sidecar.config import Config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
BASE = K8S / "base"
COMPONENT = K8S / "components" / "session-sidecar"
DOCKERFILE = ROOT / "Dockerfile"

SIDECAR = "session-sidecar"
AGENT = "agent"
CONFIG_KEY = "config.yaml"
# Time left between the sidecar's drain bound and SIGKILL, for closing pools and exiting.
SHUTDOWN_MARGIN_S = 2

Doc = dict[str, Any]


def _yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _one(path: Path, kind: str) -> Doc:
    docs = [d for d in _load(path) if d.get("kind") == kind]
    assert len(docs) == 1, f"expected one {kind} in {path.relative_to(ROOT)}, found {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module")
def deployment() -> Doc:
    return _one(BASE / "deployment.yaml", "Deployment")


@pytest.fixture(scope="module")
def pod(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def sidecar(pod: Doc) -> Doc:
    found = [c for c in pod.get("initContainers", []) if c["name"] == SIDECAR]
    assert len(found) == 1, f"no init container named {SIDECAR}"
    return found[0]


@pytest.fixture(scope="module")
def agent(pod: Doc) -> Doc:
    found = [c for c in pod.get("containers", []) if c["name"] == AGENT]
    assert len(found) == 1, f"no container named {AGENT}"
    return found[0]


@pytest.fixture(scope="module")
def configmap() -> Doc:
    return _one(BASE / "configmap.yaml", "ConfigMap")


@pytest.fixture(scope="module")
def example_secret() -> Doc:
    return _one(BASE / "secret.example.yaml", "Secret")


POD_NAME = "agent-7d9f8c6b5-x2k4q"


def _container_env(container: Doc, secret: Doc) -> dict[str, str]:
    """The container's environment, secret references resolved against the example Secret and
    downward API references against an example pod."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        if "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", var
            env[var["name"]] = POD_NAME
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], f"{var['name']}: unknown Secret"
        assert ref["key"] in secret["stringData"], f"{var['name']}: key {ref['key']} not in Secret"
        env[var["name"]] = secret["stringData"][ref["key"]]
    return env


@pytest.fixture(scope="module")
def config(configmap: Doc, sidecar: Doc, example_secret: Doc) -> Config:
    data = yaml.safe_load(configmap["data"][CONFIG_KEY])
    return Config.from_mapping(data, env=_container_env(sidecar, example_secret))


def _port_number(container: Doc, port: int | str) -> int | None:
    """A probe's or Service's port (number or name) as this container's port number, or None."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return int(p["containerPort"])
    return None


def _prestop_seconds(container: Doc) -> float:
    handler = container.get("lifecycle", {}).get("preStop")
    assert handler, f"{container['name']}: no preStop hook"
    if "sleep" in handler:
        return float(handler["sleep"]["seconds"])
    command = handler["exec"]["command"]
    if command[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        command = shlex.split(command[2])
    match = re.fullmatch(r"(?:/bin/|/usr/bin/)?sleep", command[0])
    assert match, f"{container['name']}: preStop is not a sleep: {command}"
    assert len(command) == 2, f"{container['name']}: preStop sleeps for no fixed time: {command}"
    return float(command[1])


def _dockerfile_exec_form(instruction: str) -> list[str]:
    lines = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    found = [line for line in lines if line.split(None, 1)[0].upper() == instruction]
    assert found, f"Dockerfile has no {instruction}"
    value = json.loads(found[-1].split(None, 1)[1])  # the last one wins, as in Docker
    assert isinstance(value, list), f"{instruction} is not in exec (JSON list) form"
    return value


# --- every file ----------------------------------------------------------------------------------


def test_every_yaml_file_parses_into_kubernetes_objects() -> None:
    files = _yaml_files()
    names = {p.relative_to(K8S).as_posix() for p in files}
    expected = {
        "base/kustomization.yaml",
        "base/deployment.yaml",
        "base/configmap.yaml",
        "base/service.yaml",
        "base/secret.example.yaml",
        "base/networkpolicy.yaml",
        "redis/redis.yaml",
        "components/session-sidecar/kustomization.yaml",
        "components/session-sidecar/sidecar-patch.yaml",
        "components/session-sidecar/configmap.yaml",
        "monitoring/kustomization.yaml",
        "monitoring/prometheusrule.yaml",
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"
    for path in files:
        docs = _load(path)
        assert docs, f"{path.relative_to(ROOT)} holds no document"
        for doc in docs:
            assert isinstance(doc, dict), f"{path.relative_to(ROOT)}: not a mapping"
            assert doc.get("apiVersion"), f"{path.relative_to(ROOT)}: no apiVersion"
            assert doc.get("kind"), f"{path.relative_to(ROOT)}: no kind"
            if doc["kind"] not in ("Kustomization", "Component"):
                assert doc.get("metadata", {}).get("name"), f"{path.relative_to(ROOT)}: no name"


def test_kustomizations_list_existing_files_and_leave_out_the_example_secret() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert BASE / "kustomization.yaml" in kustomizations
    for path in kustomizations:
        (doc,) = _load(path)
        assert doc["kind"] in ("Kustomization", "Component"), path
        resources = doc.get("resources", [])
        assert resources, f"{path.relative_to(ROOT)} lists no resources"
        entries = list(resources) + [p["path"] for p in doc.get("patches", [])]
        for generator in doc.get("configMapGenerator", []):
            entries += [f.split("=", 1)[-1] for f in generator.get("files", [])]
        for entry in entries:
            assert (path.parent / entry).exists(), f"{path.relative_to(ROOT)}: {entry} not found"
            assert "secret.example" not in entry, "the example Secret must not be applied"
    base = _one(BASE / "kustomization.yaml", "Kustomization")["resources"]
    assert {"deployment.yaml", "configmap.yaml", "service.yaml", "networkpolicy.yaml"} <= set(base)


# --- the sidecar's config ------------------------------------------------------------------------


def test_configmap_holds_a_valid_config_for_this_pod(config: Config) -> None:
    assert config.listen.host == "0.0.0.0"
    assert config.listen.port == 8080
    assert config.upstream.url == "http://127.0.0.1:8000"
    assert config.postgres.migrate_on_start is True
    assert urlsplit(config.redis.url).hostname, "redis.url did not come from the Deployment's env"
    # Stable across container restarts and unique per pod: the pod's own name.
    assert config.writer.consumer == POD_NAME


def test_secrets_reach_the_sidecar_from_the_secret(sidecar: Doc, example_secret: Doc) -> None:
    env = {var["name"]: var for var in sidecar["env"]}
    for name in ("SIDECAR_POSTGRES_DSN", "SIDECAR_ADMIN_TOKEN", "SIDECAR_IDENTITY_SECRET"):
        assert name in env, f"{name} is not set"
        assert "value" not in env[name], f"{name} is written in clear in the Deployment"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == example_secret["metadata"]["name"]
    assert "SIDECAR_REDIS_URL" in env
    marked = (BASE / "secret.example.yaml").read_text(encoding="utf-8")
    assert "EXAMPLE" in marked
    assert "REPLACE" in marked
    assert all("CHANGE-ME" in v for v in example_secret["stringData"].values())


def test_journal_and_tmp_are_writable_emptydirs(pod: Doc, sidecar: Doc, config: Config) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    journal_dir = str(PurePosixPath(config.writer.journal_path).parent)
    assert PurePosixPath(config.writer.journal_path).is_absolute()
    for path in (journal_dir, "/tmp"):
        assert path in mounts, f"nothing mounted at {path}"
        assert not mounts[path].get("readOnly"), f"{path} is mounted read-only"
        assert "emptyDir" in volumes[mounts[path]["name"]], f"{path} is not an emptyDir"


# --- pod wiring --------------------------------------------------------------------------------


def test_sidecar_is_a_native_sidecar_in_front_of_the_agent(sidecar: Doc, agent: Doc) -> None:
    assert sidecar.get("restartPolicy") == "Always"
    assert agent["image"] == "example.com/agent:latest"
    assert not agent.get("ports"), "the agent must not be exposed beside the sidecar"
    text = (BASE / "deployment.yaml").read_text(encoding="utf-8")
    assert "REPLACE" in text
    assert "127.0.0.1:8000" in text


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        ("readinessProbe", "/_sidecar/readyz"),
        ("livenessProbe", "/_sidecar/healthz"),
        ("startupProbe", "/_sidecar/healthz"),
    ],
)
def test_probes_hit_the_sidecar_endpoints(
    sidecar: Doc, config: Config, probe: str, path: str
) -> None:
    get = sidecar[probe]["httpGet"]
    assert get["path"] == path
    assert _port_number(sidecar, get["port"]) == config.listen.port


def test_service_sends_clients_to_the_sidecar(
    deployment: Doc, sidecar: Doc, agent: Doc, config: Config
) -> None:
    service = _one(BASE / "service.yaml", "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert _port_number(sidecar, target) == config.listen.port
        assert _port_number(agent, target) is None


def test_metrics_are_announced_for_scraping_on_the_admin_port(
    deployment: Doc, sidecar: Doc, config: Config
) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/_sidecar/metrics"
    assert config.admin.listen is not None, "metrics must not share the client port"
    assert int(annotations["prometheus.io/port"]) == config.admin.listen.port
    assert _port_number(sidecar, "admin") == config.admin.listen.port
    assert config.admin.listen.port != config.listen.port


def test_network_policy_opens_the_client_port_and_keeps_admin_for_monitoring(
    deployment: Doc, sidecar: Doc, config: Config
) -> None:
    policy = _one(BASE / "networkpolicy.yaml", "NetworkPolicy")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert config.admin.listen is not None
    opened: dict[int, list[Doc]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            number = _port_number(sidecar, port["port"])
            assert number is not None, f"{port['port']} is no port of the sidecar"
            opened.setdefault(number, []).append(rule)
    assert set(opened) == {config.listen.port, config.admin.listen.port}
    # Clients reach the client port from anywhere; the admin port only from selected namespaces.
    assert any("from" not in rule for rule in opened[config.listen.port])
    for rule in opened[config.admin.listen.port]:
        assert rule["from"], "the admin port is open to everyone"
        assert all("namespaceSelector" in peer for peer in rule["from"])


def test_json_logs_in_the_cluster(config: Config) -> None:
    assert config.logging.format == "json"
    assert config.logging.access_log is True


def test_grace_period_covers_prestop_and_drain(
    pod: Doc, sidecar: Doc, agent: Doc, config: Config
) -> None:
    grace = pod["terminationGracePeriodSeconds"]
    # The native sidecar gets SIGTERM only after the agent exited, which is after its preStop.
    prestop = max(_prestop_seconds(sidecar), _prestop_seconds(agent))
    assert prestop > 0
    assert grace >= prestop + config.shutdown.drain_timeout_s + SHUTDOWN_MARGIN_S, (
        f"terminationGracePeriodSeconds {grace} < preStop {prestop} "
        f"+ drain_timeout_s {config.shutdown.drain_timeout_s} + margin {SHUTDOWN_MARGIN_S}"
    )


def test_sidecar_runs_locked_down(pod: Doc, sidecar: Doc) -> None:
    security = sidecar["securityContext"]
    assert security.get("runAsNonRoot", pod["securityContext"].get("runAsNonRoot")) is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(sidecar["resources"][kind]), f"{kind} incomplete"


def test_pdb_selects_the_pods(deployment: Doc) -> None:
    pdb = _one(BASE / "pdb.yaml", "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


# --- the image ----------------------------------------------------------------------------------


def _config_path(args: list[str]) -> str:
    assert "-c" in args, f"no -c in {args}"
    return args[args.index("-c") + 1]


def _mounted_config_paths(pod: Doc, container: Doc, configmap_name: str) -> set[str]:
    volumes = {
        v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == configmap_name
    }
    paths = set()
    for mount in container.get("volumeMounts", []):
        if mount["name"] in volumes:
            sub = mount.get("subPath")
            paths.add(mount["mountPath"] if sub else f"{mount['mountPath']}/{CONFIG_KEY}")
    return paths


def test_dockerfile_serves_the_mounted_config(pod: Doc, sidecar: Doc, configmap: Doc) -> None:
    assert _dockerfile_exec_form("ENTRYPOINT") == ["sidecar"]
    cmd = _dockerfile_exec_form("CMD")
    assert cmd[0] == "serve"
    assert "command" not in sidecar, "the Deployment must not replace the image's entrypoint"
    args = sidecar.get("args", cmd)
    assert args[0] == "serve"
    mounted = _mounted_config_paths(pod, sidecar, configmap["metadata"]["name"])
    assert _config_path(cmd) in mounted, f"CMD reads {_config_path(cmd)}, mounted: {mounted}"
    assert _config_path(args) in mounted
    assert CONFIG_KEY in configmap["data"]


def test_dockerfile_runs_as_the_uid_the_pod_expects(sidecar: Doc, config: Config) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user, "Dockerfile sets no USER"
    uid = user[-1].split(":")[0]
    assert uid.isdigit(), "USER must be numeric, so runAsNonRoot can check it"
    assert int(uid) != 0, "USER must not be root"
    assert int(uid) == sidecar["securityContext"]["runAsUser"]
    exposed = re.findall(r"^EXPOSE\s+(\d+)", text, re.MULTILINE)
    assert [int(p) for p in exposed] == [config.listen.port]


def test_migrate_job_uses_the_same_config(configmap: Doc, example_secret: Doc) -> None:
    job = _one(K8S / "jobs" / "migrate.yaml", "Job")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"][0] == "migrate"
    mounted = _mounted_config_paths(spec, container, configmap["metadata"]["name"])
    assert _config_path(container["args"]) in mounted
    env = _container_env(container, example_secret)
    data = yaml.safe_load(configmap["data"][CONFIG_KEY])
    assert Config.from_mapping(data, env=env).postgres.dsn == env["SIDECAR_POSTGRES_DSN"]


# --- the example Redis --------------------------------------------------------------------------


def test_example_redis_persists_and_never_evicts() -> None:
    statefulset = _one(K8S / "redis" / "redis.yaml", "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = [str(a) for a in container["args"]]
    settings = dict(zip(args[::2], args[1::2], strict=True))
    assert settings["--appendonly"] == "yes"
    assert settings["--appendfsync"] == "everysec"
    assert settings["--maxmemory-policy"] == "noeviction"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert mounts.get(settings["--dir"]) in claims, "the append-only file is not on a volume"


# --- the kustomize component ----------------------------------------------------------------------


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed, so the kustomize component cannot be built; install it "
            "(it carries kustomize: `kubectl kustomize`)",
            pytrace=False,
        )
    return path


USER_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: search-agent
spec:
  selector:
    matchLabels: {app: search-agent}
  template:
    metadata:
      labels: {app: search-agent}
      annotations: {team: search}
    spec:
      containers:
        - name: search
          image: registry.example.com/search-agent:1.2
          env: [{name: PORT, value: "8000"}]
      volumes:
        - name: cache
          emptyDir: {}
"""


@pytest.fixture(scope="module")
def built_with_component(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """A user's own overlay: their Deployment, plus the component."""
    overlay = tmp_path_factory.mktemp("overlay")
    (overlay / "deployment.yaml").write_text(USER_DEPLOYMENT, encoding="utf-8")
    # kustomize takes components by relative path only.
    relative = os.path.relpath(COMPONENT, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["deployment.yaml"], "components": [relative]}),
        encoding="utf-8",
    )
    result = subprocess.run(
        [_kubectl(), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_component_is_a_kustomize_component() -> None:
    doc = _one(COMPONENT / "kustomization.yaml", "Component")
    assert doc["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert all(p["target"]["kind"] == "Deployment" for p in doc["patches"])


def test_component_adds_the_sidecar_to_any_deployment(
    built_with_component: list[Doc], sidecar: Doc, pod: Doc, deployment: Doc
) -> None:
    (built,) = [d for d in built_with_component if d["kind"] == "Deployment"]
    assert built["metadata"]["name"] == "search-agent"
    template = built["spec"]["template"]
    spec = template["spec"]
    # The user's own parts are kept.
    assert [c["name"] for c in spec["containers"]] == ["search"]
    assert spec["containers"][0]["image"] == "registry.example.com/search-agent:1.2"
    assert template["metadata"]["annotations"]["team"] == "search"
    assert template["metadata"]["labels"] == {"app": "search-agent"}
    # The sidecar is the very one of the example Deployment, with its volumes and annotations.
    assert spec["initContainers"] == [sidecar]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "cache" in volumes
    for volume in pod["volumes"]:
        if volume["name"].startswith("sidecar-"):
            assert volumes[volume["name"]] == volume
    for key, value in deployment["spec"]["template"]["metadata"]["annotations"].items():
        assert template["metadata"]["annotations"][key] == value


def test_component_brings_the_same_config(built_with_component: list[Doc], configmap: Doc) -> None:
    (built,) = [d for d in built_with_component if d["kind"] == "ConfigMap"]
    assert built["metadata"]["name"] == configmap["metadata"]["name"]
    assert built["data"] == configmap["data"]


def test_monitoring_kustomization_builds_the_rules_and_the_dashboard() -> None:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / "monitoring")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(result.stdout) if d}
    assert docs["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(docs["ConfigMap"]["data"]["session-sidecar.json"])
    assert dashboard["uid"] == "session-sidecar"
    assert docs["PrometheusRule"]["spec"]["groups"]
