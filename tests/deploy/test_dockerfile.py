"""The container recipe: multi-stage, pinned bases, runtime dependencies only, non-root, port,
bind address, data volume, health check, and a build context holding what the build needs."""

from __future__ import annotations

import re
import tomllib

from tests.deploy import dockerfile as df
from tests.deploy.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_multi_stage() -> None:
    stages = df.stages()
    assert len(stages) >= 2
    assert stages[0].name, "the builder stage is named, for COPY --from"


def test_every_base_image_is_pinned_to_a_version_tag() -> None:
    for stage in df.stages():
        tag, digest = df.image_tag(stage.image)
        assert tag or digest, f"{stage.image}: no tag"
        assert tag != "latest", f"{stage.image}: `latest` is not a pin"
        if tag:
            assert re.search(r"\d+\.\d+\.\d+", tag), f"{stage.image}: pin a full version"


def test_runtime_and_builder_share_the_interpreter() -> None:
    """The venv is built in one stage and run in the other: its python symlink must point at
    the same interpreter."""
    stages = df.stages()
    assert stages[-1].image == stages[0].image


def test_runtime_stage_copies_the_venv_and_installs_nothing_itself() -> None:
    runtime = df.stages()[-1]
    copies = runtime.values("COPY")
    assert any(
        value.startswith(f"--from={df.stages()[0].name} ") and "/opt/venv" in value
        for value in copies
    ), copies
    for command in runtime.values("RUN"):
        assert "pip" not in command and "apt-get" not in command, command


def test_no_stage_installs_dev_or_bench_extras() -> None:
    tools = {
        re.split(r"[\[=<> ]", requirement)[0].lower()
        for extra in ("dev", "bench")
        for requirement in PYPROJECT["project"]["optional-dependencies"][extra]
    } - {"voicecache"}
    assert "pytest" in tools
    for stage in df.stages():
        for command in stage.values("RUN"):
            assert not re.search(r"\[(dev|bench)\]", command), command
            words = set(re.split(r"[\s=\[\]]+", command.lower()))
            assert words.isdisjoint(tools), f"{command}: installs {words & tools}"
    (build,) = df.stages()[0].values("RUN")
    assert re.search(r"pip install /wheels/voicecache-\*\.whl(\s|$)", build), build


def test_runs_as_a_numeric_non_root_user() -> None:
    user = df.user()
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric (runAsNonRoot) and not 0"
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_exposes_8080_and_binds_every_interface() -> None:
    runtime = df.stages()[-1]
    assert "8080" in " ".join(runtime.values("EXPOSE")).split()
    env = df.final_env()
    assert env["VOICECACHE_HOST"] == "0.0.0.0"
    assert env["VOICECACHE_PORT"] == "8080"


def test_the_data_directory_is_a_volume() -> None:
    volumes = " ".join(df.stages()[-1].values("VOLUME"))
    data_dir = df.final_env()["VOICECACHE_DATA_DIR"]
    assert data_dir.startswith("/")
    assert f'"{data_dir}"' in volumes or data_dir in volumes.split()


def test_healthcheck_requests_healthz_with_the_standard_library() -> None:
    (value,) = df.stages()[-1].values("HEALTHCHECK")
    assert re.search(r"--interval=\d+s", value) and re.search(r"--timeout=\d+s", value)
    command = df.healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2] and "/healthz" in command[2]
    assert "curl" not in value and "wget" not in value


def test_entrypoint_is_the_voicecache_command_serving_by_default() -> None:
    runtime = df.stages()[-1]
    assert df.exec_form(runtime.values("ENTRYPOINT")[-1]) == ["voicecache"]
    assert df.exec_form(runtime.values("CMD")[-1]) == ["serve"]


def test_build_context_holds_what_the_build_copies_and_nothing_private() -> None:
    sources = df.copy_sources(df.stages()[0])
    assert {"pyproject.toml", "src"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not df.ignored(source), f"COPY {source}: excluded by .dockerignore"
    # The build reads what pyproject.toml names: the readme and the license files.
    for name in [PYPROJECT["project"]["readme"], *PYPROJECT["project"]["license-files"]]:
        assert name in sources and not df.ignored(name)
    shipped = [
        path
        for path in (ROOT / "src" / "voicecache").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert any(path.suffix != ".py" for path in shipped), "package data (static/) expected"
    for path in shipped:
        relative = path.relative_to(ROOT).as_posix()
        assert not df.ignored(relative), relative
    for private in [
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        ".voicecache/keys.json",
        "src/voicecache/__pycache__/cli.cpython-311.pyc",
        "src/voicecache.egg-info/PKG-INFO",
        "benchmarks/REPORT.md",
        "deploy/compose.yaml",
        "hello.wav",
    ]:
        assert df.ignored(private), f"{private} would be sent to the Docker daemon"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher above decides the previous test: check it on known cases."""
    assert df.ignored("anything") and df.ignored("a/b/c")
    assert not df.ignored("src/voicecache/cli.py")
    assert df.ignored("src/voicecache/__pycache__/x.pyc")
