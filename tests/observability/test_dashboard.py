"""The dashboard: its data endpoint, and the page rendered by a real headless Chromium
against a live server that has served traffic (numbers must match `/metrics`)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import LiveApp
from tests.observability.test_metrics import scrape
from voicecache.security.auth import KeyStore
from voicecache.settings import Settings

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def serve_traffic(live: LiveApp) -> None:
    """Repeated lines, a line never asked for again, a tagged one, and an error."""
    for _ in range(4):
        live.client.post("/tts", json={"text": "Welcome to the stream!", "voice": "en"})
    for _ in range(2):
        live.client.post(
            "/v1/audio/speech", json={"input": "Thanks for the gift!", "voice": "nova"}
        )
    live.client.post("/tts", json={"text": "Hello Ann, happy birthday", "voice": "en+f3"})
    live.client.post(
        "/tts", json={"text": "Round two begins", "voice": "en", "tags": ["event:finals"]}
    )
    live.client.post("/tts", json={"text": "nope", "voice": "no-such-voice"})


def test_dashboard_data_endpoint(live: LiveApp) -> None:
    serve_traffic(live)
    data = live.client.get("/dashboard/data").json()
    totals = data["totals"]
    assert totals["requests"] == {"miss": 4, "hit": 4, "error": 1}
    assert totals["hit_ratio"] == pytest.approx(4 / 8)
    top = data["insights"]["top_lines"]
    assert [(line["text"], line["requests"], line["hits"]) for line in top] == [
        ("Welcome to the stream!", 4, 3),
        ("Thanks for the gift!", 2, 1),
    ]
    never = data["insights"]["never_hit"]
    assert never["entries"] == 2
    groups = {(g["voice"], g["tags"]): g["entries"] for g in never["groups"]}
    assert groups == {("en+f3", "-"): 1, ("en", "event:finals"): 1}
    assert data["insights"]["latency_ms"]["hit"]["count"] == 4
    assert data["insights"]["latency_ms"]["miss"]["count"] == 4
    assert sum(bucket["hit"] for bucket in data["insights"]["history"]) == 4
    assert {tier["name"] for tier in data["tiers"]} == {"memory", "disk"}
    assert "espeak" in data["engines"]
    page = live.client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script src" not in page.text and "<link" not in page.text  # self-contained
    assert "http://" not in page.text and "https://" not in page.text


class _Values(HTMLParser):
    """id → (data-value, text) for elements that carry a data-value."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, tuple[str, str]] = {}
        self.attrs_by_id: dict[str, dict[str, str | None]] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.attrs_by_id[str(found["id"])] = found
        if "data-value" in found and found.get("id"):
            self._open = str(found["id"])
            self.values[self._open] = (found["data-value"] or "", "")

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            value, text = self.values[self._open]
            self.values[self._open] = (value, text + data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "Debian package chromium is missing (make test installs it)"
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=4000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.browser
def test_dashboard_in_headless_chromium_matches_metrics(live: LiveApp, tmp_path: Path) -> None:
    serve_traffic(live)
    url = f"{live.url}/dashboard?refresh=60"
    dumped = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    page = _Values()
    page.feed(dumped.stdout)
    assert page.attrs_by_id["status"] is not None
    values = page.values
    assert values, dumped.stdout[:2000]

    m = scrape(live)  # after the page's fetch: dashboard polls do not change the counters

    def total(name: str, **match: str) -> float:
        return sum(
            value
            for (sample, labels), value in m.items()
            if sample == name and all(dict(labels).get(k) == v for k, v in match.items())
        )

    requests = total("voicecache_requests_total")
    misses = total("voicecache_requests_total", result="miss")
    errors = total("voicecache_requests_total", result="error")
    from_cache = requests - misses - errors
    assert values["workers"][0] == "1"  # one process: the totals are its own
    assert float(values["requests"][0]) == requests == 9
    assert float(values["misses"][0]) == misses
    assert float(values["errors"][0]) == errors == 1
    assert float(values["from-cache"][0]) == from_cache == 4
    assert float(values["hit-ratio"][0]) == pytest.approx(from_cache / (requests - errors))
    assert values["hit-ratio"][1] == "50.0%"
    assert float(values["engine-calls"][0]) == total("voicecache_engine_calls_total") == 4
    assert float(values["chars-cache"][0]) == total("voicecache_characters_total", source="cache")
    assert float(values["chars-engine"][0]) == total("voicecache_characters_total", source="engine")
    cost = total("voicecache_cost_saved_total")
    assert float(values["cost-saved"][0]) == pytest.approx(cost)
    assert values["cost-saved"][1] == f"${cost:.6f}"
    assert values["never-hit-entries"][1] == "2"
    assert "Welcome to the stream!" in dumped.stdout  # most repeated line
    assert "event:finals" in dumped.stdout  # never-hit group
    assert 'data-ready="1"' in dumped.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    taken = chromium(
        f"--screenshot={shot}", "--window-size=1280,1000", url, profile=tmp_path / "profile2"
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000


@pytest.mark.browser
def test_with_api_keys_the_data_needs_the_admin_scope(
    serve: Callable[..., LiveApp], settings: Settings, tmp_path: Path
) -> None:
    store = KeyStore(settings.keys_path)
    admin, _ = store.add("ops", ["admin"])
    speaker, _ = store.add("acme", ["speak"])
    live = serve(settings)
    assert live.client.get("/dashboard").status_code == 200  # the page holds no data
    assert live.client.get("/dashboard/data").status_code == 401
    speak_only = {"Authorization": f"Bearer {speaker}"}
    assert live.client.get("/dashboard/data", headers=speak_only).status_code == 403
    allowed = live.client.get("/dashboard/data", headers={"Authorization": f"Bearer {admin}"})
    assert allowed.status_code == 200 and "totals" in allowed.json()

    dumped = chromium("--dump-dom", f"{live.url}/dashboard", profile=tmp_path / "profile")
    page = _Values()
    page.feed(dumped.stdout)
    assert "hidden" not in page.attrs_by_id["login"]  # the page asks for a key
    assert "This server needs an API key." in dumped.stdout
