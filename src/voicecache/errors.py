"""The one exception tree of voicecache. Each error knows its HTTP status, so the API maps the
whole tree to responses in one place (`api.py`) and the CLI prints `detail` as one line.

    VoicecacheError
    ├── InvalidRequest            400/422  bad input: text, voice, emotion, speed, format…
    │   ├── UnknownVoice          422
    │   └── UnknownEmotion        422
    ├── NotFound                  404
    ├── Unauthorized              401
    ├── Forbidden                 403
    ├── PayloadTooLarge           413
    ├── RateLimited               429      carries retry_after
    ├── EngineError               502      the engine answered badly (5xx, garbage audio)
    │   ├── EngineUnavailable     503      circuit open, queue full, engine unreachable
    │   └── EngineTimeout         504
    ├── StorageError              500-free: tiers swallow and count these; never reach a client
    └── ConfigError                        bad settings at start-up (CLI exit code 2)
"""

from __future__ import annotations


class VoicecacheError(Exception):
    """Root of every error voicecache raises on purpose."""

    status_code: int = 500
    retry_after: float | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(VoicecacheError):
    status_code = 422


class UnknownVoice(InvalidRequest):
    pass


class UnknownEmotion(InvalidRequest):
    pass


class NotFound(VoicecacheError):
    status_code = 404


class Unauthorized(VoicecacheError):
    status_code = 401


class Forbidden(VoicecacheError):
    status_code = 403


class PayloadTooLarge(VoicecacheError):
    status_code = 413


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


class StorageError(VoicecacheError):
    """A cache tier failed; the tiered cache counts it and carries on without that tier."""


class ConfigError(VoicecacheError):
    """Settings that cannot work (raised at start-up)."""
