"""core.heap: collect, then freeze what is left, once the heap is built and then periodically."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from core.heap import keep_settled, settle


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_collects_cycles_then_freezes_the_survivors() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a garbage cycle once dropped: only the collector frees it
    dead = weakref.ref(a)
    del a, b
    kept = [Node() for _ in range(1000)]
    assert gc.get_freeze_count() == 0
    took = settle()
    assert took >= 0 and dead() is None, "the cycle was collected, not frozen"
    assert gc.get_freeze_count() >= len(kept), "the survivors are out of later collections' reach"
    assert all(not gc.is_finalized(k) for k in kept)


def test_keep_settled_waits_for_the_heap_to_be_built_then_repeats() -> None:
    built = False
    counts: list[int] = []

    async def scenario() -> None:
        nonlocal built
        task = asyncio.create_task(keep_settled(lambda: built, every_s=0.05, poll_s=0.01))
        await asyncio.sleep(0.1)
        counts.append(gc.get_freeze_count())  # not built yet: nothing frozen
        built = True
        await asyncio.sleep(0.03)
        counts.append(gc.get_freeze_count())
        gc.unfreeze()
        await asyncio.sleep(0.1)  # the next settle freezes again
        counts.append(gc.get_freeze_count())
        task.cancel()

    asyncio.run(scenario())
    assert counts[0] == 0 and counts[1] > 0 and counts[2] > 0
