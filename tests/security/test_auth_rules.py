"""When authentication applies (issue #12 items 1, 2, 7): it never switches off at run time,
the recognized-key cache cannot be grown by callers, and "loopback" means loopback only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import LiveApp, error_message
from tests.security.test_auth import LINE, bearer, wait_for
from voicecache.errors import ConfigError, Unauthorized
from voicecache.http.server import check_bind_is_safe
from voicecache.security.auth import Authenticator, KeyStore
from voicecache.security.exposure import is_loopback
from voicecache.settings import Settings

# -- item 1: no keys is not "open" once keys have existed, or beyond loopback -------------------


def test_revoking_the_last_key_denies_everyone(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    store = KeyStore(settings.keys_path)
    token, record = store.add("acme", ["speak", "admin"])
    live = serve(settings)
    assert live.client.post("/tts", json=LINE, headers=bearer(token)).status_code == 200

    store.revoke(record.id)  # the file remains, holding no key
    wait_for(lambda: live.client.post("/tts", json=LINE, headers=bearer(token)).status_code == 401)
    for path in ("/metrics", "/admin/cache?all=true", "/v1/voices"):
        response = live.client.get(path)
        assert response.status_code == 401, path
        assert "no API keys" in error_message(response)
    assert live.client.get("/healthz").status_code == 200

    settings.keys_path.unlink()  # a missing file is no different
    live.restart()
    assert live.client.post("/tts", json=LINE).status_code == 401


def test_a_restart_with_an_emptied_keys_file_still_denies(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    store = KeyStore(settings.keys_path)
    store.add("acme", ["speak"])
    settings.keys_path.write_text('{"version": 1, "keys": []}\n')  # emptied by hand
    live = serve(settings)
    assert live.client.post("/tts", json=LINE).status_code == 401
    opened = serve(settings.model_copy(update={"allow_anonymous": True}))
    assert opened.client.post("/tts", json=LINE).status_code == 200


def test_beyond_loopback_no_keys_means_deny_all(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    public = serve(settings.model_copy(update={"host": "0.0.0.0"}))
    response = public.client.post("/tts", json=LINE)
    assert response.status_code == 401
    assert "VOICECACHE_ALLOW_ANONYMOUS" in response.json()["detail"]
    allowed = serve(settings.model_copy(update={"host": "0.0.0.0", "allow_anonymous": True}))
    assert allowed.client.post("/tts", json=LINE).status_code == 200
    # On loopback, with no key ever made, voicecache stays open for development.
    assert serve(settings).client.post("/tts", json=LINE).status_code == 200


def test_keys_made_elsewhere_are_remembered_by_the_server(settings: Settings) -> None:
    """A keys file written by configuration management (not `keys add`) counts too."""
    path = settings.keys_path
    KeyStore(path).add("acme", ["speak"])
    path.with_name(path.name + ".existed").unlink()  # as if the file had been copied in
    reader = KeyStore(path, recheck_seconds=0)
    assert reader.configured and reader.keys_existed
    path.write_text('{"version": 1, "keys": []}\n')
    assert not KeyStore(path).configured and KeyStore(path).keys_existed


# -- item 2: the recognized-key cache --------------------------------------------------------


def test_padded_headers_do_not_grow_the_key_cache(settings: Settings) -> None:
    store = KeyStore(settings.keys_path)
    token, _ = store.add("acme", ["speak"])
    auth = Authenticator(store)
    for pad in range(300):
        principal = auth.authenticate(f"Bearer {token}{' ' * pad}")
        assert principal.tenant == "acme"
        auth.authenticate(f"bearer{' ' * (pad % 700 + 1)}{token}")
    assert auth.remembered == 1
    assert auth.remembered_bytes < 1024


def test_the_key_cache_is_bounded_by_count_and_bytes(settings: Settings) -> None:
    store = KeyStore(settings.keys_path)
    tokens = [store.add("acme", ["speak"])[0] for _ in range(12)]
    auth = Authenticator(store, max_remembered=5)
    for token in tokens:
        assert auth.authenticate(f"Bearer {token}").tenant == "acme"
    assert auth.remembered == 5
    assert auth.remembered_bytes <= 5 * auth.ENTRY_BYTES


def test_authorization_over_1_kib_is_401(serve: Callable[..., LiveApp], settings: Settings) -> None:
    token, _ = KeyStore(settings.keys_path).add("acme", ["speak"])
    live = serve(settings)
    padded = "Bearer" + " " * 1100 + token  # httpx refuses trailing white space
    response = live.client.post("/tts", json=LINE, headers={"Authorization": padded})
    assert response.status_code == 401
    assert "1024" in response.json()["detail"]
    assert live.client.post("/tts", json=LINE, headers=bearer(token)).status_code == 200
    with pytest.raises(Unauthorized):
        Authenticator(KeyStore(settings.keys_path)).authenticate("Bearer " + "x" * 2000)


# -- item 7: what counts as loopback ---------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["", "0", "::", "0.0.0.0", "[::]", "no-such-host.invalid", "10.1.2.3"]
)
def test_hosts_that_are_not_loopback_only(host: str, settings: Settings) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="VOICECACHE_ALLOW_ANONYMOUS"):
        check_bind_is_safe(settings.model_copy(update={"host": host}))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts(host: str, settings: Settings) -> None:
    assert is_loopback(host)
    check_bind_is_safe(settings.model_copy(update={"host": host}))
