"""FastAPI dependencies as Annotated aliases; tests swap them via dependency_overrides."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import user_for_token
from api.problems import ApiError
from core.db.models import User
from core.media import LocalMediaStore
from core.outbox import OutboxRelay
from core.settings import Settings
from moderation.prompt_policy import PromptPolicy


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def get_media(request: Request) -> LocalMediaStore:
    return request.app.state.media  # type: ignore[no-any-return]


def get_policy(request: Request) -> PromptPolicy:
    return request.app.state.prompt_policy  # type: ignore[no-any-return]


def get_relay(request: Request) -> OutboxRelay | None:
    return request.app.state.relay  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
MediaDep = Annotated[LocalMediaStore, Depends(get_media)]
PolicyDep = Annotated[PromptPolicy, Depends(get_policy)]
RelayDep = Annotated[OutboxRelay | None, Depends(get_relay)]

_bearer = HTTPBearer(auto_error=False, description="Token from POST /v1/users")


def get_current_user(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise ApiError(
            401,
            "unauthenticated",
            "Unauthorized",
            "this endpoint needs an Authorization: Bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = user_for_token(session, credentials.credentials, settings.secret_key.get_secret_value())
    if user is None:
        raise ApiError(
            401,
            "invalid-token",
            "Unauthorized",
            "the bearer token is unknown, expired or revoked",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return user


CurrentUserDep = Annotated[User, Depends(get_current_user)]
