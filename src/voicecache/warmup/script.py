"""Reading a warm-up script: the lines to pre-generate, from CSV, JSON lines or plain text.

- CSV (`.csv`, `.tsv`): a header row naming columns `text` (required), `voice`, `emotion`,
  `speed`, `tags` (separated by `,`, `;` or `|`) and `engine`; unknown columns are an error.
- JSON lines (`.jsonl`, `.ndjson`): one object per line with the same keys (`tags` a list or
  a string).
- anything else: plain text, one line of speech per line; blank lines and lines starting
  with `#` are skipped.

Line numbers are those of the file, the CSV header being line 1. A row that cannot be read
becomes a `BadLine` and the rest of the file is still read; a file that cannot be read at all
raises `ScriptError`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecache.errors import ScriptError

COLUMNS = ("text", "voice", "emotion", "speed", "tags", "engine")
_TAG_SPLIT = re.compile(r"[,;|]")


@dataclass(frozen=True, slots=True)
class ScriptLine:
    """One line of speech to pre-generate; None fields take the defaults."""

    line: int
    text: str
    voice: str | None = None
    emotion: str | None = None
    speed: float | None = None
    tags: tuple[str, ...] = ()
    engine: str | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A row that could not be read, and why."""

    line: int
    reason: str


@dataclass(slots=True)
class Script:
    """Everything read from a file."""

    lines: list[ScriptLine] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def read_script(path: Path) -> Script:
    """Read `path` by its extension; raises `ScriptError` when the file cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScriptError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ScriptError(f"{path} is a directory, not a script file") from None
    except OSError as exc:
        raise ScriptError(f"cannot read {path}: {exc.strerror}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(content, "\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(content)
    return _read_text(content)


def _row(line: int, values: dict[str, Any]) -> ScriptLine | BadLine:
    text = values.get("text")
    if not isinstance(text, str) or not text.strip():
        return BadLine(line, "text is empty")
    speed: float | None = None
    raw_speed = values.get("speed")
    if raw_speed not in (None, ""):
        if isinstance(raw_speed, bool):
            return BadLine(line, f"speed is not a number: {raw_speed!r}")
        try:
            speed = float(raw_speed)
        except (TypeError, ValueError):
            return BadLine(line, f"speed is not a number: {raw_speed!r}")
    raw_tags = values.get("tags")
    if raw_tags in (None, ""):
        tags: tuple[str, ...] = ()
    elif isinstance(raw_tags, str):
        tags = tuple(part.strip() for part in _TAG_SPLIT.split(raw_tags) if part.strip())
    elif isinstance(raw_tags, list) and all(isinstance(tag, str) for tag in raw_tags):
        tags = tuple(raw_tags)
    else:
        return BadLine(line, "tags must be a string or a list of strings")
    optional: dict[str, str | None] = {}
    for name in ("voice", "emotion", "engine"):
        value = values.get(name)
        if value not in (None, "") and not isinstance(value, str):
            return BadLine(line, f"{name} must be a string")
        optional[name] = value or None
    return ScriptLine(line, text, speed=speed, tags=tags, **optional)


def _add(script: Script, item: ScriptLine | BadLine) -> None:
    if isinstance(item, BadLine):
        script.bad.append(item)
    else:
        script.lines.append(item)


def _read_csv(content: str, delimiter: str) -> Script:
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ScriptError("the file is empty: expected a header row naming a text column") from None
    except csv.Error as exc:
        raise ScriptError(f"line 1: {exc}") from None
    names = [name.strip().lower() for name in header]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise ScriptError(
            f"line 1: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"columns are {', '.join(COLUMNS)}"
        )
    if "text" not in names:
        raise ScriptError("line 1: the header has no text column")
    script = Script()
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            script.bad.append(BadLine(start, f"unreadable CSV: {exc}"))
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            script.bad.append(BadLine(start, f"{len(row)} fields, the header has {len(names)}"))
            continue
        _add(script, _row(start, dict(zip(names, row, strict=False))))
    return script


def _read_jsonl(content: str) -> Script:
    script = Script()
    for number, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            script.bad.append(BadLine(number, f"invalid JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            script.bad.append(BadLine(number, "expected a JSON object"))
            continue
        unknown = sorted(set(value) - set(COLUMNS))
        if unknown:
            script.bad.append(BadLine(number, f"unknown field(s): {', '.join(unknown)}"))
            continue
        _add(script, _row(number, value))
    return script


def _read_text(content: str) -> Script:
    script = Script()
    for number, text in enumerate(content.splitlines(), start=1):
        if text.strip() and not text.lstrip().startswith("#"):
            script.lines.append(ScriptLine(number, text))
    return script
