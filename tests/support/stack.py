"""Helpers for tests that drive the real stack: processes, Kafka, waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from core.broker import EmbeddedBroker, ensure_topics, free_port

T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except (httpx.HTTPError, OSError) as e:
            value, last = None, e
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children in other sessions included), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class UpProcess:
    """`clipstream up` as a user runs it, in its own folder and ports."""

    def __init__(self, cwd: Path, env: dict[str, str], args: list[str]) -> None:
        self.cwd, self.env, self.args = cwd, env, args
        self.log = cwd / "up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "up", *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        logs = self.cwd / "var" / "logs"
        for f in sorted(logs.glob("*.log")) if logs.exists() else []:
            text += f"\n===== {f.name} (tail) =====\n" + "\n".join(f.read_text(errors="replace").splitlines()[-40:])
        return text

    def interrupt(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill_tree(self) -> None:
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid) | {self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


def produce(
    bootstrap: str,
    topic: str,
    items: list[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
        await producer.start()
        try:
            for key, value in items:
                await producer.send_and_wait(topic, value=value, key=key, headers=headers, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(go())


def read_topic(bootstrap: str, topic: str, timeout: float = 5.0) -> list[Any]:
    """Everything currently in a topic (all partitions, from the beginning)."""

    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        try:
            parts = [
                TopicPartition(topic, p)
                for p in (consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))
            ]
            consumer.assign(parts)
            end = await consumer.end_offsets(parts)
            await consumer.seek_to_beginning(*parts)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in parts]
                if all(pos >= end[tp] for pos, tp in zip(positions, parts, strict=True)):
                    break
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    out.extend(msgs)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(go())


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages in ``topics`` not yet committed by consumer ``group``."""

    async def go() -> int:
        # A consumer with the group's id that never subscribes reads the committed
        # offsets without joining (and so without disturbing) the group.
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            lag = 0
            for topic in topics:
                parts = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
                end = await consumer.end_offsets(parts)
                for tp in parts:
                    done = await consumer.committed(tp) or 0
                    lag += max(0, end[tp] - done)
            return lag
        finally:
            await consumer.stop()

    return asyncio.run(go())


def running_broker(log: Path) -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu) on a free loopback port, with the topic
    catalog, until the generator is closed."""
    b = EmbeddedBroker("127.0.0.1", free_port(), log)
    b.start()
    try:
        ensure_topics(b.bootstrap_servers)
        yield b.bootstrap_servers
    finally:
        b.stop()
