"""The Parquet archive of the topics ("the lake"): layout, schemas, writing, reading
and compaction. The sink that fills it is ``streams/lake_sink.py``.

Layout, hive-style, under a root that is a local folder or any fsspec URL
(``s3://bucket/prefix`` in production)::

    topic=interactions/date=2026-11-27/hour=10/p00003-00000000000000000120-00000000000000000245.parquet

One file holds a contiguous run of offsets of one source partition (first and last in
the name) whose records fall in one hour (the broker timestamp, UTC). The names are
the manifest: where a partition's files end is where the sink resumes, so a restarted
sink neither skips nor repeats a record. A file appears whole or not at all (written
aside, then renamed; one PUT on object stores). Compaction merges a partition's small
files of an hour into one; until it has removed them, the merged file covers theirs
and readers take only files no other file covers.

Columns: ``kafka_partition``, ``kafka_offset``, ``kafka_timestamp``, ``kafka_key``,
then the record's own fields with types derived from its model (UUIDs as strings,
timestamps as UTC datetimes, nested models as structs, lists as lists). Free-form
``attributes`` mappings are kept as JSON text. Topics without a record model (the
dead-letter topics and table changelogs) keep ``value`` as bytes and their headers.
"""

from __future__ import annotations

import functools
import json
import re
import types
import typing
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import fsspec
import polars as pl
from pydantic import BaseModel, TypeAdapter

from core import records as r
from core.topics import BY_NAME, CATALOG, TABLES

_FILE = re.compile(r"^p(\d{5})-(\d{20})-(\d{20})\.parquet$")
ENVELOPE: dict[str, pl.DataType] = {
    "kafka_partition": pl.Int32(),
    "kafka_offset": pl.Int64(),
    "kafka_timestamp": pl.Datetime("ms", "UTC"),
    "kafka_key": pl.String(),
}
RAW: dict[str, pl.DataType] = {
    "value": pl.Binary(),
    "headers": pl.List(pl.Struct({"key": pl.String(), "value": pl.Binary()})),
}


def archived_topics() -> list[str]:
    """Every topic the sink archives: the catalog, its dead-letter twins, the changelogs."""
    return [n for spec in CATALOG for n in (spec.name, spec.dlq)] + [t.name for t in TABLES]


# --- schemas -----------------------------------------------------------------------


