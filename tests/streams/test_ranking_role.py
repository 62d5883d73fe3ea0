"""The ranking worker on a real broker (Tansu) and a real SQL store (SQLite): user
taste kept in the Faust table ``user_taste``, read back from its changelog topic.

One worker process (``clipstream worker ranking``, as `up` and compose run it) serves
the whole module; the tests run in order and build on each other's users. Expected
states come from a RankingState fed the same clips and interactions: the worker and
the replicas must move a user's taste the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import OffsetAndMetadata

from core.broker import EmbeddedBroker, ensure_topics, free_port
from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import Clip
from core.records import ClipMedia, ClipPublished, GeneratorInfo, Interaction
from core.topics import INTERACTIONS, USER_TASTE
from ranking.state import RankingState
from ranking.taste_table import TasteEntry, read_taste_table
from tests.support.stack import read_topic, wait_for

pytestmark = pytest.mark.integration

DIM = 8
GROUP = "clipstream-ranking"


def _embedding(n: int) -> list[float]:
    e = np.random.default_rng(n).normal(size=DIM)
    return [float(x) for x in e / np.linalg.norm(e)]


def _published(n: int, author: uuid.UUID) -> ClipPublished:
    media = ClipMedia(video_key="v", poster_key="p", frame_keys=[], frame_indices=[], mime_type="video/mp4",
                      width=288, height=512, fps=12, frame_count=36, duration_s=3.0, sha256="0" * 64)  # fmt: skip
    return ClipPublished(
        clip_id=uuid.uuid4(), prompt_id=uuid.uuid4(), user_id=author, creator_handle="h", text=f"clip {n}",
        media=media, generator=GeneratorInfo(name="g", version="1", seed=n, render_ms=1), checks=[],
        embedding=_embedding(n), embedding_model="m@1",
    )  # fmt: skip


def _store(factory, rec: ClipPublished) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    with session_scope(factory) as s:
        s.add(
            Clip(
                id=rec.clip_id,
                prompt_id=rec.prompt_id,
                user_id=rec.user_id,
                creator_handle=rec.creator_handle,
                text=rec.text,
                status="published",
                video_key="v",
                poster_key="p",
                mime_type="video/mp4",
                width=288,
                height=512,
                fps=12,
                frame_count=36,
                duration_s=rec.media.duration_s,
                sha256="0" * 64,
                generator={},
                embedding=rec.embedding,
                embedding_model=rec.embedding_model,
                generated_at=now,
                published_at=now,
            )
        )


@dataclass
class Rig:
    bootstrap: str
    env: dict[str, str]
    log: Path
    clips: list[ClipPublished]
    expected: RankingState
    sent: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # user → (partition, offset) sent
    worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "worker", "ranking"],
            env=self.env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            return
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait(10)

    def interact(self, *records: Interaction) -> None:
        """Send to the worker, and apply to the expected state."""

        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                for rec in records:
                    key = str(rec.user_id).encode()
                    md = await producer.send_and_wait(INTERACTIONS.name, rec.to_bytes(), key=key)
                    self.sent.setdefault(str(rec.user_id), []).append((md.partition, md.offset))
            finally:
                await producer.stop()

        asyncio.run(go())
        for rec in records:
            self.expected.apply(rec)

    def poison(self, user: uuid.UUID, value: bytes) -> None:
        async def go() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                await producer.send_and_wait(INTERACTIONS.name, value, key=str(user).encode())
            finally:
                await producer.stop()

        asyncio.run(go())

    def table(self) -> dict[str, TasteEntry]:
        return asyncio.run(read_taste_table(self.bootstrap, timeout_s=10))

    def wait_versions(self, versions: dict[uuid.UUID, int], timeout: float = 40.0) -> dict[str, TasteEntry]:
        def reached() -> dict[str, TasteEntry] | None:
            table = self.table()
            ok = all(str(u) in table and table[str(u)].state.version >= v for u, v in versions.items())
            return table if ok else None

        try:
            return wait_for(reached, timeout, f"user_taste versions {versions}", interval=0.3)
        except AssertionError:
            if self.worker is not None and self.worker.poll() is None:
                self.worker.send_signal(signal.SIGUSR1)  # mode's Worker logs every task's stack
                time.sleep(2)
            print(self.log.read_text(errors="replace")[-20000:])
            with contextlib.suppress(Exception):  # a diagnostic: never hide the timeout
                table = self.table()
                print(
                    "versions now:",
                    {str(u): table[str(u)].state.version if str(u) in table else None for u in versions},
                )
            raise

    def check(self, entry: TasteEntry, user: uuid.UUID) -> None:
        """The worker's entry matches what RankingState made of the same log."""
        want = self.expected.users[str(user)].to_json()
        got = entry.state.to_json()
        assert got["version"] == want["version"] and got["liked"] == want["liked"]
        assert got["affinity"] == pytest.approx(want["affinity"], abs=1e-5)
        assert (got["vector"] is None) == (want["vector"] is None)
        if want["vector"] is not None:
            np.testing.assert_allclose(got["vector"], want["vector"], atol=1e-5)
        np.testing.assert_allclose(
            np.asarray(got["avoid"]).reshape(-1), np.asarray(want["avoid"]).reshape(-1), atol=1e-5
        )
        assert (entry.partition, entry.offset) == self.sent[str(user)][-1], "the last message applied"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("ranking")
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp / "tansu.log")
    broker.start()
    try:
        ensure_topics(broker.bootstrap_servers)
        url = f"sqlite:///{tmp / 'clipstream.db'}"
        migrate(url)
        factory = make_sessionmaker(make_engine(url))
        expected = RankingState(DIM)
        clips = [_published(n, uuid.uuid4()) for n in range(3)]
        for rec in clips:
            _store(factory, rec)
            expected.apply(rec)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA__", "DATABASE_URL", "WORKERS__"))}
        env.update(
            KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            DATABASE_URL=url,
            WORKERS__DATA_DIR=str(tmp / "faust"),
            WORKERS__RETRY_BACKOFF_S="0",
            ENVIRONMENT="test",
            LOG_LEVEL="INFO",
        )
        r = Rig(broker.bootstrap_servers, env, tmp / "worker.log", clips, expected)
        r.start_worker()
        try:
            yield r
        finally:
            r.stop_worker()
    finally:
        broker.stop()


