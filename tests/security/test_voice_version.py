"""A voice's `version` is an HMAC keyed from the master key, not a plain hash of the sample
that anyone holding the sample could recompute (issue #12 item 15). Voices stored with the
old plain hash keep working under their stored version."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from tests.conftest import LiveApp
from tests.security.test_auth import cli_in_process
from tests.voice_samples import master_key, voice_like
from voicecache.settings import Settings
from voicecache.voices.crypto import Keyring, MasterKey
from voicecache.voices.registry import VoiceStore, _associated, voice_version


def plain_hash(sample: bytes, base_voice: str | None = None) -> str:
    """The version as it used to be: SHA-256 of the settings and the sample, unsalted."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"base_voice": base_voice}, separators=(",", ":")).encode())
    digest.update(b"\0" + sample)
    return digest.hexdigest()[:16]


def upload(live: LiveApp, sample: bytes, name: str = "Sam") -> dict[str, object]:
    response = live.client.post(
        "/v1/voices", data={"name": name}, files={"file": ("s.wav", sample)}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_the_version_does_not_fingerprint_the_sample(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    sample = voice_like(pitch_hz=140.0)
    one = serve(settings.model_copy(update={"master_key": master_key()}))
    other_dir = settings.data_dir.parent / "other"
    two = serve(Settings(data_dir=other_dir, master_key=master_key()))
    first, second = upload(one, sample), upload(two, sample)
    assert first["version"] != plain_hash(sample)
    assert first["version"] != second["version"]  # another master key, another version
    stored = (settings.data_dir / "voices" / str(first["id"]) / "meta.json").read_text()
    assert plain_hash(sample) not in stored
    # Within one installation the version still names sample + settings exactly.
    again = upload(one, sample, name="Twin")
    assert again["version"] == first["version"]
    assert upload(one, voice_like(pitch_hz=141.0))["version"] != first["version"]


def test_the_version_key_is_derived_not_the_master_key_itself() -> None:
    master = MasterKey.generate()
    key = Keyring(master).version_key()
    assert len(key) == 32 and key != master.key
    assert Keyring(master).version_key() == key
    assert voice_version(b"abc", {}, key) != voice_version(b"abc", {}, master.key)


def test_voices_stored_with_the_plain_hash_keep_working(
    serve: Callable[..., LiveApp], settings: Settings
) -> None:
    secured = settings.model_copy(update={"master_key": master_key()})
    assert secured.master_key is not None
    sample = voice_like(pitch_hz=160.0)
    # A voice as the previous release stored it: version = plain hash.
    store = VoiceStore(secured.data_dir / "voices", Keyring(MasterKey.parse(secured.master_key)))
    record = store.create(name="Old", data=sample, tenant=None)
    legacy = plain_hash(sample)
    directory = secured.data_dir / "voices" / record.id
    (directory / f"sample.{record.version}.enc").unlink()
    blob = store.keyring.seal(sample, _associated(record.id, legacy))
    (directory / f"sample.{legacy}.enc").write_bytes(blob)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "version": legacy}))

    live = serve(secured)
    line = {"text": "Still here.", "voice": record.id}
    spoken = live.client.post("/tts", json=line)
    assert spoken.status_code == 200, spoken.text
    assert live.client.get(f"/v1/voices/{record.id}").json()["version"] == legacy
    renamed = live.client.put(f"/v1/voices/{record.id}", data={"name": "Renamed"})
    assert renamed.status_code == 200 and renamed.json()["version"] == legacy
    again = live.client.post("/tts", json=line)
    assert again.headers["x-cache"] == "HIT" and again.content == spoken.content


def test_a_rotation_keeps_versions(serve: Callable[..., LiveApp], settings: Settings) -> None:
    old = master_key()
    live = serve(settings.model_copy(update={"master_key": old}))
    made = upload(live, voice_like())
    new = master_key()
    rotated = cli_in_process(
        "keys", "rotate", data_dir=settings.data_dir,
        VOICECACHE_MASTER_KEY=new, VOICECACHE_MASTER_KEY_PREVIOUS=old,
    )  # fmt: skip
    assert rotated.exit_code == 0, rotated.output
    after = serve(settings.model_copy(update={"master_key": new}))
    renamed = after.client.put(f"/v1/voices/{made['id']}", data={"name": "After"})
    assert renamed.status_code == 200 and renamed.json()["version"] == made["version"]
