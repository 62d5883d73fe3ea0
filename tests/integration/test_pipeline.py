"""End to end on real processes: `clipstream up` with a real Kafka-protocol broker.

Two stacks: the embedded default (Tansu started by `up`, SQLite) and the
production-like shape (an external broker, PostgreSQL), both with the demo seeder. Each: a prompt becomes a
published clip whose video decodes; poison on every consumed topic is dead-lettered
while good messages flow; redelivered events create nothing twice; Ctrl-C leaves no
process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import polars as pl
import pytest

from core.broker import free_port, port_open
from core.lake import Lake
from core.topics import (
    CATALOG,
    CLIPS_BLOCKED,
    CLIPS_FLAGGED,
    CLIPS_GENERATED,
    CLIPS_PUBLISHED,
    GENERATION_STATUS,
    INTERACTIONS,
    MODERATION_DECISIONS,
    PROMPTS,
    SOCIAL_EVENTS,
    TopicSpec,
)
from tests.support.stack import UpProcess, alive, descendants, group_lag, produce, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PUBLISH_TIMEOUT = 120.0
POISON_KEY = b"poison-" + uuid.uuid4().hex.encode()


class Stack:
    def __init__(self, up: UpProcess, api: str, bootstrap: str, variant: str) -> None:
        self.up, self.api, self.bootstrap, self.variant = up, api, bootstrap, variant
        self.http = httpx.Client(base_url=api, timeout=30)

    def user(self, handle: str) -> dict[str, str]:
        resp = self.http.post(
            "/v1/auth/signup",
            json={"handle": handle, "display_name": handle.title(), "password": "correct horse battery"},
        )
        assert resp.status_code == 201, resp.text
        return {"Authorization": f"Bearer {resp.json()['token']}"}

    def wait_prompt(self, pid: str, auth: dict[str, str], final: set[str]) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            body = self.http.get(f"/v1/prompts/{pid}", headers=auth).json()
            return body if body["status"] in final else None

        try:
            return wait_for(done, PUBLISH_TIMEOUT, f"prompt {pid} to reach {final}")
        except AssertionError:
            print(self.up.output())
            raise


@pytest.fixture(scope="module", params=["sqlite-embedded", "postgres-external"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cwd = tmp_path_factory.mktemp(request.param)
    api_port = free_port()
    ours = ("KAFKA__", "DATABASE_URL", "API__", "MEDIA__", "LAKE__", "LOG_FORMAT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update({"API__PORT": str(api_port), "ENVIRONMENT": "test", "LOG_LEVEL": "INFO", "LAKE__ROLL_SECONDS": "1"})
    pg_db = None
    if request.param == "sqlite-embedded":
        bootstrap = f"127.0.0.1:{free_port()}"
        env["KAFKA__EMBEDDED_PORT"] = bootstrap.rsplit(":", 1)[1]
        args: list[str] = []
    else:
        bootstrap = request.getfixturevalue("broker")
        env["KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
        import psycopg

        pg_db = f"clipstream_e2e_{uuid.uuid4().hex[:10]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{pg_db}"')
        env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{pg_db}"
        env["LOG_FORMAT"] = "json"  # as compose runs it; the sqlite variant keeps the text format
        args = []
    up = UpProcess(cwd, env, args)
    up.start()
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_for(lambda: httpx.get(f"{api}/readyz", timeout=2).status_code == 200, 90, "the API to be ready")
    except AssertionError:
        print(up.output())
        up.kill_tree()
        raise
    s = Stack(up, api, bootstrap, request.param)
    yield s
    s.http.close()
    if up.proc and up.proc.poll() is None:
        up.kill_tree()
    if pg_db:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')


def test_a_prompt_becomes_a_published_clip_with_a_playable_video(stack: Stack, tmp_path: Path) -> None:
    auth = stack.user("e2e_creator")
    text = f"a cat dancing on the beach at sunset {uuid.uuid4().hex[:6]}"
    resp = stack.http.post("/v1/prompts", json={"text": text, "seed": 7}, headers=auth)
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    pid = resp.json()["id"]

    prompt = stack.wait_prompt(pid, auth, {"published", "rejected", "failed"})
    assert prompt["status"] == "published", prompt

    # Status events and clip events travel on different topics: the timeline catches up.
    def timeline() -> list[str] | None:
        t = [e["status"] for e in stack.http.get(f"/v1/prompts/{pid}", headers=auth).json()["timeline"]]
        return t if len(t) >= 4 else None

    assert wait_for(timeline, 30, "the full timeline") == ["queued", "generating", "moderating", "published"]

    feed = stack.http.get("/v1/feed", params={"limit": 100}).json()["data"]
    mine = [c for c in feed if c["prompt"] == text]
    assert len(mine) == 1 and mine[0]["id"] == prompt["clip_id"]
    clip = stack.http.get(f"/v1/clips/{prompt['clip_id']}").json()
    assert clip["creator"]["handle"] == "e2e_creator"
    assert {c["name"] for c in clip["safety_checks"]} >= {"prompt_policy", "media_integrity", "media_decode"}

    video = stack.http.get(clip["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = tmp_path / "clip.mp4"
    path.write_bytes(video.content)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264"
        assert (frames[0].width, frames[0].height) == (clip["width"], clip["height"]) == (288, 512)
        assert len(frames) == round(clip["fps"] * clip["duration_s"])
    assert stack.http.get(clip["poster_url"]).headers["content-type"] == "image/jpeg"


PLAYER = """<html><head><title>LOADING</title></head><body>
<video id="v" src="{src}" muted playsinline></video>
<script>
const v = document.getElementById('v');
v.addEventListener('error', () => {{ document.title = 'ERROR ' + (v.error && v.error.code); }});
v.addEventListener('timeupdate', () => {{
  if (v.currentTime > 0.5) document.title = 'PLAYED ' + v.videoWidth + 'x' + v.videoHeight;
}});
v.play().catch(e => {{ document.title = 'PLAYFAIL ' + e; }});
</script></body></html>"""


def test_the_lake_archives_the_prompt_and_its_clip(stack: Stack) -> None:
    """The lake sink `up` runs writes each topic to Parquet under var/lake."""
    auth = stack.user("e2e_lake")
    # Seeded: a prompt outside the generator's vocabulary renders abstract shapes, and the
    # frame filter flags some of those (3 of 40 random seeds of this prompt, "syringe");
    # this seed's render scores at most 0.22 of a flag threshold.
    body = {"text": "a lighthouse at dusk", "seed": 63353}
    pid = stack.http.post("/v1/prompts", json=body, headers=auth).json()["id"]
    prompt = stack.wait_prompt(pid, auth, {"published", "rejected", "failed"})
    assert prompt["status"] == "published"
    lake = Lake(stack.up.cwd / "var" / "lake")

    def archived(topic: str, column: str, value: str) -> pl.DataFrame:
        return lake.scan(topic).filter(pl.col(column) == value).collect()

    wait_for(lambda: archived("prompts", "prompt_id", pid).height or None, 60, "the prompt in the lake")
    clip = prompt["clip_id"]
    wait_for(lambda: archived("clips.published", "clip_id", clip).height or None, 60, "the clip in the lake")
    prompts, clips = archived("prompts", "prompt_id", pid), archived("clips.published", "clip_id", clip)
    assert prompts["text"].to_list() == ["a lighthouse at dusk"] and prompts["moderation"][0]["action"] == "allow"
    assert clips.height == 1 and clips["media"][0]["width"] == 288 and len(clips["embedding"][0]) > 0

    def published_status() -> bool | None:
        return "published" in archived("generation.status", "prompt_id", pid)["status"].to_list() or None

    wait_for(published_status, 60, "the published status in the lake")


def test_a_published_clip_proves_where_it_was_made(stack: Stack) -> None:
    clip = wait_for(lambda: stack.http.get("/v1/feed").json()["data"], PUBLISH_TIMEOUT, "a clip")[0]
    assert any(c["name"] == "provenance" and c["passed"] for c in clip["safety_checks"])
    video = stack.http.get(clip["video_url"]).content
    report = stack.http.post("/v1/provenance/verify", files={"file": ("clip.mp4", video, "video/mp4")}).json()
    assert report["verdict"] == "made_here" and report["clip_id"] == clip["id"], report
    assert report["detail"].startswith(f"made here by @{clip['creator']['handle']} at ")
    changed = bytearray(video)
    changed[len(changed) // 2] ^= 0x01
    report = stack.http.post("/v1/provenance/verify", files={"file": ("clip.mp4", bytes(changed), "video/mp4")}).json()
    assert report["verdict"] == "unknown"


def test_the_video_plays_in_a_real_browser(stack: Stack, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it): apt-get install chromium")
    clips = wait_for(lambda: stack.http.get("/v1/feed").json()["data"], PUBLISH_TIMEOUT, "a clip in the feed")
    page = tmp_path / "player.html"
    page.write_text(PLAYER.format(src=f"{stack.api}{clips[0]['video_url']}"))
    out = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--autoplay-policy=no-user-gesture-required",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    title = re.search(r"<title>([^<]*)</title>", out.stdout)
    assert title is not None, out.stderr[-2000:]
    assert title.group(1) == "PLAYED 288x512", f"Chromium could not play the clip: {title.group(1)}"


def test_a_harmful_prompt_is_rejected_before_any_rendering(stack: Stack) -> None:
    auth = stack.user("e2e_rejected")
    body = stack.http.post("/v1/prompts", json={"text": "a man beheaded with blood and gore"}, headers=auth).json()
    assert body["status"] == "rejected" and "prompt policy" in body["reason"]
    assert body["clip_id"] is None


def test_an_obfuscated_prompt_gets_past_the_prompt_filter_but_not_the_frame_filter(stack: Stack) -> None:
    """The words are unknown to the term lists and the classifier; the renderer draws a
    gun anyway, and the frame filter holds the clip back (review) or blocks it."""
    auth = stack.user("e2e_sly")
    resp = stack.http.post("/v1/prompts", json={"text": "a cowboy with a revolver in the desert"}, headers=auth)
    assert resp.status_code == 202 and resp.json()["status"] == "queued", "accepted by the prompt filter"
    pid = resp.json()["id"]
    prompt = stack.wait_prompt(pid, auth, {"in_review", "published", "rejected", "failed"})
    assert prompt["status"] in ("in_review", "rejected"), prompt
    assert "gun (weapon)" in prompt["reason"]
    assert prompt["clip_id"] is None
    feed = stack.http.get("/v1/feed", params={"limit": 100}).json()["data"]
    assert not [c for c in feed if c["creator"]["handle"] == "e2e_sly"]


def test_poison_on_every_topic_is_dead_lettered_and_the_pipeline_keeps_going(stack: Stack) -> None:
    marker = POISON_KEY
    poisons = [b"{not json", b'{"schema_version": 99}', b"\xff\xfe\x00", b'{"schema_version": 1, "prompt_id": 5}']
    # Each consumer group dead-letters what it cannot read, so a topic read by two
    # groups gets two copies, told apart by x-dlq-consumer. The lake sink reads them all.
    consumed = {
        PROMPTS: {"generation", "lake"},
        CLIPS_GENERATED: {"moderation", "materializer", "lake"},
        GENERATION_STATUS: {"materializer", "lake"},
        CLIPS_PUBLISHED: {"materializer", "lake"},
        CLIPS_BLOCKED: {"materializer", "lake"},
        CLIPS_FLAGGED: {"materializer", "lake"},
        MODERATION_DECISIONS: {"materializer", "lake"},
        INTERACTIONS: {"materializer", "ranking", "lake"},
        SOCIAL_EVENTS: {"materializer", "lake"},
    }
    for spec in consumed:
        produce(stack.bootstrap, spec.name, [(marker, p) for p in poisons])

    auth = stack.user("e2e_after_poison")
    pid = stack.http.post("/v1/prompts", json={"text": "a red fox running in the snow"}, headers=auth).json()["id"]
    assert stack.wait_prompt(pid, auth, {"published", "rejected", "failed"})["status"] == "published"

    for spec, groups in consumed.items():
        want = len(poisons) * len(groups)

        def dead(spec: TopicSpec = spec, want: int = want) -> list[Any] | None:
            got = [m for m in read_topic(stack.bootstrap, spec.dlq) if m.key == marker]
            return got if len(got) >= want else None

        letters = wait_for(dead, 60, f"{want} poison messages in {spec.dlq}")
        assert len(letters) == want
        assert sorted(m.value for m in letters) == sorted(poisons * len(groups)), "the DLQ keeps the raw bytes"
        for letter in letters:
            headers = dict(letter.headers)
            assert headers["x-dlq-source-topic"] == spec.name.encode()
            assert int(headers["x-dlq-source-offset"]) >= 0 and headers["x-dlq-exception"] == b"RecordError"
        assert {dict(m.headers)["x-dlq-consumer"].decode() for m in letters} == {f"clipstream-{g}" for g in groups}


def served_at(stack: Stack, process: str) -> str:
    """Where a process ``up`` started serves /metrics (and a worker its probes)."""
    if process == "api":
        return stack.api
    port = re.search(rf"^  {re.escape(process)}\s.*metrics :(\d+)", stack.up.output(), re.MULTILINE)
    assert port, f"`up` printed no metrics port for {process}"
    return f"http://127.0.0.1:{port.group(1)}"


def metrics_of(stack: Stack, process: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(name, labels) → value from the /metrics of a process ``up`` started."""
    url = f"{served_at(stack, process)}/metrics"
    out = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        found = re.fullmatch(r"(clipstream_\w+)(?:\{(.*)\})? (\S+)", line)
        if found:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
            out[(found.group(1), labels)] = float(found.group(3))
    return out


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels} among {sorted(n for n, _ in samples)}"
    return samples[key]


