"""The render pool: results come back from a child process; a job past its timeout has
its process killed and the next job runs on a fresh one."""

import os
import time

import pytest

from streams.executors import JobTimeout, ProcessRunner
from tests.support.stack import alive


def child_pid(delay: float = 0.0) -> int:
    time.sleep(delay)
    return os.getpid()


async def test_a_hung_job_is_killed_and_the_runner_recovers() -> None:
    runner = ProcessRunner(1)
    try:
        first = await runner.run(30, child_pid)
        assert first != os.getpid()
        started = time.monotonic()
        with pytest.raises(JobTimeout, match="timed out"):
            await runner.run(0.5, child_pid, 60)
        assert time.monotonic() - started < 10
        second = await runner.run(30, child_pid)
        assert second not in (first, os.getpid()), "a fresh process replaced the killed one"
        assert not alive(first), "the hung process is gone"
    finally:
        runner.close()
