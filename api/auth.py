"""Bearer tokens: random, shown once, stored only as a keyed hash.

This is the thin first slice of accounts (no passwords or roles yet); the token
table already carries expiry and revocation so sign-in and logout can build on it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from core.db.models import ApiToken, User

TOKEN_PREFIX = "cs_"


def hash_token(token: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), token.encode(), hashlib.sha256).hexdigest()


def issue_token(session: Session, user_id: uuid.UUID, pepper: str) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=hash_token(token, pepper), user_id=user_id))
    return token


def user_for_token(session: Session, token: str, pepper: str) -> User | None:
    row = session.get(ApiToken, hash_token(token, pepper))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        return None
    return session.get(User, row.user_id)