def test_every_process_serves_metrics_with_counts_waits_and_lag(stack: Stack) -> None:
    """Runs after the poison test: its prompt was rendered and its poison dead-lettered."""
    gen = metrics_of(stack, "worker-generation")
    where = {"consumer": "clipstream-generation", "topic": "prompts"}
    assert value(gen, "clipstream_messages_total", **where, outcome="processed") >= 1
    assert value(gen, "clipstream_messages_total", **where, outcome="dead_lettered") >= 4
    assert value(gen, "clipstream_dead_letters_total", dlq="prompts.dlq", consumer="clipstream-generation") >= 4
    assert value(gen, "clipstream_queue_wait_seconds_count", **where) >= 1
    assert value(gen, "clipstream_handler_seconds_count", **where) >= 1, "render time per prompt"

    def lag_reported(process: str, group: str) -> Any:
        m = metrics_of(stack, process)
        return m if any(n == "clipstream_consumer_lag" and ("group", group) in ls for n, ls in m) else None

    for role in ("generation", "moderation", "materializer", "ranking"):
        wait_for(lambda r=role: lag_reported(f"worker-{r}", f"clipstream-{r}"), 30, f"{role}'s lag gauges")
    lake = wait_for(lambda: lag_reported("lake-sink", "clipstream-lake"), 30, "the lake sink's lag gauges")
    for process in ("worker-generation", "worker-moderation", "worker-materializer", "worker-ranking", "lake-sink"):
        for probe in ("healthz", "readyz"):
            resp = httpx.get(f"{served_at(stack, process)}/{probe}", timeout=10)
            assert resp.status_code == 200 and resp.json()["status"] == "ok", (process, probe, resp.text)
    lake_prompts = {"consumer": "clipstream-lake", "topic": "prompts"}
    assert value(lake, "clipstream_messages_total", **lake_prompts, outcome="dead_lettered") >= 4

    api = metrics_of(stack, "api")
    assert value(api, "clipstream_http_requests_total", method="POST", route="/v1/prompts", status="202") >= 1
    assert value(api, "clipstream_outbox_pending") >= 0


