from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.auth import issue_token
from api.deps import SessionDep, SettingsDep
from api.problems import Problem
from api.schemas import UserCreate, UserCreated, UserPublic, validate_handle
from core.db.models import User
from core.errors import ConflictError, NotFoundError

router = APIRouter(prefix="/v1/users", tags=["users"])


def user_public(user: User) -> UserPublic:
    return UserPublic(id=user.id, handle=user.handle, display_name=user.display_name, created_at=user.created_at)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated,
    responses={
        409: {"model": Problem, "description": "Handle taken"},
        422: {"model": Problem, "description": "Invalid handle or name"},
    },
)
def create_user(body: UserCreate, session: SessionDep, settings: SettingsDep) -> UserCreated:
    """Create a user with a unique @handle and get a bearer token (shown once).

    Anyone may call this. Handles are unique case-insensitively.
    """
    user = User(handle=body.handle, handle_key=body.handle.lower(), display_name=body.display_name)
    session.add(user)
    try:
        session.flush()
        token = issue_token(session, user.id, settings.secret_key.get_secret_value())
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(f"the handle @{body.handle} is taken") from e
    return UserCreated(user=user_public(user), token=token)


@router.get("/{handle}", response_model=UserPublic, responses={404: {"model": Problem}})
def get_user(handle: str, session: SessionDep) -> UserPublic:
    """A user's public profile by @handle (anyone may call this)."""
    try:
        key = validate_handle(handle).lower()
    except ValueError as e:
        raise NotFoundError(f"no user @{handle.removeprefix('@')}") from e
    user = session.scalar(select(User).where(User.handle_key == key))
    if user is None:
        raise NotFoundError(f"no user @{handle.removeprefix('@')}")
    return user_public(user)
