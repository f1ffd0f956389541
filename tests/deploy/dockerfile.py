"""The Dockerfile and .dockerignore, read with dockerfile-parse (shared by several tests)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    """One build stage: its base image, name, and instructions (name, value) in order."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]


def stages() -> list[Stage]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    found: list[Stage] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append(Stage(parts[0], name))
        elif instruction != "COMMENT":
            assert found, f"{instruction} before the first FROM"
            found[-1].instructions.append((instruction, value))
    return found


def image_tag(image: str) -> tuple[str, str]:
    """(tag, digest) of an image reference such as `registry:5000/name:1.2.3@sha256:…`;
    either may be empty."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ""
    return tag, digest


def final_env() -> dict[str, str]:
    """ENV of the final stage (the image's environment)."""
    return dict(DockerfileParser(path=str(DOCKERFILE)).envs)


def exec_form(value: str) -> list[str]:
    """An instruction's JSON (exec) form, e.g. CMD ["serve"]."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed)
    return parsed


def healthcheck_command() -> list[str]:
    """The argv of the final stage's HEALTHCHECK CMD (exec form)."""
    (value,) = stages()[-1].values("HEALTHCHECK")
    _, _, command = value.partition("CMD")
    return exec_form(command.strip())


def user() -> str:
    return stages()[-1].values("USER")[-1]


def copy_sources(stage: Stage) -> list[str]:
    """Build-context paths COPY takes (not --from=other stages)."""
    sources: list[str] = []
    for value in stage.values("COPY"):
        words = shlex.split(value)
        if any(word.startswith("--from=") for word in words):
            continue
        sources.extend(word for word in words[:-1] if not word.startswith("--"))
    return sources


def _pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out of the build context: the
    last pattern matching the path or one of its parent directories decides."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict
