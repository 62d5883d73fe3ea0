"""Lake sink throughput: records archived to Parquet per second, against a bare
aiokafka consume loop over the same topic on the same broker, measured in the same run.

One Tansu broker on loopback; ``--records`` interactions (as the API writes them)
spread over the 12 partitions of ``interactions``. Baseline: one AIOKafkaConsumer reading
every partition from the beginning to the end, doing nothing with the records. Sink:
``streams.lake_sink.LakeSink`` on that topic alone, from an empty lake until its files
hold every record (decode, typed columns, zstd Parquet, atomic rename), timed from its
first record (the group join is not throughput). Then the same
for a compaction of those files, and a read of the whole topic back with polars.

Usage: .venv/bin/python bench/lake.py [--records 100000] [--roll-rows 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from core.broker import EmbeddedBroker, end_offsets, ensure_topics, free_port  # noqa: E402
from core.lake import Lake  # noqa: E402
from core.records import Interaction  # noqa: E402
from core.topics import INTERACTIONS  # noqa: E402
from streams.lake_sink import LakeSink  # noqa: E402


async def produce(
    bootstrap: str, n: int, users: list[uuid.UUID] | None = None, clips: list[uuid.UUID] | None = None
) -> None:
    """``n`` interactions keyed by user, as the API writes them: views with watch time
    on fresh clip ids, or with ``clips`` a mix of views, likes, skips and shares on them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        users = users or [uuid.uuid4() for _ in range(2000)]
        kinds = ["view", "view", "view", "like", "skip", "share"]
        futures = []
        for i in range(n):
            if clips:
                kind = kinds[i % len(kinds)]
                clip, watch = clips[(i * 7919) % len(clips)], (i % 9000 if kind == "view" else None)
            else:
                kind, clip, watch = "view", uuid.uuid4(), i % 9000
            rec = Interaction(user_id=users[i % len(users)], clip_id=clip, kind=kind, watch_ms=watch)  # type: ignore[arg-type]
            futures.append(await producer.send(INTERACTIONS.name, rec.to_bytes(), key=str(rec.user_id).encode()))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bare(bootstrap: str, n: int, each: Callable[[Any], object] | None = None) -> float:
    """Seconds for one consumer to read the ``n`` records of ``interactions`` from the
    beginning, doing nothing with them, or calling ``each`` on every one."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(INTERACTIONS.name, p) for p in range(INTERACTIONS.partitions)]
        consumer.assign(tps)
        end = await end_offsets(consumer, tps)
        assert sum(end.values()) == n, end
        await consumer.seek_to_beginning(*tps)
        start, seen = time.perf_counter(), 0
        while seen < n:
            for messages in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                if each is not None:
                    for m in messages:
                        each(m)
                seen += len(messages)
        return time.perf_counter() - start
    finally:
        await consumer.stop()


async def sink(bootstrap: str, root: Path, n: int, roll_rows: int) -> tuple[float, int]:
    lake = Lake(root)
    # Files by size; the last rows of each partition wait at most roll_seconds.
    s = LakeSink(lake, bootstrap, topics=[INTERACTIONS.name], roll_rows=roll_rows, roll_seconds=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    try:
        while not s.stats.consumed:  # the group join is not throughput
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        start = time.perf_counter()
        while s.stats.rows < n:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        return time.perf_counter() - start, s.stats.files
    finally:
        stop.set()
        await task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--roll-rows", type=int, default=2_000)
    args = ap.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker("127.0.0.1", free_port(), Path(tmp) / "tansu.log")
        broker.start()
        try:
            ensure_topics(broker.bootstrap_servers)
            t = time.perf_counter()
            asyncio.run(produce(broker.bootstrap_servers, n))
            print(f"produced {n:,} interactions in {time.perf_counter() - t:.1f} s")
            bare_s = asyncio.run(bare(broker.bootstrap_servers, n))
            root = Path(tmp) / "lake"
            sink_s, files = asyncio.run(sink(broker.bootstrap_servers, root, n, args.roll_rows))
        finally:
            broker.stop()
        lake = Lake(root)
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        t = time.perf_counter()
        made = lake.compact()
        compact_s = time.perf_counter() - t
        t = time.perf_counter()
        rows = lake.scan(INTERACTIONS.name).collect().height
        read_s = time.perf_counter() - t
        assert rows == n, rows

    print()
    print(f"| {n:,} interactions | seconds | records/s | ratio to bare |")
    print("|---|---:|---:|---:|")
    print(f"| bare aiokafka consume loop (baseline) | {bare_s:.2f} | {n / bare_s:,.0f} | 1.00 |")
    ratio = bare_s / sink_s
    print(f"| lake sink: decode, typed Parquet, {files} files | {sink_s:.2f} | {n / sink_s:,.0f} | {ratio:.2f} |")
    print(f"| compaction into {len(made)} files | {compact_s:.2f} | {n / compact_s:,.0f} | |")
    print(f"| read back with polars (`lake.scan`) | {read_s:.2f} | {n / read_s:,.0f} | |")
    print(f"\non disk: {size / 1e6:.1f} MB, {size / n:.0f} bytes per interaction (zstd)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
