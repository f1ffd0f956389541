"""API keys, tenants and scopes.

Keys live in a JSON file (`keys_file`, default `data_dir/keys.json`) that holds only SHA-256
hashes of the keys, never the keys themselves; keys carry 256 random bits, so a fast hash is
enough. Each key has an id (printed in logs and used to revoke it), a tenant and scopes:
`speak` (synthesis and stored audio), `voices` (uploading and changing voices) and `admin`
(`/admin/*`, `/metrics`, changing other tenants' voices).

Once any key exists, every endpoint but `/healthz` needs one. With no keys, voicecache is open
only for a development server: on loopback, and only if no key has ever existed. Authentication
must never switch off at run time, so once keys have existed (remembered in a marker file
beside the keys file, `<keys file>.existed`, which survives revoking the last key and emptying
or deleting the keys file), or whenever the server listens beyond loopback, an empty or missing
keys file means every request is refused (401), unless `allow_anonymous` is set. The file is
re-read when it changes (checked at most every `recheck_seconds`), so `voicecache keys add` and
`keys revoke` take effect on running servers without a restart.

`authenticate(authorization_header)` and `required_scope(method, path)` are plain, cheap
functions so that the raw-ASGI fast lane checks exactly what the middleware checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicecache.bounded import ENTRY_OVERHEAD, BoundedDict
from voicecache.errors import ConfigError, Forbidden, KeysUnavailable, Unauthorized
from voicecache.fileio import atomic_write

log = logging.getLogger(__name__)

SCOPES = ("speak", "voices", "admin")
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KEY_PREFIX = "vck_"
ANY_KEY = ""  # required_scope's answer for endpoints that need a key but no scope
# Longer `Authorization` values are refused before any work (a key is ~60 characters).
MAX_AUTHORIZATION_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its tenant and its scopes (anonymous: all scopes)."""

    key_id: str | None
    tenant: str | None
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope == ANY_KEY or scope in self.scopes


ANONYMOUS = Principal(None, None, frozenset(SCOPES))

