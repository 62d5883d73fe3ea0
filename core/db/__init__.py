"""The SQL store: SQLite by default, PostgreSQL when DATABASE_URL says so."""

from core.db.engine import make_engine, make_sessionmaker, migrate, session_scope

__all__ = ["make_engine", "make_sessionmaker", "migrate", "session_scope"]
