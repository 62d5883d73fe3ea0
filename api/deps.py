"""FastAPI dependencies as Annotated aliases; tests swap them via dependency_overrides."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import token_user, token_user_id
from api.events import InteractionPublisher
from api.problems import ApiError
from api.ratelimit import DEFAULT_LIMITS, RateLimiter, enforce
from core.db.models import User
from core.media import LocalMediaStore
from core.outbox import OutboxRelay
from core.settings import Settings
from moderation.text_moderation import TextModerator


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


async def get_media(request: Request) -> LocalMediaStore:
    return request.app.state.media  # type: ignore[no-any-return]


async def get_policy(request: Request) -> TextModerator:
    return request.app.state.prompt_policy  # type: ignore[no-any-return]


async def get_relay(request: Request) -> OutboxRelay | None:
    return request.app.state.relay  # type: ignore[no-any-return]


async def get_interactions(request: Request) -> InteractionPublisher:
    return request.app.state.interactions  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
InteractionsDep = Annotated[InteractionPublisher, Depends(get_interactions)]
SessionDep = Annotated[Session, Depends(get_session)]
MediaDep = Annotated[LocalMediaStore, Depends(get_media)]
PolicyDep = Annotated[TextModerator, Depends(get_policy)]
RelayDep = Annotated[OutboxRelay | None, Depends(get_relay)]

_bearer = HTTPBearer(auto_error=False, description="Token from POST /v1/auth/signup or /v1/auth/login")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def user_from(
    request: Request, session: Session, settings: Settings, credentials: HTTPAuthorizationCredentials
) -> User:
    found = token_user(session, credentials.credentials, settings.secret_key.get_secret_value())
    if found is None:
        raise _invalid_token()
    row, user = found
    request.state.token_hash = row.token_hash
    return user


def user_id_from(
    request: Request, session: Session, settings: Settings, credentials: HTTPAuthorizationCredentials
) -> uuid.UUID:
    """:func:`user_from` for a handler that needs only the caller's id (the feed)."""
    found = token_user_id(session, credentials.credentials, settings.secret_key.get_secret_value())
    if found is None:
        raise _invalid_token()
    request.state.token_hash, user_id = found
    return user_id


def _invalid_token() -> ApiError:
    return ApiError(
        401,
        "invalid-token",
        "Unauthorized",
        "the bearer token is unknown, expired or revoked; log in again",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def get_current_user(request: Request, session: SessionDep, settings: SettingsDep, credentials: BearerDep) -> User:
    if credentials is None:
        raise ApiError(
            401,
            "unauthenticated",
            "Unauthorized",
            "this endpoint needs an Authorization: Bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user_from(request, session, settings, credentials)


def get_optional_user(
    request: Request, session: SessionDep, settings: SettingsDep, credentials: BearerDep
) -> User | None:
    """Anonymous callers are welcome; a token, if sent, must be valid."""
    return None if credentials is None else user_from(request, session, settings, credentials)


CurrentUserDep = Annotated[User, Depends(get_current_user)]
OptionalUserDep = Annotated[User | None, Depends(get_optional_user)]


def require_role(*roles: str) -> Callable[[User], User]:
    def check(user: CurrentUserDep) -> User:
        if user.role not in roles:
            raise ApiError(403, "forbidden", "Forbidden", f"this needs the {' or '.join(roles)} role")
        return user

    return check


AdminDep = Annotated[User, Depends(require_role("admin"))]


def _limiter(request: Request) -> RateLimiter | None:
    settings: Settings = request.app.state.settings
    return request.app.state.rate_limiter if settings.api.rate_limits_enabled else None


def user_rate_limit(name: str) -> Callable[..., None]:
    """Dependency: the caller's account and address each get a bucket for ``name``;
    an exhausted one answers 429 with Retry-After."""

    def check(request: Request, user: CurrentUserDep) -> None:
        limiter = _limiter(request)
        if limiter is not None:
            enforce(
                limiter, DEFAULT_LIMITS[name], user_id=str(user.id), ip=request.client.host if request.client else None
            )

    check.rate_limit = name  # type: ignore[attr-defined]  # read by api.problems.document (429 in OpenAPI)
    return check


def ip_rate_limit(name: str) -> Callable[..., None]:
    """Dependency for anonymous endpoints (sign-up, login): the address's bucket only."""

    def check(request: Request) -> None:
        limiter = _limiter(request)
        if limiter is not None and request.client is not None:
            enforce(limiter, DEFAULT_LIMITS[name], user_id=None, ip=request.client.host)

    check.rate_limit = name  # type: ignore[attr-defined]
    return check
