"""The lazy queries behind the notebooks (see the package docstring)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.lake import Lake
from core.records import STATUS_RANK
from core.settings import Settings, get_settings

# A view that watched at least this share of the clip counts as a completion.
COMPLETED_SHARE = 0.9
# What a viewer did after an impression, and how much it says the page served them.
GAINS = {"like": 3.0, "share": 3.0, "comment": 2.0, "view": 1.0}
NEGATIVE = ("skip", "see_less", "report")


def open_lake(settings: Settings | None = None) -> Lake:
    """The lake the system writes (``LAKE__ROOT``)."""
    return Lake((settings or get_settings()).lake.root)


def events(lake: Lake, topic: str) -> pl.LazyFrame:
    """One topic, each event once (the first copy archived)."""
    return lake.scan(topic).sort("kafka_timestamp", "kafka_partition", "kafka_offset").unique("event_id", keep="first")


def interactions(lake: Lake) -> pl.LazyFrame:
    """``interactions``, each event once, one row a clip: a feed page's impression (one
    record naming the page's clips, ``clip_ids``) becomes an impression of each clip,
    ``position`` its place on the page (from ``attributes`` for an impression archived
    one a clip, as the API sent them before; null for other kinds)."""
    inter = events(lake, "interactions")
    single = inter.filter(pl.col("clip_ids").is_null()).with_columns(
        position=pl.col("attributes").str.json_path_match("$.position").cast(pl.Int64)
    )
    pages = (
        inter.filter(pl.col("clip_ids").is_not_null())
        .with_columns(position=pl.int_ranges(0, pl.col("clip_ids").list.len()))
        .explode("clip_ids", "position")
        .with_columns(clip_id=pl.col("clip_ids"))
    )
    return pl.concat([single, pages], how="vertical_relaxed").drop("clip_ids")


# --- creation ----------------------------------------------------------------------


def creation_funnel(lake: Lake) -> pl.LazyFrame:
    """One row per prompt accepted by the API: who, the prompt filter's action, when it
    reached each status (``<status>_at``), where it ended (``final``: the furthest
    status) and the seconds from submission to that end."""
    statuses = sorted(STATUS_RANK, key=lambda s: (STATUS_RANK[s], s))
    rank = pl.col("status").replace_strict(STATUS_RANK, return_dtype=pl.Int8)
    status = events(lake, "generation.status")
    reached = status.group_by("prompt_id").agg(
        *(pl.col("occurred_at").filter(pl.col("status") == s).min().alias(f"{s}_at") for s in statuses),
        pl.col("status").sort_by(rank).last().alias("final"),
        pl.col("clip_id").drop_nulls().first(),
        pl.col("reason").drop_nulls().last(),
    )
    prompts = events(lake, "prompts").select(
        "prompt_id",
        "user_id",
        pl.col("occurred_at").alias("submitted_at"),
        pl.col("moderation").struct.field("action").alias("prompt_action"),
        pl.col("parent_clip_id").is_not_null().alias("remix"),
        pl.col("cameos").list.len().alias("cameos"),
    )
    out = prompts.join(reached, on="prompt_id", how="left").with_columns(pl.col("final").fill_null("queued"))
    end = pl.coalesce(*(pl.col(f"{s}_at") for s in ("published", "rejected", "failed", "in_review")))
    return out.with_columns(seconds_to_end=(end - pl.col("submitted_at")).dt.total_microseconds() / 1e6)


def stage_latencies(lake: Lake) -> pl.LazyFrame:
    """Per prompt that got past rendering, seconds spent in each stage: waiting for a
    generation worker (queued → generating), rendering (→ moderating), moderation (→
    published, rejected or in review) and end to end."""
    f = creation_funnel(lake)
    decided = pl.coalesce("published_at", "rejected_at", "in_review_at")

    def seconds(a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return (b - a).dt.total_microseconds() / 1e6

    return f.filter(pl.col("moderating_at").is_not_null()).select(
        "prompt_id",
        "final",
        queue_wait_s=seconds(pl.col("queued_at"), pl.col("generating_at")),
        render_s=seconds(pl.col("generating_at"), pl.col("moderating_at")),
        moderation_s=seconds(pl.col("moderating_at"), decided),
        end_to_end_s=seconds(pl.col("submitted_at"), decided),
    )


def funnel_summary(lake: Lake) -> pl.LazyFrame:
    """Prompts by where they ended: count, share, and seconds to get there (p50, p95)."""
    f = creation_funnel(lake)
    return (
        f.group_by("final")
        .agg(
            pl.len().alias("prompts"),
            pl.col("seconds_to_end").median().alias("p50_s"),
            pl.col("seconds_to_end").quantile(0.95).alias("p95_s"),
        )
        .with_columns(share=pl.col("prompts") / pl.col("prompts").sum())
        .sort(pl.col("final").replace_strict(STATUS_RANK, return_dtype=pl.Int8), "final")
    )


def generation_stages(lake: Lake) -> pl.LazyFrame:
    """How long each finished stage took (``stage_ms`` on the status that ended it)."""
    return (
        events(lake, "generation.status")
        .filter(pl.col("stage_ms").is_not_null())
        .group_by("status")
        .agg(
            pl.len().alias("n"),
            pl.col("stage_ms").median().alias("p50_ms"),
            pl.col("stage_ms").quantile(0.95).alias("p95_ms"),
            pl.col("stage_ms").max().alias("max_ms"),
        )
        .sort("status")
    )


def render_times(lake: Lake) -> pl.LazyFrame:
    """Per generator and version: clips rendered and render time (p50, p95, max)."""
    gen = events(lake, "clips.generated").select(
        pl.col("generator").struct.field("name").alias("generator"),
        pl.col("generator").struct.field("version").alias("version"),
        pl.col("generator").struct.field("render_ms").alias("render_ms"),
    )
    return (
        gen.group_by("generator", "version")
        .agg(
            pl.len().alias("clips"),
            pl.col("render_ms").median().alias("p50_ms"),
            pl.col("render_ms").quantile(0.95).alias("p95_ms"),
            pl.col("render_ms").max().alias("max_ms"),
        )
        .sort("generator", "version")
    )


def failure_reasons(lake: Lake) -> pl.LazyFrame:
    """Prompts that ended failed or rejected, by reason, most common first."""
    return (
        creation_funnel(lake)
        .filter(pl.col("final").is_in(["failed", "rejected"]))
        .group_by("final", "reason")
        .agg(pl.len().alias("prompts"))
        .sort("prompts", "final", descending=[True, False])
    )


# --- engagement --------------------------------------------------------------------


def _published(lake: Lake) -> pl.LazyFrame:
    return events(lake, "clips.published").select(
        "clip_id",
        pl.col("user_id").alias("creator_id"),
        pl.col("occurred_at").alias("published_at"),
        pl.col("media").struct.field("duration_s").alias("duration_s"),
    )


def watch_time(lake: Lake) -> pl.LazyFrame:
    """Every view with a watch time, joined to its clip: ``watched`` is the share of the
    clip seen (over 1 when replayed), ``completed`` at least COMPLETED_SHARE of it."""
    views = interactions(lake).filter((pl.col("kind") == "view") & pl.col("watch_ms").is_not_null())
    return (
        views.select("user_id", "clip_id", "watch_ms", "occurred_at")
        .join(_published(lake), on="clip_id", how="inner")
        .with_columns(watched=pl.col("watch_ms") / (pl.col("duration_s") * 1000))
        .with_columns(completed=pl.col("watched") >= COMPLETED_SHARE)
    )


def engagement(lake: Lake) -> pl.LazyFrame:
    """Per published clip: impressions, views, completions, net likes (likes less
    unlikes), shares, comments, reports, see-less, and the like rate per view."""
    inter = interactions(lake)
    kinds = ("impression", "view", "like", "unlike", "share", "comment", "report", "see_less", "skip")
    counts = inter.group_by("clip_id").agg(*((pl.col("kind") == k).sum().alias(f"{k}s") for k in kinds))
    done = watch_time(lake).group_by("clip_id").agg(pl.col("completed").sum().alias("completions"))
    return (
        _published(lake)
        .join(counts, on="clip_id", how="left")
        .join(done, on="clip_id", how="left")
        .with_columns(pl.col(f"{k}s").fill_null(0) for k in (*kinds, "completion"))
        .with_columns(likes=(pl.col("likes") - pl.col("unlikes")).clip(lower_bound=0))
        .drop("unlikes")
        .with_columns(
            like_rate=pl.when(pl.col("views") > 0).then(pl.col("likes") / pl.col("views")),
            completion_rate=pl.when(pl.col("views") > 0).then(pl.col("completions") / pl.col("views")),
        )
    )


def like_rate_by_cohort(lake: Lake, every: str = "1w") -> pl.LazyFrame:
    """Creators grouped by when they first published (``every``: a polars duration,
    "1w", "1d", "1h"…): their clips, views, likes and like rate."""
    per_clip = engagement(lake)
    first = per_clip.group_by("creator_id").agg(pl.col("published_at").min().dt.truncate(every).alias("cohort"))
    return (
        per_clip.join(first, on="creator_id")
        .group_by("cohort")
        .agg(
            pl.col("creator_id").n_unique().alias("creators"),
            pl.len().alias("clips"),
            pl.col("views").sum(),
            pl.col("likes").sum(),
        )
        .with_columns(like_rate=pl.when(pl.col("views") > 0).then(pl.col("likes") / pl.col("views")))
        .sort("cohort")
    )


def feed_quality(lake: Lake, k: int = 10, every: str = "1h", horizon: str = "30m") -> pl.LazyFrame:
    """NDCG@k of the feed pages served, per ``every``: each impression's gain is what
    its viewer did with that clip within ``horizon`` after it (a like or share 3, a
    comment 2, a view 1; a skip, see-less or report 0), the page's order is the order
    served. Pages nobody engaged with have no NDCG and are counted apart."""
    inter = interactions(lake)
    shown = inter.filter(pl.col("kind") == "impression").select(
        "user_id",
        "clip_id",
        pl.col("occurred_at").alias("shown_at"),
        pl.col("attributes").str.json_path_match("$.page").alias("page"),
        pl.col("position").cast(pl.Int32),
    )
    acted = inter.filter(pl.col("kind").is_in(list(GAINS))).select(
        "user_id",
        "clip_id",
        pl.col("occurred_at").alias("acted_at"),
        pl.col("kind").replace_strict(GAINS, return_dtype=pl.Float64).alias("gain"),
    )
    gains = (
        shown.filter(pl.col("page").is_not_null())
        .join(acted, on=["user_id", "clip_id"], how="left")
        .with_columns(
            gain=pl.when(
                (pl.col("acted_at") >= pl.col("shown_at"))
                & (pl.col("acted_at") <= pl.col("shown_at").dt.offset_by(horizon))
            )
            .then(pl.col("gain"))
            .otherwise(0.0)
        )
        .group_by("page", "user_id", "clip_id", "position", "shown_at")
        .agg(pl.col("gain").max())
    )
    ranked = gains.with_columns(ideal_rank=pl.col("gain").rank("ordinal", descending=True).over("page") - 1)
    discount = 1.0 / (pl.col("position") + 2).log(2)
    ideal_discount = 1.0 / (pl.col("ideal_rank") + 2).log(2)
    pages = ranked.group_by("page").agg(
        pl.col("shown_at").min(),
        (pl.col("gain") * discount).filter(pl.col("position") < k).sum().alias("dcg"),
        (pl.col("gain") * ideal_discount).filter(pl.col("ideal_rank") < k).sum().alias("idcg"),
    )
    pages = pages.with_columns(ndcg=pl.when(pl.col("idcg") > 0).then(pl.col("dcg") / pl.col("idcg")))
    return (
        pages.sort("shown_at")
        .group_by_dynamic("shown_at", every=every)
        .agg(
            pl.len().alias("pages"),
            pl.col("ndcg").is_not_null().sum().alias("engaged_pages"),
            pl.col("ndcg").mean().alias(f"ndcg@{k}"),
        )
        .rename({"shown_at": "period"})
    )


# --- moderation --------------------------------------------------------------------


def moderation_outcomes(lake: Lake) -> pl.LazyFrame:
    """One row per clip that moderation judged: what the automatic layer did
    (``automatic``: published, flagged, blocked), every reviewer decision in order,
    the final state, and the seconds from the automatic verdict to the first reviewer
    decision. ``reviewers`` counts distinct reviewers (an appeal goes to another)."""
    verdicts = (("clips.published", "published"), ("clips.flagged", "flagged"), ("clips.blocked", "blocked"))
    auto = pl.concat(
        [
            events(lake, t).select("clip_id", automatic=pl.lit(label), judged_at=pl.col("occurred_at"))
            for t, label in verdicts
        ]
    )
    auto = auto.sort("judged_at").group_by("clip_id").agg(pl.col("automatic").first(), pl.col("judged_at").first())
    human = (
        events(lake, "moderation.decisions")
        .filter(pl.col("decided_by") == "reviewer")
        .sort("occurred_at")
        .group_by("clip_id")
        .agg(
            pl.col("decision").alias("decisions"),
            pl.col("reviewer_id").n_unique().alias("reviewers"),
            pl.col("occurred_at").first().alias("first_decided_at"),
            pl.col("decision").last().alias("last_decision"),
        )
    )
    removed = ("block", "takedown")
    return (
        auto.join(human, on="clip_id", how="left")
        .with_columns(
            reviewed=pl.col("decisions").is_not_null(),
            removed=pl.when(pl.col("last_decision").is_not_null())
            .then(pl.col("last_decision").is_in(removed))
            .otherwise(pl.col("automatic") == "blocked"),
            seconds_to_decision=(pl.col("first_decided_at") - pl.col("judged_at")).dt.total_microseconds() / 1e6,
        )
        .with_columns(
            reviewers_agree=pl.when(pl.col("reviewers") >= 2).then(
                pl.col("decisions").list.eval(pl.element().is_in(removed)).list.n_unique() == 1
            )
        )
    )


def moderation_summary(lake: Lake) -> pl.LazyFrame:
    """Per automatic outcome: clips, how many reviewers saw, how many were removed in
    the end (for ``flagged``, the share removed is the precision of a flag; for
    ``published``, removals are what automation missed), time to decision (p50, p95)
    and agreement between reviewers where two decided."""
    return (
        moderation_outcomes(lake)
        .group_by("automatic")
        .agg(
            pl.len().alias("clips"),
            pl.col("reviewed").sum(),
            pl.col("removed").sum(),
            pl.col("seconds_to_decision").median().alias("p50_decision_s"),
            pl.col("seconds_to_decision").quantile(0.95).alias("p95_decision_s"),
            pl.col("reviewers_agree").mean().alias("reviewer_agreement"),
        )
        .with_columns(removed_share=pl.col("removed") / pl.col("clips"))
        .sort("automatic")
    )


def frame_scores(lake: Lake) -> pl.LazyFrame:
    """One row per clip the frame filter judged and concept: the highest score its
    frames reached (what the concept's thresholds apply to), what automation did with
    the clip, and whether it ended removed (reviewers' decisions included)."""
    verdicts = (("clips.published", "published"), ("clips.flagged", "flagged"), ("clips.blocked", "blocked"))
    checks = pl.concat(
        [events(lake, t).select("clip_id", "checks", automatic=pl.lit(label)) for t, label in verdicts]
    ).unique("clip_id", keep="first")
    scores = (
        checks.explode("checks")
        .unnest("checks")
        .filter(pl.col("name") == "frame_safety")
        .select("clip_id", "automatic", "scores")
        .explode("scores")
        .drop_nulls("scores")
        .unnest("scores")
    )
    outcome = moderation_outcomes(lake).select("clip_id", "reviewed", "removed")
    return scores.join(outcome, on="clip_id", how="left")


def frame_thresholds(concepts: Path | None = None) -> pl.DataFrame:
    """The frame filter's thresholds per concept (the shipped concept file by default)."""
    from moderation.frame_filter import DEFAULT_CONCEPTS, ConceptSet

    cs = ConceptSet.from_file(concepts or DEFAULT_CONCEPTS)
    return pl.DataFrame(
        {
            "concept": [c.name for c in cs.concepts],
            "category": [c.category for c in cs.concepts],
            "flag": [c.flag for c in cs.concepts],
            "block": [c.block for c in cs.concepts],
        },
        schema={"concept": pl.String, "category": pl.String, "flag": pl.Float64, "block": pl.Float64},
    )
