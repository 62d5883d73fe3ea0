"""A retry loop stops when its task is cancelled, even if the cancellation surfaced as
another error (cleanup that failed on the way out)."""

from __future__ import annotations

import asyncio

import pytest

from core.aio import stop_if_cancelling


async def _operation_whose_cleanup_fails() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise RuntimeError("cleanup failed while being cancelled") from None


async def _retry_loop(attempts: list[int], give_up: asyncio.Event, *, guarded: bool) -> None:
    while not give_up.is_set():
        try:
            attempts.append(1)
            await _operation_whose_cleanup_fails()
        except Exception as e:  # noqa: BLE001 — the pattern under test
            if guarded:
                stop_if_cancelling(e)
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("guarded", [True, False])
def test_a_retry_loop_stops_when_cancelled(guarded: bool) -> None:
    async def scenario() -> tuple[bool, int]:
        attempts: list[int] = []
        give_up = asyncio.Event()
        task = asyncio.create_task(_retry_loop(attempts, give_up, guarded=guarded))
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        stopped = task in done and task.cancelled()
        if not stopped:  # the unguarded loop retries on: end it for good
            give_up.set()
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        return stopped, len(attempts)

    stopped, attempts = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert stopped is guarded, "only the guarded loop stops" if guarded else "the unguarded one retries on"
    assert attempts >= 1


def test_outside_a_cancellation_it_does_nothing() -> None:
    async def scenario() -> None:
        stop_if_cancelling(RuntimeError("an ordinary fault"))

    asyncio.run(scenario())
