"""The deployment documentation agrees with the artifacts: paths exist, Secret names and keys
are the ones the manifests mount, and the image facts quoted are the Dockerfile's."""

from __future__ import annotations

import re

import yaml

from tests.deploy import dockerfile as df
from tests.deploy.conftest import KUBERNETES, ROOT, settings_class

README = (ROOT / "README.md").read_text(encoding="utf-8")
KUBERNETES_README = (KUBERNETES / "README.md").read_text(encoding="utf-8")


def deployment_section() -> str:
    match = re.search(r"^## Deployment\n(.*?)^## ", README, re.S | re.M)
    assert match, "README has a Deployment section"
    return match.group(1)


def test_paths_the_docs_name_exist() -> None:
    named = set()
    for text in (deployment_section(), KUBERNETES_README):
        named |= {m.rstrip(".,:;)") for m in re.findall(r"deploy/[\w./-]+", text)}
    assert len(named) >= 8
    for path in sorted(named):
        assert (ROOT / path.split("#")[0]).exists(), path


def test_readme_says_how_to_run_the_cli() -> None:
    assert ".venv/bin/voicecache" in README and "source .venv/bin/activate" in README


def test_secrets_the_docs_create_are_the_ones_mounted() -> None:
    created = dict(
        re.findall(
            r"create secret generic (\S+) --from-(?:file|literal)=([\w.-]+)", KUBERNETES_README
        )
    )
    deployment = yaml.safe_load((KUBERNETES / "base" / "deployment.yaml").read_text())
    mounted = {
        volume["secret"]["secretName"]: volume["secret"]["items"][0]["key"]
        for volume in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    }
    monitor = yaml.safe_load(
        (KUBERNETES / "components" / "servicemonitor" / "servicemonitor.yaml").read_text()
    )
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    mounted[credentials["name"]] = credentials["key"]
    assert created == mounted


def test_image_facts_in_the_readme_are_the_dockerfiles() -> None:
    section = deployment_section()
    assert df.stages()[-1].image in section
    data_dir = df.final_env()["VOICECACHE_DATA_DIR"]
    assert f"voicecache-data:{data_dir}" in section
    assert f"uid {df.user().partition(':')[0]}" in section
    assert "-p 8080:8080" in section and df.final_env()["VOICECACHE_PORT"] == "8080"
    fields = set(settings_class().model_fields) | {"config"}
    for variable in set(re.findall(r"VOICECACHE_[A-Z_]+", section + KUBERNETES_README)):
        assert variable.removeprefix("VOICECACHE_").lower() in fields, variable
