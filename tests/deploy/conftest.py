"""Shared helpers for the deployment tests: repository paths, voicecache's `Settings` and a
clean `VOICECACHE_*` environment."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
VENV_BIN = Path(sys.executable).parent


def settings_class() -> type[BaseSettings]:
    """voicecache's `Settings`, found by its definition rather than by module path, so these
    tests keep working while the package's modules are regrouped."""
    spec = importlib.util.find_spec("voicecache")
    assert spec is not None and spec.submodule_search_locations, "voicecache is not installed"
    package = Path(next(iter(spec.submodule_search_locations)))
    for path in sorted(package.rglob("*.py")):
        if "class Settings(BaseSettings)" in path.read_text(encoding="utf-8"):
            module = ".".join(("voicecache", *path.relative_to(package).with_suffix("").parts))
            found: type[BaseSettings] = importlib.import_module(module).Settings
            return found
    raise LookupError(f"no `class Settings(BaseSettings)` under {package}")


def load_settings(toml: Path | None = None, env: dict[str, str] | None = None) -> Any:
    """Settings as a server would read them: the TOML file named by VOICECACHE_CONFIG below
    `env` (the caller's VOICECACHE_* variables are not consulted)."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("VOICECACHE_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(env or {})
    if toml is not None:
        os.environ["VOICECACHE_CONFIG"] = str(toml)
    try:
        return settings_class()()
    finally:
        for name in [n for n in os.environ if n.startswith("VOICECACHE_")]:
            del os.environ[name]
        os.environ.update(saved)


def env_name(field: str) -> str:
    return f"VOICECACHE_{field.upper()}"


def voicecache_command() -> str:
    """The installed `voicecache` console script beside this interpreter."""
    path = VENV_BIN / "voicecache"
    assert path.is_file(), f"{path} is missing: install the project (make test does)"
    return str(path)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No VOICECACHE_* variables from the caller's environment."""
    for name in list(os.environ):
        if name.startswith("VOICECACHE_"):
            monkeypatch.delenv(name)
    yield monkeypatch