def test_one_prompt_can_be_followed_through_every_process_log(stack: Stack) -> None:
    auth = stack.user("e2e_traced")
    pid = stack.http.post("/v1/prompts", json={"text": "a dog surfing at noon"}, headers=auth).json()["id"]
    assert stack.wait_prompt(pid, auth, {"published", "rejected", "failed"})["status"] == "published"
    logs = stack.up.cwd / "var" / "logs"
    json_lines = stack.variant == "postgres-external"

    def lines_about(process: str) -> list[str]:
        text = (logs / f"{process}.log").read_text(errors="replace")
        if json_lines:
            found = []
            for line in text.splitlines():
                if line.startswith("{"):
                    entry = json.loads(line)  # every line the process logged is one JSON object
                    assert {"time", "level", "process", "logger", "message"} <= entry.keys(), entry
                    if entry.get("prompt_id") == pid:
                        assert entry["process"] == process, entry
                        found.append(entry["message"])
            return found
        return [line for line in text.splitlines() if f"prompt_id={pid}" in line]

    def traced() -> dict[str, list[str]] | None:
        got = {p: lines_about(p) for p in ("api", "worker-generation", "worker-moderation")}
        return got if all(got.values()) else None

    got = wait_for(traced, 30, f"log lines naming prompt {pid} from the API, generation and moderation")
    assert any("prompt accepted" in m for m in got["api"]), got
    assert any("rendered by" in m for m in got["worker-generation"]), got
    assert any("publish in" in m for m in got["worker-moderation"]), got


