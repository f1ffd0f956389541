"""deploy/kubernetes: rendered with `kubectl kustomize`, validated offline against the
Kubernetes schemas with `kubernetes-validate --strict`, and checked for what schemas cannot
see: selectors, ports, probes, mounts, security, resources, secrets and settings."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import all_versions

from tests.deploy import dockerfile as df
from tests.deploy.conftest import KUBERNETES, VENV_BIN, load_settings, settings_class

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: cannot render the kustomize output"
)

# The oldest Kubernetes the manifests claim (deploy/kubernetes/README.md) and the newest whose
# schemas kubernetes-validate bundles.
OLDEST = "1.25.0"
NEWEST = all_versions()[-1]
# Custom resources: no schema is bundled; their own tests below check them.
CUSTOM_KINDS = {"ServiceMonitor"}

Doc = dict[str, Any]


def kustomize(directory: Path) -> tuple[str, list[Doc]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def with_servicemonitor(tmp: Path) -> Path:
    """A kustomization of the base plus the optional component (as an overlay would add it)."""
    tmp.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(KUBERNETES, tmp))
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative / "base")],
                "components": [str(relative / "components" / "servicemonitor")],
            }
        )
    )
    return tmp


TARGETS: dict[str, Callable[[Path], Path]] = {
    "base": lambda _: KUBERNETES / "base",
    "shared-tiers": lambda _: KUBERNETES / "overlays" / "shared-tiers",
    "base+servicemonitor": with_servicemonitor,
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, list[Doc]]]:
    tmp = tmp_path_factory.mktemp("kustomize")
    return {name: kustomize(target(tmp / "component")) for name, target in TARGETS.items()}


def validate(text: str, tmp: Path) -> tuple[int, list[str]]:
    path = tmp / "rendered.yaml"
    path.write_text(text)
    result = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "-k", OLDEST, "-k", NEWEST, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, (result.stdout + result.stderr).splitlines()


def one(docs: list[Doc], kind: str) -> Doc:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def container(docs: list[Doc]) -> Doc:
    containers: list[Doc] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    (found,) = containers
    return found


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (`512Mi`, `1Gi`, `250m`, `1`) as a number."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "m": 1e-3,
        "": 1,
    }
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match and match.group(2) in units, value
    return float(match.group(1)) * units[match.group(2)]


@pytest.mark.parametrize("target", list(TARGETS))
def test_renders_and_validates_strictly(
    target: str, rendered: dict[str, tuple[str, list[Doc]]], tmp_path: Path
) -> None:
    text, docs = rendered[target]
    code, lines = validate(text, tmp_path)
    assert code == 0, "\n".join(lines)
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))], lines
    for doc in docs:
        name = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        if doc["kind"] in CUSTOM_KINDS:
            assert any(line.startswith("WARN") and doc["kind"] in line for line in lines)
            continue
        for version in (OLDEST, NEWEST):
            short = ".".join(version.split(".")[:2])
            assert any(
                line.startswith("INFO") and f"resource {name} against version {short}" in line
                for line in lines
            ), f"{name} was not validated against {short}:\n" + "\n".join(lines)
    warned = [line for line in lines if line.startswith("WARN")]
    assert all(any(kind in line for kind in CUSTOM_KINDS) for line in warned), warned


def test_strict_validation_rejects_a_misspelled_field(
    rendered: dict[str, tuple[str, list[Doc]]], tmp_path: Path
) -> None:
    """The validator really is strict: a typo in a securityContext fails it."""
    text, _ = rendered["base"]
    assert "readOnlyRootFilesystem" in text
    code, lines = validate(
        text.replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"), tmp_path
    )
    assert code != 0
    assert any(line.startswith("ERROR") and "readOnlyRootFilesytem" in line for line in lines)


def test_base_holds_the_workload_objects_and_no_secret(
    rendered: dict[str, tuple[str, list[Doc]]],
) -> None:
    kinds = sorted(doc["kind"] for doc in rendered["base"][1])
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    )
    component = {doc["kind"] for doc in rendered["base+servicemonitor"][1]}
    assert component == {*kinds, "ServiceMonitor"}


@pytest.mark.parametrize("target", list(TARGETS))
def test_selectors_ports_and_targets_agree(
    target: str, rendered: dict[str, tuple[str, list[Doc]]]
) -> None:
    docs = rendered[target][1]
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {port["name"]: port["containerPort"] for port in container(docs)["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
    hpa = one(docs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert pdb["spec"].get("maxUnavailable") == 1 or (
        pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    )


def test_container_port_is_the_image_port(rendered: dict[str, tuple[str, list[Doc]]]) -> None:
    docs = rendered["base"][1]
    ports = {port["containerPort"] for port in container(docs)["ports"]}
    exposed = {int(port) for value in df.stages()[-1].values("EXPOSE") for port in value.split()}
    assert ports == exposed


def test_probes(rendered: dict[str, tuple[str, list[Doc]]]) -> None:
    spec = container(rendered["base"][1])
    ports = {port["name"] for port in spec["ports"]}
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert spec[probe]["httpGet"]["port"] in ports


def test_security_context(rendered: dict[str, tuple[str, list[Doc]]]) -> None:
    docs = rendered["base"][1]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    uid = df.user().partition(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == uid, "the image's USER"
    assert pod["automountServiceAccountToken"] is False
    context = container(docs)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def env_of(spec: Doc) -> dict[str, str]:
    return {item["name"]: item["value"] for item in spec.get("env", []) if "value" in item}


def test_writable_paths_are_volumes_and_files_come_from_mounts(
    rendered: dict[str, tuple[str, list[Doc]]],
) -> None:
    docs = rendered["base"][1]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    spec = container(docs)
    mounts = {mount["mountPath"]: mount for mount in spec["volumeMounts"]}
    assert all(mount["name"] in volumes for mount in mounts.values())
    assert not any("subPath" in mount for mount in mounts.values()), "updates must reach pods"
    env = env_of(spec)

    # Read-only root: the data dir and /tmp are emptyDirs with a size limit.
    for path in (env["VOICECACHE_DATA_DIR"], "/tmp"):
        volume = volumes[mounts[path]["name"]]
        assert "sizeLimit" in volume["emptyDir"], path
        assert not mounts[path].get("readOnly")

    def source(path: str) -> tuple[Doc, str]:
        directory, name = os.path.split(path)
        mount = mounts[directory]
        assert mount.get("readOnly") is True, directory
        return volumes[mount["name"]], name

    volume, name = source(env["VOICECACHE_CONFIG"])
    config_maps = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ConfigMap"}
    assert name in config_maps[volume["configMap"]["name"]]["data"]
    for variable, secret in [
        ("VOICECACHE_KEYS_FILE", "voicecache-api-keys"),
        ("VOICECACHE_MASTER_KEY_FILE", "voicecache-master-key"),
    ]:
        volume, name = source(env[variable])
        assert volume["secret"]["secretName"] == secret
        assert name in {item["path"] for item in volume["secret"]["items"]}


def test_resources_hold_the_configured_budgets(rendered: dict[str, tuple[str, list[Doc]]]) -> None:
    docs = rendered["base"][1]
    spec = container(docs)
    resources = spec["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    assert quantity(resources["requests"]["memory"]) <= quantity(resources["limits"]["memory"])
    config = one(docs, "ConfigMap")["data"]["voicecache.toml"]
    settings = tomllib.loads(config)
    memory_tier = settings_bytes(settings["memory_bytes"])
    assert memory_tier <= quantity(resources["limits"]["memory"]) / 2, "room for the process"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert settings_bytes(settings["disk_bytes"]) < quantity(data["emptyDir"]["sizeLimit"])


def settings_bytes(text: str) -> int:
    settings: Any = settings_class()(memory_bytes=text)
    return int(settings.memory_bytes)


def test_image_is_pinned(rendered: dict[str, tuple[str, list[Doc]]]) -> None:
    image = container(rendered["base"][1])["image"]
    tag, _ = df.image_tag(image)
    assert tag and tag != "latest", image


def effective_settings(docs: list[Doc], tmp: Path) -> Any:
    """The settings a pod would run with: its ConfigMap's TOML below the image's ENV, the
    container's literal env and the env of the Secrets it loads with envFrom."""
    spec = container(docs)
    env = {k: v for k, v in df.final_env().items() if k.startswith("VOICECACHE_")}
    env.update(env_of(spec))
    secrets = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Secret"}
    for source in spec.get("envFrom", []):
        secret = secrets[source["secretRef"]["name"]]
        env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    toml = tmp / "voicecache.toml"
    toml.write_text(one(docs, "ConfigMap")["data"]["voicecache.toml"])
    del env["VOICECACHE_CONFIG"]  # the mounted file is here at `toml`
    return load_settings(toml, {k: v for k, v in env.items() if k.startswith("VOICECACHE_")})


