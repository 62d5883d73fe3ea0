"""CPU/GPU work off the event loop, in a child process, with a timeout.

Rendering and decoding hold the GIL for long stretches; in a thread they would starve
Faust's heartbeats and commits. A single-process pool bounds in-flight work to one job
(backpressure: the agent awaits it), and a job that overruns its timeout gets the pool
killed and replaced, so a hung render cannot wedge the worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from core.broker import die_with_parent
from core.errors import ClipstreamError

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobTimeout(ClipstreamError):
    """A job in the process pool ran past its timeout and was killed."""


class ProcessRunner:
    def __init__(
        self, workers: int = 1, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
    ) -> None:
        self.workers = workers
        self.initializer = initializer
        self.initargs = initargs
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_child,
            initargs=(self.initializer, self.initargs),
        )

    @property
    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = self._new_pool()
        return self._pool

    async def run(self, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.pool, fn, *args)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as e:
            log.error("job %s ran past %.0fs; killing its process", getattr(fn, "__name__", fn), timeout)
            self.kill()
            raise JobTimeout(f"{getattr(fn, '__name__', fn)} timed out after {timeout:.0f}s") from e
        except BrokenProcessPool:
            self.kill()
            raise

    def kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 — already gone
                pass
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _init_child(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    die_with_parent()
    if initializer is not None:
        initializer(*initargs)
