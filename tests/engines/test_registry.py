"""Engine kinds through the entry-point group `voicecache.engines`: a third-party package made
at test time (a real `*.dist-info` on `sys.path`) plugs in exactly as the built-in kinds do,
and every way a plugin can be wrong is one readable configuration error."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import LiveApp
from voicecache import bootstrap
from voicecache.bootstrap import engine_specs
from voicecache.engines import REGISTRY, EngineRegistry, EngineSpec, ResilientEngine, build_engines
from voicecache.engines.espeak import EspeakEngine
from voicecache.errors import ConfigError
from voicecache.settings import EngineConfig, Settings

# A third-party engine, as its author would write it: only the public surface of
# `voicecache.engines` and `voicecache.codecs`. It renders a sine tone at `options.pitch`.
TOY_MODULE = '''
"""voicecache-toy: an engine that plays a tone per line."""
from __future__ import annotations

import numpy as np

from voicecache.codecs import Audio
from voicecache.engines import Engine, EngineSpec, SynthesisJob, VoiceInfo

RATE = 16000


class ToneEngine(Engine):
    def __init__(self, spec: EngineSpec) -> None:
        super().__init__()
        self.name = spec.name
        self.model_version = spec.model_version or "tone-1"
        self.pitch = float(spec.options.get("pitch", 440.0))

    def voices(self):
        return [VoiceInfo("tone", "A pure tone")]

    def emotions(self):
        return ["neutral"]

    async def synthesize(self, job: SynthesisJob) -> Audio:
        self.calls += 1
        t = np.arange(int(RATE * 0.05 * len(job.text))) / RATE
        samples = (8000 * np.sin(2 * np.pi * self.pitch * t)).astype(np.int16)
        return Audio(samples, RATE)


def build(spec: EngineSpec) -> ToneEngine:
    return ToneEngine(spec)


def not_an_engine(spec: EngineSpec) -> object:
    return "a string"


def refuses(spec: EngineSpec) -> ToneEngine:
    raise ValueError("pitch out of range")
'''

BROKEN_MODULE = 'raise RuntimeError("libtoy.so not found")\n'

# Modules a test imports through a plugin: forgotten afterwards so each test loads afresh.
PLUGIN_MODULES = ("voicecache_toy", "voicecache_broken")


def install_distribution(
    site: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """What `pip install` leaves behind: the modules and a dist-info with entry_points.txt."""
    dist_info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = [f"{kind} = {target}" for kind, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("[voicecache.engines]\n" + "\n".join(lines) + "\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on `sys.path` holding two plugin distributions."""
    site = tmp_path / "site"
    install_distribution(
        site,
        "voicecache-toy",
        {
            "toy": "voicecache_toy:build",
            "toy-wrong-type": "voicecache_toy:not_an_engine",
            "toy-refuses": "voicecache_toy:refuses",
            "toy-missing": "voicecache_toy:no_such_function",
        },
        {"voicecache_toy": TOY_MODULE},
    )
    install_distribution(
        site,
        "voicecache-broken",
        {"broken": "voicecache_broken:build"},
        {"voicecache_broken": BROKEN_MODULE},
    )
    monkeypatch.syspath_prepend(site)
    REGISTRY.reload()
    yield site
    REGISTRY.reload()  # later tests must not see plugins that lived in a temp dir
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)


def configure(tmp_path: Path, engines: str, default: str) -> Settings:
    config = tmp_path / "voicecache.toml"
    config.write_text(f'engine = "{default}"\n{engines}')
    return Settings.load(config, data_dir=tmp_path / "data")


def dominant_frequency(data: bytes) -> float:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# -- a plugin works like a built-in ------------------------------------------------------------


def test_builtin_kinds_come_from_the_entry_point_group() -> None:
    REGISTRY.reload()
    assert {"espeak", "emotivoice", "openai"} <= set(REGISTRY.kinds())
    engine = REGISTRY.build(EngineSpec(name="local", kind="espeak"))
    assert isinstance(engine, EspeakEngine) and engine.name == "local" and engine.in_process


def test_a_third_party_engine_serves_and_caches_through_the_app(
    site: Path, tmp_path: Path, serve: Callable[..., LiveApp]
) -> None:
    assert "toy" in REGISTRY.kinds()
    assert "voicecache_toy" not in sys.modules  # listing kinds imports no plugin
    settings = configure(
        tmp_path,
        '[engines.mytoy]\nkind = "toy"\nmodel_version = "tone-2"\noptions = { pitch = 660 }\n',
        default="mytoy",
    )
    live = serve(settings)
    engine = live.gateway.engines["mytoy"]
    # Not in-process, so it gets the resilience every remote built-in gets.
    assert isinstance(engine, ResilientEngine) and engine.model_version == "tone-2"

    line = {"text": "a tone for the plugin", "voice": "tone", "format": "wav"}
    first = live.client.post("/tts", json=line)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    assert dominant_frequency(first.content) == pytest.approx(660, abs=5)
    second = live.client.post("/tts", json=line)
    assert second.headers["x-cache"] == "HIT" and second.content == first.content
    assert live.engine_calls("mytoy") == 1
    # The built-in default engine is still there beside it.
    assert live.client.post("/tts", json={"text": "hi", "engine": "espeak"}).status_code == 200
    healthz = live.client.get("/healthz").json()
    assert healthz["engines"]["mytoy"]["state"] == "closed"


