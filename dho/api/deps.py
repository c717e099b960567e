"""Request dependencies: the runtime, sessions, and bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from dho.runtime import Runtime


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with runtime(request).sessions() as db:
        yield db


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def read_access_allowed(request: Request) -> bool:
    """Whether the request may read patient data (the read API token, when one is set)."""
    expected = runtime(request).settings.read_api_token
    if expected is None:
        return True
    given = bearer_token(request) or ""
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def admin_access_allowed(request: Request) -> bool:
    """Whether the request may change operational state (the admin token, else the read rule)."""
    expected = runtime(request).settings.admin_api_token
    if expected is None:
        return read_access_allowed(request)
    given = bearer_token(request) or ""
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())
