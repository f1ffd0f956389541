"""The engine registry: engine kinds are plugins of the entry-point group `voicecache.engines`.

The built-in kinds are declared in voicecache's own `pyproject.toml` exactly as a third-party
package declares its own, so both are found the same way:

    [project.entry-points."voicecache.engines"]
    espeak = "voicecache.engines.espeak:build"
    mytts = "mytts_voicecache:build"          # in the plugin's pyproject.toml

Each entry point names an engine *kind* and points at a factory, `build(spec) -> Engine`
(`EngineFactory`), which gets one configured engine's `EngineSpec`. `build_engines` builds
every configured engine through its kind's factory and wraps each one that is not
`in_process` in `ResilientEngine` (timeouts, retries, circuit breaker, bounded queue), so
plugins get the same resilience as the built-in remote engines without writing any.

The group is read once, on first use, and a factory's module is imported only when its kind
is configured (the remote engines' HTTP client stays unloaded in the default set-up). Every
way a plugin can fail to load or build becomes a `ConfigError` that names the plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol

from voicecache.engines.resilience import ResilienceConfig, ResilientEngine
from voicecache.engines.spec import EngineSpec
from voicecache.errors import ConfigError
from voicecache.model import Engine

ENTRY_POINT_GROUP = "voicecache.engines"


class EngineFactory(Protocol):
    """What an entry point of `voicecache.engines` points at."""

    def __call__(self, spec: EngineSpec, /) -> Engine: ...


class EngineRegistry:
    """The engine kinds installed in this environment, and their factories."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self._entry_points: dict[str, list[EntryPoint]] | None = None
        self._factories: dict[str, EngineFactory] = {}

    def kinds(self) -> list[str]:
        """Every installed kind, sorted."""
        return sorted(self._points())

    def reload(self) -> None:
        """Read the entry points again (after installing a plugin into a running process)."""
        self._entry_points = None
        self._factories.clear()

    def factory(self, kind: str) -> EngineFactory:
        """The factory of `kind`, imported on first use."""
        if kind in self._factories:
            return self._factories[kind]
        points = self._points()
        candidates = points.get(kind)
        if not candidates:
            raise ConfigError(self._unknown(kind, points))
        if len(candidates) > 1:
            plugins = ", ".join(_describe(point) for point in candidates)
            raise ConfigError(f"engine kind {kind!r} is registered by several plugins: {plugins}")
        (point,) = candidates
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plugin is a configuration problem, not a crash
            raise ConfigError(
                f"engine plugin {_describe(point)} for kind {kind!r} failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not callable(loaded):
            raise ConfigError(f"engine plugin {_describe(point)} is not a factory function")
        factory: EngineFactory = loaded
        self._factories[kind] = factory
        return factory

    def build(self, spec: EngineSpec) -> Engine:
        """One engine, exactly as its factory made it (not wrapped)."""
        factory = self.factory(spec.kind)
        try:
            engine = factory(spec)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"engine {spec.name!r} (kind {spec.kind!r}): its factory failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(engine, Engine):
            raise ConfigError(
                f"engine {spec.name!r} (kind {spec.kind!r}): the factory returned "
                f"{type(engine).__name__}, not an Engine"
            )
        return engine

    def _points(self) -> dict[str, list[EntryPoint]]:
        if self._entry_points is None:
            points: dict[str, list[EntryPoint]] = {}
            for point in entry_points(group=self.group):
                same = points.setdefault(point.name, [])
                if all(other.value != point.value for other in same):
                    same.append(point)
            self._entry_points = points
        return self._entry_points

    def _unknown(self, kind: str, points: Mapping[str, list[EntryPoint]]) -> str:
        if not points:
            # Even the built-ins are missing: voicecache's own metadata is stale or absent.
            return (
                f"unknown engine kind {kind!r}: no engine plugins are installed in the entry "
                f"point group {self.group!r} (reinstall voicecache: pip install -e .)"
            )
        return f"unknown engine kind {kind!r}; installed kinds: {', '.join(sorted(points))}"


def _describe(point: EntryPoint) -> str:
    dist = point.dist
    origin = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"{point.name} = {point.value}{origin}"


REGISTRY = EngineRegistry()


def build_engines(
    specs: Mapping[str, EngineSpec],
    default: str,
    *,
    registry: EngineRegistry | None = None,
) -> dict[str, Engine]:
    """Every engine of `specs` by name; the `default` one must be among them."""
    if default not in specs:
        raise ConfigError(
            f"default engine {default!r} is not configured; "
            f"configured engines: {', '.join(sorted(specs)) or 'none'}"
        )
    registry = registry or REGISTRY
    engines: dict[str, Engine] = {}
    for name, spec in specs.items():
        if spec.name != name:
            raise ConfigError(f"engine {name!r}: its spec is named {spec.name!r}")
        engine = registry.build(spec)
        if not engine.in_process:
            # Every call to a remote engine goes through the one resilience layer.
            engine = ResilientEngine(engine, ResilienceConfig.from_spec(spec))
        engines[name] = engine
    return engines