def test_redelivered_events_create_no_second_clip(stack: Stack) -> None:
    auth = stack.user("e2e_redelivery")
    # Unique text (the feed is shared by the module's tests), far from the prompt
    # classifier's threshold: "a rocket flying through space" plus a random hex tag was
    # blocked for 1.7-3% of tags (scores up to 0.29 against 0.25), this scene for none
    # of 1,000 (at most 0.14). A fixed seed makes the render, and so the frame
    # filter's verdict, the same every run.
    text = f"a hot air balloon over green hills {uuid.uuid4().hex[:6]}"
    pid = stack.http.post("/v1/prompts", json={"text": text, "seed": 11}, headers=auth).json()["id"]
    prompt = stack.wait_prompt(pid, auth, {"published", "rejected", "failed"})
    assert prompt["status"] == "published"

    original = [m for m in read_topic(stack.bootstrap, PROMPTS.name) if m.key == pid.encode()]
    published = [m for m in read_topic(stack.bootstrap, CLIPS_PUBLISHED.name) if m.key == prompt["clip_id"].encode()]
    assert len(original) == 1 and len(published) == 1
    produce(stack.bootstrap, PROMPTS.name, [(original[0].key, original[0].value)] * 2)
    produce(stack.bootstrap, CLIPS_PUBLISHED.name, [(published[0].key, published[0].value)] * 2)

    groups = {
        "clipstream-generation": [PROMPTS.name],
        "clipstream-moderation": [CLIPS_GENERATED.name],
        "clipstream-materializer": [
            GENERATION_STATUS.name,
            CLIPS_GENERATED.name,
            CLIPS_PUBLISHED.name,
            CLIPS_BLOCKED.name,
        ],
    }
    for group, topics in groups.items():
        wait_for(lambda g=group, t=topics: group_lag(stack.bootstrap, g, t) == 0, 90, f"{group} to drain")
    # Re-sent prompts reach moderation again (derived event ids make the outputs identical).
    again = [m for m in read_topic(stack.bootstrap, CLIPS_PUBLISHED.name) if m.key == prompt["clip_id"].encode()]
    assert len({json.loads(m.value)["event_id"] for m in again}) == 1, "re-emitted events keep their event id"

    feed = stack.http.get("/v1/feed", params={"limit": 100}).json()["data"]
    assert [c["id"] for c in feed if c["prompt"] == text] == [prompt["clip_id"]]
    assert stack.http.get(f"/v1/prompts/{pid}", headers=auth).json()["status"] == "published"


