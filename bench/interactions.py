"""Interactions path throughput: events/s through the ranking worker, against a bare
aiokafka consume loop over the same topic on the same broker, in the same run.

One Tansu broker on loopback; a SQLite store with ``--clips`` published clips (128-d
embeddings) by ``--users`` users; ``--records`` interactions on those clips (views with
watch time, likes, skips, shares, as the API writes them, keyed by user) spread over
the 12 partitions of ``interactions``.

* **Baseline**: one AIOKafkaConsumer reading every partition from the beginning to the
  end, doing nothing with the records (``bench/lake.py``'s loop).
* **Bare loop + decode**: the same, decoding each record into its pydantic model.
* **Faust floor**: a Faust worker built like every role (``streams.app.create_app``)
  whose one agent runs each record through the same error policy (decode, metrics,
  log context) into a handler that does nothing: what Faust and the policy cost
  before any work is done (``--floor-worker`` runs it).
* **Ranking worker**: ``clipstream worker ranking`` as production runs it (Faust agent,
  error policy, SQL clip lookup behind its cache, the taste update, the ``user_taste``
  table and its changelog), from its first processed record to its last, read from
  the worker's own Prometheus counter (the group join is not throughput).

It also prints each worker's largest resident size while it ran: run it with
``--clips 100000`` and ``--clips 1000000`` for the worker's memory at those catalogue
sizes (the store is written in chunks; a million clips take a few minutes).

Usage: .venv/bin/python bench/interactions.py [--records 50000] [--clips 5000] [--users 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lake import bare, produce  # noqa: E402
from core.broker import EmbeddedBroker, ensure_topics, free_port  # noqa: E402
from core.db import make_engine, migrate  # noqa: E402
from core.db.models import Clip, User  # noqa: E402
from core.stats import rss_mb  # noqa: E402
from core.topics import INTERACTIONS, decode  # noqa: E402

DIM = 128
STORE_CHUNK = 20_000


def build_store(db_url: str, clips: int, users: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Users and published clips with embeddings, written in bulk (in chunks, so a
    million clips do not become a million row dicts at once)."""
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    user_ids = [uuid.uuid4() for _ in range(users)]
    clip_ids = [uuid.uuid4() for _ in range(clips)]
    migrate(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            User.__table__.insert(),
            [{"id": u, "handle": f"u{i}", "handle_key": f"u{i}", "handle_skeleton": f"u{i}", "display_name": f"U{i}",
              "bio": "", "role": "user", "created_at": now} for i, u in enumerate(user_ids)],
        )  # fmt: skip
        for start in range(0, clips, STORE_CHUNK):
            part = clip_ids[start : start + STORE_CHUNK]
            vecs = rng.normal(size=(len(part), DIM)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            conn.execute(
                Clip.__table__.insert(),
                [{"id": cid, "prompt_id": uuid.uuid4(), "user_id": user_ids[i % users],
                  "creator_handle": f"u{i % users}", "text": "bench", "status": "published",
                  "video_key": f"clips/{cid}/clip.mp4", "poster_key": f"clips/{cid}/poster.jpg",
                  "mime_type": "video/mp4", "width": 288, "height": 512, "fps": 12, "frame_count": 36,
                  "duration_s": 3.0, "sha256": "0" * 64, "generator": {}, "checks": [], "block_reasons": [],
                  "generated_at": now, "published_at": now, "embedding": vec.tolist(), "embedding_model": "bench"}
                 for i, cid, vec in zip(range(start, start + len(part)), part, vecs, strict=True)],
            )  # fmt: skip
    engine.dispose()
    return user_ids, clip_ids


def processed(port: int) -> float:
    """The ranking worker's count of processed interactions, from its /metrics."""
    try:
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for line in page.splitlines():
        if line.startswith("clipstream_messages_total{") and 'topic="interactions"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def floor_worker() -> None:
    """Run the Faust floor: a worker whose agent sends every interaction through the
    error policy into a handler that does nothing (serves /metrics like a role)."""
    from faust.worker import Worker

    from core import metrics
    from core.settings import Settings
    from streams.app import RecordSender, create_app
    from streams.errors import register_agent

    settings = Settings()
    settings.workers.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, "bench-floor")

    async def nothing(record: object, message: object) -> None:
        return None

    register_agent(app, INTERACTIONS, settings, nothing, name="floor", sender=RecordSender(app))
    metrics.serve(settings.workers.metrics_port)
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def run_worker(
    command: list[str], env: dict[str, str], port: int, n: int, log: Path, timeout_s: float
) -> tuple[float, float, float | None]:
    """Start a worker process (``command``); (seconds from its first processed record to
    its last, records counted in that span, its largest resident size in MB)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            env={**env, "WORKERS__METRICS_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout_s
            first = None
            peak: float | None = None
            while time.monotonic() < deadline:
                done = processed(port)
                now = time.perf_counter()
                try:
                    rss = rss_mb(proc.pid)
                except OSError:  # it has just exited: the poll below says so
                    rss = float("nan")
                if not math.isnan(rss):  # NaN: unknown
                    peak = rss if peak is None else max(peak, rss)
                if first is None and done > 0:
                    first = (now, done)
                if done >= n:
                    assert first is not None
                    if now <= first[0]:
                        raise SystemExit(f"{command} processed all {n} records between two samples: "
                                         "too few to time, pass more --records")  # fmt: skip
                    return now - first[0], done - first[1], peak
                if proc.poll() is not None:
                    raise SystemExit(f"{command} exited; see {log}")
                time.sleep(0.05)
            raise SystemExit(f"{command} processed {processed(port):.0f} of {n} in {timeout_s:.0f}s; see {log}")
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--clips", type=int, default=5_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--floor-worker", action="store_true", help="run the Faust floor worker (used by the benchmark)")
    args = ap.parse_args()
    if args.floor_worker:
        floor_worker()
        return

    with tempfile.TemporaryDirectory(prefix="clipstream-bench-") as tmp:
        root = Path(tmp)
        db_url = f"sqlite:///{root / 'clipstream.db'}"
        t = time.perf_counter()
        users, clips = build_store(db_url, args.clips, args.users)
        print(f"store: {args.clips} clips by {args.users} users in {time.perf_counter() - t:.1f}s", flush=True)
        port = free_port()
        broker = EmbeddedBroker("127.0.0.1", port, root / "broker.log")
        broker.start()
        try:
            bootstrap = f"127.0.0.1:{port}"
            ensure_topics(bootstrap)
            t = time.perf_counter()
            asyncio.run(produce(bootstrap, args.records, users=users, clips=clips))
            print(f"produced {args.records} interactions in {time.perf_counter() - t:.1f}s", flush=True)
            bare_s = asyncio.run(bare(bootstrap, args.records))
            decode_s = asyncio.run(bare(bootstrap, args.records, lambda m: decode(INTERACTIONS, m.value)))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA__", "WORKERS__", "DATABASE_URL"))}
            env.update(
                {
                    "KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                    "DATABASE_URL": db_url,
                    "WORKERS__DATA_DIR": str(root / "faust"),
                    "LOG_LEVEL": "WARNING",
                    "PYTHONUNBUFFERED": "1",
                }
            )
            floor_s, floor_n, floor_rss = run_worker(
                [sys.executable, __file__, "--floor-worker"], env, free_port(), args.records, root / "floor.log",
                args.timeout,
            )  # fmt: skip
            worker_s, counted, worker_rss = run_worker(
                [sys.executable, "-m", "core.cli", "worker", "ranking"], env, free_port(), args.records,
                root / "worker.log", args.timeout,
            )  # fmt: skip
        finally:
            broker.stop()

    n = args.records
    rows = [
        ("bare aiokafka loop (baseline)", n / bare_s, 1.0),
        ("bare loop + decode", n / decode_s, bare_s / decode_s),
        ("Faust floor (agent + error policy, no-op handler)", floor_n / floor_s, (floor_n / floor_s) / (n / bare_s)),
        ("ranking worker (Faust, lookup, taste, table)", counted / worker_s, (counted / worker_s) / (n / bare_s)),
    ]
    print()
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {n} interactions,")
    print(f"{args.clips} clips, {args.users} users, 12 partitions, one process each")
    print()
    floor = floor_n / floor_s
    print("| path | events/s | vs bare loop | vs Faust floor |")
    print("|---|---:|---:|---:|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.3f} | {rate / floor:.2f} |")
    print()
    print("Resident memory, largest while it ran (the floor is a Faust worker holding nothing):")
    print()
    print("| process | peak RSS MB |")
    print("|---|---:|")
    for name, rss in (("Faust floor worker", floor_rss), ("ranking worker", worker_rss)):
        print(f"| {name} | {'n/a' if rss is None else f'{rss:,.0f}'} |")


if __name__ == "__main__":
    main()
