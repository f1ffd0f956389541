"""Response schemas shared by every route: the one error shape voicecache answers with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    """Every error response: `{"detail": "a readable sentence"}`."""

    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting `codes` as `ErrorOut`."""
    return {code: {"model": ErrorOut} for code in codes}


# What any endpoint may answer before or instead of its own work: bad input (400/422), keys
# and scopes (401/403), slow or oversized bodies (408/413) and rate limits (429).
COMMON_ERRORS = error_responses(400, 401, 403, 408, 413, 422, 429)