def test_the_demo_seeder_fills_the_feed(stack: Stack) -> None:
    demo = {"maya_makes", "theo_films", "priya_p", "sam_draws", "lena_k"}

    def seeded() -> list[Any] | None:
        data = stack.http.get("/v1/feed", params={"limit": 100}).json()["data"]
        return [c for c in data if c["creator"]["handle"] in demo] or None

    assert wait_for(seeded, PUBLISH_TIMEOUT, "a demo clip in the feed")
    assert (stack.up.cwd / "var" / "demo-tokens.json").exists()


def _role_pid(stack: Stack, role: str) -> int | None:
    assert stack.up.proc is not None
    for pid in descendants(stack.up.proc.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[-3:-1] == [b"worker", role.encode()] and alive(pid):
            return pid
    return None


def test_a_killed_worker_is_restarted_and_the_pipeline_goes_on(stack: Stack) -> None:
    before = _role_pid(stack, "generation")
    assert before is not None
    os.kill(before, signal.SIGKILL)
    after = wait_for(lambda: (p := _role_pid(stack, "generation")) and p != before and p, 60, "a new generation worker")
    assert after != before
    auth = stack.user("e2e_after_crash")
    pid = stack.http.post("/v1/prompts", json={"text": "a boat floating at sunrise"}, headers=auth).json()["id"]
    assert stack.wait_prompt(pid, auth, {"published", "rejected", "failed"})["status"] == "published"


def test_killing_the_generation_worker_mid_render_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    auth = stack.user("e2e_burst")
    texts = [
        f"a {animal} jumping in the snow" for animal in ("fox", "cat", "dog", "owl", "frog", "bear", "duck", "pig")
    ]
    pids = [stack.http.post("/v1/prompts", json={"text": t}, headers=auth).json()["id"] for t in texts]
    worker = _role_pid(stack, "generation")
    assert worker is not None

    def rendering() -> bool:
        return stack.http.get(f"/v1/prompts/{pids[0]}", headers=auth).json()["status"] != "queued"

    wait_for(rendering, PUBLISH_TIMEOUT, "the first render to start", interval=0.05)
    os.kill(worker, signal.SIGKILL)  # mid-burst: renders are in flight and queued
    finals = [stack.wait_prompt(pid, auth, {"published", "rejected", "failed"}) for pid in pids]
    assert [f["status"] for f in finals] == ["published"] * len(pids)
    clips = stack.http.get("/v1/users/e2e_burst/clips", params={"limit": 50}).json()["data"]
    assert sorted(c["id"] for c in clips) == sorted(f["clip_id"] for f in finals), "one clip per prompt, no more"
    published = [
        m
        for m in read_topic(stack.bootstrap, CLIPS_PUBLISHED.name)
        if m.key != POISON_KEY and json.loads(m.value)["prompt_id"] in pids
    ]
    assert len({json.loads(m.value)["clip_id"] for m in published}) == len(pids)


def _announced_decisions(stack: Stack, clip_id: str) -> list[dict[str, Any]]:
    """The moderation decisions about a clip on the topic, once at least one is there."""

    def found() -> list[dict[str, Any]] | None:
        messages = read_topic(stack.bootstrap, MODERATION_DECISIONS.name)
        values = [json.loads(m.value) for m in messages if m.key != POISON_KEY]
        return [v for v in values if v.get("clip_id") == clip_id] or None

    return wait_for(found, 10, f"a decision about {clip_id} on moderation.decisions")


def _face() -> bytes:
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (256, 256), (250, 210, 170))
    ImageDraw.Draw(img).ellipse((70, 90, 110, 130), fill=(30, 30, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_a_cameo_is_published_with_consent_and_taken_down_within_seconds_of_revocation(stack: Stack) -> None:
    owner, creator = stack.user("e2e_star"), stack.user("e2e_director")
    resp = stack.http.put(
        "/v1/me/cameo",
        files={"image": ("me.png", _face(), "image/png")},
        data={"consent": "everyone", "restrictions": "no political content"},
        headers=owner,
    )
    assert resp.status_code == 200, resp.text
    refused = stack.http.post("/v1/prompts", json={"text": "@e2e_star at an election rally"}, headers=creator)
    assert refused.status_code == 403 and "restrictions" in refused.json()["detail"]
    pid = stack.http.post("/v1/prompts", json={"text": "@e2e_star dancing on the beach"}, headers=creator).json()["id"]
    final = stack.wait_prompt(pid, creator, {"published", "rejected", "failed"})
    assert final["status"] == "published", final
    clip_id = final["clip_id"]
    clip = stack.http.get(f"/v1/clips/{clip_id}").json()
    assert any(c["name"] == "cameo_consent" and c["passed"] for c in clip["safety_checks"])
    (seen,) = stack.http.get("/v1/me/cameo/appearances", headers=owner).json()["data"]
    assert seen["public_url"] == f"/v1/clips/{clip_id}"

    revoked_at = time.monotonic()
    assert stack.http.delete("/v1/me/cameo", headers=owner).json()["clips_taken_down"] == 1
    assert stack.http.get(f"/v1/clips/{clip_id}").status_code == 404
    assert clip_id not in {c["id"] for c in stack.http.get("/v1/feed", params={"limit": 100}).json()["data"]}

    (decision,) = _announced_decisions(stack, clip_id)
    assert decision["decision"] == "takedown" and "turned off their cameo" in decision["reasons"][0]
    assert time.monotonic() - revoked_at < 10


def test_likes_comments_and_follows_are_counted_by_the_stream_processor(stack: Stack) -> None:
    fan = stack.user("e2e_fan")
    clip = wait_for(lambda: stack.http.get("/v1/feed").json()["data"], PUBLISH_TIMEOUT, "a clip")[0]
    author = clip["creator"]["handle"]
    assert stack.http.put(f"/v1/clips/{clip['id']}/like", headers=fan).status_code == 202
    assert stack.http.put(f"/v1/clips/{clip['id']}/like", headers=fan).status_code == 202  # idempotent
    assert stack.http.post(f"/v1/clips/{clip['id']}/views", json={"watch_ms": 2900}, headers=fan).status_code == 202
    assert stack.http.post(f"/v1/clips/{clip['id']}/comments", json={"text": "lovely"}, headers=fan).status_code == 201
    assert stack.http.put(f"/v1/users/{author}/follow", headers=fan).status_code == 200

    def counted() -> dict[str, Any] | None:
        got = stack.http.get(f"/v1/clips/{clip['id']}", headers=fan).json()
        return got if got["stats"]["views"] >= 1 and got["stats"]["comments"] >= 1 else None

    after = wait_for(counted, 30, "the interactions to be counted")
    assert after["stats"]["likes"] == clip["stats"]["likes"] + 1 and after["viewer_liked"] is True
    profile = wait_for(
        lambda: (p := stack.http.get(f"/v1/users/{author}").json())["counts"]["followers"] and p,
        60,
        "the follow to be counted",
    )
    assert profile["counts"]["followers"] == 1 and profile["counts"]["likes_received"] >= 1


def _browser(tmp_path: Path) -> tuple[Any, Any, Callable[[str], Any]]:
    """Headless Debian Chromium driven by Selenium (skips when it is not installed):
    the driver, a 30 s wait, and ``by(testid)`` that waits for a clickable element."""
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=520,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or ""))
    wait = WebDriverWait(driver, 30)

    def by(testid: str) -> Any:
        return wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"[data-testid={testid}]")))

    return driver, wait, by


