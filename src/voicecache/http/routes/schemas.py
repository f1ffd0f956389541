"""Response schemas shared by every route: the error shapes voicecache answers with.

Native routes answer `ErrorOut`; every path under `/v1/` answers `OpenAIErrorOut` instead,
with 400 where native routes say 422 (`http/errors.py` decides at run time,
`openai_error_schemas` makes the OpenAPI document say the same).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from voicecache.http.errors import is_openai_path


class ErrorOut(BaseModel):
    """Every error response of a native route: `{"detail": "a readable sentence"}`."""

    detail: str


class OpenAIError(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(BaseModel):
    """Every error response under `/v1/`: `{"error": {"message", "type", "param", "code"}}`."""

    error: OpenAIError


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting `codes` as `ErrorOut`."""
    return {code: {"model": ErrorOut} for code in codes}


# What any endpoint may answer before or instead of its own work: bad input (400/422), keys
# and scopes (401/403), slow or oversized bodies (408/413) and rate limits (429).
COMMON_ERRORS = error_responses(400, 401, 403, 408, 413, 422, 429)

_OPENAI_REF = {"$ref": "#/components/schemas/OpenAIErrorOut"}


def openai_error_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the error responses of `/v1/` paths as `OpenAIErrorOut` (in place)."""
    for path, operations in schema.get("paths", {}).items():
        if not is_openai_path(path):
            continue
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                invalid = responses.pop("422")
                responses.setdefault("400", invalid)
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = {"application/json": {"schema": _OPENAI_REF}}
    found = OpenAIErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.setdefault("components", {}).setdefault("schemas", {})
    definitions.update(found.pop("$defs", {}))
    definitions["OpenAIErrorOut"] = found
    return schema
