"""The lake sink on a real broker (Tansu, one of its own: the sink archives every
topic, so the test knows everything in them): every record archived exactly once,
across a `kill -9` that loses the rows waiting for their file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from core.lake import Lake
from core.records import Interaction
from core.topics import INTERACTIONS, SOCIAL_EVENTS
from streams.errors import MAX_DLQ_VALUE_BYTES
from tests.support.stack import produce, read_topic, running_broker, wait_for

pytestmark = pytest.mark.integration

POISON = b"\x00 not an interaction"


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_broker(tmp_path_factory.mktemp("lake-broker") / "tansu.log")


def _sink(bootstrap: str, root: Path, log: Path, roll_rows: int, roll_seconds: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA__", "LAKE__", "WORKERS__"))}
    env.update(
        KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        LAKE__ROOT=str(root),
        LAKE__ROLL_ROWS=str(roll_rows),
        LAKE__ROLL_SECONDS=str(roll_seconds),
        WORKERS__DATA_DIR=str(root.parent / "workers"),
        ENVIRONMENT="test",
        LOG_LEVEL="INFO",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "lake", "sink"],
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _interactions(n: int) -> list[Interaction]:
    users = [uuid.uuid4() for _ in range(40)]
    return [Interaction(user_id=users[i % 40], clip_id=uuid.uuid4(), kind="view", watch_ms=i) for i in range(n)]


def _send(bootstrap: str, recs: list[Interaction]) -> None:
    produce(bootstrap, INTERACTIONS.name, [(str(x.user_id).encode(), x.to_bytes()) for x in recs])


def _archived(lake: Lake, topic: str) -> pl.DataFrame:
    return lake.scan(topic).collect()


def test_every_record_is_archived_once_across_a_kill_mid_file(own_broker: str, tmp_path: Path) -> None:
    root, log = tmp_path / "lake", tmp_path / "sink.log"
    lake = Lake(root)
    first = _interactions(240)
    _send(own_broker, first)
    produce(own_broker, INTERACTIONS.name, [(b"poison", POISON)], partition=0)
    produce(own_broker, SOCIAL_EVENTS.name, [(b"huge", b"\xff" * 1_500_000)])  # past what a DLQ message may hold
    # Files of 5 rows, and no file by time: each partition keeps its last few rows in
    # memory, which the kill loses.
    sink = _sink(own_broker, root, log, roll_rows=5, roll_seconds=3600)
    try:

        def settled() -> int | None:
            n = len(_archived(lake, INTERACTIONS.name))
            time.sleep(1.5)
            return n if n >= 180 and n == len(_archived(lake, INTERACTIONS.name)) else None

        before_kill = wait_for(settled, 90, "the sink to write its 5-row files")
        assert before_kill < len(first), "some rows were still waiting for their file"
        os.killpg(sink.pid, signal.SIGKILL)
        sink.wait(10)
    finally:
        if sink.poll() is None:
            os.killpg(sink.pid, signal.SIGKILL)
            sink.wait(10)

    second = _interactions(60)
    _send(own_broker, second[1:])
    produce(own_broker, INTERACTIONS.name, [(b"after-poison", second[0].to_bytes())], partition=0)
    sink = _sink(own_broker, root, log, roll_rows=1000, roll_seconds=0.5)
    try:
        sent = {str(x.event_id) for x in first + second}
        wait_for(lambda: len(_archived(lake, INTERACTIONS.name)) >= len(sent) or None, 90, "every interaction archived")
        wait_for(lambda: _archived(lake, INTERACTIONS.dlq).height or None, 60, "the poison archived")
        wait_for(lambda: _archived(lake, SOCIAL_EVENTS.dlq).height or None, 60, "the huge one archived, cut")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(30)
    assert sink.returncode == 0, log.read_text()[-3000:]

    got = _archived(lake, INTERACTIONS.name)
    assert got.height == len(sent) and set(got["event_id"]) == sent, "each record once, none missing"
    assert got.select("kafka_partition", "kafka_offset").is_unique().all()
    assert got.schema["occurred_at"] == pl.Datetime("us", "UTC") and got.schema["watch_ms"] == pl.Int64
    # Per partition, the offsets archived plus the poison's are 0..end without a gap.
    poison = _archived(lake, INTERACTIONS.dlq).filter(pl.col("value") == POISON)
    assert poison.height >= 1
    headers = {h["key"]: h["value"] for h in poison["headers"][0]}
    assert headers["x-dlq-consumer"] == b"clipstream-lake" and headers["x-dlq-source-topic"] == b"interactions"
    at = (int(headers["x-dlq-source-partition"]), int(headers["x-dlq-source-offset"]))
    for (p,), offsets in got.group_by(["kafka_partition"]):
        have = sorted(offsets["kafka_offset"].to_list() + ([at[1]] if p == at[0] else []))
        assert have == list(range(len(have))), f"partition {p}: a gap or a repeat"
    huge = _archived(lake, SOCIAL_EVENTS.dlq)
    assert huge.height >= 1 and len(huge["value"][0]) == MAX_DLQ_VALUE_BYTES
    assert {h["key"]: h["value"] for h in huge["headers"][0]}["x-dlq-original-size"] == b"1500000"
    # The files name what they hold, and a restarted sink starts after them.
    files = lake.files(INTERACTIONS.name)
    assert all(f.hour.minute == 0 for f in files)
    assert sum(f.last - f.first + 1 for f in files) == len(sent) + 1


def test_an_empty_root_is_filled_from_the_first_offset_whatever_was_committed(own_broker: str, tmp_path: Path) -> None:
    """Once the group has committed (the test before, or these records archived
    elsewhere), a sink pointed at an empty root still archives from offset 0."""
    _send(own_broker, _interactions(12))
    valid = [m for m in read_topic(own_broker, INTERACTIONS.name) if m.value != POISON]
    root, log = tmp_path / "lake", tmp_path / "sink.log"
    lake = Lake(root)
    sink = _sink(own_broker, root, log, roll_rows=1000, roll_seconds=0.5)
    try:
        wait_for(lambda: _archived(lake, INTERACTIONS.name).height >= len(valid) or None, 90, "the topic archived")
        root2 = tmp_path / "lake2"
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(30)
    assert _archived(lake, INTERACTIONS.name).height == len(valid)
    # The group now has commits at the end of every partition: a second empty root too.
    sink = _sink(own_broker, root2, log, roll_rows=1000, roll_seconds=0.5)
    try:
        wait_for(lambda: _archived(Lake(root2), INTERACTIONS.name).height >= len(valid) or None, 90, "archived again")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(30)
    assert min(f.first for f in Lake(root2).files(INTERACTIONS.name)) == 0
