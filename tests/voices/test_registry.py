"""Uploaded voices over real HTTP: validation, encryption at rest, versions in keys, erasure."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import soundfile as sf

from tests.conftest import LiveApp, error_message
from tests.servers import MotoS3Server
from tests.voice_samples import master_key, pcm_fingerprints, voice_like
from voicecache.errors import DecryptionFailed
from voicecache.settings import Settings
from voicecache.voices.crypto import Keyring, MasterKey
from voicecache.voices.sample import validate_sample


@pytest.fixture
def vsettings(settings: Settings) -> Settings:
    return settings.model_copy(update={"master_key": master_key()})


@pytest.fixture
def vlive(serve: Callable[..., LiveApp], vsettings: Settings) -> LiveApp:
    return serve(vsettings)


def upload(live: LiveApp, sample: bytes, name: str = "Ada", filename: str = "a.wav", **form: str):
    return live.client.post(
        "/v1/voices", data={"name": name, **form}, files={"file": (filename, sample)}
    )


def speak(live: LiveApp, voice: str, text: str = "Hello there, my friend."):
    return live.client.post("/tts", json={"text": text, "voice": voice})


def all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


# -- upload and validation --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3", "OGG"])
def test_upload_each_format_and_measure_it(vlive: LiveApp, fmt: str) -> None:
    response = upload(vlive, voice_like(200.0, 5.0, fmt=fmt), filename=f"s.{fmt.lower()}")
    assert response.status_code == 201, response.text
    voice = response.json()
    assert voice["id"].startswith("v-") and len(voice["version"]) == 16
    assert voice["format"] == fmt.lower() and voice["mine"] is True
    assert 190 < voice["median_pitch_hz"] < 210
    assert voice["syllables_per_second"] > 3
    assert vlive.client.get(f"/v1/voices/{voice['id']}").json() == voice
    listed = vlive.client.get("/v1/voices").json()
    assert [v["id"] for v in listed["uploaded"]] == [voice["id"]]
    assert "en" in {v["id"] for v in listed["engines"]["espeak"]["voices"]}


@pytest.mark.parametrize(
    ("sample", "status", "fragment"),
    [
        (b"", 400, "empty"),
        (b"this is not audio at all" * 20, 400, "not audio"),
        (voice_like(seconds=3.0), 400, "limit is 2 s"),
        (voice_like(seconds=1.0, rate=48000) * 3, 413, "limit"),
    ],
)
def test_bad_uploads_are_clear_4xx(
    serve: Callable[..., LiveApp], vsettings: Settings, sample: bytes, status: int, fragment: str
) -> None:
    live = serve(
        vsettings.model_copy(update={"max_upload_seconds": 2.0, "max_upload_bytes": 200_000})
    )
    response = upload(live, sample)
    assert response.status_code == status, response.text
    assert fragment in error_message(response)
    assert live.client.get("/v1/voices").json()["uploaded"] == []


def test_bad_form_fields(vlive: LiveApp) -> None:
    assert upload(vlive, voice_like(), name="").status_code == 400  # OpenAI's status on /v1/
    bad_base = upload(vlive, voice_like(), base_voice="../../etc")
    assert bad_base.status_code == 400 and "base_voice" in error_message(bad_base)
    assert bad_base.json()["error"]["param"] == "base_voice"
    missing_file = vlive.client.post("/v1/voices", data={"name": "x"})
    assert missing_file.status_code == 400 and missing_file.json()["error"]["param"] == "file"


def test_without_master_key_uploads_are_refused_and_nothing_is_stored(
    live: LiveApp, settings: Settings
) -> None:
    response = upload(live, voice_like())
    assert response.status_code == 503
    assert "VOICECACHE_MASTER_KEY" in error_message(response)
    assert not (settings.data_dir / "voices").exists()


def test_unknown_and_malformed_ids_are_404(vlive: LiveApp) -> None:
    for voice_id in ("v-0123456789abcdef", "..%2F..%2Fkeys.json", "en"):
        assert vlive.client.get(f"/v1/voices/{voice_id}").status_code == 404
        assert vlive.client.delete(f"/v1/voices/{voice_id}").status_code == 404
    assert speak(vlive, "v-0123456789abcdef").status_code == 404


# -- encryption at rest ---------------------------------------------------------------------


def test_no_store_ever_holds_the_plaintext_sample(vlive: LiveApp, vsettings: Settings) -> None:
    sample = voice_like(150.0, 4.0)
    voice = upload(vlive, sample).json()
    assert speak(vlive, voice["id"]).status_code == 200
    files = all_bytes(vsettings.data_dir)
    assert any(p.name.endswith(".enc") for p, _ in files)
    for path, data in files:
        for window in pcm_fingerprints(sample):
            assert window not in data, f"{path} holds plaintext sample bytes"


def test_tampered_sample_is_rejected(vlive: LiveApp, vsettings: Settings) -> None:
    voice = upload(vlive, voice_like()).json()
    (blob_path,) = (vsettings.data_dir / "voices" / voice["id"]).glob("sample.*.enc")
    blob = bytearray(blob_path.read_bytes())
    blob[-100] ^= 0x01
    blob_path.write_bytes(bytes(blob))
    response = speak(vlive, voice["id"])
    assert response.status_code == 503
    assert "failed authentication" in response.json()["detail"]


def test_envelope_binds_voice_and_version_and_rotates() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    ring = Keyring(old)
    blob = ring.seal(b"secret sample", b"voice:a:1")
    assert ring.open(blob, b"voice:a:1") == b"secret sample"
    with pytest.raises(DecryptionFailed):
        ring.open(blob, b"voice:b:1")  # moved onto another voice
    flipped = bytearray(blob)
    flipped[-1] ^= 0x80
    with pytest.raises(DecryptionFailed):
        ring.open(bytes(flipped), b"voice:a:1")
    rotating = Keyring(new, [old])
    rewrapped = rotating.rewrap(blob, b"voice:a:1")
    assert rewrapped is not None and rotating.rewrap(rewrapped, b"voice:a:1") is None
    assert rewrapped.endswith(blob[-40:])  # only the wrapped key changed
    assert Keyring(new).open(rewrapped, b"voice:a:1") == b"secret sample"
    with pytest.raises(DecryptionFailed, match="not configured"):
        Keyring(new).open(blob, b"voice:a:1")


# -- cloning, versions, erasure ---------------------------------------------------------------


def test_different_samples_give_different_audio(vlive: LiveApp) -> None:
    low = upload(vlive, voice_like(100.0, 3.0)).json()
    high = upload(vlive, voice_like(260.0, 6.0)).json()
    a, b = speak(vlive, low["id"]), speak(vlive, high["id"])
    assert a.status_code == b.status_code == 200
    assert a.headers["x-cache-key"] != b.headers["x-cache-key"]
    assert a.content != b.content
    # The slower sample gives the longer rendering of the same line.
    assert sf.info(io.BytesIO(a.content)).duration > sf.info(io.BytesIO(b.content)).duration
    builtin = speak(vlive, "en")
    assert builtin.content not in (a.content, b.content)


def test_replacing_the_sample_is_a_new_version_and_a_miss(vlive: LiveApp) -> None:
    voice = upload(vlive, voice_like(120.0)).json()
    first = speak(vlive, voice["id"])
    assert first.headers["x-cache"] == "MISS"
    assert speak(vlive, voice["id"]).headers["x-cache"] == "HIT"
    replaced = vlive.client.put(
        f"/v1/voices/{voice['id']}", files={"file": ("b.wav", voice_like(240.0))}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] != voice["version"]
    again = speak(vlive, voice["id"])
    assert again.headers["x-cache"] == "MISS"
    assert again.headers["x-cache-key"] != first.headers["x-cache-key"]
    assert again.content != first.content
    renamed = vlive.client.put(f"/v1/voices/{voice['id']}", data={"name": "Grace"})
    assert renamed.json()["name"] == "Grace"
    assert renamed.json()["version"] == replaced.json()["version"]  # the sound did not change


def test_delete_erases_sample_and_every_cached_entry(
    serve: Callable[..., LiveApp], vsettings: Settings
) -> None:
    live = serve(vsettings)
    voice = upload(live, voice_like()).json()
    other = speak(live, "en")
    for text in ("One line.", "Another line."):
        assert speak(live, voice["id"], text).status_code == 200
    live.client.post("/tts", json={"text": "One line.", "voice": voice["id"], "format": "mp3"})
    live.restart()  # a new process's memory tier is empty; write some back into memory
    assert speak(live, voice["id"], "One line.").headers["x-cache-tier"] == "disk"

    erased = live.client.delete(f"/v1/voices/{voice['id']}")
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["erased_sample_bytes"] > 0
    # Two lines, each canonical FLAC plus its WAV variant, plus one MP3 variant.
    assert report["tiers"]["disk"]["entries"] == 5
    assert report["tiers"]["memory"]["entries"] == 1  # the WAV promoted after the restart
    assert report["erased_entries"] == 6
    left = list(vsettings.cache_dir.rglob("*.val"))  # entry files (not the index)
    assert len(left) == 2  # only the built-in voice's FLAC and WAV
    assert not (vsettings.data_dir / "voices" / voice["id"]).exists()
    assert live.client.get(f"/v1/voices/{voice['id']}").status_code == 404
    assert speak(live, voice["id"], "One line.").status_code == 404
    assert speak(live, "en").headers["x-cache"] == "HIT"  # other audio untouched
    assert speak(live, "en").content == other.content


def test_validation_measures_pitch_and_rate_monotonically() -> None:
    slow_low = validate_sample(voice_like(110.0, 3.0), max_bytes=10**7, max_seconds=60)
    fast_high = validate_sample(voice_like(280.0, 6.0), max_bytes=10**7, max_seconds=60)
    assert abs(slow_low.median_pitch_hz - 110) < 5 and abs(fast_high.median_pitch_hz - 280) < 10
    assert slow_low.syllables_per_second < fast_high.syllables_per_second


@pytest.mark.redis
@pytest.mark.s3
def test_redis_and_s3_never_hold_the_plaintext_and_erasure_reaches_them(
    serve: Callable[..., LiveApp],
    vsettings: Settings,
    redis_url: str,
    s3_server: MotoS3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    shared = vsettings.model_copy(
        update={
            "tiers": ["memory", "disk", "redis", "s3"],
            "redis_url": redis_url,
            "s3_bucket": s3_bucket,
            "s3_endpoint_url": s3_server.endpoint_url,
            "s3_region": s3_server.region,
        }
    )
    live = serve(shared)
    sample = voice_like(170.0, 5.0)
    voice = upload(live, sample).json()
    for text in ("First line.", "Second line."):
        assert speak(live, voice["id"], text).status_code == 200

    stored: list[bytes] = []
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter():
            kind = client.type(key).decode()
            if kind == "string":
                stored.append(client.get(key) or b"")
            elif kind == "hash":
                stored.extend(client.hgetall(key).values())
            elif kind == "set":
                stored.extend(client.smembers(key))
            elif kind == "zset":
                stored.extend(client.zrange(key, 0, -1))
    finally:
        client.close()
    s3 = s3_server.client()
    objects = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    stored.extend(s3.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read() for o in objects)
    assert len(objects) == 4 and any(len(blob) > 1000 for blob in stored)
    for blob in stored:
        for window in pcm_fingerprints(sample):
            assert window not in blob

    report = live.client.delete(f"/v1/voices/{voice['id']}").json()
    assert report["tiers"]["redis"]["entries"] == 4
    assert report["tiers"]["s3"]["entries"] == 4
    assert s3.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


def test_erasure_reaches_the_memory_of_every_process(
    serve: Callable[..., LiveApp], vsettings: Settings
) -> None:
    shared = vsettings.model_copy(update={"purge_poll_interval": 0.1})
    one, two = serve(shared), serve(shared)  # two workers over one data directory
    voice = upload(one, voice_like(), public="true").json()
    first = speak(one, voice["id"])
    assert speak(two, voice["id"]).headers["x-cache"] == "HIT"  # now in two's memory too
    stored = f"/v1/audio/{first.headers['x-cache-key']}.wav"
    assert two.client.get(stored).headers["x-cache-tier"] == "memory"

    assert one.client.delete(f"/v1/voices/{voice['id']}").status_code == 200
    deadline = time.monotonic() + 5
    while two.client.get(stored).status_code != 404:
        assert time.monotonic() < deadline, "the other process still serves erased audio"
        time.sleep(0.05)
    assert speak(two, voice["id"]).status_code == 404
