"""deploy/compose.yaml: its services refer to each other consistently (dependencies, URLs,
Prometheus targets, load-balancer upstreams, Grafana provisioning, volumes), the voicecache
replicas' settings parse, and the commented EmotiVoice service is valid once uncommented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy import dockerfile as df
from tests.deploy.conftest import DEPLOY, ROOT, VENV_BIN, load_settings, settings_class

COMPOSE = DEPLOY / "compose.yaml"
REPLICAS = ("voicecache-1", "voicecache-2")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def interpolate(value: str) -> str:
    """Compose's ${NAME:-default} with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value).replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(str(value)) for name, value in env.items()}


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service (short syntax)."""
    mounts = []
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        mounts.append((source, target))
    return mounts


def nginx_config() -> str:
    (source,) = [s for s, t in volume_mounts(services()["lb"]) if t == "/etc/nginx/nginx.conf"]
    return (DEPLOY / source).read_text(encoding="utf-8")


def test_the_stack_has_every_part() -> None:
    assert {*REPLICAS, "lb", "redis", "minio", "minio-init", "prometheus", "grafana"} <= set(
        services()
    )


def test_dependencies_name_services_and_health_conditions_have_checks() -> None:
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dependency, options in depends.items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            assert dependency != name
            assert options["condition"] in CONDITIONS
            if options["condition"] == "service_healthy":
                target = all_services[dependency]
                has_check = "healthcheck" in target or (
                    "build" in target and df.stages()[-1].values("HEALTHCHECK")
                )
                assert has_check, f"{name} waits for {dependency} to be healthy: no health check"


def test_every_url_names_a_service_and_its_port() -> None:
    all_services = services()
    ports = {"redis": 6379, "minio": 9000, "prometheus": 9090, "emotivoice": 8000}
    urls = 0
    for name, service in all_services.items():
        for variable, value in environment(service).items():
            if "://" not in value:
                continue
            urls += 1
            parts = urlsplit(value)
            assert parts.hostname in all_services, f"{name}: {variable}={value}"
            assert parts.port == ports[parts.hostname], f"{name}: {variable}={value}"
    assert urls >= 4


def test_replicas_share_redis_and_s3_and_their_settings_parse() -> None:
    fields = set(settings_class().model_fields)
    for name in REPLICAS:
        env = environment(services()[name])
        assert env["VOICECACHE_TIERS"] == "memory,disk,redis,s3"
        for variable in env:
            if variable.startswith("VOICECACHE_"):
                assert variable.removeprefix("VOICECACHE_").lower() in fields, variable
        settings = load_settings(env={k: v for k, v in env.items() if k.startswith("VOICECACHE_")})
        assert settings.tiers == ["memory", "disk", "redis", "s3"]
        assert settings.redis_url and settings.s3_bucket and settings.s3_endpoint_url
    first, second = (environment(services()[name]) for name in REPLICAS)
    assert first == second


def test_the_bucket_voicecache_uses_is_the_one_created() -> None:
    bucket = environment(services()[REPLICAS[0]])["VOICECACHE_S3_BUCKET"]
    script = " ".join(services()["minio-init"]["command"])
    assert re.search(rf"mc mb --ignore-existing local/{re.escape(bucket)}\b", script)
    replica, minio = environment(services()[REPLICAS[0]]), environment(services()["minio"])
    assert replica["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert replica["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_replicas_run_like_the_kubernetes_pods() -> None:
    data_dir = df.final_env()["VOICECACHE_DATA_DIR"]
    keys_file = environment(services()[REPLICAS[0]])["VOICECACHE_KEYS_FILE"]
    for name in REPLICAS:
        service = services()[name]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert service["cap_drop"] == ["ALL"]
        targets = dict((t, s) for s, t in volume_mounts(service))
        assert data_dir in targets, "the image's data VOLUME gets a named volume"
        assert str(Path(keys_file).parent) in targets
    sources = [dict((t, s) for s, t in volume_mounts(services()[n]))[data_dir] for n in REPLICAS]
    assert len(set(sources)) == 2, "each replica has its own data directory"


def test_prometheus_scrapes_each_replica_with_the_admin_key() -> None:
    prometheus = services()["prometheus"]
    mounts = dict((t, s) for s, t in volume_mounts(prometheus))
    config = yaml.safe_load((DEPLOY / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "voicecache"]
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    port = df.final_env()["VOICECACHE_PORT"]
    assert sorted(targets) == sorted(f"{name}:{port}" for name in REPLICAS)
    assert job["metrics_path"] == "/metrics"
    token = job["authorization"]["credentials_file"]
    directory = str(Path(token).parent)
    assert directory in mounts, "the token's directory is mounted"
    script = " ".join(services()["keys-init"]["command"])
    init_mounts = dict((s, t) for s, t in volume_mounts(services()["keys-init"]))
    written = f"{init_mounts[mounts[directory]]}/{Path(token).name}"
    assert written in script, f"keys-init writes {written}"
    assert "--scope admin" in script


def test_load_balancer_sends_to_both_replicas_on_the_published_port() -> None:
    config = nginx_config()
    upstream = re.search(r"upstream voicecache \{(.*?)\}", config, re.S)
    assert upstream
    servers = re.findall(r"^\s*server\s+(\S+?)(?:\s|;)", upstream.group(1), re.M)
    port = df.final_env()["VOICECACHE_PORT"]
    assert sorted(servers) == sorted(f"{name}:{port}" for name in REPLICAS)
    assert "proxy_pass http://voicecache;" in config
    (listen,) = re.findall(r"^\s*listen\s+(\d+);", config, re.M)
    published = [entry.split(":")[-1] for entry in services()["lb"]["ports"]]
    assert listen in published
    assert [n for n in services() if "ports" in services()[n] and n in REPLICAS] == []


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_load_balancer_config_passes_nginx_t(tmp_path: Path) -> None:
    """`nginx -t` resolves upstream hosts: point them at loopback for the syntax check."""
    config = tmp_path / "nginx.conf"
    config.write_text(re.sub(r"voicecache-\d+:", "127.0.0.1:", nginx_config()))
    result = subprocess.run(
        ["nginx", "-t", "-q", "-c", str(config), "-p", str(tmp_path), "-e", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_grafana_provisions_the_dashboard_and_its_datasource() -> None:
    grafana = services()["grafana"]
    mounts = dict((t, s) for s, t in volume_mounts(grafana))
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    assert provisioning.is_dir()
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "voicecache.yml").read_text())[
        "providers"
    ]
    dashboards = provider["options"]["path"]

    # The entrypoint copies the repository's dashboard to the provider's path, binding its
    # ${DS_PROMETHEUS} import input to the provisioned datasource: apply the same sed.
    script = interpolate(grafana["command"][0])
    source_mount = mounts["/etc/voicecache/voicecache.json"]
    source = DEPLOY / source_mount
    assert source == ROOT / "deploy" / "grafana" / "voicecache.json" and source.is_file()
    match = re.search(
        r"sed 's/\$\{(\w+)\}/(\w+)/g' /etc/voicecache/voicecache.json\s*\\?\s*> (\S+)", script
    )
    assert match, script
    variable, uid, target = match.groups()
    assert uid == datasource["uid"]
    assert str(Path(target).parent) == dashboards
    assert "exec /run.sh" in script
    dashboard = json.loads(source.read_text().replace("${" + variable + "}", uid))
    refs = [
        ref
        for panel in dashboard["panels"]
        for ref in [
            panel.get("datasource"),
            *(t.get("datasource") for t in panel.get("targets", [])),
        ]
        if ref
    ]
    assert refs and all(ref == {"type": datasource["type"], "uid": uid} for ref in refs)
    assert "${" not in json.dumps(dashboard)


def test_volumes_are_declared_used_and_bind_mounts_exist() -> None:
    declared = set(compose()["volumes"])
    used = set()
    for name, service in services().items():
        for source, _ in volume_mounts(service):
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_images_are_pinned_and_voicecache_is_built_here() -> None:
    for name, service in services().items():
        image = service["image"]
        tag, _ = df.image_tag(image)
        assert tag and tag != "latest", f"{name}: {image}"
        if image.startswith("voicecache:"):
            assert service["build"]["context"] == ".."
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_emotivoice_service_is_valid_once_uncommented() -> None:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    start = lines.index("  # emotivoice:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        block.append("  " + line[4:])
    service = yaml.safe_load("\n".join(block))["emotivoice"]
    assert service["image"] == "syq163/emoti-voice:latest"
    assert "--port 8000" in " ".join(service["command"])
    assert "openaiapi:app" in " ".join(service["command"])
    # The commented replica settings point at it.
    commented = [
        line.strip().removeprefix("# ") for line in lines if "VOICECACHE_EMOTIVOICE_URL" in line
    ]
    (url,) = [line.split(": ", 1)[1] for line in commented if line.startswith("VOICECACHE_")]
    assert urlsplit(url).hostname == "emotivoice" and urlsplit(url).port == 8000


def test_matches_the_compose_specification_schema() -> None:
    """check-jsonschema's bundled copy of the Compose Specification schema (offline)."""
    result = subprocess.run(
        [
            str(VENV_BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
