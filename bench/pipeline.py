"""End-to-end pipeline benchmark on the embedded default.

Baseline, measured in the same run: the same work done in one process with no broker,
no database and no worker hand-offs — render a clip with the procedural renderer and
run the moderation clip checks on it. The pipeline is then `clipstream up --no-seed`
(Tansu, SQLite, one process per role) driven through the HTTP API:

* latency: prompts submitted one at a time; each stage timed from the status events
  and the clips.generated record; end-to-end is POST → visible as published via the API;
* throughput: a burst of prompts submitted at once; clips/s until all are published.

Usage: .venv/bin/python bench/pipeline.py [--latency-n 20] [--burst-n 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.broker import free_port  # noqa: E402
from core.records import ClipGenerated  # noqa: E402
from core.stats import pct  # noqa: E402
from core.topics import CLIPS_GENERATED, decode  # noqa: E402
from generation import RenderRequest, build_generator  # noqa: E402
from moderation.clip_checks import ClipExpectations, check_generated_clip  # noqa: E402
from moderation.prompt_policy import load_prompt_policy  # noqa: E402
from tests.support.stack import UpProcess, read_topic, wait_for  # noqa: E402

PROMPTS = [
    "a cat dancing on the beach at sunset",
    "a red fox running through a snowy forest",
    "a rocket flying through space at night",
    "a boat floating on the ocean at sunrise",
    "a robot dancing in the city at night",
    "a bird flying over the mountains in the morning",
    "a dog jumping on the beach",
    "a fish swimming underwater",
    "flowers floating in space",
    "a pizza spinning in the desert",
]


def baseline(n: int) -> list[float]:
    """Seconds per clip for render + checks in this process."""
    gen = build_generator("procedural")
    policy = load_prompt_policy()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            out = Path(tmp) / str(i)
            out.mkdir()
            text = f"{PROMPTS[i % len(PROMPTS)]} {i}"
            started = time.perf_counter()
            clip = gen.generate([RenderRequest(str(i), str(i), text, i, "bench")], [out])[0]
            verdict = check_generated_clip(
                text,
                clip.video_path,
                ClipExpectations(clip.width, clip.height, clip.frame_count, clip.fps, clip.video_sha256),
                policy,
            )
            times.append(time.perf_counter() - started)
            assert verdict.action == "publish", verdict
    return times


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def accepted_texts(wanted: dict[str, int]) -> dict[str, list[str]]:
    """For each tag, that many distinct prompts that the API's prompt policy accepts, in
    a fixed order. The learned classifier flags a few harmless texts ("a rocket flying
    through space at night, take 93" scores 0.26 on "sexual"); with random suffixes the
    benchmark failed now and then on one of those, and it measures clips, not the
    classifier."""
    from moderation.harm_classifier import default_classifier
    from moderation.prompt_policy import load_prompt_policy
    from moderation.text_moderation import TextModerator

    moderator = TextModerator(load_prompt_policy(), default_classifier())  # as the API runs it
    texts: dict[str, list[str]] = {}
    for tag, n in wanted.items():
        out = texts[tag] = []
        i = 0
        while len(out) < n:
            text = f"{PROMPTS[i % len(PROMPTS)]}, {tag} {i + 1}"
            if moderator.check(text).allowed:
                out.append(text)
            i += 1
    return texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-n", type=int, default=20)
    parser.add_argument("--burst-n", type=int, default=30)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    print(f"cpu: {cpu}")

    base = baseline(max(args.latency_n, 10))
    base_mean = statistics.mean(base)

    cwd = Path(tempfile.mkdtemp(prefix="clipstream-bench-"))
    api_port, kafka_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA__", "DATABASE_URL", "API__", "MEDIA__"))}
    env.update({"API__PORT": str(api_port), "KAFKA__EMBEDDED_PORT": str(kafka_port), "LOG_LEVEL": "WARNING"})
    env["API__RATE_LIMITS_ENABLED"] = "false"  # one benchmark user submits far more than 10 prompts a minute
    env["GENERATION__DAILY_QUOTA"] = "1000000"  # ... and more than the 50 a day a user may generate
    up = UpProcess(cwd, env, ["--no-seed"])
    up.start()
    api = f"http://127.0.0.1:{api_port}"
    bootstrap = f"127.0.0.1:{kafka_port}"
    try:
        wait_for(lambda: httpx.get(f"{api}/readyz", timeout=2).status_code == 200, 90, "API")
        http = httpx.Client(base_url=api, timeout=30)
        token = http.post(
            "/v1/auth/signup", json={"handle": "bench", "display_name": "Bench", "password": "correct horse battery"}
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}

        def submit(text: str) -> str:
            resp = http.post("/v1/prompts", json={"text": text}, headers=auth)
            resp.raise_for_status()
            return str(resp.json()["id"])

        def published(pid: str) -> dict | None:
            body = http.get(f"/v1/prompts/{pid}", headers=auth).json()
            if body["status"] in ("rejected", "failed"):
                raise RuntimeError(f"prompt {pid} {body['status']}: {body['reason']}")
            return body if body["status"] == "published" else None

        texts = accepted_texts({"take": args.latency_n, "burst": args.burst_n})
        latency_texts, burst_texts = texts["take"], texts["burst"]
        # Warm-up: the first prompt pays for the workers' first fetch and imports.
        wait_for(lambda pid=submit("warm up a cat"): published(pid), 120, "warm-up", interval=0.01)

        e2e, rows = [], []
        for i in range(args.latency_n):
            text = latency_texts[i]
            started = time.time()
            pid = submit(text)
            body = wait_for(lambda pid=pid: published(pid), 120, f"prompt {i}", interval=0.02)
            seen = time.time()
            e2e.append(seen - started)
            rows.append((pid, body, started, seen))

        # The timeline fills in asynchronously (status events are their own topic).
        def timeline(pid: str) -> dict[str, float] | None:
            events = http.get(f"/v1/prompts/{pid}", headers=auth).json()["timeline"]
            got = {e["status"]: ts(e["occurred_at"]) for e in events}
            return got if {"queued", "generating", "moderating", "published"} <= set(got) else None

        settle = time.time()
        timelines = {pid: wait_for(lambda pid=pid: timeline(pid), 60, "timeline") for pid, *_ in rows}
        print(f"(timelines complete {time.time() - settle:.1f} s after the last prompt was published)")
        generated = {}
        for m in read_topic(bootstrap, CLIPS_GENERATED.name):
            rec = decode(CLIPS_GENERATED, m.value)
            assert isinstance(rec, ClipGenerated)
            generated[str(rec.prompt_id)] = rec
        stages: dict[str, list[float]] = {
            k: []
            for k in (
                "accept (API)",
                "queue wait",
                "render",
                "hand-off to moderation",
                "moderation",
                "materialize + visible",
            )
        }
        for pid, _, started, seen in rows:
            tl = timelines[pid]
            gen = generated[pid].occurred_at.timestamp()
            stages["accept (API)"].append(tl["queued"] - started)
            stages["queue wait"].append(tl["generating"] - tl["queued"])
            stages["render"].append(gen - tl["generating"])
            stages["hand-off to moderation"].append(tl["moderating"] - gen)
            stages["moderation"].append(tl["published"] - tl["moderating"])
            stages["materialize + visible"].append(seen - tl["published"])

        # Count lag: a like accepted by the API (202) until the clip's count shows it.
        # Baseline from the same run: the like request's own round trip.
        like_rtt, like_lag = [], []
        liked = [pid for pid, body, *_ in rows]
        clip_ids = [http.get(f"/v1/prompts/{pid}", headers=auth).json()["clip_id"] for pid in liked]
        for cid in clip_ids:
            started = time.time()
            assert http.put(f"/v1/clips/{cid}/like", headers=auth).status_code == 202
            like_rtt.append(time.time() - started)
            wait_for(
                lambda cid=cid: http.get(f"/v1/clips/{cid}").json()["stats"]["likes"] == 1,
                30,
                "like count",
                interval=0.01,
            )
            like_lag.append(time.time() - started)

        started = time.time()
        pids = [submit(t) for t in burst_texts]
        for pid in pids:
            wait_for(lambda pid=pid: published(pid), 600, "burst", interval=0.02)
        burst_s = time.time() - started
    finally:
        code = up.interrupt(60)
        if code != 0:
            print(up.output())

    print()
    print(f"Baseline (same run): render + clip checks in one process, {len(base)} clips")
    print(
        f"  per clip: mean {base_mean * 1000:.0f} ms, p50 {pct(base, 50) * 1000:.0f} ms, "
        f"p95 {pct(base, 95) * 1000:.0f} ms; {1 / base_mean:.2f} clips/s"
    )
    print()
    print(f"Pipeline latency, {args.latency_n} prompts one at a time (ms)")
    print(f"  {'stage':<26}{'p50':>8}{'p95':>8}")
    for name, values in stages.items():
        print(f"  {name:<26}{pct(values, 50) * 1000:>8.0f}{pct(values, 95) * 1000:>8.0f}")
    print(f"  {'end to end':<26}{pct(e2e, 50) * 1000:>8.0f}{pct(e2e, 95) * 1000:>8.0f}")
    print(f"  end-to-end p50 / baseline mean: {pct(e2e, 50) / base_mean:.2f}x")
    print()
    print(f"Like → count visible, {len(like_lag)} likes (ms)")
    print(f"  {'like request (baseline)':<26}{pct(like_rtt, 50) * 1000:>8.0f}{pct(like_rtt, 95) * 1000:>8.0f}")
    print(f"  {'like → count visible':<26}{pct(like_lag, 50) * 1000:>8.0f}{pct(like_lag, 95) * 1000:>8.0f}")
    print()
    tput = args.burst_n / burst_s
    print(
        f"Pipeline throughput, burst of {args.burst_n} prompts: {burst_s:.1f} s → {tput:.2f} clips/s;"
        f" ratio to baseline {tput * base_mean:.2f}"
    )
    print(
        json.dumps(
            {
                "baseline_ms": base_mean * 1000,
                "e2e_p50_ms": pct(e2e, 50) * 1000,
                "e2e_p95_ms": pct(e2e, 95) * 1000,
                "burst_clips_per_s": tput,
                "like_lag_p50_ms": pct(like_lag, 50) * 1000,
                "like_lag_p95_ms": pct(like_lag, 95) * 1000,
            }
        )
    )


if __name__ == "__main__":
    main()
