"""Personalised feed benchmark on the embedded stack (Tansu, SQLite, one API process).

World: N clips by U users (each user is also a creator), each following F others;
clip embeddings are a mixture of topic centroids in the frame model's 128-d space;
every user has I interactions (likes, watches, skips) on clips of their two favourite
topics, so tastes, seen sets, engagement and trending are all populated. The clips and
users go into the SQL store; the ranking state is built by replaying the interactions
through the same RankingState the API uses and saved as a replica snapshot, which the
API process starts from (what a restarted replica does), then tails the live log.

Measured, in the same run against the same API process:

* baseline: a trivial endpoint (``GET /healthz``), 8 concurrent keep-alive connections;
* ``GET /v1/feed?limit=20`` as random signed-in users, 8 concurrent connections:
  latency percentiles and requests/s, and the ratio to the baseline;
* freshness: a user likes a clip (``PUT /v1/clips/{id}/like`` → 202), then asks for
  their feed until it reflects the like (the clip is in the state the page was ranked
  with: ``explain.liked``); like accepted → reflected, percentiles.

The load generator speaks HTTP/1.1 over raw asyncio sockets, so it costs little CPU
next to the server on a 2-core machine.

Usage: .venv/bin/python bench/feed.py [--clips 100000] [--users 10000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.auth import hash_token  # noqa: E402
from core.broker import EmbeddedBroker, ensure_topics, free_port  # noqa: E402
from core.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from core.db.models import ApiToken, Clip, ClipStats, Follow, User  # noqa: E402
from core.records import ClipPublished, GeneratorInfo, Interaction  # noqa: E402
from core.settings import ApiSettings, Settings  # noqa: E402
from core.stack import api_layout  # noqa: E402
from core.stats import cpu_s, pct, rss_mb  # noqa: E402
from ranking.snapshot import save_snapshot  # noqa: E402
from ranking.state import RankingState  # noqa: E402
from tests.support.factories import fake_media  # noqa: E402
from tests.support.stack import wait_for  # noqa: E402

DIM = 128
TOPICS = 200
NOW = datetime.now(UTC)


# ---------------------------------------------------------------------------- the world
def build_world(db_url: str, clips: int, users: int, follows: int, interactions: int, snapshot: Path) -> dict:
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    centroids = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    clip_topic = rng.integers(0, TOPICS, clips)
    vecs = centroids[clip_topic] + rng.normal(0, 0.35 / np.sqrt(DIM) * 4, (clips, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    user_ids = [uuid.uuid4() for _ in range(users)]
    clip_ids = [uuid.uuid4() for _ in range(clips)]
    author = rng.integers(0, users, clips)
    ages_s = rng.uniform(0, 7 * 24 * 3600, clips)
    pepper = Settings().secret_key.get_secret_value()
    tokens = [f"cs_{uuid.uuid4().hex}{uuid.uuid4().hex}" for _ in range(users)]

    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            User.__table__.insert(),
            [
                {"id": u, "handle": f"u{i}", "handle_key": f"u{i}", "handle_skeleton": f"u{i}", "display_name": f"U{i}",
                 "bio": "", "role": "user", "created_at": NOW}
                for i, u in enumerate(user_ids)
            ],
        )  # fmt: skip
        conn.execute(
            ApiToken.__table__.insert(),
            [{"token_hash": hash_token(t, pepper), "user_id": u, "created_at": NOW,
              "expires_at": NOW + timedelta(days=1)} for t, u in zip(tokens, user_ids, strict=True)],
        )  # fmt: skip
        pairs = {(int(a), int(b)) for a, b in rng.integers(0, users, (users * follows, 2)) if a != b}
        conn.execute(
            Follow.__table__.insert(),
            [{"follower_id": user_ids[a], "followee_id": user_ids[b], "created_at": NOW} for a, b in pairs],
        )
        rows = []
        for i, cid in enumerate(clip_ids):
            at = NOW - timedelta(seconds=float(ages_s[i]))
            rows.append(
                {"id": cid, "prompt_id": uuid.uuid4(), "user_id": user_ids[author[i]],
                 "creator_handle": f"u{author[i]}", "text": f"clip of topic {clip_topic[i]}", "status": "published",
                 "video_key": f"clips/{cid}/clip.mp4", "poster_key": f"clips/{cid}/poster.jpg",
                 "mime_type": "video/mp4", "width": 288, "height": 512, "fps": 12, "frame_count": 36,
                 "duration_s": 3.0, "sha256": "0" * 64, "generator": {}, "checks": [], "block_reasons": [],
                 "generated_at": at, "published_at": at}
            )  # fmt: skip
            if len(rows) == 5000:
                conn.execute(Clip.__table__.insert(), rows)
                rows = []
        if rows:
            conn.execute(Clip.__table__.insert(), rows)
        conn.execute(ClipStats.__table__.insert(), [{"clip_id": c} for c in clip_ids[: clips // 10]])
    engine.dispose()
    sql_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    state = RankingState(DIM)
    media = fake_media("clips/x")
    gen = GeneratorInfo(name="bench", version="1", seed=1, render_ms=1)
    order = np.argsort(-ages_s)  # oldest first, as the log would have them
    for i in order:
        state.apply(
            ClipPublished(
                clip_id=clip_ids[i], prompt_id=uuid.uuid4(), user_id=user_ids[author[i]], creator_handle="x",
                text="t", media=media, generator=gen, checks=[], embedding=vecs[i].tolist(),
                occurred_at=NOW - timedelta(seconds=float(ages_s[i])),
            )
        )  # fmt: skip
    by_topic: dict[int, np.ndarray] = {t: np.flatnonzero(clip_topic == t) for t in range(TOPICS)}
    kinds = ["like", "view", "view", "view", "skip", "impression", "impression", "share"]
    for u in range(users):
        favourites = rng.integers(0, TOPICS, 2)
        for _ in range(interactions):
            pool = by_topic[int(rng.choice(favourites))] if rng.random() < 0.8 else None
            i = int(rng.choice(pool)) if pool is not None and len(pool) else int(rng.integers(0, clips))
            kind = kinds[int(rng.integers(0, len(kinds)))]
            state.apply(
                Interaction(
                    user_id=user_ids[u], clip_id=clip_ids[i], kind=kind,  # type: ignore[arg-type]
                    watch_ms=int(rng.integers(300, 6000)) if kind == "view" else None,
                    occurred_at=NOW - timedelta(seconds=float(rng.uniform(0, 6 * 3600))),
                )
            )  # fmt: skip
    save_snapshot(state, {}, snapshot)
    state_s = time.perf_counter() - t1
    return {
        "tokens": tokens,
        "clip_ids": [str(c) for c in clip_ids],
        "sql_s": sql_s,
        "state_s": state_s,
        "follows": len(pairs),
        "interactions": users * interactions,
    }


# ---------------------------------------------------------------------------- load
async def _one_connection(
    port: int,
    paths: list[tuple[str, str | None]],
    deadline: float,
    latencies: list[float],
    errors: list[str],
    handler_ms: list[float],
    started: list[float],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            path, token = random.choice(paths)
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            t = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                lower = line.lower()
                if lower.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif lower.startswith(b"server-timing:") and b"dur=" in lower:
                    handler_ms.append(float(lower.split(b"dur=")[1].split(b",")[0]))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            started.append(t)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


async def load(port: int, paths: list[tuple[str, str | None]], seconds: float, conns: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    handler_ms: list[float] = []  # the feed's own Server-Timing: its handler, from start to the page built
    started: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(
        *[_one_connection(port, paths, start + seconds, latencies, errors, handler_ms, started) for _ in range(conns)]
    )
    elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    # Where in the run the slowest 1% of requests started, by second: spread evenly,
    # the tail is queueing; bunched in a few seconds, something stalled the API then.
    slow = pct(ms, 99) if ms else 0.0
    by_second = collections.Counter(int(t - start) for t, x in zip(started, ms, strict=True) if x >= slow)
    return {
        "requests": len(ms),
        "rps": len(ms) / elapsed,
        "p50": pct(ms, 50),
        "p95": pct(ms, 95),
        "p99": pct(ms, 99),
        "max": max(ms, default=float("nan")),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "handler_p50": pct(handler_ms, 50) if handler_ms else None,
        "handler_p99": pct(handler_ms, 99) if handler_ms else None,
        "slowest_by_second": dict(sorted(by_second.items())),
    }


def freshness(base: str, tokens: list[str], clip_ids: list[str], n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=10) as http:
        for k in range(n):
            auth = {"Authorization": f"Bearer {tokens[k]}"}
            cid = clip_ids[(k * 7919) % len(clip_ids)]
            resp = http.put(f"/v1/clips/{cid}/like", headers=auth)
            assert resp.status_code == 202, resp.text
            t0 = time.perf_counter()
            while True:
                page = http.get("/v1/feed", headers=auth, params={"limit": 1, "explain": True}).json()
                if cid in page["explain"]["liked"]:
                    break
                if time.perf_counter() - t0 > 10:
                    raise SystemExit(f"like of {cid} not reflected in 10 s")
                time.sleep(0.005)
            out.append((time.perf_counter() - t0) * 1000)
    return out


# ---------------------------------------------------------------------------- in-process
def in_process(db_url: str, snapshot: Path, tokens: list[str], n_users: int = 300, rounds: int = 1000) -> dict:
    """A feed request's own work, without HTTP, broker or load: one process serves
    ``rounds`` first pages (session, token, plan, live filters, re-rank, hydration) to
    ``n_users`` signed-in users whose plans it made first. Compare code versions with
    this: it does not move with the machine's HTTP and scheduling noise."""
    from api.auth import token_user_id
    from api.feed_service import FeedService
    from core.settings import RankingSettings

    settings = Settings(database_url=db_url, ranking=RankingSettings(snapshot_dir=snapshot, save_snapshots=False))
    pepper = settings.secret_key.get_secret_value()
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    service = FeedService(settings, factory)
    assert service.tail is not None
    service.tail.ready.set()  # the snapshot is the state: nothing to catch up with
    chosen = tokens[:n_users]

    def serve(token: str) -> None:
        with factory() as session:
            found = token_user_id(session, token, pepper)
            assert found is not None
            service.page(session, found[1], 20, None)

    t0 = time.perf_counter()
    for token in chosen:
        serve(token)  # makes each user's plan
    plans_ms = (time.perf_counter() - t0) * 1000 / len(chosen)
    rng = random.Random(0)
    for _ in range(100):
        serve(rng.choice(chosen))
    t0 = time.perf_counter()
    for _ in range(rounds):
        serve(rng.choice(chosen))
    engine.dispose()
    return {"plan_ms": plans_ms, "page_ms": (time.perf_counter() - t0) * 1000 / rounds}


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--follows", type=int, default=20, help="people each user follows")
    ap.add_argument("--interactions", type=int, default=30, help="interactions per user")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load run")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--fresh-n", type=int, default=50)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", type=Path, help="build the world into this folder once and reuse it on later runs")
    ap.add_argument(
        "--profile",
        type=Path,
        help="py-spy the API during each load run, sampling the thread that holds the GIL "
        "(collapsed stacks in FILE.feed, FILE.floor)",
    )
    ap.add_argument(
        "--api-processes", type=int, default=1,
        help="API processes sharing the port, as `clipstream up` runs API__PROCESSES",
    )  # fmt: skip
    ap.add_argument(
        "--balance", choices=["least-connections", "kernel"], default="least-connections",
        help="how connections are spread over several API processes (API__BALANCE)",
    )  # fmt: skip
    ap.add_argument(
        "--floor", action="store_true",
        help="also load order=newest (auth, SQL page, hydration, JSON: everything but ranking)",
    )  # fmt: skip
    ap.add_argument(
        "--in-process", action="store_true",
        help="only time a feed request's own work in this process (no HTTP, broker or load), then stop",
    )  # fmt: skip
    args = ap.parse_args()
    if args.api_processes < 1:
        ap.error("--api-processes must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="clipstream-feed-bench-"))
    kept = args.keep / "world.json" if args.keep else None
    if kept is not None and kept.is_file():
        # A world built by an earlier run: its SQL store, and the snapshot as it was built
        # (the API rewrites its own copy on the way out, with this run's log positions).
        world = json.loads(kept.read_text())
        db_url = f"sqlite:///{args.keep / 'bench.db'}"
        shutil.copytree(args.keep / "snapshot", work / "snapshot")
        print(f"world from {args.keep}", flush=True)
    else:
        home = args.keep or work
        home.mkdir(parents=True, exist_ok=True)
        db_url = f"sqlite:///{home / 'bench.db'}"
        migrate(db_url)
        print(f"building {args.clips:,} clips, {args.users:,} users ...", flush=True)
        world = build_world(db_url, args.clips, args.users, args.follows, args.interactions, home / "snapshot")
        print(f"  SQL store {world['sql_s']:.1f} s, ranking state + snapshot {world['state_s']:.1f} s", flush=True)
        if kept is not None:
            kept.write_text(json.dumps(world))
            shutil.copytree(home / "snapshot", work / "snapshot")

    if args.in_process:
        r = in_process(db_url, work / "snapshot", world["tokens"])
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"in-process, 300 users: a plan {r['plan_ms']:.1f} ms; a page from it {r['page_ms']:.2f} ms "
              "(session, token, filters, re-rank, hydration; 1,000 requests)")  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
        return 0

    broker = EmbeddedBroker("127.0.0.1", free_port(), work / "tansu.log")
    broker.start()
    ensure_topics(broker.bootstrap_servers)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "API__PORT": str(port),
        "API__RATE_LIMITS_ENABLED": "false",
        "MEDIA__ROOT": str(work / "media"),
        "RANKING__SNAPSHOT_DIR": str(work / "snapshot"),
        "LOG_LEVEL": "WARNING",
        # The prompt classifier loads MiniLM in a background thread at start, which
        # would compete with the load for the two cores; no prompts are sent here.
        "MODERATION__CLASSIFIER_ENABLED": "false",
    }
    layout = api_layout(
        Settings(database_url=db_url, api=ApiSettings(port=port, processes=args.api_processes, balance=args.balance)),
        work,
    )
    apis = [  # as `clipstream up` runs them
        subprocess.Popen([sys.executable, "-m", "core.cli", "api"], cwd=ROOT, env={**env, **own})
        for own in layout.processes
    ]
    balancer = None
    if layout.balancer is not None:
        balance = [sys.executable, "-m", "core.cli", "balance"]
        balancer = subprocess.Popen(balance, cwd=ROOT, env={**env, **layout.balancer})
    api = apis[0]
    base = f"http://127.0.0.1:{port}"
    try:
        t = time.perf_counter()

        def every_process(ok: Callable[[dict], bool]) -> bool | None:
            """``ok`` holds for each API process's /readyz (new connections reach them at
            random, so ask until every one has answered, and answered yes)."""
            answers: dict[int, bool] = {}
            for _ in range(40 * len(apis)):
                body = httpx.get(f"{base}/readyz", timeout=2).json()
                answers[body["process"]] = ok(body)
                if len(answers) == len(apis):
                    break
            return (len(answers) == len(apis) and all(answers.values())) or None

        wait_for(
            lambda: every_process(lambda b: (b.get("ranking") or {}).get("mode") == "personalised"),
            300,
            "the API's ranking replica",
        )
        ready_s = time.perf_counter() - t
        rss_ready = sum(rss_mb(a.pid) for a in apis)

        def plans_made() -> bool | None:
            def made(body: dict) -> bool:
                plans = body["ranking"]["plans"]
                return bool(plans["warming"] == 0 and plans["plans"] > 0)

            return every_process(made)

        wait_for(plans_made, 1200, "feed plans for the active users")
        plans_s = time.perf_counter() - t - ready_s
        print(f"  feed plans for {args.users:,} users made ahead in {plans_s:.0f} s", flush=True)
        status = httpx.get(f"{base}/readyz").json()["ranking"]
        print(f"  API ready in {ready_s:.1f} s: {status}", flush=True)

        users = [("/v1/feed?limit=20", tok) for tok in world["tokens"]]
        asyncio.run(load(port, users[:200], 3, args.conns))  # warm-up
        server_ms, client_ms = [], []
        with httpx.Client(base_url=base, timeout=10) as http:
            # Users the warm-up left alone: it shows each of its 200 users several pages,
            # so many of them have seen all of their plan, and their next page makes one.
            for path, tok in users[200:300] or users[:100]:
                t = time.perf_counter()
                r = http.get(path, headers={"Authorization": f"Bearer {tok}"})
                client_ms.append((time.perf_counter() - t) * 1000)
                server_ms.append(float(r.headers["server-timing"].split("dur=")[1]))
        print(f"  one at a time: ranking {pct(server_ms, 50):.1f} ms, whole request {pct(client_ms, 50):.1f} ms (p50)")

        def measured(paths: list[tuple[str, str | None]]) -> dict:
            """One load run, with the CPU time the API, the broker and this process
            (the load generator) spent during it, per request."""
            assert broker.process is not None
            serving = apis + ([balancer] if balancer else [])
            pids = {"api": [a.pid for a in serving], "broker": [broker.process.pid], "load": [os.getpid()]}
            before = {k: sum(cpu_s(p) for p in ps) for k, ps in pids.items()}
            result = asyncio.run(load(port, paths, args.seconds, args.conns))
            n = max(result["requests"], 1)
            result["cpu_ms"] = {k: (sum(cpu_s(p) for p in ps) - before[k]) * 1000 / n for k, ps in pids.items()}
            return result

        bare = measured([("/healthz", None)])

        def run(paths: list[tuple[str, str | None]], name: str) -> dict:
            spy = None
            if args.profile:
                out = args.profile.with_name(f"{args.profile.name}.{name}")
                spy = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(api.pid), "--format", "raw", "-o", str(out),
                     "--duration", str(int(args.seconds)), "--rate", "200", "--nonblocking", "--gil"]
                )  # fmt: skip
            result = measured(paths)
            if spy is not None:
                spy.wait(60)
            return result

        feed = run(users, "feed")
        floor = None
        if args.floor:
            floor = run([("/v1/feed?limit=20&order=newest", tok) for tok in world["tokens"]], "floor")
        ranking_status = httpx.get(f"{base}/readyz").json()["ranking"]
        plan_stats, clip_cache = ranking_status["plans"], ranking_status.get("clip_cache")
        rss_loaded = sum(rss_mb(a.pid) for a in apis)
        fresh = freshness(base, world["tokens"][-args.fresh_n :], world["clip_ids"], args.fresh_n)
    finally:
        everyone = ([balancer] if balancer else []) + apis  # no new connections first
        for a in everyone:
            a.terminate()
        for a in everyone:
            a.wait(120)  # the first API process writes its snapshot on the way out
        broker.stop()

    ratio = feed["rps"] / bare["rps"]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.api_processes} API process(es)"
          + (f", balance={args.balance}" if args.api_processes > 1 else ""))  # fmt: skip
    print(
        f"world: {args.clips:,} clips, {args.users:,} users, {world['follows']:,} follows, "
        f"{world['interactions']:,} interactions; {args.conns} connections, {args.seconds:.0f} s per run\n"
    )
    print(
        "| endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| CPU ms/request: API, broker, load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    rows = [("GET /healthz (baseline)", bare), ("GET /v1/feed?limit=20", feed)]
    if floor is not None:
        rows.append(("GET /v1/feed?limit=20&order=newest (floor)", floor))
    for name, r in rows:
        cpu = r["cpu_ms"]
        print(f"| {name} | {r['requests']:,} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
              f"| {r['max']:.0f} | {r['errors']} "
              f"| {cpu['api']:.2f}, {cpu['broker']:.2f}, {cpu['load']:.2f} |")  # fmt: skip
    spread = feed["slowest_by_second"]
    if spread:
        worst = max(spread.values())
        print(f"\nslowest 1% of feed requests (p99 and over): started in {len(spread)} of the run's "
              f"{args.seconds:.0f} seconds; the worst second holds {worst} of {sum(spread.values())}")  # fmt: skip
    print(f"\nfeed plans after the load: {plan_stats}")
    print(f"clip JSON cache after the load (one API process): {clip_cache}")
    print(f"API resident memory (all processes): {rss_ready:,.0f} MB once the replicas were ready, "
          f"{rss_loaded:,.0f} MB after the plans and the load")  # fmt: skip
    print(f"feed / baseline throughput: {ratio:.2f}  (target >= 0.3)")
    print(f"feed p99: {feed['p99']:.1f} ms  (target <= 50 ms)")
    print(f"  of which in the feed handler (its Server-Timing: worker thread, SQL and ranking, GIL waits "
          f"included): p50 {feed['handler_p50']:.1f} ms, p99 {feed['handler_p99']:.1f} ms; the rest is HTTP, "
          "the response and waiting for the event loop")  # fmt: skip
    print(f"like -> next feed reflects it (n={len(fresh)}): p50 {pct(fresh, 50):.0f} ms, "
          f"p95 {pct(fresh, 95):.0f} ms, max {max(fresh):.0f} ms  (target p95 <= 1000 ms)")  # fmt: skip
    if args.json:
        summary = {k: v for k, v in world.items() if k not in ("tokens", "clip_ids")}
        out = {"bare": bare, "feed": feed, "ratio": ratio, "fresh_ms": fresh, "ready_s": ready_s, "world": summary,
               "api_processes": args.api_processes, "balance": args.balance}  # fmt: skip
        args.json.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
