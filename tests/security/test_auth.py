"""API keys, tenants, scopes, audit log and rate limits, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from tests.cli.test_cli import run_cli
from tests.conftest import LiveApp, error_message
from tests.voice_samples import master_key, voice_like
from voicecache.cli.main import app as cli_app
from voicecache.errors import ConfigError, KeysUnavailable
from voicecache.http.server import check_bind_is_safe
from voicecache.security.audit import AuditLog
from voicecache.security.auth import KeyStore
from voicecache.settings import Settings

LINE = {"text": "Victory is ours!", "voice": "en"}


def cli_in_process(*args: str, data_dir: Path, **env: str) -> Result:
    """The CLI in this process (fast); `run_cli` runs it as a user does, in a subprocess."""
    return CliRunner().invoke(
        cli_app, list(args), env={"VOICECACHE_DATA_DIR": str(data_dir), **env}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll until `check()` holds (the keys file is re-read at most every 0.25 s)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def vsettings(settings: Settings) -> Settings:
    return settings.model_copy(update={"master_key": master_key()})


@pytest.fixture
def keys(vsettings: Settings) -> dict[str, str]:
    store = KeyStore(vsettings.keys_path)
    made = {
        "a": store.add("acme", ["speak", "voices"])[0],
        "b": store.add("globex", ["speak", "voices"])[0],
        "speak": store.add("acme", ["speak"])[0],
        "voices": store.add("acme", ["voices"])[0],
        "admin": store.add("ops", ["admin", "speak", "voices"])[0],
    }
    return made


@pytest.fixture
def secured(serve: Callable[..., LiveApp], vsettings: Settings, keys: dict[str, str]) -> LiveApp:
    return serve(vsettings)


def upload(live: LiveApp, token: str, public: bool = False, pitch: float = 150.0) -> str:
    response = live.client.post(
        "/v1/voices",
        headers=bearer(token),
        data={"name": "Sam", "public": str(public).lower()},
        files={"file": ("s.wav", voice_like(pitch))},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def speak(live: LiveApp, token: str, voice: str = "en", text: str = "Victory is ours!"):
    return live.client.post("/tts", json={"text": text, "voice": voice}, headers=bearer(token))


# -- keys --------------------------------------------------------------------------------------


def test_cli_adds_lists_and_revokes_keys_on_a_running_server(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    live = serve(settings)
    assert live.client.post("/tts", json=LINE).status_code == 200  # no keys yet: open

    added = run_cli(
        "keys", "add", "--tenant", "acme", "--scope", "speak", "--scope", "voices",
        data_dir=settings.data_dir,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert added.stdout == token + "\n" and token.startswith("vck_")
    stored = settings.keys_path.read_text()
    assert token not in stored and "sha256" in stored

    wait_for(lambda: live.client.post("/tts", json=LINE).status_code == 401)
    assert live.client.post("/tts", json=LINE, headers=bearer(token)).status_code == 200

    other, _ = KeyStore(settings.keys_path).add("acme", ["speak"])
    listed = cli_in_process("keys", "list", "--json", data_dir=settings.data_dir)
    row, _ = json.loads(listed.stdout)
    assert row["tenant"] == "acme" and row["scopes"] == ["speak", "voices"]
    assert token not in listed.stdout
    table = cli_in_process("keys", "list", data_dir=settings.data_dir).stdout
    assert row["id"] in table and "speak,voices" in table

    revoked = run_cli("keys", "revoke", row["id"], data_dir=settings.data_dir)
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: speak(live, token).status_code == 401)
    assert speak(live, other).status_code == 200
    again = cli_in_process("keys", "revoke", row["id"], data_dir=settings.data_dir)
    assert again.exit_code == 1
    bad = cli_in_process(
        "keys", "add", "--tenant", "x", "--scope", "root", data_dir=settings.data_dir
    )
    assert bad.exit_code == 2 and "unknown scope" in bad.stderr

    actions = [record["action"] for record in AuditLog(settings.audit_path).read()]
    assert actions == ["key.add", "key.revoke"]


def test_401_without_or_with_a_wrong_key(secured: LiveApp) -> None:
    assert secured.client.get("/healthz").status_code == 200  # always open
    for headers in ({}, bearer("vck_nope"), {"Authorization": "Basic abc"}):
        response = secured.client.post("/tts", json=LINE, headers=headers)
        assert response.status_code == 401
        assert response.json()["detail"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    for path in ("/v1/voices", "/openapi.json", "/docs", "/metrics", "/admin/purge"):
        assert secured.client.get(path).status_code == 401


def test_403_for_a_missing_scope(secured: LiveApp, keys: dict[str, str]) -> None:
    assert speak(secured, keys["speak"]).status_code == 200
    assert speak(secured, keys["voices"]).status_code == 403
    upload_attempt = secured.client.post(
        "/v1/voices",
        headers=bearer(keys["speak"]),
        data={"name": "x"},
        files={"file": ("s.wav", voice_like())},
    )
    assert upload_attempt.status_code == 403
    assert "voices" in error_message(upload_attempt)
    assert secured.client.get("/metrics", headers=bearer(keys["a"])).status_code == 403
    assert secured.client.get("/v1/voices", headers=bearer(keys["speak"])).status_code == 200


# -- tenants -----------------------------------------------------------------------------------


def test_private_voices_belong_to_one_tenant(secured: LiveApp, keys: dict[str, str]) -> None:
    voice = upload(secured, keys["a"])
    mine = speak(secured, keys["a"], voice)
    assert mine.status_code == 200 and mine.headers["x-cache"] == "MISS"

    other = keys["b"]
    assert secured.client.get(f"/v1/voices/{voice}", headers=bearer(other)).status_code == 404
    assert speak(secured, other, voice).status_code == 404
    listed = secured.client.get("/v1/voices", headers=bearer(other)).json()
    assert listed["uploaded"] == []
    gone = secured.client.delete(f"/v1/voices/{voice}", headers=bearer(other))
    assert gone.status_code == 404
    # Same tenant, another key: the voice and its cached audio are shared within the tenant.
    again = speak(secured, keys["speak"], voice)
    assert again.headers["x-cache"] == "HIT" and again.content == mine.content
    # The tenant is part of the key: the same request by anyone else could never hit it.
    entry = secured.gateway.cache.peek_memory(f"{mine.headers['x-cache-key']}.wav")
    assert entry is not None and entry.entry.meta.tenant == "acme"


def test_public_voices_share_one_cache_across_tenants(
    secured: LiveApp, keys: dict[str, str]
) -> None:
    voice = upload(secured, keys["a"], public=True)
    first = speak(secured, keys["a"], voice)
    second = speak(secured, keys["b"], voice)
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert second.headers["x-cache-key"] == first.headers["x-cache-key"]
    seen = secured.client.get(f"/v1/voices/{voice}", headers=bearer(keys["b"])).json()
    assert seen["public"] is True and seen["mine"] is False
    # Visible is not writable: another tenant cannot change or erase it.
    assert (
        secured.client.delete(f"/v1/voices/{voice}", headers=bearer(keys["b"])).status_code == 403
    )
    changed = secured.client.put(
        f"/v1/voices/{voice}", headers=bearer(keys["b"]), data={"name": "mine now"}
    )
    assert changed.status_code == 403


def test_admin_erases_another_tenants_voice_and_it_is_audited(
    secured: LiveApp, keys: dict[str, str], vsettings: Settings
) -> None:
    voice = upload(secured, keys["a"])
    speak(secured, keys["a"], voice)
    erased = secured.client.delete(f"/v1/voices/{voice}", headers=bearer(keys["admin"]))
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased_entries"] >= 2
    assert speak(secured, keys["a"], voice).status_code == 404
    records = AuditLog(vsettings.audit_path).read()
    deletion = next(r for r in records if r["action"] == "voice.delete")
    assert deletion["voice"] == voice and deletion["owner"] == "acme"
    assert deletion["tenant"] == "ops" and deletion["by_admin"] is True

    speak(secured, keys["a"])
    denied = secured.client.delete("/admin/cache?voice=en", headers=bearer(keys["a"]))
    assert denied.status_code == 403
    purged = secured.client.delete("/admin/cache?voice=en", headers=bearer(keys["admin"]))
    assert purged.status_code == 200 and purged.json()["entries"] >= 2
    last = AuditLog(vsettings.audit_path).read()[-1]
    assert last["action"] == "cache.purge" and last["key_id"] and last["filter"] == {"voice": "en"}


# -- rate limits -------------------------------------------------------------------------------


def test_requests_per_second_limit_is_per_key(
    serve: Callable[..., LiveApp], vsettings: Settings, keys: dict[str, str]
) -> None:
    live = serve(vsettings.model_copy(update={"rate_limit_rps": 0.2}))  # one per 5 s
    assert speak(live, keys["a"]).status_code == 200
    limited = speak(live, keys["a"])
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 5
    assert "requests per second" in limited.json()["detail"]
    assert speak(live, keys["b"]).status_code == 200  # another key has its own budget


def test_characters_per_minute_cost_only_misses(
    serve: Callable[..., LiveApp], vsettings: Settings, keys: dict[str, str]
) -> None:
    live = serve(vsettings.model_copy(update={"rate_limit_chars_per_minute": 30}))
    first = speak(live, keys["a"], text="Twenty characters!!")  # 19 after normalization
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    for _ in range(5):  # hits are free
        assert speak(live, keys["a"], text="Twenty characters!!").status_code == 200
    over = speak(live, keys["a"], text="Another twenty chars")
    assert over.status_code == 429
    assert 50 <= int(over.headers["retry-after"]) <= 60
    assert "characters per minute" in over.json()["detail"]
    assert live.engine_calls() == 1
    assert speak(live, keys["b"], text="Another twenty chars").status_code == 200


@pytest.mark.redis
def test_rate_limits_are_shared_through_redis(
    serve: Callable[..., LiveApp], vsettings: Settings, keys: dict[str, str], redis_url: str
) -> None:
    shared = vsettings.model_copy(
        update={"rate_limit_rps": 0.2, "redis_url": redis_url, "redis_timeout": 2.0}
    )
    one, two = serve(shared), serve(shared)
    assert speak(one, keys["a"]).status_code == 200
    limited = speak(two, keys["a"])  # another replica, same key
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert speak(two, keys["b"]).status_code == 200


# -- master key rotation, bind safety ----------------------------------------------------------


def test_keys_rotate_rewraps_samples_under_the_new_master_key(
    serve: Callable[..., LiveApp], vsettings: Settings, keys: dict[str, str]
) -> None:
    old = vsettings.master_key
    assert old is not None
    live = serve(vsettings)
    voice = upload(live, keys["a"])
    before = speak(live, keys["a"], voice, text="Before the rotation.")

    new = cli_in_process("keys", "generate-master-key", data_dir=vsettings.data_dir).stdout
    new = new.strip()
    no_previous = cli_in_process(
        "keys", "rotate", data_dir=vsettings.data_dir, VOICECACHE_MASTER_KEY=new
    )
    assert no_previous.exit_code == 1 and voice in no_previous.stderr
    rotated = run_cli(
        "keys", "rotate", data_dir=vsettings.data_dir,
        VOICECACHE_MASTER_KEY=new, VOICECACHE_MASTER_KEY_PREVIOUS=old,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped 1 sample" in rotated.stdout

    after = serve(vsettings.model_copy(update={"master_key": new}))  # old key retired
    response = speak(after, keys["a"], voice, text="After the rotation.")
    assert response.status_code == 200
    assert speak(after, keys["a"], voice, text="Before the rotation.").content == before.content
    stale = serve(vsettings)  # a server still on the old key cannot read the samples
    assert speak(stale, keys["a"], voice, text="Something new.").status_code == 503


def test_bind_safety_follows_the_keys_file(settings: Settings, tmp_path: Path) -> None:
    public = settings.model_copy(update={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="VOICECACHE_ALLOW_ANONYMOUS"):
        check_bind_is_safe(public)
    store = KeyStore(settings.keys_path)
    _, record = store.add("acme", ["speak"])
    check_bind_is_safe(public)
    store.revoke(record.id)  # the file remains, but holds no key
    with pytest.raises(ConfigError):
        check_bind_is_safe(public)
    check_bind_is_safe(public.model_copy(update={"allow_anonymous": True}))
    custom = public.model_copy(update={"keys_file": tmp_path / "elsewhere.json"})
    KeyStore(tmp_path / "elsewhere.json").add("acme", ["speak"])
    check_bind_is_safe(custom)


def test_a_broken_keys_file_fails_closed(serve: Callable[..., LiveApp], settings: Settings) -> None:
    settings.keys_path.parent.mkdir(parents=True, exist_ok=True)
    settings.keys_path.write_text("{not json")
    live = serve(settings)
    response = live.client.post("/tts", json=LINE)
    assert response.status_code == 503 and "keys file" in response.json()["detail"]
    assert httpx.get(live.url + "/healthz").status_code == 200


def test_an_unreadable_keys_file_refuses_every_check_until_it_is_readable(
    settings: Settings,
) -> None:
    """Not only the first check of each recheck interval: a second check 0.1 s later used to
    find no keys and let the caller in."""
    settings.keys_path.parent.mkdir(parents=True, exist_ok=True)
    settings.keys_path.write_text("{not json")
    now = [100.0]
    store = KeyStore(settings.keys_path, clock=lambda: now[0])
    for step in (0.0, 0.1, 0.1, 0.1):  # within one recheck interval, then the next one
        now[0] += step
        with pytest.raises(KeysUnavailable):
            _ = store.configured
    settings.keys_path.unlink()
    now[0] += 0.1  # still within the interval: the last read failed
    with pytest.raises(KeysUnavailable):
        _ = store.configured
    now[0] += 0.3  # the next read succeeds (no file: no keys)
    assert store.configured is False
    assert store.configured is False


def test_voices_uploaded_before_keys_stay_private_on_every_path(
    serve: Callable[..., LiveApp], vsettings: Settings
) -> None:
    live = serve(vsettings)
    anonymous = live.client.post(
        "/v1/voices", data={"name": "early"}, files={"file": ("s.wav", voice_like())}
    ).json()["id"]
    line = {"text": "Made before any key existed.", "voice": anonymous}
    assert live.client.post("/tts", json=line).headers["x-cache"] == "MISS"
    assert live.client.post("/tts", json=line).headers["x-cache-tier"] == "memory"

    token, _ = KeyStore(vsettings.keys_path).add("acme", ["speak"])
    wait_for(lambda: live.client.post("/tts", json=line).status_code == 401)
    # The fast lane answers memory hits: it must resolve the voice for the caller's tenant.
    assert speak(live, token, anonymous, line["text"]).status_code == 404
