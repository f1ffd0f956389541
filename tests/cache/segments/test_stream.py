"""Segments streamed: each segment goes out as soon as it is ready, in order, for an engine that
answers whole files only (the fake EmotiVoice); the real app over loopback."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from tests.cache.segments.test_speaker import (
    NEW,
    SENTENCES,
    emotivoice_settings,
    say,
    text_of,
    whole_key,
)
from tests.conftest import LiveApp
from tests.fixtures_servers import FakeEngineServer

WAV_HEADER = 44


def pcm_of_stream(body: bytes) -> npt.NDArray[np.int16]:
    """The samples of a streamed WAV (its size fields say "unknown": read past the header)."""
    assert body[:4] == b"RIFF" and body[36:40] == b"data"
    data = body[WAV_HEADER:]
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")


def pcm_of_file(body: bytes) -> npt.NDArray[np.int16]:
    samples, _ = sf.read(io.BytesIO(body), dtype="int16")
    return np.asarray(samples)


@pytest.fixture
def live(
    serve: Callable[..., LiveApp], tmp_path: Path, fake_emotivoice: FakeEngineServer
) -> Iterator[LiveApp]:
    live = serve(emotivoice_settings(tmp_path, fake_emotivoice.url, segments="sentence"))
    yield live
    fake_emotivoice.controls.update(hang=False)  # never leave a request hanging


def test_the_first_segment_is_sent_before_the_engine_answers_the_rest(
    live: LiveApp, fake_emotivoice: FakeEngineServer
) -> None:
    alone = pcm_of_file(say(live, SENTENCES[0]).content)
    fake_emotivoice.controls.update(hang=True)  # from now on the engine answers nothing
    body = {"text": text_of(SENTENCES), "stream": True}
    with live.client.stream("POST", "/tts", json=body) as response:
        assert response.status_code == 200
        assert response.headers["x-cache"] == "PARTIAL"
        assert response.headers["x-cache-segments"] == "1/6"
        chunks = response.iter_raw()
        # Most of the first sentence (its silences trimmed) arrives while the engine still
        # holds every other one (were it not sent, this read would time out).
        first = b""
        while len(first) < WAV_HEADER + 2 * len(alone) * 0.6:
            first += next(chunks)
        assert fake_emotivoice.controls.stats()["characters"] == len(SENTENCES[0])
        fake_emotivoice.controls.update(hang=False)
        streamed = first + b"".join(chunks)
    assert fake_emotivoice.controls.calls == 6

    # The stream stored the whole: the same text is now a plain hit, with the same samples.
    whole = say(live, text_of(SENTENCES))
    assert whole.headers["x-cache"] == "HIT" and "x-cache-segments" not in whole.headers
    assert np.array_equal(pcm_of_stream(streamed), pcm_of_file(whole.content))
    with live.client.stream("POST", "/tts", json=body) as again:
        assert again.headers["x-cache"] == "HIT" and "x-cache-segments" not in again.headers
        assert np.array_equal(pcm_of_stream(again.read()), pcm_of_file(whole.content))


def test_segments_stream_as_server_sent_events(live: LiveApp) -> None:
    body = {"model": "emotivoice", "input": text_of(SENTENCES[:3]), "voice": "8051",
            "response_format": "pcm", "stream_format": "sse"}  # fmt: skip
    response = live.client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200
    assert response.headers["x-cache-segments"] == "0/3"
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line]
    assert [event["type"] for event in events[-1:]] == ["speech.audio.done"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    whole = live.client.post("/v1/audio/speech", json={**body, "stream_format": None})
    assert whole.headers["x-cache"] == "HIT"
    assert audio == whole.content  # raw 24 kHz PCM: the streamed bytes are the stored file


def test_a_later_segment_failing_breaks_the_stream_off_and_stores_no_whole(
    live: LiveApp, fake_emotivoice: FakeEngineServer
) -> None:
    say(live, SENTENCES[0])
    fake_emotivoice.controls.update(fail_next_n=100, status_code=500)
    text = text_of([SENTENCES[0], NEW, *SENTENCES[1:5]])
    received = b""
    body = {"text": text, "stream": True}
    # No chunked terminator: the client knows the body is not complete.
    with (
        pytest.raises(httpx.RemoteProtocolError),
        live.client.stream("POST", "/tts", json=body) as r,
    ):
        assert r.status_code == 200 and r.headers["x-cache"] == "PARTIAL"
        for chunk in r.iter_raw():
            received += chunk
    assert len(pcm_of_stream(received)) > 0  # the first sentence did go out
    key = whole_key(live, text)
    assert live.client.get(f"/v1/audio/{key}.wav").status_code == 404
    assert live.client.get(f"/v1/audio/{key}.flac").status_code == 404


def test_a_failing_first_segment_is_an_error_answer(
    live: LiveApp, fake_emotivoice: FakeEngineServer
) -> None:
    fake_emotivoice.controls.update(fail_next_n=100, status_code=500)
    response = live.client.post("/tts", json={"text": text_of(SENTENCES), "stream": True})
    assert response.status_code == 502
    assert "segment 1 of 6" in response.json()["detail"]
