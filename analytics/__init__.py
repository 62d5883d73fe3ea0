"""Analytics over the event log for data scientists: polars lazy queries on the lake
(core/lake.py) that the notebooks call, and a reader for a live topic.

    from analytics import open_lake, creation_funnel, funnel_summary
    lake = open_lake()                      # LAKE__ROOT, var/lake by default
    funnel_summary(lake).collect()

Every query takes a :class:`~core.lake.Lake` and returns a ``LazyFrame``; nothing is
read until ``collect()``. Records are deduplicated by ``event_id`` (the pipeline is
at-least-once and a redelivered input re-emits byte-identical events).
"""

from analytics.calibration import PromptScores, prompt_scores
from analytics.live import read_live
from analytics.queries import (
    COMPLETED_SHARE,
    creation_funnel,
    engagement,
    events,
    failure_reasons,
    feed_quality,
    frame_scores,
    frame_thresholds,
    funnel_summary,
    generation_stages,
    interactions,
    like_rate_by_cohort,
    moderation_outcomes,
    moderation_summary,
    open_lake,
    render_times,
    stage_latencies,
    watch_time,
)

__all__ = [
    "COMPLETED_SHARE",
    "PromptScores",
    "creation_funnel",
    "engagement",
    "events",
    "failure_reasons",
    "feed_quality",
    "frame_scores",
    "frame_thresholds",
    "funnel_summary",
    "generation_stages",
    "interactions",
    "like_rate_by_cohort",
    "moderation_outcomes",
    "moderation_summary",
    "open_lake",
    "prompt_scores",
    "read_live",
    "render_times",
    "stage_latencies",
    "watch_time",
]