def _sign_up(by: Callable[[str], Any], handle: str, name: str) -> None:
    """Sign up in the web client's form (the page must be #/login)."""
    from selenium.webdriver.common.by import By

    form = by("signup-form")
    form.find_element(By.NAME, "handle").send_keys(handle)
    form.find_element(By.NAME, "display_name").send_keys(name)
    form.find_element(By.NAME, "password").send_keys("correct horse battery")
    form.find_element(By.TAG_NAME, "button").click()
    assert by("nav-me").text == f"@{handle}"


def test_a_person_uses_the_web_client_in_a_real_browser(stack: Stack, tmp_path: Path) -> None:
    """Sign up, register a cameo, submit a prompt casting yourself and watch it publish,
    like it, follow another creator, open their profile, see the clip among your
    appearances: in headless Chromium driven by Selenium."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver, wait, by = _browser(tmp_path)

    try:
        driver.get(f"{stack.api}/#/login")
        _sign_up(by, "web_person", "Web Person")

        face = tmp_path / "face.png"
        face.write_bytes(_face())
        by("nav-cameo").click()
        form = by("cameo-form")
        form.find_element(By.NAME, "image").send_keys(str(face))
        form.find_element(By.CSS_SELECTOR, "select[name=consent] option[value=mutuals]").click()
        form.find_element(By.NAME, "restrictions").send_keys("no political content")
        form.find_element(By.CSS_SELECTOR, "button.primary").click()
        assert "topic: politics" in by("cameo-rules").text
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=cameo-image]").get_attribute("src"))

        by("nav-create").click()
        form = by("prompt-form")
        form.find_element(By.NAME, "text").send_keys("@web_person and a red fox dancing in the snow at night")
        form.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(driver, PUBLISH_TIMEOUT).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-testid=prompt-status]"), "published")
        )
        by("open-clip").click()
        like = by("like")
        like.click()
        wait.until(lambda d: "on" in like.get_attribute("class") and like.text.endswith("1"))

        by("nav-feed").click()

        def someone_elses_clip(d: Any) -> Any:
            # The previous page's card stays until the feed has loaded: look inside the feed only.
            cards = d.find_elements(By.CSS_SELECTOR, "[data-testid=feed] [data-testid=clip]")
            return next(
                (c for c in cards if c.find_element(By.CSS_SELECTOR, "[data-testid=author]").text != "@web_person"),
                None,
            )

        other = wait.until(someone_elses_clip)
        author = other.find_element(By.CSS_SELECTOR, "[data-testid=author]").text
        follow = other.find_element(By.CSS_SELECTOR, "[data-testid=follow]")
        follow.click()
        wait.until(lambda d: follow.text == "Following")
        other.find_element(By.CSS_SELECTOR, "[data-testid=author]").click()
        assert by("profile-handle").text == author
        assert by("profile-follow").text == "Following"
        driver.save_screenshot(str(tmp_path / "profile.png"))

        # Counts are materialized from the event stream: wait until the server counts the
        # follow (a loaded CI machine can take a while), then the page must show it.
        try:
            wait_for(
                lambda: stack.http.get(f"/v1/users/{author.removeprefix('@')}").json()["counts"]["followers"] >= 1,
                90,
                "the follow to be counted",
            )
        except AssertionError:
            print(stack.up.output())
            raise
        driver.refresh()
        wait.until(lambda d: int(d.find_element(By.CSS_SELECTOR, "[data-testid=followers]").text or 0) >= 1)

        by("nav-cameo").click()
        status = by("appearance-status")
        assert status.text == "published"
        driver.save_screenshot(str(tmp_path / "cameo.png"))
    finally:
        driver.quit()


def test_the_web_client_steers_the_feed_and_sees_less(stack: Stack, tmp_path: Path) -> None:
    """Tell the feed in words what you want, then say "see less" to a clip: in headless
    Chromium, checked against the API as the same user."""
    from selenium.webdriver.common.by import By

    wait_for(lambda: len(stack.http.get("/v1/feed").json()["data"]) >= 3 or None, PUBLISH_TIMEOUT, "demo clips")
    driver, wait, by = _browser(tmp_path)
    try:
        driver.get(f"{stack.api}/#/login")
        _sign_up(by, "steer_person", "Steer Person")
        by("nav-feed").click()
        steer = by("steering-form")
        steer.find_element(By.NAME, "text").send_keys("more foxes and snow, less robots")
        steer.find_element(By.TAG_NAME, "button").click()
        token = driver.execute_script("return localStorage.getItem('cs_token')")
        auth = {"Authorization": f"Bearer {token}"}
        wait_for(
            lambda: stack.http.get("/v1/me/feed/steering", headers=auth).json().get("less") == ["robots"] or None,
            30,
            "the steering to be saved",
        )
        # Saving the steering re-renders the feed: wait for its first card (an empty list
        # while the page reloads must not end the wait).
        card = wait.until(
            lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, "[data-testid=feed] [data-testid=clip]")), None)
        )
        clip_id = card.get_attribute("data-clip-id")
        card.find_element(By.CSS_SELECTOR, "[data-testid=see-less]").click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, f"[data-clip-id='{clip_id}']"))

        def gone() -> bool | None:
            page = stack.http.get("/v1/feed", headers=auth, params={"limit": 100, "explain": True}).json()
            steered = page["explain"] is not None and page["explain"]["steering"] is not None
            return (clip_id not in {c["id"] for c in page["data"]} and steered) or None

        wait_for(gone, 30, "the clip to leave this user's feed for good")
    finally:
        driver.quit()


def test_a_reviewer_removes_a_reported_clip_in_the_console(stack: Stack, tmp_path: Path) -> None:
    """Report a clip; a reviewer claims it in the console, reveals it, removes it; it is
    gone from the feed (headless Chromium)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    creator, fan, reviewer = stack.user("e2e_edgy"), stack.user("e2e_reporter"), stack.user("e2e_reviewer")
    # Seeded, so the frame filter publishes it (1 of 40 random seeds was flagged; this one
    # scores at most 0.11 of a flag threshold) and the report is what sends it to review.
    body = {"text": "a knight fighting a dragon", "seed": 55434}
    pid = stack.http.post("/v1/prompts", json=body, headers=creator).json()["id"]
    clip_id = stack.wait_prompt(pid, creator, {"published", "rejected", "failed"})["clip_id"]
    assert stack.http.post(f"/v1/clips/{clip_id}/reports", json={"reason": "violence"}, headers=fan).status_code == 201
    subprocess.run(
        [sys.executable, "-m", "core.cli", "set-role", "e2e_reviewer", "reviewer"],
        cwd=stack.up.cwd,
        env=stack.up.env,
        check=True,
        capture_output=True,
    )
    items = stack.http.get("/v1/review/queue", headers=reviewer).json()["data"]
    (item,) = [i for i in items if i["clip_id"] == clip_id]

    driver, wait, by = _browser(tmp_path)

    try:
        driver.get(f"{stack.api}/#/login")
        form = by("login-form")
        form.find_element(By.NAME, "handle").send_keys("e2e_reviewer")
        form.find_element(By.NAME, "password").send_keys("correct horse battery")
        form.find_element(By.TAG_NAME, "button").click()
        by("nav-review").click()
        by("queue-item")
        driver.find_element(By.CSS_SELECTOR, f"a[href='#/review/{item['id']}']").click()
        media = by("review-media")
        assert "hidden-media" in media.get_attribute("class"), "blurred until revealed"
        by("claim").click()
        form = by("decision-form")
        by("reveal").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=review-video]").get_attribute("src"))
        Select(form.find_element(By.NAME, "policy_reason")).select_by_visible_text("violence or gore")
        by("remove").click()
        assert "remove" in by("review-decided").text
        assert by("review-clip-status").text == "removed"
        driver.save_screenshot(str(tmp_path / "review.png"))
    finally:
        driver.quit()
    assert stack.http.get(f"/v1/clips/{clip_id}").status_code == 404
    assert clip_id not in {c["id"] for c in stack.http.get("/v1/feed", params={"limit": 100}).json()["data"]}

    (decision,) = _announced_decisions(stack, clip_id)
    assert (decision["decision"], decision["decided_by"]) == ("takedown", "reviewer")


