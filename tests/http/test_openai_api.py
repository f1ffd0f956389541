"""OpenAI's side of the API as its official SDK sees it: errors it can read, `GET /v1/models`,
and the small system routes (`GET /` → dashboard)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.conftest import LiveApp
from tests.security.test_auth import bearer
from voicecache.security.auth import KeyStore
from voicecache.settings import Settings


def sdk(live: LiveApp, api_key: str = "unused") -> OpenAI:
    return OpenAI(base_url=live.url + "/v1", api_key=api_key, max_retries=0)


@pytest.mark.parametrize(
    ("change", "fragment", "param", "code"),
    [
        ({"voice": "klingon"}, "unknown voice 'klingon'", "voice", "unknown_voice"),
        ({"speed": 9}, "speed must be between 0.25 and 4.0", "speed", "invalid_request"),
        ({"input": ""}, "text is empty", "input", "invalid_request"),
        ({"response_format": "aiff"}, "format must be one of", "response_format", None),
    ],
)
def test_sdk_shows_the_reason_of_an_invalid_request(
    live: LiveApp, change: dict[str, Any], fragment: str, param: str, code: str | None
) -> None:
    request: dict[str, Any] = {"model": "tts-1", "voice": "alloy", "input": "Hello"} | change
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live).audio.speech.create(**request)
    error = caught.value
    assert error.status_code == 400
    assert fragment in str(error)  # what a user sees in a traceback
    assert error.param == param and error.type == "invalid_request_error"
    if code is not None:
        assert error.code == code
    assert live.engine_calls() == 0


def test_openai_error_body_and_native_detail(live: LiveApp) -> None:
    bad = {"model": "tts-1", "voice": "alloy", "input": "hi", "speed": "fast"}
    answer = live.client.post("/v1/audio/speech", json=bad)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "message": "speed: Input should be a valid number, unable to parse string as a number",
            "type": "invalid_request_error",
            "param": "speed",
            "code": "invalid_request",
        }
    }
    missing = live.client.post("/v1/audio/speech", json={"voice": "alloy"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    malformed = live.client.post(
        "/v1/audio/speech", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_json"
    nowhere = live.client.get("/v1/nowhere")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"
    # The native API keeps its own shape and statuses.
    native = live.client.post("/tts", json={"text": "hi", "voice": "en", "speed": 9})
    assert native.status_code == 422
    assert native.json() == {"detail": "speed must be between 0.25 and 4.0"}


def test_auth_and_rate_limit_errors_in_openai_shape(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    token, _ = KeyStore(settings.keys_path).add("acme", ["speak"])
    live = serve(settings.model_copy(update={"rate_limit_rps": 0.5}))
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(live, "vck_wrong").audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert caught.value.status_code == 401 and caught.value.type == "authentication_error"
    assert "API key" in str(caught.value)
    listed = live.client.get("/metrics", headers=bearer(token))
    assert listed.status_code == 403 and "detail" in listed.json()  # native route
    client = sdk(live, token)
    client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    with pytest.raises(openai.RateLimitError) as limited:
        for _ in range(5):
            client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert limited.value.type == "rate_limit_error"
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_models_list_names_the_engines(live: LiveApp) -> None:
    models = sdk(live).models.list()
    assert [model.id for model in models] == ["espeak"]
    (model,) = models.data
    assert (model.object, model.created, model.owned_by) == ("model", 0, "voicecache")
    # Any listed id works as `model` on the speech endpoint.
    speech = sdk(live).audio.speech.create(model=model.id, voice="alloy", input="Listed")
    assert speech.response.headers["x-cache"] == "MISS"


def test_root_redirects_to_the_dashboard_even_with_keys(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    KeyStore(settings.keys_path).add("acme", ["speak"])
    live = serve(settings)
    answer = live.client.get("/", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/dashboard"
    assert live.client.get("/", follow_redirects=True).text.startswith("<!doctype html>")


def test_openapi_documents_the_error_shape_each_path_answers(live: LiveApp) -> None:
    schema = live.client.get("/openapi.json").json()
    speech = schema["paths"]["/v1/audio/speech"]["post"]["responses"]
    assert "422" not in speech and "400" in speech
    ref = speech["400"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/OpenAIErrorOut"
    assert "error" in schema["components"]["schemas"]["OpenAIErrorOut"]["properties"]
    native = schema["paths"]["/tts"]["post"]["responses"]["422"]
    assert native["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