def test_an_in_process_plugin_is_not_wrapped(site: Path) -> None:
    import voicecache_toy  # type: ignore[import-not-found]

    voicecache_toy.ToneEngine.in_process = True
    engines = build_engines({"t": EngineSpec(name="t", kind="toy")}, default="t")
    assert type(engines["t"]).__name__ == "ToneEngine"


# -- configuration errors ------------------------------------------------------------------------


def test_unknown_kind_lists_the_installed_kinds(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine="x", engines={"x": EngineConfig(kind="nope")})
    with pytest.raises(ConfigError) as caught:
        bootstrap.build(settings)
    detail = caught.value.detail
    assert detail.startswith("unknown engine kind 'nope'; installed kinds: ")
    assert {"emotivoice", "espeak", "openai"} <= set(detail.split(": ", 1)[1].split(", "))


def test_a_plugin_that_fails_on_import_is_a_config_error_naming_it(
    site: Path, tmp_path: Path
) -> None:
    settings = configure(tmp_path, '[engines.b]\nkind = "broken"\n', default="b")
    with pytest.raises(ConfigError) as caught:
        bootstrap.build(settings)
    assert caught.value.detail == (
        "engine plugin broken = voicecache_broken:build from voicecache-broken 0.1 for kind "
        "'broken' failed to load: RuntimeError: libtoy.so not found"
    )
    # An installed but unused broken plugin harms nobody.
    assert "espeak" in bootstrap.build(Settings(data_dir=tmp_path)).gateway.engines


def test_a_broken_plugin_is_one_line_and_exit_2_in_the_cli(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "voicecache.toml"
    config.write_text('engine = "b"\n[engines.b]\nkind = "broken"\n')
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "VOICECACHE_DATA_DIR": str(tmp_path / "data"),
    }
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicecache",
            "say",
            "hello",
            "-o",
            str(tmp_path / "x.wav"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ran.returncode == 2
    (line,) = ran.stderr.strip().splitlines()
    assert "plugin broken = voicecache_broken:build" in line and "libtoy.so not found" in line


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("toy-wrong-type", "engine 'e' (kind 'toy-wrong-type'): the factory returned str, "
         "not an Engine"),
        ("toy-refuses", "engine 'e' (kind 'toy-refuses'): its factory failed: "
         "ValueError: pitch out of range"),
        ("toy-missing", "engine plugin toy-missing = voicecache_toy:no_such_function from "
         "voicecache-toy 0.1 for kind 'toy-missing' failed to load: AttributeError: "),
    ],
)  # fmt: skip
def test_factories_that_misbehave_are_config_errors(site: Path, kind: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_engines({"e": EngineSpec(name="e", kind=kind)}, default="e")
    assert caught.value.detail.startswith(expected)


def test_a_kind_registered_twice_is_refused(site: Path) -> None:
    install_distribution(
        site, "voicecache-rival", {"toy": "voicecache_rival:build"}, {"voicecache_rival": ""}
    )
    REGISTRY.reload()
    with pytest.raises(ConfigError) as caught:
        build_engines({"t": EngineSpec(name="t", kind="toy")}, default="t")
    assert "'toy' is registered by several plugins" in caught.value.detail
    assert "voicecache-rival" in caught.value.detail and "voicecache-toy" in caught.value.detail


def test_no_plugins_at_all_says_to_reinstall() -> None:
    registry = EngineRegistry(group="voicecache.engines-none-here")
    assert registry.kinds() == []
    with pytest.raises(ConfigError, match=r"no engine plugins .*reinstall voicecache"):
        build_engines({"e": EngineSpec(name="e", kind="espeak")}, default="e", registry=registry)


def test_missing_default_names_the_setting_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        engine_specs(Settings(data_dir=tmp_path, engine="openai"))
    assert "VOICECACHE_ENGINE='openai' is not configured (set VOICECACHE_OPENAI_BASE_URL)" in (
        caught.value.detail
    )
    with pytest.raises(ConfigError, match="default engine 'x' is not configured"):
        build_engines({"e": EngineSpec(name="e", kind="espeak")}, default="x")


# -- settings → specs ----------------------------------------------------------------------------


def test_specs_carry_settings_and_the_global_defaults(tmp_path: Path) -> None:
    settings = configure(
        tmp_path,
        '[emotion_prompts]\nhappy = "Cheerful"\n'
        '[engines.ev]\nkind = "emotivoice"\nurl = "http://127.0.0.1:9"\nretries = 5\n'
        'options = { emotion_prompts = { sad = "Gloomy" } }\n'
        '[engines.oa]\nkind = "openai"\nurl = "http://127.0.0.1:9"\napi_key = "sk-test"\n',
        default="ev",
    )
    specs = engine_specs(settings)
    assert set(specs) == {"espeak", "ev", "oa"}
    ev, oa = specs["ev"], specs["oa"]
    assert ev.kind == "emotivoice" and ev.retries == 5 and ev.model_version == "emotivoice-1"
    assert ev.options["emotion_prompts"] == {"happy": "Cheerful", "sad": "Gloomy"}
    assert oa.model == "tts-1" and oa.api_key == "sk-test" and "sk-test" not in repr(oa)
    with pytest.raises(TypeError):
        ev.options["language"] = "en"  # type: ignore[index]
