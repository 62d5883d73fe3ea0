"""Shared fixtures: a real Tansu broker and real databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import running_broker

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session", autouse=True)
def _provenance_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Development signing keys for the whole run, outside the checkout (Settings reads
    PROVENANCE__DIR from the environment; so do the stacks the integration tests start)."""
    previous = os.environ.get("PROVENANCE__DIR")
    os.environ["PROVENANCE__DIR"] = str(tmp_path_factory.mktemp("provenance") / "keys")
    yield
    if previous is None:
        os.environ.pop("PROVENANCE__DIR", None)
    else:
        os.environ["PROVENANCE__DIR"] = previous


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker for the session (tests that need the log to themselves start their own)."""
    yield from running_broker(tmp_path_factory.mktemp("broker") / "tansu.log")


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(
            PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {e}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"clipstream_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'clipstream.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Runs a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'clipstream.db'}"
    else:
        yield request.getfixturevalue("pg_url")
