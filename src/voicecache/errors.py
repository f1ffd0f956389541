"""The one exception tree of voicecache. Every error it raises on purpose is defined here and
knows both its HTTP status (`status_code`) and its CLI exit code (`exit_code`), so the API maps
the whole tree to responses in one place (`http/errors.py`) and the CLI to exit codes in one
place (`cli/common.py`), printing `detail` as one readable line. (Under `/v1/` the API answers
every 422 as 400, OpenAI's status for an invalid request.)

    VoicecacheError                 status  exit
    ├── InvalidRequest               422     1    bad input: text, voice, emotion, speed…
    │   ├── UnknownVoice             422     1
    │   ├── UnknownEmotion           422     1
    │   ├── InvalidSample            422     1    an upload that is not usable audio
    │   ├── MalformedJson            400     1    a body that is not JSON at all
    │   └── InvalidFilter            400     2    a purge filter that cannot work
    ├── ScriptError                  422     2    a warm-up script file that cannot be read
    ├── NotFound                     404     1
    ├── Unauthorized                 401     1
    ├── Forbidden                    403     1
    ├── RequestTimeout               408     1    the body did not arrive in time
    ├── PayloadTooLarge              413     1
    ├── RangeNotSatisfiable          416     1
    ├── RateLimited                  429     1    carries retry_after
    ├── EngineError                  502     1    the engine answered badly (5xx, garbage)
    │   ├── EngineUnavailable        503     1    circuit open, queue full, unreachable
    │   └── EngineTimeout            504     1
    ├── ServerUnreachable            502     1    the CLI's --url server cannot be reached
    ├── KeysUnavailable              503     2    the keys file cannot be read: fail closed
    ├── EncryptionUnavailable        503     1    no master key: samples are never stored plain
    ├── DecryptionFailed             503     1    a sample blob failed authentication
    ├── StorageError                 500     1    tiers swallow and count these
    │   └── CircuitOpen              500     1    a backend skipped after repeated failures
    └── ConfigError                  500     2    settings that cannot work
"""

from __future__ import annotations


class VoicecacheError(Exception):
    """Root of every error voicecache raises on purpose."""

    status_code: int = 500
    exit_code: int = 1
    retry_after: float | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(VoicecacheError):
    """Bad input. `param` names the offending request field when it is known (`text`,
    `voice`, `speed`…, as the native API spells them); OpenAI-shaped answers report it."""

    status_code = 422
    param: str | None = None

    def __init__(self, detail: str, param: str | None = None) -> None:
        super().__init__(detail)
        if param is not None:
            self.param = param


class UnknownVoice(InvalidRequest):
    param = "voice"


class UnknownEmotion(InvalidRequest):
    param = "emotion"


class InvalidSample(InvalidRequest):
    """An upload that is not usable reference audio."""


class MalformedJson(InvalidRequest):
    status_code = 400


class InvalidFilter(InvalidRequest):
    """A purge filter that is missing, malformed or contradictory."""

    status_code = 400
    exit_code = 2


class ScriptError(VoicecacheError):
    """A warm-up script as a whole cannot be used (missing, unreadable, no `text` column…)."""

    status_code = 422
    exit_code = 2


class NotFound(VoicecacheError):
    status_code = 404


class Unauthorized(VoicecacheError):
    status_code = 401


class Forbidden(VoicecacheError):
    status_code = 403


class RequestTimeout(VoicecacheError):
    status_code = 408


class PayloadTooLarge(VoicecacheError):
    status_code = 413


class RangeNotSatisfiable(VoicecacheError):
    """The `Range` header asks for bytes outside the body."""

    status_code = 416


class RateLimited(VoicecacheError):
    status_code = 429

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class EngineError(VoicecacheError):
    """The upstream engine failed to produce usable audio.

    `retryable` says whether trying again may help (connection errors, timeouts, 5xx) or not
    (4xx, undecodable audio); `upstream_status` is the engine's HTTP status, if it sent one.
    The resilience wrapper (`engines/resilience.py`) decides on these two attributes alone.
    """

    status_code = 502

    def __init__(
        self, detail: str, *, retryable: bool = False, upstream_status: int | None = None
    ) -> None:
        super().__init__(detail)
        self.retryable = retryable
        self.upstream_status = upstream_status


class EngineUnavailable(EngineError):
    status_code = 503

    def __init__(
        self,
        detail: str,
        retry_after: float | None = None,
        *,
        retryable: bool = False,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(detail, retryable=retryable, upstream_status=upstream_status)
        self.retry_after = retry_after


class EngineTimeout(EngineError):
    status_code = 504

    def __init__(self, detail: str, *, retryable: bool = True) -> None:
        super().__init__(detail, retryable=retryable)


class ServerUnreachable(VoicecacheError):
    """The server named by a CLI command's `--url` cannot be reached at all."""

    status_code = 502


class KeysUnavailable(VoicecacheError):
    """The keys file cannot be read: refuse requests (fail closed) rather than open up."""

    status_code = 503
    exit_code = 2


class EncryptionUnavailable(VoicecacheError):
    """No master key is configured, so samples cannot be stored (never in plain text)."""

    status_code = 503


class DecryptionFailed(VoicecacheError):
    """A stored blob failed authentication: tampered, moved, or wrapped by an unknown key."""

    status_code = 503


class StorageError(VoicecacheError):
    """A cache tier failed; the tiered cache counts it and carries on without that tier."""


class CircuitOpen(StorageError):
    """A backend is being skipped after repeated failures (raised only where a caller must
    know)."""


class ConfigError(VoicecacheError):
    """Settings that cannot work (raised at start-up)."""

    exit_code = 2
