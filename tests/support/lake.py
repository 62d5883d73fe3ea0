"""Write records into a lake as the sink would (one file per call)."""

from __future__ import annotations

from collections.abc import Sequence

from core.lake import Lake, LakeFile, Row, frame
from core.records import Record


def write_records(lake: Lake, topic: str, records: Sequence[Record], partition: int = 0) -> list[LakeFile]:
    """Append ``records`` to ``topic``'s partition, after what is there, one file per
    hour of their ``occurred_at`` (the broker timestamp here)."""
    times = [rec.occurred_at for rec in records]
    assert times == sorted(times), "records in time order, as a partition holds them"
    start = lake.next_offsets(topic).get(partition, 0)
    rows = [
        Row(partition, start + i, int(rec.occurred_at.timestamp() * 1000), str(i).encode(), rec.to_bytes())
        for i, rec in enumerate(records)
    ]
    files = []
    for hour in sorted({row.hour for row in rows}):
        idx = [i for i, row in enumerate(rows) if row.hour == hour]
        df = frame(topic, [rows[i] for i in idx], [records[i] for i in idx])
        files.append(lake.write(topic, df, hour, rows[idx[0]].offset, rows[idx[-1]].offset))
    return files
