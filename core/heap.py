"""Short garbage-collector pauses in a process that holds a large, long-lived heap.

CPython's cyclic collector walks every tracked object in a full (generation 2)
collection. An API process holds millions of them once its ranking replica has loaded
(at 100,000 clips and 10,000 users, with their feed plans: 3.8 million), and a full
collection of that heap took 2 s on the benchmark machine, with every request in flight
waiting for it (`docs/performance.md`). Such collections come on their own as the heap
grows, at start-up (19 of them, 10 s in all, while the replica loaded and the first
plans were made) and later whenever enough new objects have survived.

:func:`settle` collects once, then freezes what survived (:func:`gc.freeze`): frozen
objects are left out of every later collection, so each walks only what is younger
than the last settle. Frozen objects are still freed by reference counting when they
are dropped (a replaced plan, a removed clip); only garbage *cycles* among them would
stay until the process ends, and the replica's state is plain containers of records,
freed by reference counts. :func:`keep_settled` settles once the process has built its
heap, then periodically, so the young part that a collection walks stays small.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def settle() -> float:
    """Collect cyclic garbage, then freeze every object that is left; the seconds the
    collection took."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - t0


async def keep_settled(built: Callable[[], bool], every_s: float, poll_s: float = 1.0) -> None:
    """Settle as soon as ``built()`` says the heap built at start-up is in place, then
    every ``every_s`` seconds (on the event loop: a collection holds the GIL anyway)."""
    while not built():
        await asyncio.sleep(poll_s)
    while True:
        took = settle()
        log.info("heap settled: %d objects frozen, the collection took %.0f ms", gc.get_freeze_count(), took * 1000)
        await asyncio.sleep(every_s)