@pytest.mark.parametrize("name", ["engagement", "generation_ops", "moderation_quality"])
def test_the_notebooks_run_on_what_this_module_made(stack: Stack, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """notebooks/<name>.ipynb, executed headless against this stack's lake: the data
    the real pipeline made for the tests above (one stack is enough)."""
    if stack.variant != "sqlite-embedded":
        pytest.skip("the notebooks run once, on the embedded stack")
    import nbformat

    from analytics.notebooks import NOTEBOOKS, execute

    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), "commit it with outputs cleared"
    lake = Lake(stack.up.cwd / "var" / "lake")
    wait_for(lambda: lake.scan("interactions").collect().height or None, 60, "interactions in the lake")
    time.sleep(2)  # the sink writes each partition's waiting rows a second after the first
    monkeypatch.setenv("LAKE__ROOT", str(lake.root))
    monkeypatch.setenv("KAFKA__BOOTSTRAP_SERVERS", stack.bootstrap)
    notebook = execute(name, timeout_s=300)
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1, "plots"
    assert str(lake.root) in text
    if name == "engagement":
        assert "published" in text and "ndcg@10" in text and "impression" in text, "funnel, feed quality, live read"
    if name == "generation_ops":
        assert "procedural" in text and "render_s" in text
    if name == "moderation_quality":
        # The obfuscated-prompt test above had a gun clip blocked by the frame filter.
        assert "blocked" in text and "gun" in text and "at_block" in text
        assert "ROC-AUC" in text or "not found" in text, "calibration ran, or said why not"


def test_no_legitimate_event_was_dead_lettered(stack: Stack) -> None:
    """Only the poison test's messages may be in any DLQ: everything the system itself
    produced during this module's tests was processed."""
    for spec in CATALOG:
        strays = [m for m in read_topic(stack.bootstrap, spec.dlq) if m.key != POISON_KEY]
        assert strays == [], f"{spec.dlq}: {[(dict(m.headers).get('x-dlq-error'), m.value[:200]) for m in strays]}"


def test_ctrl_c_stops_every_process(stack: Stack) -> None:
    assert stack.up.proc is not None
    tree = descendants(stack.up.proc.pid)
    assert len(tree) >= 4, f"expected api + workers (+ broker) under `up`, found {tree}"
    code = stack.up.interrupt(timeout=60)
    assert code == 0, stack.up.output()
    leftovers = [pid for pid in tree if alive(pid)]
    assert leftovers == [], f"processes left behind: {leftovers}"
    if stack.variant == "sqlite-embedded":
        assert not port_open("127.0.0.1", int(stack.bootstrap.rsplit(":", 1)[1])), "embedded broker still listening"
    assert "Clipstream stopped." in stack.up.log.read_text()
