"""The one way HTTP code reaches the process's parts: `services_of(scope)`.

The app's lifespan builds a `Services` (see `bootstrap.py`) and keeps it as
`app.state.services`; Starlette puts the app in every request's scope, so raw ASGI middleware
and FastAPI dependencies read the same typed object, and nothing else looks into `app.state`.
"""

from __future__ import annotations

from typing import cast

from starlette.types import Scope

from voicecache.bootstrap import Services


def services_of(scope: Scope) -> Services:
    """The `Services` of the app serving this request (set by the lifespan)."""
    return cast(Services, scope["app"].state.services)
