"""Migrations upgrade a database that already holds data, on both backends."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text

from core.cli import main as cli_main
from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import User


def test_upgrading_keeps_existing_users_and_gives_them_skeletons(db_url: str) -> None:
    migrate(db_url, "0001")
    engine = make_engine(db_url)
    uid = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (id, handle, handle_key, display_name, created_at) VALUES (:id, :h, :k, :n, :t)"),
            {
                "id": uid.hex if engine.dialect.name == "sqlite" else str(uid),
                "h": "Maya_Makes",
                "k": "maya_makes",
                "n": "Maya",
                "t": datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None),
            },
        )
    migrate(db_url)
    migrate(db_url)  # idempotent
    with session_scope(make_sessionmaker(engine)) as s:
        user = s.scalar(select(User).where(User.handle_key == "maya_makes"))
        assert user is not None and user.handle_skeleton == "mayamakes"
        assert user.role == "user" and user.bio == "" and user.password_hash is None
    engine.dispose()


def test_set_role_cli_bootstraps_an_admin(db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from core.settings import get_settings

    migrate(db_url)
    engine = make_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as s:
        s.add(User(handle="boss", handle_key="boss", handle_skeleton="boss", display_name="Boss"))
    monkeypatch.setenv("DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        assert cli_main(["set-role", "@Boss", "admin"]) == 0
        assert cli_main(["set-role", "nobody", "admin"]) == 1
    finally:
        get_settings.cache_clear()
    with session_scope(make_sessionmaker(engine)) as s:
        assert s.scalar(select(User.role).where(User.handle_key == "boss")) == "admin"
    engine.dispose()