def test_base_settings(rendered: dict[str, tuple[str, list[Doc]]], tmp_path: Path) -> None:
    settings = effective_settings(rendered["base"][1], tmp_path)
    assert settings.tiers == ["memory", "disk"]
    assert settings.host == "0.0.0.0" and settings.workers == 1
    assert str(settings.data_dir) == "/var/lib/voicecache"
    assert str(settings.keys_file) == "/var/run/secrets/voicecache/api-keys/keys.json"


def test_shared_tiers_settings(rendered: dict[str, tuple[str, list[Doc]]], tmp_path: Path) -> None:
    docs = rendered["shared-tiers"][1]
    settings = effective_settings(docs, tmp_path)
    assert settings.tiers == ["memory", "disk", "redis", "s3"]
    assert settings.redis_url and settings.redis_url.startswith(("redis://", "redis+cluster://"))
    assert settings.s3_bucket
    assert {doc["metadata"].get("namespace") for doc in docs} == {"voicecache"}
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 2
    assert hpa["metrics"] == one(rendered["base"][1], "HorizontalPodAutoscaler")["spec"]["metrics"]


def test_committed_secrets_are_placeholders(rendered: dict[str, tuple[str, list[Doc]]]) -> None:
    found = 0
    for _, docs in rendered.values():
        for doc in docs:
            if doc["kind"] != "Secret":
                continue
            for key, value in doc.get("data", {}).items():
                found += 1
                assert "REPLACE_ME" in base64.b64decode(value).decode(), f"{key}: a real value?"
    assert found, "the shared-tiers overlay generates its Secret from placeholders"


def test_servicemonitor_scrapes_the_service(rendered: dict[str, tuple[str, list[Doc]]]) -> None:
    docs = rendered["base+servicemonitor"][1]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # /metrics needs an admin key once keys exist.
    credentials = endpoint["authorization"]["credentials"]
    assert credentials == {"name": "voicecache-metrics-token", "key": "token"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert set(endpoint) <= {
        "port",
        "path",
        "scheme",
        "interval",
        "scrapeTimeout",
        "authorization",
        "honorLabels",
        "relabelings",
        "metricRelabelings",
    }
