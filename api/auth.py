"""Passwords and bearer tokens.

Passwords are hashed with argon2id. Tokens are random, shown once, and stored only as
an HMAC keyed with SECRET_KEY, so a leaked database does not leak usable tokens; each
has an expiry and can be revoked (logout).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import String, bindparam, select
from sqlalchemy.orm import Session

from core.db.driver_query import DriverQuery
from core.db.models import ApiToken, User

TOKEN_PREFIX = "cs_"
ROLES = ("user", "reviewer", "admin")
_hasher = PasswordHasher()
# Verified against when the handle does not exist, so a login takes as long for an
# unknown handle as for a wrong password (no account enumeration by timing).
_DUMMY_HASH = _hasher.hash("not-a-real-password-but-a-constant")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        ok = _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok and user is not None and user.password_hash is not None


def hash_token(token: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), token.encode(), hashlib.sha256).hexdigest()


def issue_token(session: Session, user_id: uuid.UUID, pepper: str, ttl_s: int) -> tuple[str, datetime]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    session.add(ApiToken(token_hash=hash_token(token, pepper), user_id=user_id, expires_at=expires_at))
    return token, expires_at


#: Built once (with a bound parameter): every authenticated request runs it.
_TOKEN_USER = (
    select(ApiToken, User)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash", type_=String))
)


#: The same lookup for a caller that needs only the user's id (the feed, on every
#: request), run on the driver: no ORM objects.
_TOKEN_USER_ID = DriverQuery(
    lambda _: select(ApiToken.user_id, ApiToken.revoked_at, ApiToken.expires_at).where(
        ApiToken.token_hash == bindparam("token_hash", type_=String)
    )
)


def _well_formed(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and len(token) <= 200


def _live(revoked_at: datetime | None, expires_at: datetime | None) -> bool:
    return revoked_at is None and (expires_at is None or expires_at > datetime.now(UTC))


def token_user(session: Session, token: str, pepper: str) -> tuple[ApiToken, User] | None:
    """The live token row and its user, in one round trip (every authenticated request
    makes it); None when the token is unknown, revoked or expired."""
    if not _well_formed(token):
        return None
    found = session.execute(_TOKEN_USER, {"token_hash": hash_token(token, pepper)}).first()
    if found is None:
        return None
    row, user = found
    return (row, user) if _live(row.revoked_at, row.expires_at) else None


def token_user_id(session: Session, token: str, pepper: str) -> tuple[str, uuid.UUID] | None:
    """(token hash, user id) of a live token, as :func:`token_user` decides it, without
    loading the rows."""
    if not _well_formed(token):
        return None
    token_hash = hash_token(token, pepper)
    rows = _TOKEN_USER_ID.rows(session.connection(), {"token_hash": token_hash})
    if not rows:
        return None
    user_id, revoked_at, expires_at = rows[0]
    return (token_hash, user_id) if _live(revoked_at, expires_at) else None
