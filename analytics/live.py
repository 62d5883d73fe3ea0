"""Read a live topic into a polars DataFrame, for questions the lake cannot answer yet
(what happened in the last minute, before the sink's next file)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

import polars as pl
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.broker import end_offsets
from core.errors import RecordError
from core.lake import Row, frame
from core.records import Record
from core.topics import BY_NAME, decode

log = logging.getLogger(__name__)


def read_live(bootstrap: str, topic: str, timeout_s: float = 30.0) -> pl.DataFrame:
    """Everything in ``topic`` now, from its first retained offset to the end it has
    when called, with the lake's columns (core.lake.frame). A record that does not
    decode is left out and counted in a warning: the pipeline has dead-lettered it
    (read ``<topic>.dlq`` for the bytes)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_read(bootstrap, topic, timeout_s))
    # Called from a running event loop (a Jupyter kernel has one): read in a thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_read(bootstrap, topic, timeout_s))).result()


async def _read(bootstrap: str, topic: str, timeout_s: float) -> pl.DataFrame:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise ValueError(f"no topic {topic!r} at {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        end = await end_offsets(consumer, tps, timeout_s)
        await consumer.seek_to_beginning(*tps)
        rows: list[Row] = []
        records: list[Record] = []
        bad = 0
        spec = BY_NAME.get(topic)
        deadline = time.monotonic() + timeout_s

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s:.0f}s")
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for m in messages:
                    if m.offset >= end[tp]:
                        continue
                    if spec is not None:
                        try:
                            records.append(decode(spec, m.value))
                        except RecordError:
                            bad += 1
                            continue
                    rows.append(Row(m.partition, m.offset, m.timestamp, m.key, m.value, tuple(m.headers or ())))
        if bad:
            log.warning("%s: %d record(s) that do not decode left out (see %s.dlq)", topic, bad, topic)
        return frame(topic, rows, records if spec is not None else None)
    finally:
        await consumer.stop()
