"""The voice registry: uploaded reference samples, encrypted at rest, resolved per tenant.

Layout under `data_dir/voices/`:

    <id>/meta.json               name, owner, visibility, base voice, version, measurements
    <id>/sample.<version>.enc    the uploaded file, AES-256-GCM envelope-encrypted (crypto.py)

Ids are generated (`v-` and 16 hex digits), so no client string ever becomes a path. The
version is an HMAC (keyed from the master key) of the sample bytes and the voice's settings,
and is part of every cache key made with the voice: replacing the sample can never hit old
audio. A replacement writes the new sample file first and then swaps `meta.json` atomically,
so a reader always finds the sample its metadata names.

`VoiceRegistry` is the gateway's `VoiceResolver`: an uploaded voice resolves to its base
engine voice, its version, its owner's tenant (private voices only: their audio is keyed per
tenant) and a loader for the decrypted sample, which the gateway calls only on a miss and
which exists only in memory. Built-in voices fall through to `BuiltinVoices`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from voicecache.cache.invalidation.filter import PurgeFilter
from voicecache.cache.invalidation.purge import purge
from voicecache.cache.service import BuiltinVoices
from voicecache.cache.tiers.tiered import TieredCache
from voicecache.errors import DecryptionFailed, InvalidRequest, NotFound, UnknownVoice
from voicecache.fileio import atomic_write
from voicecache.model import VOICE_PATTERN, Engine, Reference, ResolvedVoice
from voicecache.voices.crypto import Keyring
from voicecache.voices.sample import Sample, decode_sample, validate_sample

VOICE_ID_PATTERN = re.compile(r"^v-[0-9a-f]{16}$")
MAX_NAME_CHARS = 100
_REFERENCE_CACHE = 8  # decrypted samples kept in memory, most recently used


def is_uploaded_id(voice: str) -> bool:
    """Whether `voice` has the shape of an uploaded voice id (never a path)."""
    return VOICE_ID_PATTERN.match(voice) is not None


@dataclass(frozen=True, slots=True)
class VoiceRecord:
    """An uploaded voice's metadata (never the sample)."""

    id: str
    name: str
    tenant: str | None
    public: bool
    base_voice: str | None
    version: str
    created: float
    updated: float
    format: str
    duration: float
    sample_rate: int
    size: int
    settings: dict[str, float] = field(default_factory=dict)

    def visible_to(self, tenant: str | None) -> bool:
        return self.public or self.tenant == tenant

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VoiceRecord:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def voice_version(sample: bytes, settings: dict[str, Any], key: bytes) -> str:
    """An HMAC-SHA256, under `key` (`Keyring.version_key`), of the sample and every setting
    that changes how the voice sounds. Keyed, so that the version (shown by the API, stored
    in plain metadata) cannot be matched against a sample by anyone without the master key.
    Voices stored with the former plain SHA-256 keep that version: it is what keys their
    audio, and it is never recomputed for an unchanged sample."""
    digest = hmac.new(key, digestmod=hashlib.sha256)
    digest.update(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    digest.update(b"\0")
    digest.update(sample)
    return digest.hexdigest()[:16]


def _associated(voice_id: str, version: str) -> bytes:
    return f"voicecache-voice:{voice_id}:{version}".encode()


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or any(ord(ch) < 32 for ch in name):
        raise InvalidRequest(f"name must be 1-{MAX_NAME_CHARS} printable characters", "name")
    return name


def _check_base_voice(base_voice: str | None) -> str | None:
    if base_voice is None or base_voice == "":
        return None
    if not VOICE_PATTERN.match(base_voice) or is_uploaded_id(base_voice):
        raise InvalidRequest("base_voice must be a built-in voice id of the engine", "base_voice")
    return base_voice


class VoiceStore:
    """Encrypted samples and metadata on disk; safe to share between worker processes."""

    def __init__(
        self,
        root: Path,
        keyring: Keyring,
        *,
        max_upload_bytes: int = 10 * 1024 * 1024,
        max_upload_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.keyring = keyring
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_seconds = max_upload_seconds
        self.clock = clock
        # meta.json parsed once per change: (mtime_ns, size, inode) → record.
        self._records: dict[str, tuple[tuple[int, int, int], VoiceRecord]] = {}

    def _dir(self, voice_id: str) -> Path:
        if not is_uploaded_id(voice_id):
            raise NotFound(f"no voice {voice_id!r}")
        return self.root / voice_id

    def _sample_path(self, voice_id: str, version: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{16}", version):
            raise NotFound(f"no voice {voice_id!r}")
        return self._dir(voice_id) / f"sample.{version}.enc"

    # -- reading -------------------------------------------------------------------------

    def get(self, voice_id: str) -> VoiceRecord | None:
        """The record, or None; re-reads meta.json only when it changed on disk."""
        if not is_uploaded_id(voice_id):
            return None
        path = self.root / voice_id / "meta.json"
        try:
            stat = path.stat()
        except OSError:
            self._records.pop(voice_id, None)
            return None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._records.get(voice_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            record = VoiceRecord.from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError):
            return None
        self._records[voice_id] = (stamp, record)
        return record

    def all(self) -> list[VoiceRecord]:
        """Every uploaded voice, oldest first."""
        if not self.root.is_dir():
            return []
        found = [self.get(child.name) for child in self.root.iterdir()]
        return sorted((r for r in found if r is not None), key=lambda r: (r.created, r.id))

    def read_sample(self, record: VoiceRecord) -> bytes:
        """The decrypted sample bytes of `record` (raises `DecryptionFailed` if tampered)."""
        try:
            blob = self._sample_path(record.id, record.version).read_bytes()
        except OSError as exc:
            raise NotFound(f"the sample of voice {record.id} is gone") from exc
        return self.keyring.open(blob, _associated(record.id, record.version))

    # -- writing -------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        data: bytes,
        tenant: str | None,
        base_voice: str | None = None,
        public: bool = False,
    ) -> VoiceRecord:
        """Validate, encrypt and store a new voice."""
        self.keyring.require_current()  # refuse before any work: never stored in plain text
        name = _check_name(name)
        base_voice = _check_base_voice(base_voice)
        sample = self._validate(data)
        voice_id = "v-" + secrets.token_hex(8)
        now = self.clock()
        record = self._record(voice_id, name, tenant, public, base_voice, data, sample, now, now)
        self._write(record, data, previous=None)
        return record

    def update(
        self,
        record: VoiceRecord,
        *,
        data: bytes | None = None,
        name: str | None = None,
        base_voice: str | None = None,
        public: bool | None = None,
    ) -> VoiceRecord:
        """Replace the sample and/or settings; a changed sample or base voice is a new
        version (so new cache keys)."""
        self.keyring.require_current()
        new_name = _check_name(name) if name is not None else record.name
        new_base = _check_base_voice(base_voice) if base_voice is not None else record.base_voice
        new_public = record.public if public is None else public
        if data is None:
            data = self.read_sample(record)
            sample = None
        else:
            sample = self._validate(data)
        if sample is None:
            updated = replace(
                record,
                name=new_name,
                public=new_public,
                base_voice=new_base,
                # Same sample and settings: same version (also after a master key rotation).
                version=record.version
                if new_base == record.base_voice
                else voice_version(data, {"base_voice": new_base}, self.keyring.version_key()),
                updated=self.clock(),
            )
        else:
            updated = self._record(
                record.id,
                new_name,
                record.tenant,
                new_public,
                new_base,
                data,
                sample,
                record.created,
                self.clock(),
            )
        self._write(updated, data, previous=record)
        return updated

    def delete(self, record: VoiceRecord) -> int:
        """Remove the voice's files; returns the bytes of encrypted sample erased."""
        directory = self._dir(record.id)
        erased = 0
        # Metadata first: from this moment the voice no longer resolves anywhere.
        with contextlib.suppress(FileNotFoundError):
            (directory / "meta.json").unlink()
        self._records.pop(record.id, None)
        if directory.is_dir():
            for child in directory.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    erased += child.stat().st_size if child.name.endswith(".enc") else 0
                    child.unlink()
            with contextlib.suppress(OSError):
                directory.rmdir()
        return erased

    def rewrap_all(self) -> tuple[int, int, list[str]]:
        """Re-wrap every sample's data key under the current master key (rotation).

        Returns (re-wrapped, already current, ids that could not be opened). Safe while
        servers run: each file is replaced atomically and both keys stay readable until the
        old one is retired."""
        rewrapped = current = 0
        failed: list[str] = []
        for record in self.all():
            path = self._sample_path(record.id, record.version)
            try:
                blob = path.read_bytes()
            except FileNotFoundError:
                continue  # deleted or replaced meanwhile
            try:
                fresh = self.keyring.rewrap(blob, _associated(record.id, record.version))
            except DecryptionFailed:
                failed.append(record.id)
                continue
            if fresh is None:
                current += 1
                continue
            atomic_write(path, fresh)
            rewrapped += 1
        return rewrapped, current, failed

    def _validate(self, data: bytes) -> Sample:
        return validate_sample(
            data, max_bytes=self.max_upload_bytes, max_seconds=self.max_upload_seconds
        )

    def _record(
        self,
        voice_id: str,
        name: str,
        tenant: str | None,
        public: bool,
        base_voice: str | None,
        data: bytes,
        sample: Sample,
        created: float,
        updated: float,
    ) -> VoiceRecord:
        return VoiceRecord(
            id=voice_id,
            name=name,
            tenant=tenant,
            public=public,
            base_voice=base_voice,
            version=voice_version(data, {"base_voice": base_voice}, self.keyring.version_key()),
            created=created,
            updated=updated,
            format=sample.format,
            duration=sample.duration,
            sample_rate=sample.audio.sample_rate,
            size=len(data),
            settings=sample.settings(),
        )

    def _write(self, record: VoiceRecord, data: bytes, previous: VoiceRecord | None) -> None:
        directory = self._dir(record.id)
        directory.mkdir(parents=True, exist_ok=True)
        blob = self.keyring.seal(data, _associated(record.id, record.version))
        atomic_write(self._sample_path(record.id, record.version), blob)
        atomic_write(directory / "meta.json", json.dumps(record.to_json()).encode())
        if previous is not None and previous.version != record.version:
            with contextlib.suppress(FileNotFoundError):
                self._sample_path(previous.id, previous.version).unlink()


class VoiceRegistry:
    """The gateway's `VoiceResolver`: uploaded voices first, built-in voices otherwise."""

    def __init__(self, store: VoiceStore, default_voice: str = "en") -> None:
        self.store = store
        self.default_voice = default_voice
        self.builtin = BuiltinVoices()
        self._references: OrderedDict[tuple[str, str], Reference] = OrderedDict()

    def visible(self, voice_id: str, tenant: str | None) -> VoiceRecord:
        """The record if `tenant` may see it; otherwise 404, exactly as if it did not exist."""
        record = self.store.get(voice_id)
        if record is None or not record.visible_to(tenant):
            raise NotFound(f"no voice {voice_id!r}")
        return record

    def list(self, tenant: str | None) -> list[VoiceRecord]:
        """Uploaded voices `tenant` may see: its own and public ones."""
        return [r for r in self.store.all() if r.visible_to(tenant)]

    def engine_voice(self, record: VoiceRecord, engine: Engine) -> str:
        """The engine voice a cloned voice is spoken with."""
        if record.base_voice is not None:
            if not engine.accepts_voice(record.base_voice):
                raise UnknownVoice(
                    f"voice {record.id} is based on {record.base_voice!r}, which engine "
                    f"{engine.name} does not have"
                )
            return record.base_voice
        if engine.accepts_voice(self.default_voice):
            return self.default_voice
        voices: Sequence[Any] = engine.voices()
        if not voices:
            raise UnknownVoice(f"engine {engine.name} offers no voice to clone onto")
        return str(voices[0].id)

    async def resolve(self, voice: str, engine: Engine, tenant: str | None) -> ResolvedVoice:
        if not is_uploaded_id(voice):
            return await self.builtin.resolve(voice, engine, tenant)
        record = self.visible(voice, tenant)
        return ResolvedVoice(
            engine_voice=self.engine_voice(record, engine),
            version=record.version,
            tenant=None if record.public else record.tenant,
            # Decrypted only when a miss reaches the engine: a hit never reads the sample.
            load_reference=lambda: self.reference(record),
        )

    async def reference(self, record: VoiceRecord) -> Reference:
        """The decrypted, decoded sample; kept only in process memory (a few, LRU)."""
        cache_key = (record.id, record.version)
        found = self._references.get(cache_key)
        if found is not None:
            self._references.move_to_end(cache_key)
            return found
        data = await asyncio.to_thread(self.store.read_sample, record)
        audio = await asyncio.to_thread(decode_sample, data)
        reference = Reference(record.id, record.version, audio, dict(record.settings))
        self._references[cache_key] = reference
        while len(self._references) > _REFERENCE_CACHE:
            self._references.popitem(last=False)
        return reference

    def forget(self, voice_id: str) -> None:
        """Drop decrypted copies of a voice (after an update or deletion)."""
        for cache_key in [k for k in self._references if k[0] == voice_id]:
            del self._references[cache_key]


async def erase_cached_audio(cache: TieredCache, voice_id: str) -> dict[str, dict[str, int]]:
    """Delete every cached entry made with `voice_id` from every tier: a purge with a voice
    filter (`cache/invalidation/purge.py`), which uses a tier's voice index where there is one,
    fences fills racing the erasure so none can store the voice's audio again, and announces
    itself so every other process drops its copies too. Returns entries, bytes and errors per
    tier."""
    report = await purge(cache, PurgeFilter.create(now=cache.clock(), voice=voice_id))
    return report.counts()
