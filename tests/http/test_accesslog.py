"""Access log lines: one per request, JSON lines or text, fast lane included."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable

from tests.conftest import LiveApp
from voicecache.http.middleware.accesslog import AccessLog
from voicecache.settings import Settings

LINE = {"text": "Log me once.", "voice": "en"}


def logged(buffer: io.StringIO, count: int) -> list[str]:
    """The first `count` lines, once written: a line is written after the response is sent."""
    deadline = time.monotonic() + 5
    while len(lines := buffer.getvalue().splitlines()) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return lines


def capture(live: LiveApp) -> io.StringIO:
    """Redirect the app's access log into a buffer."""
    buffer = io.StringIO()
    live.app.state.access_log.stream = buffer
    return buffer


def test_json_lines_for_misses_fast_hits_ranges_and_errors(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings.model_copy(update={"log_format": "json"}))
    captured = capture(live)
    miss = live.client.post("/tts", json=LINE, headers={"X-Request-ID": "client-42"})
    assert miss.headers["x-request-id"] == "client-42"
    hit = live.client.post("/tts", json=LINE)  # answered by the fast lane
    key = miss.headers["x-cache-key"]
    live.client.get(f"/v1/audio/{key}.wav", headers={"Range": "bytes=0-9"})
    live.client.post("/tts", json={**LINE, "voice": "nope"})
    records = [json.loads(line) for line in logged(captured, 4)]
    assert len(records) == 4
    first, second, third, fourth = records
    assert first["request_id"] == "client-42"
    assert (first["result"], first["tier"], first["engine"]) == ("MISS", None, "espeak")
    assert first["key"] == key[:12] and first["status"] == 200 and first["ms"] > 0
    assert second["request_id"] == hit.headers["x-request-id"] != "client-42"
    assert (second["result"], second["tier"], second["path"]) == ("HIT", "memory", "/tts")
    assert (third["status"], third["method"], third["result"]) == (206, "GET", "HIT")
    assert (fourth["status"], fourth["result"], fourth["key"]) == (422, None, None)


def test_text_lines_and_insane_request_ids_are_replaced(live: LiveApp) -> None:
    captured = capture(live)
    response = live.client.post("/tts", json=LINE, headers={"X-Request-ID": "bad id;" * 20})
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 16 and " " not in request_id
    (line,) = logged(captured, 1)
    assert f"request_id={request_id} method=POST path=/tts status=200 result=MISS" in line
    assert "tier=- engine=espeak" in line


def test_access_log_can_be_turned_off(serve: Callable[..., LiveApp], settings: Settings) -> None:
    for update in ({"access_log": False}, {"log_level": "warning"}):
        live = serve(settings.model_copy(update=update))
        response = live.client.post("/tts", json=LINE)
        assert "x-request-id" not in response.headers
        assert not hasattr(live.app.state, "access_log")


def test_line_formats() -> None:
    text = AccessLog("text").line(
        request_id="r1", method="GET", path="/healthz", status=200, seconds=0.0012
    )
    assert text.endswith("request_id=r1 method=GET path=/healthz status=200 result=- key=- "
                         "tier=- engine=- ms=1.200")  # fmt: skip
    data = json.loads(
        AccessLog("json").line(request_id="r1", method="GET", path="/", status=404, seconds=0)
    )
    assert data["status"] == 404 and data["result"] is None and data["ts"].endswith("Z")
    assert json.loads(AccessLog("json").line(
        request_id="r", method="GET", path='/a"b\\', status=200, seconds=0
    ))["path"] == '/a"b\\'  # fmt: skip
