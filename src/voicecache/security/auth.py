"""API keys, tenants and scopes.

Keys live in a JSON file (`keys_file`, default `data_dir/keys.json`) that holds only SHA-256
hashes of the keys, never the keys themselves; keys carry 256 random bits, so a fast hash is
enough. Each key has an id (printed in logs and used to revoke it), a tenant and scopes:
`speak` (synthesis and stored audio), `voices` (uploading and changing voices) and `admin`
(`/admin/*`, `/metrics`, changing other tenants' voices).

With no keys at all, voicecache is open (and `serving.check_bind_is_safe` keeps it on
loopback); once any key exists, every endpoint but `/healthz` needs one. The file is re-read
when it changes (checked at most every `recheck_seconds`), so `voicecache keys add` and
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

from voicecache.errors import ConfigError, Forbidden, Unauthorized, VoicecacheError
from voicecache.fileio import atomic_write
from voicecache.settings import Settings

log = logging.getLogger(__name__)

SCOPES = ("speak", "voices", "admin")
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KEY_PREFIX = "vck_"
ANY_KEY = ""  # required_scope's answer for endpoints that need a key but no scope


class KeysUnavailable(VoicecacheError):
    """The keys file cannot be read: refuse requests (fail closed) rather than open up."""

    status_code = 503


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its tenant and its scopes (anonymous: all scopes)."""

    key_id: str | None
    tenant: str | None
    scopes: frozenset[str]

    @property
    def anonymous(self) -> bool:
        return self.key_id is None

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


def keys_path(settings: Settings) -> Path:
    """Where the keys file is: `keys_file`, else `data_dir/keys.json`."""
    return settings.keys_file or settings.data_dir / "keys.json"


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
        self.generation = 0  # bumped whenever the set of keys changes

    # -- reading (servers) -----------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the file if it changed; cheap (one stat, at most every recheck_seconds)."""
        now = self.clock()
        if now - self._checked < self.recheck_seconds:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._by_hash:
                self.generation += 1
            self._stamp, self._by_hash = None, {}
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

    @property
    def configured(self) -> bool:
        """Whether any key exists (then every endpoint but /healthz needs one)."""
        self.refresh()
        return bool(self._by_hash)

    def lookup(self, token: str) -> ApiKey | None:
        self.refresh()
        return self._by_hash.get(hash_key(token))

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
        self._checked = float("-inf")


# Which scope each endpoint needs: first matching (methods, path prefix) wins. None: no key
# needed at all; ANY_KEY: any valid key. Unlisted paths need any valid key.
SCOPE_TABLE: list[tuple[frozenset[str] | None, str, str | None]] = [
    (None, "/healthz", None),
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
    """Bearer-key authentication and scope checks over a `KeyStore`."""

    _CACHE = 10_000  # remembered keys (a key is hashed once, not on every request)

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._principals: dict[str, Principal] = {}
        self._generation = -1

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an `Authorization` header value; `ANONYMOUS` while no keys
        exist. Raises `Unauthorized` for a missing, malformed or unknown key."""
        if not self.keys.configured:
            return ANONYMOUS
        if self._generation != self.keys.generation:
            self._principals.clear()
            self._generation = self.keys.generation
        if authorization is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        found = self._principals.get(authorization)
        if found is not None:
            return found
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("use 'Authorization: Bearer <key>'")
        key = self.keys.lookup(token)
        if key is None:
            raise Unauthorized("invalid API key")
        principal = Principal(key.id, key.tenant, frozenset(key.scopes))
        if len(self._principals) < self._CACHE:
            self._principals[authorization] = principal
        return principal

    def authorize(self, principal: Principal, scope: str) -> None:
        """Raise `Forbidden` unless `principal` has `scope`."""
        if scope != ANY_KEY and scope not in principal.scopes:
            raise Forbidden(f"this key lacks the {scope!r} scope")

    def check(self, method: str, path: str, authorization: str | None) -> Principal:
        """Authenticate and authorize one request (no rate limits: see `RateLimits`)."""
        return self.check_scope(required_scope(method, path), authorization)

    def check_scope(self, scope: str | None, authorization: str | None) -> Principal:
        """Like `check`, for a scope already looked up with `required_scope`."""
        if scope is None:
            return _PUBLIC  # never touches the keys file: /healthz answers even if it breaks
        principal = self.authenticate(authorization)
        self.authorize(principal, scope)
        return principal


# The caller of a public endpoint (/healthz) when keys exist: no tenant, no scopes.
_PUBLIC = Principal(None, None, frozenset())