# The caller of the current request, for code below the HTTP layer that must charge it
# (the synthesized-characters rate limit). Set by the security middleware and the fast lane.
current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: its hash, never the key."""

    id: str
    sha256: str
    tenant: str
    scopes: tuple[str, ...]
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "tenant": self.tenant,
            "scopes": list(self.scopes),
            "created": self.created,
        }


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def existed_marker(path: Path) -> Path:
    """The file that records that keys have existed beside the keys file at `path`."""
    return path.with_name(path.name + ".existed")


class KeyStore:
    """The keys file: read on first use and whenever it changes on disk."""

    def __init__(
        self,
        path: Path,
        *,
        recheck_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._by_hash: dict[str, ApiKey] = {}
        self._existed = False  # whether keys have ever existed here (see the module docstring)
        self.generation = 0  # bumped whenever the set of keys changes
        self._unavailable: str | None = None  # why the last read failed, until one succeeds

    # -- reading (servers) -----------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the file if it changed; cheap (one stat, at most every recheck_seconds)."""
        now = self.clock()
        if now - self._checked < self.recheck_seconds:
            if self._unavailable is not None:
                # Still unreadable: fail closed until a read succeeds, not only on the first
                # request of each recheck interval.
                raise KeysUnavailable(self._unavailable)
            return
        self._checked = now
        try:
            self._reread()
        except KeysUnavailable as exc:
            self._unavailable = exc.detail
            raise
        self._unavailable = None

    def _reread(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._by_hash:
                self.generation += 1
            self._stamp, self._by_hash = None, {}
            self._note_existence()
            return
        except OSError as exc:
            raise KeysUnavailable(f"cannot read keys file {self.path}: {exc.strerror}") from exc
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            try:
                keys = self._read()
            except ConfigError as exc:
                if self._stamp is None and not self._by_hash:
                    raise KeysUnavailable(exc.detail) from exc
                # A half-edited file: keep serving with the keys we had.
                log.error("keeping the previous API keys: %s", exc.detail)
                return
            self._by_hash = {key.sha256: key for key in keys}
            self._stamp = stamp
            self.generation += 1
            self._note_existence()

    def _note_existence(self) -> None:
        """Remember (in memory and in the marker file) that keys exist or once existed."""
        marker = existed_marker(self.path)
        if self._by_hash:
            if not self._existed and not marker.exists():
                self._write_marker()
            self._existed = True
        elif not self._existed:
            self._existed = marker.exists()

    def _write_marker(self) -> None:
        note = {
            "keys_existed": True,
            "since": time.time(),
            "note": "voicecache refuses every request while the keys file is empty or missing "
            "(unless VOICECACHE_ALLOW_ANONYMOUS=1); delete this file together with the keys "
            "file to make a loopback server open again",
        }
        try:
            atomic_write(existed_marker(self.path), (json.dumps(note) + "\n").encode(), mode=0o600)
        except OSError as exc:  # a read-only directory: this process still remembers
            log.warning("cannot record that API keys exist (%s): %s", self.path, exc)

    @property
    def configured(self) -> bool:
        """Whether any key exists (then every endpoint but /healthz needs one)."""
        self.refresh()
        return bool(self._by_hash)

    @property
    def keys_existed(self) -> bool:
        """Whether keys exist or have existed (this process saw them, or the marker says so):
        then an empty keys file refuses every request instead of opening up."""
        self.refresh()
        return self._existed

    def lookup(self, token: str) -> ApiKey | None:
        self.refresh()
        return self._by_hash.get(hash_key(token))

    def lookup_hash(self, sha256: str) -> ApiKey | None:
        """The key whose token hashes (SHA-256, hex) to `sha256`."""
        self.refresh()
        return self._by_hash.get(sha256)

    def keys(self) -> list[ApiKey]:
        return sorted(self._read(), key=lambda key: (key.created, key.id))

    def _read(self) -> list[ApiKey]:
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"keys file {self.path} is unreadable: {exc}") from exc
        try:
            return [
                ApiKey(
                    id=str(item["id"]),
                    sha256=str(item["sha256"]),
                    tenant=str(item["tenant"]),
                    scopes=tuple(str(scope) for scope in item["scopes"]),
                    created=float(item.get("created", 0)),
                )
                for item in raw.get("keys", [])
            ]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"keys file {self.path} is malformed: {exc}") from exc

    # -- writing (the CLI) ---------------------------------------------------------------------

    def add(self, tenant: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
        """Create a key; returns the key (shown once, never stored) and its record."""
        if not TENANT_PATTERN.match(tenant):
            raise ConfigError("tenant must be 1-64 letters, digits, '_', '.' or '-'")
        wanted = tuple(dict.fromkeys(scopes))
        if not wanted:
            raise ConfigError(f"give at least one --scope ({', '.join(SCOPES)})")
        unknown = [scope for scope in wanted if scope not in SCOPES]
        if unknown:
            raise ConfigError(f"unknown scope {unknown[0]!r}; scopes: {', '.join(SCOPES)}")
        key_id = secrets.token_hex(4)
        token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, hash_key(token), tenant, wanted, time.time())
        self._write([*self.keys(), record])
        return token, record

    def revoke(self, key_id: str) -> ApiKey | None:
        """Remove a key by id; returns it, or None when there is no such key."""
        keys = self.keys()
        found = next((key for key in keys if key.id == key_id), None)
        if found is not None:
            self._write([key for key in keys if key.id != key_id])
        return found

    def _write(self, keys: list[ApiKey]) -> None:
        data = json.dumps({"version": 1, "keys": [key.to_json() for key in keys]}, indent=2)
        atomic_write(self.path, (data + "\n").encode(), mode=0o600)
        if keys and not existed_marker(self.path).exists():
            self._write_marker()
        self._checked = float("-inf")


# Which scope each endpoint needs: first matching (methods, path prefix) wins. None: no key
# needed at all; ANY_KEY: any valid key. Unlisted paths need any valid key.
SCOPE_TABLE: list[tuple[frozenset[str] | None, str, str | None]] = [
    (None, "/healthz", None),
    (None, "/readyz", None),
    (frozenset({"POST"}), "/tts", "speak"),
    (frozenset({"POST"}), "/v1/audio/speech", "speak"),
    (frozenset({"GET", "HEAD"}), "/v1/audio/", "speak"),
    (frozenset({"POST", "PUT", "PATCH", "DELETE"}), "/v1/voices", "voices"),
    (frozenset({"GET", "HEAD"}), "/v1/voices", ANY_KEY),
    (None, "/admin", "admin"),
    (None, "/metrics", "admin"),
    (None, "/dashboard/data", "admin"),
    (frozenset({"GET", "HEAD"}), "/dashboard", None),  # the page holds no data itself
]


# The hot endpoints, answered by one dict lookup.
_EXACT: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/"): None,  # a redirect to the dashboard page (never a prefix: it matches all)
    ("POST", "/tts"): "speak",
    ("POST", "/v1/audio/speech"): "speak",
}


