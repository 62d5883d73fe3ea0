"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def stop_if_cancelling(error: BaseException) -> None:
    """Raise CancelledError when the current task is being cancelled.

    For retry loops that catch ``Exception``: when a cancellation arrives in the middle
    of an operation whose cleanup then fails, the cleanup's error replaces the
    CancelledError, and a loop that took it for one more fault to retry would never stop
    (the API's shutdown hung that way on the outbox relay). Call it first in the handler.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking call on a worker thread; a cancellation waits for it to end.

    Cancelling the coroutine does not stop the thread. Were the caller then to roll back
    the same Session from another thread while the call still ran, SQLAlchemy would refuse
    ("concurrent operations are not permitted") and that error would replace the
    CancelledError: the outbox relay took it for a broker fault, retried and never
    stopped, so the API's shutdown hung. Here the call finishes first, then the
    cancellation goes on.
    """
    call = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        while not call.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([call])
        if not call.cancelled():
            call.exception()  # retrieved: the cancellation is what propagates
        raise