def _dtype(annotation: Any) -> tuple[pl.DataType, bool]:
    """The polars type for a field's annotation, and whether it is free-form JSON."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _dtype(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _dtype(args[0])
        return pl.String(), False
    if origin is typing.Literal:
        return pl.String(), False
    if origin is list:
        inner, _ = _dtype(typing.get_args(annotation)[0])
        return pl.List(inner), False
    if origin is dict or annotation is dict:
        return pl.String(), True
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return pl.Struct(model_schema(annotation)), False
        if issubclass(annotation, bool):
            return pl.Boolean(), False
        if issubclass(annotation, int):
            return pl.Int64(), False
        if issubclass(annotation, float):
            return pl.Float64(), False
        if issubclass(annotation, datetime):
            return pl.Datetime("us", "UTC"), False
        if issubclass(annotation, date):
            return pl.Date(), False
        if issubclass(annotation, (str, uuid.UUID, Enum)):
            return pl.String(), False
    raise TypeError(f"no lake column type for {annotation!r}")


def model_schema(model: type[BaseModel]) -> dict[str, pl.DataType]:
    return {name: _dtype(f.annotation)[0] for name, f in model.model_fields.items()}


def _json_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if _dtype(f.annotation)[1]]


@functools.cache
def _adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def record_model(topic: str) -> type[r.Record] | None:
    spec = BY_NAME.get(topic)
    return spec.record if spec else None


def topic_schema(topic: str) -> dict[str, pl.DataType]:
    model = record_model(topic)
    return {**ENVELOPE, **(model_schema(model) if model else RAW)}


# --- rows --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One consumed message: where it came from and what it carried."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()

    @property
    def hour(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).replace(minute=0, second=0, microsecond=0)


def frame(topic: str, rows: Sequence[Row], records: Sequence[BaseModel] | None = None) -> pl.DataFrame:
    """The archive rows of ``topic``; ``records`` are the decoded values of a topic with
    a model (the sink decodes them, and dead-letters what does not decode)."""
    schema = topic_schema(topic)
    env = {
        "kafka_partition": [x.partition for x in rows],
        "kafka_offset": [x.offset for x in rows],
        "kafka_timestamp": [x.timestamp_ms for x in rows],
        "kafka_key": [x.key.decode("utf-8", "replace") if x.key is not None else None for x in rows],
    }
    model = record_model(topic)
    if model is None:
        body: dict[str, list[Any]] = {
            "value": [x.value for x in rows],
            "headers": [[{"key": k, "value": v} for k, v in x.headers] for x in rows],
        }
    else:
        assert records is not None and len(records) == len(rows)
        dumped = _adapter(model).dump_python(list(records), mode="json")  # one call: half the time of a loop
        for name in _json_fields(model):
            for d in dumped:
                d[name] = json.dumps(d[name], sort_keys=True)
        body = {name: [d.get(name) for d in dumped] for name in model.model_fields}
    loose = {
        name: (pl.String() if isinstance(dtype, pl.Datetime) and name != "kafka_timestamp" else dtype)
        for name, dtype in schema.items()
    }
    loose["kafka_timestamp"] = pl.Int64()
    df = pl.DataFrame({**env, **body}, schema=loose, strict=False)
    return df.with_columns(
        pl.col("kafka_timestamp").cast(pl.Datetime("ms", "UTC")),
        *(
            pl.col(name).str.to_datetime(time_unit="us", time_zone="UTC")
            for name, dtype in schema.items()
            if isinstance(dtype, pl.Datetime) and name != "kafka_timestamp"
        ),
    )


# --- files -------------------------------------------------------------------------


# Records change by adding optional fields (and Record ignores unknown ones), so files
# written before a change are read in today's schema: a field they lack is null, one
# since removed is left out.
_EVOLVE = pl.ScanCastOptions(missing_struct_fields="insert", extra_struct_fields="ignore")


@dataclass(frozen=True, order=True)
class LakeFile:
    topic: str
    partition: int
    first: int
    last: int
    hour: datetime
    path: str

    def covers(self, other: LakeFile) -> bool:
        return (
            self.topic == other.topic
            and self.partition == other.partition
            and self.first <= other.first
            and other.last <= self.last
            and self.path != other.path
        )


def file_name(partition: int, first: int, last: int) -> str:
    return f"p{partition:05d}-{first:020d}-{last:020d}.parquet"


class Lake:
    """The archive under ``root`` (a folder, or an fsspec URL)."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(root).rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.root)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def hour_dir(self, topic: str, hour: datetime) -> str:
        return f"{self.base}/topic={topic}/date={hour:%Y-%m-%d}/hour={hour:%H}"

    def write(
        self, topic: str, df: pl.DataFrame, hour: datetime, first: int | None = None, last: int | None = None
    ) -> LakeFile:
        """Write one file of ``df`` (one partition's consecutive offsets, one hour).
        ``first``/``last`` name the offsets consumed, where some were not archived
        here (dead-lettered); by default the rows' own."""
        partition = int(df["kafka_partition"][0])
        first = int(df["kafka_offset"].min()) if first is None else first  # type: ignore[arg-type]
        last = int(df["kafka_offset"].max()) if last is None else last  # type: ignore[arg-type]
        folder = self.hour_dir(topic, hour)
        path = f"{folder}/{file_name(partition, first, last)}"
        self.fs.makedirs(folder, exist_ok=True)
        if self.local:
            tmp = f"{folder}/.tmp-{uuid.uuid4().hex}"
            df.write_parquet(tmp, compression="zstd", statistics=True)
            Path(tmp).replace(path)  # atomic on one filesystem
        else:
            with self.fs.open(path, "wb") as f:  # an object store makes a PUT visible whole
                df.write_parquet(f, compression="zstd", statistics=True)
        return LakeFile(topic, partition, first, last, hour, path)

    def files(self, topic: str | None = None) -> list[LakeFile]:
        """Every data file, ``topic``'s only if given; leftovers of interrupted writes
        (``.tmp-*``) are not data."""
        pattern = f"{self.base}/topic={topic or '*'}/date=*/hour=*/p*.parquet"
        if not self.local:
            self.fs.invalidate_cache()  # object stores' listings are cached: another process may have written
        out = []
        for path in self.fs.glob(pattern):
            path = str(path)
            m = _FILE.match(path.rsplit("/", 1)[-1])
            parts = dict(seg.split("=", 1) for seg in path.split("/") if "=" in seg)
            if not m or not {"topic", "date", "hour"} <= parts.keys():
                continue
            hour = datetime.fromisoformat(f"{parts['date']}T{parts['hour']}:00:00+00:00")
            out.append(LakeFile(parts["topic"], int(m[1]), int(m[2]), int(m[3]), hour, path))
        return sorted(out, key=lambda f: (f.topic, f.partition, f.first, -f.last))

    @staticmethod
    def live(files: Iterable[LakeFile]) -> list[LakeFile]:
        """The files no other file covers (a compaction may have been cut short)."""
        # Per topic and partition, by first offset (the wider file first): a file is
        # covered when one before it reaches at least as far. One pass, not all pairs.
        out: list[LakeFile] = []
        reach: dict[tuple[str, int], int] = {}
        for f in sorted(files, key=lambda f: (f.topic, f.partition, f.first, -f.last)):
            key = (f.topic, f.partition)
            if f.last > reach.get(key, -1):
                out.append(f)
                reach[key] = f.last
        return out

    def next_offsets(self, topic: str) -> dict[int, int]:
        """Per source partition, the offset after the last one archived."""
        nxt: dict[int, int] = {}
        for f in self.files(topic):
            nxt[f.partition] = max(nxt.get(f.partition, 0), f.last + 1)
        return nxt

    def remove_leftovers(self) -> int:
        """Delete what interrupted writes left (``.tmp-*``) and files that a compacted
        file covers. Returns how many went."""
        gone = 0
        for path in self.fs.glob(f"{self.base}/topic=*/date=*/hour=*/.tmp-*"):
            self.fs.rm(str(path))
            gone += 1
        files = self.files()
        live = set(self.live(files))
        for f in files:
            if f not in live:
                self.fs.rm(f.path)
                gone += 1
        return gone

    def scan(self, topic: str) -> pl.LazyFrame:
        """All of ``topic`` as one lazy frame, with the ``date`` and ``hour`` folders
        as columns (empty, with the right columns, before anything is archived)."""
        files = self.live(self.files(topic))
        if not files:
            schema = {**topic_schema(topic), "date": pl.Date(), "hour": pl.Int8()}
            return pl.LazyFrame(schema=schema)
        if self.local:
            return pl.scan_parquet(
                [f.path for f in files],
                schema=topic_schema(topic),
                hive_partitioning=True,
                hive_schema={"topic": pl.String(), "date": pl.Date(), "hour": pl.Int8()},
                missing_columns="insert",
                extra_columns="ignore",
                cast_options=_EVOLVE,
            ).drop("topic")
        # Any other fsspec store: read through fsspec (polars reads s3:// itself, but
        # not every store fsspec knows).
        return pl.concat(
            [self._read(f).with_columns(date=pl.lit(f.hour.date()), hour=pl.lit(f.hour.hour, pl.Int8())) for f in files]
        ).lazy()

    def compact(self, topic: str | None = None, min_files: int = 2) -> list[LakeFile]:
        """Merge each partition's runs of contiguous files within an hour into one
        file; returns the files made. Safe while the sink runs: it never rewrites a
        file, and a run ends where the offsets stop being contiguous."""
        made = []
        files = self.live(self.files(topic))
        groups: dict[tuple[str, int, datetime], list[LakeFile]] = {}
        for f in files:
            groups.setdefault((f.topic, f.partition, f.hour), []).append(f)
        for (name, _, hour), group in sorted(groups.items()):
            group.sort()
            runs: list[list[LakeFile]] = [[group[0]]]
            for f in group[1:]:
                if f.first == runs[-1][-1].last + 1:
                    runs[-1].append(f)
                else:
                    runs.append([f])
            for run in runs:
                if len(run) < min_files:
                    continue
                df = pl.concat([self._read(f) for f in run]).sort("kafka_offset")
                merged = self.write(name, df, hour, run[0].first, run[-1].last)
                for f in run:
                    self.fs.rm(f.path)
                made.append(merged)
        return made

    def _read(self, f: LakeFile) -> pl.DataFrame:
        """One file, in its topic's schema of today (see ``_EVOLVE``)."""
        with self.fs.open(f.path, "rb") as fh:
            df = pl.read_parquet(fh)
        return df.match_to_schema(
            topic_schema(f.topic),
            missing_columns="insert",
            missing_struct_fields="insert",
            extra_columns="ignore",
            extra_struct_fields="ignore",
        )


def set_aside(root: str | Path, now: datetime | None = None) -> Path | None:
    """Move a local lake that holds files to ``<root>-<UTC time>`` beside it, so that a
    sink starts a fresh one; returns where it went (None: nothing to move).

    For a broker whose topics start empty (the embedded default keeps them in memory):
    the file names record offsets of topics that no longer exist, and a sink resuming
    after them would skip the new topics' first records.
    """
    path = Path(root)
    if "://" in str(root) or not path.is_dir() or not any(path.rglob("*.parquet")):
        return None
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}-{stamp}")
    path.rename(target)
    return target
