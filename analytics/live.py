"""Read a live topic into a polars DataFrame, for questions the lake cannot answer yet
(what happened in the last minute, before the sink's next file)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import polars as pl

from core.broker import read_to_end
from core.errors import RecordError
from core.lake import Row, frame
from core.records import Record
from core.topics import BY_NAME, decode

log = logging.getLogger(__name__)


def read_live(bootstrap: str, topic: str, timeout_s: float = 30.0) -> pl.DataFrame:
    """Everything in ``topic`` now, from its first retained offset to the end it has
    when called, with the lake's columns (core.lake.frame). A record that does not
    decode is left out and counted in a warning: the pipeline has dead-lettered it
    (read ``<topic>.dlq`` for the bytes). Raises BrokerError for a topic that does not
    exist or cannot be read in time."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_read(bootstrap, topic, timeout_s))
    # Called from a running event loop (a Jupyter kernel has one): read in a thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_read(bootstrap, topic, timeout_s))).result()


async def _read(bootstrap: str, topic: str, timeout_s: float) -> pl.DataFrame:
    rows: list[Row] = []
    records: list[Record] = []
    bad = 0
    spec = BY_NAME.get(topic)
    async for m in read_to_end(bootstrap, topic, timeout_s):
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
