"""Recovery resumes a worker's stream partitions only after seeking them
(streams.app.holding_stream_resumes / resuming_after): a record past the ones skipped
during a rebalance must not reach the agent before the seek delivers those again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.app import holding_stream_resumes, resuming_after

STREAM, OTHER, CHANGELOG = ("interactions", 0), ("interactions", 1), ("t-changelog", 0)


@dataclass
class _Consumer:
    """What the patch uses of Faust's consumer: resume_partitions and the active set."""

    assigned: set[Any]
    active: set[Any] = field(default_factory=set)

    def _is_changelog_tp(self, tp: Any) -> bool:
        return str(tp[0]).endswith("-changelog")

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def original_resume(self, tps: Any) -> None:
        self.active |= set(tps)


def _recovery(consumer: _Consumer, generation: int) -> Any:
    app = type("App", (), {"consumer": consumer, "consumer_generation_id": generation})()
    return type("Recovery", (), {"app": app})()


def _patched() -> Any:
    return holding_stream_resumes(_Consumer.original_resume)


@pytest.mark.parametrize("rebalanced", [False, True])
def test_stream_partitions_resume_only_when_recovery_has_returned(rebalanced: bool) -> None:
    consumer = _Consumer({STREAM, OTHER, CHANGELOG})
    resume = _patched()
    during: list[set[Any]] = []

    async def ends_rebalance(self: Any, generation_id: int) -> None:
        resume(consumer, {STREAM, OTHER, CHANGELOG})  # Faust: resume, then seek
        await asyncio.sleep(0)  # the seek: the fetcher runs meanwhile
        during.append(set(consumer.active))
        if rebalanced:
            self.app.consumer_generation_id += 1

    recovery = _recovery(consumer, generation=3)
    asyncio.run(resuming_after(ends_rebalance, _Consumer.original_resume)(recovery, 3))
    assert during == [{CHANGELOG}], "only the changelog resumed while seeking"
    assert consumer.active == ({CHANGELOG} if rebalanced else {STREAM, OTHER, CHANGELOG})
    assert vars(consumer)["_clipstream_held"] is None, "no longer holding"


def test_a_failed_recovery_leaves_them_paused_and_later_resumes_are_not_held() -> None:
    consumer = _Consumer({STREAM, CHANGELOG})
    resume = _patched()

    async def fails(self: Any, generation_id: int) -> None:
        resume(consumer, {STREAM})
        raise TimeoutError("seek timed out")

    with pytest.raises(TimeoutError):
        asyncio.run(resuming_after(fails, _Consumer.original_resume)(_recovery(consumer, 1), 1))
    assert consumer.active == set()
    resume(consumer, {STREAM})  # outside recovery: as Faust does
    assert consumer.active == {STREAM}


def test_only_partitions_still_assigned_are_resumed() -> None:
    consumer = _Consumer({STREAM, OTHER})
    resume = _patched()

    async def loses_one(self: Any, generation_id: int) -> None:
        resume(consumer, {STREAM, OTHER})
        consumer.assigned.discard(OTHER)

    asyncio.run(resuming_after(loses_one, _Consumer.original_resume)(_recovery(consumer, 1), 1))
    assert consumer.active == {STREAM}