def _partition(user: uuid.UUID) -> int:
    return int(DefaultPartitioner()(str(user).encode(), list(range(INTERACTIONS.partitions)), []))


ANN, BEN, CAL, DEE = (uuid.uuid4() for _ in range(4))
# In a partition of its own, so the restart test can redeliver the others' and not EVE's.
EVE = next(u for u in iter(uuid.uuid4, None) if _partition(u) not in {_partition(v) for v in (ANN, BEN, CAL, DEE)})


def _i(user: uuid.UUID, clip: ClipPublished | uuid.UUID, kind: str, watch_ms: int | None = None) -> Interaction:
    clip_id = clip.clip_id if isinstance(clip, ClipPublished) else clip
    return Interaction(user_id=user, clip_id=clip_id, kind=kind, watch_ms=watch_ms)  # type: ignore[arg-type]


def test_a_like_pulls_toward_the_clip_and_see_less_pushes_away(rig: Rig) -> None:
    x, _, z = rig.clips
    rig.interact(_i(ANN, x, "like"), _i(ANN, x, "view", watch_ms=3000), _i(BEN, z, "see_less"))
    table = rig.wait_versions({ANN: 2, BEN: 1})
    ann, ben = table[str(ANN)], table[str(BEN)]
    assert ann.state.vector is not None and ben.state.vector is not None
    cos = float(ann.state.vector @ np.asarray(x.embedding) / np.linalg.norm(ann.state.vector))
    assert cos > 0.999 and ann.state.liked[0] == str(x.clip_id)
    assert float(ben.state.vector @ np.asarray(z.embedding)) < 0, "see less pushes away"
    np.testing.assert_allclose(ben.state.avoid[0], z.embedding, atol=1e-5)
    assert ann.state.affinity == pytest.approx({str(x.user_id): 0.95 * 1.0 + 0.1})
    rig.check(ann, ANN)
    rig.check(ben, BEN)


def test_a_malformed_record_is_dead_lettered_and_the_next_one_applied(rig: Rig) -> None:
    y = rig.clips[1]
    rig.poison(CAL, b"\x00 not an interaction")
    rig.interact(_i(CAL, y, "share"))
    table = rig.wait_versions({CAL: 1})
    rig.check(table[str(CAL)], CAL)
    dead = [m for m in read_topic(rig.bootstrap, INTERACTIONS.dlq) if m.key == str(CAL).encode()]
    assert [m.value for m in dead] == [b"\x00 not an interaction"]
    headers = dict(dead[0].headers)
    assert headers["x-dlq-consumer"] == GROUP.encode() and headers["x-dlq-exception"] == b"RecordError"


def test_an_unknown_clip_moves_the_version_but_not_the_vector(rig: Rig) -> None:
    rig.interact(_i(DEE, uuid.uuid4(), "like"))
    entry = rig.wait_versions({DEE: 1})[str(DEE)]
    assert entry.state.vector is None and entry.state.version == 1
    rig.check(entry, DEE)


class _AllToOne(AbstractPartitionAssignor):
    """Every partition to the first member, under the protocol name Faust's group uses
    (Tansu keeps an emptied group's protocol and refuses another)."""

    name = "faust"
    version = 0

    @classmethod
    def assign(cls, cluster, members):  # type: ignore[no-untyped-def]
        parts = sorted(cluster.partitions_for_topic(INTERACTIONS.name) or ())
        first, *rest = sorted(members)
        out = {first: ConsumerProtocolMemberAssignment(cls.version, [(INTERACTIONS.name, parts)], b"")}
        out.update({m: ConsumerProtocolMemberAssignment(cls.version, [], b"") for m in rest})
        return out

    @classmethod
    def metadata(cls, topics):  # type: ignore[no-untyped-def]
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment):  # type: ignore[no-untyped-def]
        pass


