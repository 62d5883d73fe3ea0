"""DriverQuery returns what session.execute returns, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import String, Uuid, bindparam, literal, select, union_all
from sqlalchemy.orm import Session

from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.driver_query import DriverQuery, list_params
from core.db.models import ApiToken, User


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    migrate(db_url)
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    with session_scope(factory) as s:
        for i in range(5):
            uid = uuid.UUID(int=i + 1)
            s.add(User(id=uid, handle=f"u{i}", handle_key=f"u{i}", handle_skeleton=f"u{i}", display_name=f"U{i}"))
            s.flush()
            expires = None if i == 0 else now + timedelta(hours=i)
            s.add(ApiToken(token_hash=f"h{i}", user_id=uid, expires_at=expires))
    with factory() as s:
        yield s
    engine.dispose()


def by_ids(n: int) -> object:
    return (
        select(User.id, User.handle, ApiToken.expires_at, literal("x", String).label("tag"))
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(User.id.in_(list_params("ids", n, Uuid)))
        .order_by(User.handle)
    )


@pytest.mark.parametrize("n", [1, 3, 5])
def test_rows_match_session_execute_whatever_the_list_length(session: Session, n: int) -> None:
    ids = [uuid.UUID(int=i + 1) for i in range(n)] + [uuid.UUID(int=999)]  # one matches nothing
    expected = [
        tuple(r)
        for r in session.execute(
            select(User.id, User.handle, ApiToken.expires_at, literal("x", String))
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(User.id.in_(ids))
            .order_by(User.handle)
        )
    ]
    got = DriverQuery(by_ids, listed="ids").rows(session.connection(), {"ids": ids})
    assert got == expected
    assert len(got) == n
    assert all(isinstance(r[0], uuid.UUID) for r in got), "UUID columns come back converted"
    assert got[0][2] is None and all(r[2].tzinfo is not None for r in got[1:]), "UTC datetimes, as the model reads"


def test_an_empty_list_matches_nothing(session: Session) -> None:
    assert DriverQuery(by_ids, listed="ids").rows(session.connection(), {"ids": []}) == []


def test_raw_columns_compare_with_driver_values(session: Session) -> None:
    query = DriverQuery(by_ids, listed="ids", raw=(0,))
    conn = session.connection()
    ids = [uuid.UUID(int=2), uuid.UUID(int=4)]
    rows = {r[0]: r for r in query.rows(conn, {"ids": ids})}
    assert sorted(r[1] for r in rows.values()) == ["u1", "u3"]
    for key in query.driver_values(conn, "ids", ids):
        assert key in rows
    assert query.driver_values(conn, "ids", [uuid.UUID(int=3)])[0] not in rows


def test_named_parameters_and_literals_in_a_union(session: Session) -> None:
    uid = bindparam("uid", type_=Uuid)
    stmt = union_all(
        select(literal("user"), User.handle).where(User.id == uid),
        select(literal("token"), ApiToken.token_hash).where(ApiToken.user_id == uid),
    )
    params = {"uid": uuid.UUID(int=3)}
    expected = sorted(tuple(r) for r in session.execute(stmt, params))
    got = sorted(DriverQuery(lambda _: stmt).rows(session.connection(), params))
    assert got == expected == [("token", "h2"), ("user", "u2")]


def test_it_reads_inside_the_sessions_transaction(session: Session) -> None:
    """The session's own uncommitted writes are visible: same connection, same transaction."""
    uid = uuid.UUID(int=77)
    session.add(User(id=uid, handle="new", handle_key="new", handle_skeleton="new", display_name="New"))
    session.flush()
    query = DriverQuery(lambda _: select(User.handle).where(User.id == bindparam("uid", type_=Uuid)))
    assert query.rows(session.connection(), {"uid": uid}) == [("new",)]
    session.rollback()
    assert query.rows(session.connection(), {"uid": uid}) == []