def required_scope(method: str, path: str) -> str | None:
    """The scope `method path` needs (None: public; `ANY_KEY`: any valid key)."""
    exact = _EXACT.get((method, path), _EXACT)
    if exact is not _EXACT:
        return exact  # type: ignore[return-value]
    for methods, prefix, scope in SCOPE_TABLE:
        if (methods is None or method in methods) and (
            path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")
        ):
            return scope
    return ANY_KEY


class Authenticator:
    """Bearer-key authentication and scope checks over a `KeyStore`.

    `allow_anonymous` and `public` (the server listens beyond loopback) decide what an empty
    keys file means: open only when anonymous access is allowed, or on loopback while no key
    has ever existed; else every request is refused.

    Recognized keys are remembered by the SHA-256 digest of the token (never by the raw header,
    which a caller could pad into endless distinct values): at most `max_remembered` entries of
    a fixed size (a 32-byte digest and a shared principal), and only keys in the keys file ever
    get in, so callers cannot grow it.
    """

    # One remembered key: a 32-byte digest as bytes (65) and a principal (72; its tenant
    # string and scope set are mostly shared), plus what the BoundedDict spends per entry.
    _ENTRY_OBJECTS = 65 + 72
    ENTRY_BYTES = _ENTRY_OBJECTS + ENTRY_OVERHEAD

    def __init__(
        self,
        keys: KeyStore,
        *,
        allow_anonymous: bool = False,
        public: bool = False,
        max_remembered: int = 10_000,
    ) -> None:
        self.keys = keys
        self.allow_anonymous = allow_anonymous
        self.public = public
        self.max_remembered = max_remembered
        self._principals: BoundedDict[bytes, Principal] = BoundedDict(
            max_remembered,
            max_remembered * self.ENTRY_BYTES,
            lambda _digest, _principal: self._ENTRY_OBJECTS,
        )
        self._generation = -1

    @property
    def remembered(self) -> int:
        """Recognized keys remembered now."""
        return len(self._principals)

    @property
    def remembered_bytes(self) -> int:
        """The memory the remembered keys take, as counted against the bound."""
        return self._principals.bytes

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an `Authorization` header value; `ANONYMOUS` while voicecache is
        open (see the class docstring). Raises `Unauthorized` for a missing, malformed or
        unknown key, and for every request while no key exists on a closed server."""
        keys = self.keys
        if not keys.configured:
            if self.allow_anonymous:
                return ANONYMOUS
            if self.public:
                raise Unauthorized(
                    "no API keys exist and this server listens beyond loopback, so every "
                    "request is refused: add one with `voicecache keys add`, or set "
                    "VOICECACHE_ALLOW_ANONYMOUS=1"
                )
            if keys.keys_existed:
                raise Unauthorized(
                    "no API keys exist any more, so every request is refused: add one with "
                    "`voicecache keys add`, or set VOICECACHE_ALLOW_ANONYMOUS=1"
                )
            return ANONYMOUS
        if self._generation != keys.generation:
            self._principals.clear()
            self._generation = keys.generation
        if authorization is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        if len(authorization) > MAX_AUTHORIZATION_BYTES:
            raise Unauthorized(f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes")
        if authorization.startswith("Bearer "):  # the usual spelling: skip the general parse
            token = authorization[7:].strip()
        else:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
        if not token:
            raise Unauthorized("use 'Authorization: Bearer <key>'")
        digest = hashlib.sha256(token.encode()).digest()
        found = self._principals.get(digest)
        if found is not None:
            return found
        key = keys.lookup_hash(digest.hex())
        if key is None:
            raise Unauthorized("invalid API key")
        principal = Principal(key.id, key.tenant, frozenset(key.scopes))
        self._principals[digest] = principal  # the oldest goes first past the bound
        return principal

    def authorize(self, principal: Principal, scope: str) -> None:
        """Raise `Forbidden` unless `principal` has `scope`."""
        if scope != ANY_KEY and scope not in principal.scopes:
            raise Forbidden(f"this key lacks the {scope!r} scope")

    def check_scope(self, scope: str | None, authorization: str | None) -> Principal:
        """Authenticate and authorize one request needing `scope` (from `required_scope`; no
        rate limits: see `RateLimits`)."""
        if scope is None:
            return _PUBLIC  # never touches the keys file: /healthz answers even if it breaks
        principal = self.authenticate(authorization)
        self.authorize(principal, scope)
        return principal


# The caller of a public endpoint (/healthz) when keys exist: no tenant, no scopes.
_PUBLIC = Principal(None, None, frozenset())