def _rewind_group(bootstrap: str, partitions: set[int]) -> None:
    """What a crash before the offset commit leaves: the group's committed offsets on
    ``partitions`` behind what the table already holds (here: all the way back to 0)."""

    async def go() -> None:
        # Tansu refuses commits from a consumer outside the group, so join it (the
        # worker is stopped: this consumer gets every partition) and commit from inside.
        consumer = AIOKafkaConsumer(
            INTERACTIONS.name,
            bootstrap_servers=bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            partition_assignment_strategy=(_AllToOne,),
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 30
            while len(consumer.assignment()) < INTERACTIONS.partitions:
                assert time.monotonic() < deadline, "the group never assigned every partition"
                await consumer.getmany(timeout_ms=200)
            await consumer.commit(
                {tp: OffsetAndMetadata(0, "") for tp in consumer.assignment() if tp.partition in partitions}
            )
        finally:
            await consumer.stop()

    asyncio.run(go())


def test_a_restart_resumes_every_user_once_redelivered_or_not(rig: Rig) -> None:
    """EVE's burst is written to the changelog in batches of several entries, which
    the restarted worker must restore to the last one (Tansu misreports where such a
    batch ends: streams.app._install_true_highwaters). The other users' partitions are
    delivered again from offset 0 (which aiokafka alone would not seek to:
    streams.app._install_seek_to_committed_zero), and the worker must skip what it
    already applied, and nothing else (streams.app._install_resume_after_seek)."""
    x, y, _ = rig.clips
    rig.interact(*(_i(EVE, (x, y)[n % 2], "view", watch_ms=500 * n) for n in range(30)))
    before = rig.wait_versions({EVE: 30})
    redelivered = {p for u in (ANN, BEN, CAL, DEE) for p, _ in rig.sent[str(u)]}
    assert rig.sent[str(EVE)][0][0] not in redelivered
    rig.stop_worker()
    _rewind_group(rig.bootstrap, redelivered)
    rig.start_worker()
    # One new interaction per user, behind the redelivered ones in each user's partition.
    rig.interact(
        _i(ANN, y, "skip"), _i(BEN, x, "like"), _i(CAL, y, "unlike"), _i(DEE, x, "impression"), _i(EVE, x, "like")
    )
    users = (ANN, BEN, CAL, DEE, EVE)
    table = rig.wait_versions({u: before[str(u)].state.version + 1 for u in users}, timeout=60)
    for user in users:
        assert table[str(user)].state.version == before[str(user)].state.version + 1, "each message applied once"
        rig.check(table[str(user)], user)
    dead = [m for m in read_topic(rig.bootstrap, INTERACTIONS.dlq) if m.key == str(CAL).encode()]
    # The log really was delivered again: the poison went to the DLQ a second time
    # (or a third: records the worker takes while it recovers are delivered again by
    # the seek to the committed offsets; at-least-once, and the headers say they are
    # one message).
    assert len(dead) >= 2
    sources = {(dict(m.headers)["x-dlq-source-partition"], dict(m.headers)["x-dlq-source-offset"]) for m in dead}
    assert len(sources) == 1


def test_the_reader_honours_tombstones_and_returns_every_user(rig: Rig) -> None:
    async def tombstone() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=rig.bootstrap, acks="all")
        await producer.start()
        try:
            partition, _ = rig.sent[str(DEE)][-1]
            await producer.send_and_wait(USER_TASTE.name, None, key=str(DEE).encode(), partition=partition)
        finally:
            await producer.stop()

    assert {str(u) for u in (ANN, BEN, CAL, DEE)} <= set(rig.table())
    asyncio.run(tombstone())
    table = rig.table()
    assert str(DEE) not in table and {str(u) for u in (ANN, BEN, CAL)} <= set(table)


def test_the_reader_reads_a_batch_of_several_entries_to_its_end(rig: Rig) -> None:
    entry = {"schema_version": 1, "vector": None, "liked": [], "avoid": [], "affinity": {}, "version": 7}
    users = [uuid.uuid4() for _ in range(3)]

    async def batch() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=rig.bootstrap, acks="all", linger_ms=100)
        await producer.start()
        try:
            futures = [
                await producer.send(
                    USER_TASTE.name,
                    json.dumps(entry | {"partition": 0, "offset": n}).encode(),
                    key=str(u).encode(),
                    partition=0,
                )
                for n, u in enumerate(users)
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(batch())
    table = rig.table()
    assert [table[str(u)].offset for u in users] == [0, 1, 2]
    assert all(table[str(u)].state.version == 7 for u in users)
