"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio


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
