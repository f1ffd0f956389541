"""Encryption at rest for voice samples: AES-256-GCM envelope encryption.

Each sample is encrypted with its own random 256-bit data key; the data key is wrapped
(encrypted) by the master key and stored beside the ciphertext with the master key's id. The
caller's associated data (voice id and version) is bound to both layers, so a blob copied onto
another voice or version fails to open, and any flipped bit fails GCM's tag check.

    blob = b"VCE1" | u16 header length | header JSON {"v", "kid", "wrapped"} | nonce | ciphertext

The master key also keys voice versions: `Keyring.version_key` derives a separate 256-bit
sub-key with HKDF-SHA256 (`info` names its purpose), and a voice's version is an HMAC under
it (`registry.voice_version`), so the version a voice shows cannot be recomputed, and so
cannot fingerprint its sample, without the master key.

Rotating the master key only rewrites the header (`Keyring.rewrap`): the sample ciphertext
stays as it is. The keyring holds the current master key (`VOICECACHE_MASTER_KEY` or
`master_key_file`) and, during a rotation, the previous one (`VOICECACHE_MASTER_KEY_PREVIOUS`),
so servers read blobs wrapped by either key while `voicecache keys rotate` re-wraps them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from voicecache.errors import ConfigError, DecryptionFailed, EncryptionUnavailable

MAGIC = b"VCE1"
_HEADER_LENGTH = struct.Struct(">H")
_NONCE_BYTES = 12
KEY_BYTES = 32
_VERSION_KEY_INFO = b"voicecache voice version v1"


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A 256-bit key-encryption key and its public id (a hash prefix, safe to store)."""

    key: bytes
    key_id: str

    @classmethod
    def from_bytes(cls, key: bytes) -> MasterKey:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"a master key must be {KEY_BYTES} bytes, got {len(key)}")
        return cls(key, hashlib.sha256(b"voicecache-master-key:" + key).hexdigest()[:16])

    @classmethod
    def parse(cls, text: str) -> MasterKey:
        """A master key from base64 text (standard or URL-safe alphabet)."""
        cleaned = text.strip().replace("-", "+").replace("_", "/")
        try:
            key = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError("the master key is not valid base64") from exc
        return cls.from_bytes(key)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls.from_bytes(os.urandom(KEY_BYTES))

    def encoded(self) -> str:
        """The key as standard base64, the form `VOICECACHE_MASTER_KEY` takes."""
        return base64.b64encode(self.key).decode()


def read_key_file(path: Path) -> MasterKey:
    """A master key file holds the key as base64 text (or as 32 raw bytes)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read master key file {path}: {exc.strerror}") from exc
    if len(raw) == KEY_BYTES:
        try:
            return MasterKey.parse(raw.decode("ascii"))
        except (UnicodeDecodeError, ConfigError):
            return MasterKey.from_bytes(raw)
    try:
        return MasterKey.parse(raw.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"master key file {path} holds neither base64 nor 32 bytes") from exc


class Keyring:
    """The current master key (wraps new data keys) and older ones (still unwrap)."""

    def __init__(self, current: MasterKey | None, previous: Iterable[MasterKey] = ()) -> None:
        self.current = current
        self._by_id = {key.key_id: key for key in previous}
        if current is not None:
            self._by_id[current.key_id] = current
        self._version_key: tuple[str, bytes] | None = None

    @classmethod
    def load(
        cls, master_key: str | None, master_key_file: Path | None, previous: str | None
    ) -> Keyring:
        """`master_key` (base64) wins over `master_key_file`; `previous` (comma-separated
        base64 keys) is read too, so blobs wrapped before a rotation stay readable until
        re-wrapped."""
        current = None
        if master_key:
            current = MasterKey.parse(master_key)
        elif master_key_file is not None:
            current = read_key_file(master_key_file)
        older = [MasterKey.parse(part) for part in previous.split(",")] if previous else []
        return cls(current, older)

    @property
    def available(self) -> bool:
        return self.current is not None

    def require_current(self) -> MasterKey:
        if self.current is None:
            raise EncryptionUnavailable(
                "voice uploads need a master key for encryption at rest: set "
                "VOICECACHE_MASTER_KEY (32 bytes, base64) or master_key_file"
            )
        return self.current

    def version_key(self) -> bytes:
        """The HMAC key for voice versions, derived from the current master key (a new master
        key gives new versions to new samples; stored voices keep theirs)."""
        master = self.require_current()
        if self._version_key is None or self._version_key[0] != master.key_id:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_VERSION_KEY_INFO)
            self._version_key = (master.key_id, hkdf.derive(master.key))
        return self._version_key[1]

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Encrypt under a fresh data key wrapped by the current master key."""
        master = self.require_current()
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, associated)
        return _header(master, data_key, associated) + nonce + ciphertext

    def open(self, blob: bytes, associated: bytes) -> bytes:
        """Decrypt; raises `DecryptionFailed` for anything tampered or foreign."""
        data_key, body = self._unwrap(blob, associated)
        nonce, ciphertext = body[:_NONCE_BYTES], body[_NONCE_BYTES:]
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, associated)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed("encrypted sample failed authentication") from exc

    def rewrap(self, blob: bytes, associated: bytes) -> bytes | None:
        """The blob with its data key wrapped by the current master key, or None when it
        already is. The sample ciphertext is copied unchanged."""
        master = self.require_current()
        header, _ = _parse(blob)
        if header["kid"] == master.key_id:
            return None
        data_key, body = self._unwrap(blob, associated)
        return _header(master, data_key, associated) + body

    def _unwrap(self, blob: bytes, associated: bytes) -> tuple[bytes, bytes]:
        header, body = _parse(blob)
        master = self._by_id.get(str(header.get("kid")))
        if master is None:
            raise DecryptionFailed(
                f"encrypted sample is wrapped by master key {header.get('kid')!r}, which is "
                "not configured (set VOICECACHE_MASTER_KEY_PREVIOUS during a rotation)"
            )
        try:
            wrapped = base64.b64decode(str(header["wrapped"]), validate=True)
            data_key = AESGCM(master.key).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], b"data-key:" + associated
            )
        except (InvalidTag, ValueError, KeyError, binascii.Error) as exc:
            raise DecryptionFailed("encrypted sample's data key failed authentication") from exc
        return data_key, body


def _header(master: MasterKey, data_key: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    wrapped = nonce + AESGCM(master.key).encrypt(nonce, data_key, b"data-key:" + associated)
    header = json.dumps(
        {"v": 1, "kid": master.key_id, "wrapped": base64.b64encode(wrapped).decode()},
        separators=(",", ":"),
    ).encode()
    return MAGIC + _HEADER_LENGTH.pack(len(header)) + header


def _parse(blob: bytes) -> tuple[dict[str, object], bytes]:
    start = len(MAGIC) + _HEADER_LENGTH.size
    if not blob.startswith(MAGIC) or len(blob) < start:
        raise DecryptionFailed("not an encrypted voicecache blob")
    (length,) = _HEADER_LENGTH.unpack_from(blob, len(MAGIC))
    try:
        header = json.loads(blob[start : start + length])
    except ValueError as exc:
        raise DecryptionFailed("encrypted blob has a corrupt header") from exc
    if not isinstance(header, dict) or header.get("v") != 1:
        raise DecryptionFailed("encrypted blob has an unknown header")
    body = blob[start + length :]
    if len(body) < _NONCE_BYTES + 16:
        raise DecryptionFailed("encrypted blob is truncated")
    return header, body
