"""Packaging: the GPL-3.0 LICENSE and SPDX metadata, a wheel built from exactly the Docker
build context (no deprecation warning, every module and data file, a working `voicecache`
command), and the Makefile's install stamps (`make run` serving-only, `make test` the dev
extras, `make bench` the bench extras, none reinstalling what another installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.deploy import dockerfile as df
from tests.deploy.conftest import ROOT, VENV_BIN

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_is_the_gpl_3_text_declared_in_spdx_form() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "GPL-3.0-or-later"
    assert project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text and "How to Apply These Terms" in text
    assert len(text.splitlines()) == 674  # the FSF's gpl-3.0.txt, unabridged
    requires = PYPROJECT["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=") for r in requires)
    (setuptools,) = [r for r in requires if r.startswith("setuptools")]
    assert int(setuptools.split(">=")[1].split(".")[0]) >= 77, "SPDX license needs 77+"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A wheel built, as the Dockerfile's builder stage does, from only the files the build
    context holds; returns the wheel and the build's output."""
    context = tmp_path_factory.mktemp("context")
    for source in df.copy_sources(df.stages()[0]):
        path = ROOT / source
        if path.is_dir():
            for file in path.rglob("*"):
                relative = file.relative_to(ROOT)
                if file.is_file() and not df.ignored(relative.as_posix()):
                    (context / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, context / relative)
        else:
            shutil.copy2(path, context / source)
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",
            "--wheel-dir",
            str(out),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("voicecache-*.whl")
    return built, result.stdout + result.stderr


def test_wheel_builds_without_deprecation_warnings(wheel: tuple[Path, str]) -> None:
    _, output = wheel
    assert "Successfully built voicecache" in output or "Created wheel for voicecache" in output
    assert "deprecated" not in output.lower(), [
        line for line in output.splitlines() if "deprecat" in line.lower()
    ]


def test_wheel_metadata_and_contents(wheel: tuple[Path, str]) -> None:
    built, _ = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert "License-Expression: GPL-3.0-or-later" in meta
    assert "License-File: LICENSE" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "voicecache = " in scripts
    extras = {
        line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Provides-Extra")
    }
    assert {"dev", "bench"} <= extras
    # Every module and data file of the package (a folder without __init__.py would be left
    # out by find_packages: this catches it).
    package = ROOT / "src"
    expected = {
        path.relative_to(package).as_posix()
        for path in (package / "voicecache").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected - names == set()


def test_installed_wheel_gives_a_working_command(wheel: tuple[Path, str], tmp_path: Path) -> None:
    """`pip install` of the wheel alone, dependencies taken from this venv: `voicecache` runs
    from the new environment."""
    built, _ = wheel
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(target / "bin" / "python"),
            "install",
            "--no-deps",
            "--quiet",
            str(built),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    site = next((target / "lib").glob("python3.*/site-packages"))
    dependencies = next((VENV_BIN.parent / "lib").glob("python3.*/site-packages"))
    (site / "dependencies.pth").write_text(f"{dependencies}\n")
    command = target / "bin" / "voicecache"
    assert command.is_file()
    help_text = subprocess.run(
        [str(command), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert "serve" in help_text and "keys" in help_text
    where = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import voicecache; print(voicecache.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(site)), "voicecache came from the wheel, not the checkout"
    key = subprocess.run(
        [str(command), "key", "Victory is ours!", "--voice", "en"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={n: v for n, v in os.environ.items() if not n.startswith("VOICECACHE_")},
    )
    assert key.returncode == 0, key.stderr
    assert len([word for word in key.stdout.split() if len(word) == 64]) == 1


# -- Makefile install stamps -------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml in a scratch directory with a stand-in venv whose
    `python` logs its arguments instead of installing."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/../pip.log"\n')
    python.chmod(0o755)
    return tmp_path


def make_env() -> dict[str, str]:
    """This environment without the variables of an enclosing `make` (`make test` runs us)."""
    inherited = {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}
    return {name: value for name, value in os.environ.items() if name not in inherited}


def make(project: Path, target: str) -> list[str]:
    """Run `make target` for real; returns the pip installs it ran."""
    log = project / ".venv" / "pip.log"
    log.unlink(missing_ok=True)
    subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=project,
        env=make_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith("-m pip install") and " -e " in line]


def test_make_run_installs_only_what_serving_needs(project: Path) -> None:
    assert make(project, "install-run") == ["-m pip install --quiet -e ."]
    assert make(project, "install-run") == []
    # `make test` after `make run` adds the dev extras …
    assert make(project, "install") == ["-m pip install --quiet -e .[dev]"]
    # … and then neither `make run` nor `make bench` installs again.
    assert make(project, "install-run") == []
    assert make(project, "install-bench") == []


def test_make_bench_installs_the_bench_extras_only(project: Path) -> None:
    assert make(project, "install-bench") == ["-m pip install --quiet -e .[bench]"]
    assert make(project, "install-run") == []
    assert make(project, "install") == ["-m pip install --quiet -e .[dev]"]


def test_a_changed_pyproject_reinstalls_and_drops_old_stamps(project: Path) -> None:
    make(project, "install")
    old = sorted(p.name for p in (project / ".venv").glob(".installed-*"))
    assert len(old) == 3
    with (project / "pyproject.toml").open("a") as file:
        file.write("\n# changed\n")
    assert make(project, "install-run") == ["-m pip install --quiet -e ."]
    stamps = sorted(p.name for p in (project / ".venv").glob(".installed-*"))
    assert len(stamps) == 1 and stamps[0] not in old


def test_make_run_serves_with_the_installed_command(project: Path) -> None:
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "run"],
        cwd=project,
        env=make_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert dry.strip().splitlines()[-1] == ".venv/bin/voicecache serve"
    assert "[dev]" not in dry
