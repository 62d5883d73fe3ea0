"""The lake on an S3-protocol object store: moto's server on loopback, reached through
s3fs exactly as LAKE__ROOT=s3://bucket/prefix reaches a real one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from core.lake import Lake
from core.records import Interaction
from tests.support.lake import write_records

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def bucket() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "test")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "test")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    import boto3

    name = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    try:
        yield name
    finally:
        mp.undo()
        server.stop()


def _records(n: int, hour: int) -> list[Interaction]:
    at = datetime(2026, 11, 27, hour, 5, tzinfo=UTC)
    return [Interaction(user_id=uuid.uuid4(), clip_id=uuid.uuid4(), kind="like", occurred_at=at) for _ in range(n)]


def test_write_resume_compact_and_read_on_s3(bucket: str) -> None:
    lake = Lake(f"s3://{bucket}/archive")
    assert not lake.local
    first = _records(3, 10)
    write_records(lake, "interactions", first)
    write_records(lake, "interactions", _records(2, 10))
    write_records(lake, "interactions", _records(4, 11))
    assert lake.next_offsets("interactions") == {0: 9}, "where a restarted sink resumes"
    assert [(f.first, f.last, f.hour.hour) for f in lake.files()] == [(0, 2, 10), (3, 4, 10), (5, 8, 11)]
    made = lake.compact()
    assert [(f.first, f.last) for f in made] == [(0, 4)]
    got = lake.scan("interactions").collect()
    assert got.height == 9 and sorted(got["hour"].unique().to_list()) == [10, 11]
    assert set(str(x.event_id) for x in first) <= set(got["event_id"])
    fresh = Lake(f"s3://{bucket}/archive")  # another process sees the same
    assert [(f.first, f.last) for f in fresh.files()] == [(0, 4), (5, 8)]
