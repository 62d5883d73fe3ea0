"""The lake's files (core/lake.py): typed columns from the record models, names that
say what a file holds, compaction, and healing after a compaction cut short."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from core import records as r
from core.lake import Lake, Row, archived_topics, frame, set_aside, topic_schema
from core.topics import CATALOG, TABLES
from tests.support.factories import fake_media

T0 = int(datetime(2026, 11, 27, 10, 5, tzinfo=UTC).timestamp() * 1000)
HOUR = datetime(2026, 11, 27, 10, tzinfo=UTC)


def _interaction(n: int) -> r.Interaction:
    return r.Interaction(user_id=uuid.uuid4(), clip_id=uuid.uuid4(), kind="share", watch_ms=n, attributes={"n": n})


def _rows(topic: str, partition: int, offset: int, rec: r.Record) -> pl.DataFrame:
    return frame(topic, [Row(partition, offset, T0 + offset, b"k", rec.to_bytes())], [rec])


def test_every_archived_topic_has_typed_columns() -> None:
    assert set(archived_topics()) >= {s.name for s in CATALOG} | {s.dlq for s in CATALOG} | {t.name for t in TABLES}
    for spec in CATALOG:
        schema = topic_schema(spec.name)
        assert schema["event_id"] == pl.String and schema["occurred_at"] == pl.Datetime("us", "UTC")
        assert "value" not in schema
        assert topic_schema(spec.dlq)["value"] == pl.Binary
    published = topic_schema("clips.published")
    assert isinstance(published["media"], pl.Struct) and published["media"].to_schema()["width"] == pl.Int64
    assert published["media"].to_schema()["duration_s"] == pl.Float64  # type: ignore[attr-defined]
    assert published["embedding"] == pl.List(pl.Float64)
    scores = pl.List(pl.Struct({"concept": pl.String, "score": pl.Float64}))
    check = pl.Struct({"name": pl.String, "passed": pl.Boolean, "detail": pl.String, "scores": scores})
    assert published["checks"] == pl.List(check)
    assert topic_schema("interactions")["attributes"] == pl.String  # free-form: JSON text


def test_a_published_clip_round_trips_through_a_file(tmp_path: Path) -> None:
    rec = r.ClipPublished(
        clip_id=uuid.uuid4(), prompt_id=uuid.uuid4(), user_id=uuid.uuid4(), creator_handle="ann", text="a cat",
        media=fake_media("m"), generator=r.GeneratorInfo(name="procedural", version="1", seed=7, render_ms=12),
        checks=[r.SafetyCheck(name="frames", passed=True, detail="ok")], embedding=[0.5, -0.25],
        embedding_model="clip@1",
    )  # fmt: skip
    lake = Lake(tmp_path)
    f = lake.write("clips.published", _rows("clips.published", 2, 9, rec), HOUR)
    assert f.path.endswith("topic=clips.published/date=2026-11-27/hour=10/p00002-" + f"{9:020d}-{9:020d}.parquet")
    got = lake.scan("clips.published").collect().row(0, named=True)
    assert got["clip_id"] == str(rec.clip_id) and got["occurred_at"] == rec.occurred_at
    assert got["media"]["width"] == rec.media.width and got["checks"][0]["passed"] is True
    assert got["embedding"] == [0.5, -0.25] and got["hour"] == 10 and str(got["date"]) == "2026-11-27"
    assert got["kafka_partition"] == 2 and got["kafka_offset"] == 9 and got["kafka_key"] == "k"


def test_dead_letters_keep_their_bytes_and_headers(tmp_path: Path) -> None:
    rows = [Row(0, 3, T0, None, b"\x00\xff", [("x-dlq-consumer", b"clipstream-lake")])]
    lake = Lake(tmp_path)
    lake.write("interactions.dlq", frame("interactions.dlq", rows), HOUR)
    got = lake.scan("interactions.dlq").collect().row(0, named=True)
    assert got["value"] == b"\x00\xff" and got["headers"] == [{"key": "x-dlq-consumer", "value": b"clipstream-lake"}]


def _three_runs(lake: Lake) -> list[r.Interaction]:
    """Partition 1, offsets 0..11 in four files: 0-3, 4-6 and 7-9 in one hour (9 was
    dead-lettered: consumed, so in the name, but not a row), 10-11 in the next. Returns
    the rows kept."""
    recs = {n: _interaction(n) for n in range(12) if n != 9}
    for lo, hi in ((0, 3), (4, 6), (7, 9), (10, 11)):
        offsets = [n for n in range(lo, hi + 1) if n in recs]
        rows = [Row(1, n, T0 + n, b"k", recs[n].to_bytes()) for n in offsets]
        hour = HOUR if lo < 10 else HOUR.replace(hour=11)
        lake.write("interactions", frame("interactions", rows, [recs[n] for n in offsets]), hour, lo, hi)
    return list(recs.values())


def test_compaction_merges_runs_of_consecutive_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    kept = _three_runs(lake)
    before = lake.scan("interactions").collect()
    made = lake.compact()
    assert [(f.first, f.last) for f in made] == [(0, 9)]
    assert [(f.first, f.last) for f in lake.files()] == [(0, 9), (10, 11)]
    after = lake.scan("interactions").collect()
    assert after.sort("kafka_offset").equals(before.sort("kafka_offset"))
    assert after["event_id"].to_list() == [str(x.event_id) for x in kept]
    assert lake.next_offsets("interactions") == {1: 12}


def test_a_compaction_cut_short_is_read_once_and_healed(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _three_runs(lake)
    saved = tmp_path.parent / f"{tmp_path.name}-saved"
    shutil.copytree(tmp_path, saved)
    lake.compact()
    shutil.copytree(saved, tmp_path, dirs_exist_ok=True)  # as if it died before removing the small files
    (Path(lake.hour_dir("interactions", HOUR)) / ".tmp-0123").write_bytes(b"half a file")
    assert len(lake.files()) == 5
    assert lake.scan("interactions").collect().height == 11, "covered files are not read"
    assert lake.remove_leftovers() == 4
    assert [(f.first, f.last) for f in lake.files()] == [(0, 9), (10, 11)]


def test_any_fsspec_store_works_the_same() -> None:
    lake = Lake(f"memory://lake-{uuid.uuid4().hex[:8]}")
    kept = _three_runs(lake)
    assert not lake.local
    lake.compact()
    got = lake.scan("interactions").collect()
    assert got["event_id"].to_list() == [str(x.event_id) for x in kept] and set(got["hour"]) == {10, 11}
    assert lake.next_offsets("interactions") == {1: 12}


def test_an_empty_topic_scans_to_an_empty_frame_with_its_columns(tmp_path: Path) -> None:
    got = Lake(tmp_path).scan("prompts").collect()
    assert got.height == 0 and got.schema["prompt_id"] == pl.String and "hour" in got.columns


@pytest.mark.parametrize("name", ["p1-0-1.parquet", "p00001-00000000000000000000-1.parquet", "notes.txt"])
def test_files_not_named_as_the_sink_names_them_are_not_data(tmp_path: Path, name: str) -> None:
    lake = Lake(tmp_path)
    folder = Path(lake.hour_dir("interactions", HOUR))
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"")
    assert lake.files() == []


@pytest.mark.parametrize("store", ["local", "memory"])
def test_files_written_before_a_record_gained_a_field_are_read_with_it_null(tmp_path: Path, store: str) -> None:
    """SafetyCheck gained ``scores`` (and records may gain optional fields): a lake
    holding files from before and after reads, and compacts, as one."""
    lake = Lake(tmp_path if store == "local" else f"memory://lake-{uuid.uuid4().hex[:8]}")
    rec = r.ClipBlocked(clip_id=uuid.uuid4(), prompt_id=uuid.uuid4(), user_id=uuid.uuid4(), reasons=["gun"],
                        checks=[r.SafetyCheck(name="frame_safety", passed=False, detail="gun 0.9",
                                              scores=[r.ConceptScore(concept="gun", score=0.9)])])  # fmt: skip
    new = frame("clips.blocked", [Row(0, 1, T0 + 1, b"k", rec.to_bytes())], [rec])
    old = new.with_columns(
        pl.col("checks").list.eval(pl.element().struct.field("name", "passed", "detail").pipe(pl.struct)),
        pl.lit("gone").alias("a_field_since_removed"),
    ).with_columns(pl.col("kafka_offset") - 1)
    assert "scores" not in str(old.schema["checks"])
    lake.write("clips.blocked", old, HOUR)
    lake.write("clips.blocked", new, HOUR)
    got = lake.scan("clips.blocked").collect().sort("kafka_offset")
    assert got["checks"].to_list()[0][0]["scores"] is None
    assert got["checks"].to_list()[1][0]["scores"] == [{"concept": "gun", "score": 0.9}]
    assert "a_field_since_removed" not in got.columns
    assert [(f.first, f.last) for f in lake.compact()] == [(0, 1)]
    assert lake.scan("clips.blocked").collect().height == 2


def test_a_lake_is_set_aside_for_topics_that_start_empty(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    assert set_aside(root) is None, "nothing there"
    root.mkdir()
    assert set_aside(root) is None, "no data files"
    Lake(root).write("interactions", _rows("interactions", 0, 7, _interaction(7)), HOUR)
    kept = set_aside(root, now=datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC))
    assert kept == tmp_path / "lake-20261127T120005Z" and not root.exists()
    assert Lake(kept).next_offsets("interactions") == {0: 8} and Lake(root).next_offsets("interactions") == {}
    assert set_aside("s3://bucket/lake") is None, "object stores are left alone"
