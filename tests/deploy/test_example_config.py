"""voicecache.example.toml documents every setting with its environment variable and default,
and parses through `Settings` (commented, uncommented, and with its example tables)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, env_name, load_settings, settings_class

EXAMPLE = ROOT / "voicecache.example.toml"
SETTING_LINE = re.compile(r"^# ([a-z0-9_]+) = (.+)$")
EXAMPLE_LINE = re.compile(r"^#   (.*)$")  # lines of the example tables, indented


def documented() -> dict[str, tuple[str, str]]:
    """setting name → (its `# name = value` line's value, the comment block above it)."""
    found: dict[str, tuple[str, str]] = {}
    block: list[str] = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = SETTING_LINE.match(line)
        if match:
            name, value = match.groups()
            assert name not in found, f"{name} is documented twice"
            found[name] = (value, "\n".join(block))
            block = []
        elif line.startswith("#"):
            block.append(line)
        else:
            block = []
    return found


def test_every_setting_is_documented_once_and_nothing_else() -> None:
    fields = set(settings_class().model_fields)
    names = set(documented())
    assert fields - names == set(), "settings missing from voicecache.example.toml"
    assert names - fields == set(), "names in voicecache.example.toml that are not settings"


def test_each_setting_names_its_environment_variable() -> None:
    for name, (_, comment) in documented().items():
        assert re.search(rf"\b{env_name(name)}\b", comment), f"{name}: no {env_name(name)}"


def test_the_file_as_shipped_parses_and_changes_nothing(clean_env: pytest.MonkeyPatch) -> None:
    tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))  # valid TOML, all comments
    shipped = load_settings(EXAMPLE)
    defaults = settings_class()()
    assert shipped.model_dump() == defaults.model_dump()


def test_uncommented_every_value_is_the_default_or_a_valid_example(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    lines = documented()
    uncommented = tmp_path / "voicecache.toml"
    uncommented.write_text(
        "\n".join(f"{name} = {value}" for name, (value, _) in lines.items()) + "\n",
        encoding="utf-8",
    )
    loaded = load_settings(uncommented)
    defaults = settings_class()()
    for name, (_, comment) in lines.items():
        default = getattr(defaults, name)
        if default is None:
            assert "Unset by default" in comment, f"{name}: say that it is unset by default"
            assert getattr(loaded, name) is not None
        else:
            assert getattr(loaded, name) == default, f"{name}: the shown value is not the default"


def test_the_example_tables_parse_through_settings(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """The indented `#   ` lines ([engines.kokoro], [[ttl_rules]]) are valid settings too."""
    tables = [
        match.group(1)
        for line in EXAMPLE.read_text(encoding="utf-8").splitlines()
        if (match := EXAMPLE_LINE.match(line))
    ]
    path = tmp_path / "tables.toml"
    path.write_text("\n".join(tables) + "\n", encoding="utf-8")
    loaded = load_settings(path)
    assert loaded.engines["kokoro"].kind == "openai"
    assert [rule.voice for rule in loaded.ttl_rules] == ["vip-knight", None]
    assert loaded.ttl_rules[1].ttl == 86400 and loaded.ttl_rules[1].max_ttl == 7 * 86400
