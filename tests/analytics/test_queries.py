"""The analytics queries (analytics/queries.py) on a small lake whose answers are
known: four prompts through the funnel, two creators, one feed page scored by hand,
and clips that met every moderation outcome."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import analytics as an
from core import records as r
from core.lake import Lake
from tests.support.factories import fake_media
from tests.support.lake import write_records

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday
ANN, BEN, VIC, WES, R1, R2 = (uuid.uuid4() for _ in range(6))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _rendered(cls: type, clip: uuid.UUID, author: uuid.UUID, when: datetime, **kw: object) -> r.Record:
    gen = r.GeneratorInfo(name="procedural", version="2", seed=1, render_ms=int(kw.pop("render_ms", 1000)))  # type: ignore[call-overload]
    return cls(  # type: ignore[no-any-return]
        clip_id=clip, prompt_id=uuid.uuid4(), user_id=author, creator_handle="h", text="t",
        media=fake_media("m"), generator=gen, occurred_at=when, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    p = {name: uuid.uuid4() for name in ("published", "rejected", "failed", "queued")}
    mod = r.PromptModeration(action="allow", policy_version="1")
    prompts = [
        r.PromptSubmitted(prompt_id=pid, user_id=ANN, creator_handle="ann", text=name, seed=1, moderation=mod,
                          occurred_at=at(i))
        for i, (name, pid) in enumerate(p.items())
    ]  # fmt: skip
    write_records(lake, "prompts", prompts)
    s = r.GenerationStatus
    statuses = [
        s(prompt_id=p["published"], status="queued", occurred_at=at(0)),
        s(prompt_id=p["rejected"], status="queued", occurred_at=at(1)),
        s(prompt_id=p["failed"], status="queued", occurred_at=at(2)),
        s(prompt_id=p["queued"], status="queued", occurred_at=at(3)),
        s(prompt_id=p["published"], status="generating", stage_ms=1000, occurred_at=at(1)),
        s(prompt_id=p["rejected"], status="generating", stage_ms=3000, occurred_at=at(4)),
        s(prompt_id=p["failed"], status="failed", reason="render timed out", occurred_at=at(5)),
        s(prompt_id=p["published"], status="moderating", stage_ms=4000, occurred_at=at(5)),
        s(prompt_id=p["rejected"], status="rejected", reason="frame filter: knife", occurred_at=at(9)),
        s(prompt_id=p["published"], status="published", occurred_at=at(7)),
    ]
    statuses.sort(key=lambda x: x.occurred_at)
    write_records(lake, "generation.status", statuses)
    write_records(lake, "generation.status", [statuses[-1]])  # redelivered: the same event again

    c1, c2, c3, c4, c5 = (uuid.uuid4() for _ in range(5))
    write_records(lake, "clips.generated", [_rendered(r.ClipGenerated, c1, ANN, at(5), render_ms=1000),
                                             _rendered(r.ClipGenerated, c2, BEN, at(6), render_ms=3000)])  # fmt: skip
    check = [r.SafetyCheck(name="media_format", passed=True, detail="ok")]

    def frames(**scores: float) -> list[r.SafetyCheck]:
        top = [r.ConceptScore(concept=k, score=v) for k, v in scores.items()]
        return [*check, r.SafetyCheck(name="frame_safety", passed=max(scores.values()) < 0.5, detail="", scores=top)]

    write_records(lake, "clips.published", [
        _rendered(r.ClipPublished, c1, ANN, at(7), checks=frames(knife=0.2, gun=0.1)),  # 3 s long (fake_media)
        _rendered(r.ClipPublished, c2, BEN, at(7 * 86400), checks=check),  # a week later: the next cohort
    ])  # fmt: skip
    write_records(lake, "clips.flagged", [
        _rendered(r.ClipFlagged, c3, BEN, at(20), reasons=["knife?"], checks=frames(knife=0.6, gun=0.1)),
        _rendered(r.ClipFlagged, c4, BEN, at(21), reasons=["pills?"], checks=frames(knife=0.1, gun=0.55)),
    ])  # fmt: skip
    blocked = r.ClipBlocked(clip_id=c5, prompt_id=uuid.uuid4(), user_id=BEN, reasons=["gun"], checks=check,
                            occurred_at=at(22))  # fmt: skip
    write_records(lake, "clips.blocked", [blocked])
    d = r.ModerationDecision
    write_records(lake, "moderation.decisions", [
        d(clip_id=c4, decision="publish", decided_by="reviewer", reviewer_id=R1, occurred_at=at(51)),
        d(clip_id=c3, decision="takedown", decided_by="reviewer", reviewer_id=R1, occurred_at=at(80)),
        d(clip_id=c1, decision="takedown", decided_by="reviewer", reviewer_id=R2, occurred_at=at(100)),
        d(clip_id=c3, decision="takedown", decided_by="reviewer", reviewer_id=R2, occurred_at=at(200)),  # the appeal
    ])  # fmt: skip

    i = r.Interaction
    write_records(lake, "interactions", [
        # A page's impression as the API sends it: one record naming the page's clips.
        i(user_id=VIC, kind="impression", clip_ids=[c1, c2], attributes={"page": "p1"}, occurred_at=at(30)),
        # One a clip, as the API sent them before: both forms are read alike.
        i(user_id=WES, clip_id=c1, kind="impression", attributes={"page": "p2", "position": 0}, occurred_at=at(31)),
        i(user_id=VIC, clip_id=c1, kind="view", watch_ms=2900, occurred_at=at(35)),
        i(user_id=WES, clip_id=c1, kind="view", watch_ms=1000, occurred_at=at(36)),
        i(user_id=VIC, clip_id=c2, kind="like", occurred_at=at(40)),
        i(user_id=WES, clip_id=c1, kind="like", occurred_at=at(3 * 3600)),  # long after its page: no gain
        i(user_id=WES, clip_id=c1, kind="unlike", occurred_at=at(3 * 3600 + 1)),
        i(user_id=VIC, clip_id=c2, kind="view", watch_ms=1500, occurred_at=at(7 * 86400 + 60)),
    ])  # fmt: skip
    return {"lake": lake, "p": p, "clips": (c1, c2, c3, c4, c5)}


def _lake(world: dict[str, object]) -> Lake:
    lake = world["lake"]
    assert isinstance(lake, Lake)
    return lake


def test_the_funnel_follows_each_prompt_to_where_it_ended(world: dict[str, object]) -> None:
    f = an.creation_funnel(_lake(world)).collect()
    p = world["p"]
    assert isinstance(p, dict)
    final = dict(zip(f["prompt_id"], f["final"], strict=True))
    assert final == {str(p[k]): k for k in ("published", "rejected", "failed", "queued")}
    row = f.filter(pl.col("prompt_id") == str(p["published"])).row(0, named=True)
    assert row["seconds_to_end"] == 7.0 and row["generating_at"] == at(1) and row["prompt_action"] == "allow"
    summary = an.funnel_summary(_lake(world)).collect()
    assert summary["final"].to_list() == ["queued", "failed", "published", "rejected"]  # by how far they got
    assert summary["prompts"].sum() == 4 and summary["share"].sum() == pytest.approx(1.0)
    reasons = an.failure_reasons(_lake(world)).collect()
    assert set(reasons["reason"]) == {"render timed out", "frame filter: knife"}


def test_stage_latencies_split_each_prompt_by_stage(world: dict[str, object]) -> None:
    p = world["p"]
    assert isinstance(p, dict)
    lat = {row["prompt_id"]: row for row in an.stage_latencies(_lake(world)).collect().iter_rows(named=True)}
    assert set(lat) == {str(p["published"])}, "only prompts that reached moderation"
    one = lat[str(p["published"])]
    assert (one["queue_wait_s"], one["render_s"], one["moderation_s"], one["end_to_end_s"]) == (1.0, 4.0, 2.0, 7.0)


def test_generation_stages_and_render_times(world: dict[str, object]) -> None:
    stages = an.generation_stages(_lake(world)).collect()
    assert dict(zip(stages["status"], stages["p50_ms"], strict=True)) == {"generating": 2000.0, "moderating": 4000.0}
    renders = an.render_times(_lake(world)).collect().row(0, named=True)
    assert (renders["generator"], renders["version"], renders["clips"]) == ("procedural", "2", 2)
    assert renders["max_ms"] == 3000


def test_engagement_and_like_rate_by_cohort(world: dict[str, object]) -> None:
    c1, c2, *_ = world["clips"]  # type: ignore[misc]
    e = {row["clip_id"]: row for row in an.engagement(_lake(world)).collect().iter_rows(named=True)}
    one = e[str(c1)]
    assert (one["impressions"], one["views"], one["likes"], one["completions"]) == (2, 2, 0, 1)
    assert (e[str(c2)]["views"], e[str(c2)]["likes"], e[str(c2)]["like_rate"]) == (1, 1, 1.0)
    watched = an.watch_time(_lake(world)).collect()
    assert sorted(watched["watched"].round(3).to_list()) == [0.333, 0.5, 0.967]
    cohorts = an.like_rate_by_cohort(_lake(world)).collect()
    assert cohorts["creators"].to_list() == [1, 1] and cohorts["like_rate"].to_list() == [0.0, 1.0]


def test_feed_quality_scores_each_page_against_what_its_viewer_did_next(world: dict[str, object]) -> None:
    q = an.feed_quality(_lake(world), k=10, every="1h").collect()
    assert q.height == 1 and q["pages"][0] == 2 and q["engaged_pages"][0] == 2
    # p1: c1 viewed (gain 1) at position 0, c2 liked (3) at 1; p2: c1 viewed (1) at 0.
    p1 = (1 / math.log2(2) + 3 / math.log2(3)) / (3 / math.log2(2) + 1 / math.log2(3))
    assert q["ndcg@10"][0] == pytest.approx((p1 + 1.0) / 2)


def test_moderation_outcomes_by_what_automation_did(world: dict[str, object]) -> None:
    s = {row["automatic"]: row for row in an.moderation_summary(_lake(world)).collect().iter_rows(named=True)}
    assert (s["flagged"]["clips"], s["flagged"]["reviewed"], s["flagged"]["removed"]) == (2, 2, 1)
    assert s["flagged"]["p50_decision_s"] == pytest.approx((30 + 60) / 2)  # c4 after 30 s, c3 after 60 s
    assert s["flagged"]["reviewer_agreement"] == 1.0  # c3: removed, and the appeal's reviewer agreed
    assert (s["published"]["clips"], s["published"]["removed"]) == (2, 1)  # c1: what automation missed
    assert (s["blocked"]["clips"], s["blocked"]["reviewed"], s["blocked"]["removed"]) == (1, 0, 1)


def test_an_empty_lake_answers_every_query_with_no_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    for query in (an.creation_funnel, an.funnel_summary, an.engagement, an.moderation_summary, an.feed_quality,
                  an.generation_stages, an.render_times, an.like_rate_by_cohort, an.watch_time):  # fmt: skip
        assert query(lake).collect().height == 0, query.__name__


def test_frame_scores_per_clip_and_concept_with_how_the_clip_ended(world: dict[str, object]) -> None:
    c1, _, c3, c4, _ = world["clips"]  # type: ignore[misc]
    got = an.frame_scores(_lake(world)).collect()
    rows = {(row["clip_id"], row["concept"]): row for row in got.iter_rows(named=True)}
    assert set(rows) == {(str(c), k) for c in (c1, c3, c4) for k in ("knife", "gun")}, "c2 has no frame scores"
    assert rows[(str(c3), "knife")]["score"] == 0.6 and rows[(str(c3), "knife")]["automatic"] == "flagged"
    assert rows[(str(c3), "knife")]["removed"] is True and rows[(str(c4), "gun")]["removed"] is False
    assert rows[(str(c1), "gun")]["automatic"] == "published" and rows[(str(c1), "gun")]["removed"] is True


def test_frame_thresholds_come_from_the_shipped_concept_file() -> None:
    t = an.frame_thresholds()
    assert t.height >= 7 and {"knife", "gun"} <= set(t["concept"])
    assert (t.filter(pl.col("block").is_not_null()).select((pl.col("flag") <= pl.col("block")).all())).item()
