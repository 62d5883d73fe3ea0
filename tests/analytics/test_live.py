"""Reading a live topic into polars (analytics.read_live), on a broker of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import polars as pl
import pytest

from analytics import read_live
from core.errors import BrokerError
from core.records import Interaction
from core.topics import INTERACTIONS
from tests.support.stack import produce, running_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_broker(tmp_path_factory.mktemp("live") / "tansu.log")


def test_a_live_topic_reads_to_its_end_with_typed_columns(bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    recs = [Interaction(user_id=uuid.uuid4(), clip_id=uuid.uuid4(), kind="view", watch_ms=n) for n in range(25)]
    produce(bootstrap, INTERACTIONS.name, [(str(x.user_id).encode(), x.to_bytes()) for x in recs])
    produce(bootstrap, INTERACTIONS.name, [(b"k", b"{not json")])
    df = read_live(bootstrap, INTERACTIONS.name)
    assert sorted(df["watch_ms"].to_list()) == list(range(25)) and df.schema["watch_ms"] == pl.Int64
    assert df.schema["occurred_at"] == pl.Datetime("us", "UTC")
    assert "1 record(s) that do not decode left out" in caplog.text
    raw = read_live(bootstrap, INTERACTIONS.dlq)  # a raw topic: bytes and headers
    assert raw.height == 0 and raw.schema["value"] == pl.Binary


def test_an_unknown_topic_is_a_clear_error(bootstrap: str) -> None:
    with pytest.raises(BrokerError, match="topic 'nope' does not exist"):
        read_live(bootstrap, "nope", timeout_s=5)


def test_it_reads_from_inside_a_running_event_loop_too(bootstrap: str) -> None:
    """A Jupyter kernel runs one: the read goes to a thread of its own."""

    async def from_a_loop() -> int:
        return read_live(bootstrap, INTERACTIONS.name).height

    assert asyncio.run(from_a_loop()) == read_live(bootstrap, INTERACTIONS.name).height > 0
