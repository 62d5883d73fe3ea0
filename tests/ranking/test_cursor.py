import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranking.cursor import InvalidCursor, KeysetCursor


@given(st.datetimes(timezones=st.just(UTC)), st.uuids())
def test_cursor_round_trips(ts: datetime, clip_id: uuid.UUID) -> None:
    c = KeysetCursor(ts, clip_id)
    assert KeysetCursor.decode(c.encode()) == c


@pytest.mark.parametrize("bad", ["", "abc", "!!!", "eyJ0IjoxfQ", "eyJ0IjoiMjAyNi0wMS0wMVQwMDowMDowMCIsImlkIjoiMSJ9"])
def test_bad_cursors_are_refused_with_a_message(bad: str) -> None:
    with pytest.raises(InvalidCursor, match="not valid"):
        KeysetCursor.decode(bad)
