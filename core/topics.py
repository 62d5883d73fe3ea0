"""The topic catalog: names, keys, records and fixed partition counts.

Source topics are created by the project (``clipstream topics``) before any worker
starts. Every source topic has a ``<name>.dlq`` twin that receives raw bytes plus error
headers. Faust may not declare topics either (``topic_allow_declare=False``), so the
changelog of each worker's Faust table is in the catalog too (:data:`TABLES`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from core import records as r
from core.errors import RecordError


@dataclass(frozen=True)
class TopicSpec:
    name: str
    record: type[r.Record]
    key_field: str
    partitions: int
    description: str

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec("prompts", r.PromptSubmitted, "prompt_id", 6, "Prompts accepted by the API, to render."),
    TopicSpec("generation.status", r.GenerationStatus, "prompt_id", 6, "Each step of a prompt's life."),
    TopicSpec("clips.generated", r.ClipGenerated, "clip_id", 6, "Rendered clips awaiting moderation."),
    TopicSpec("clips.published", r.ClipPublished, "clip_id", 6, "Clips that passed moderation."),
    TopicSpec("clips.blocked", r.ClipBlocked, "clip_id", 3, "Clips that moderation blocked."),
    TopicSpec("clips.flagged", r.ClipFlagged, "clip_id", 3, "Clips sent to human review."),
    TopicSpec("moderation.decisions", r.ModerationDecision, "clip_id", 3, "Automatic and reviewer decisions."),
    TopicSpec("interactions", r.Interaction, "user_id", 12, "Views, likes, skips, shares, reports."),
    TopicSpec("social.events", r.SocialEvent, "user_id", 6, "Graph and account changes from the outbox."),
)
DLQ_PARTITIONS = 1

BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in CATALOG}

PROMPTS = BY_NAME["prompts"]
GENERATION_STATUS = BY_NAME["generation.status"]
CLIPS_GENERATED = BY_NAME["clips.generated"]
CLIPS_PUBLISHED = BY_NAME["clips.published"]
CLIPS_BLOCKED = BY_NAME["clips.blocked"]
CLIPS_FLAGGED = BY_NAME["clips.flagged"]
MODERATION_DECISIONS = BY_NAME["moderation.decisions"]
INTERACTIONS = BY_NAME["interactions"]
SOCIAL_EVENTS = BY_NAME["social.events"]


@dataclass(frozen=True)
class TableSpec:
    """The changelog topic of one worker role's Faust table.

    Faust co-partitions a table with the topic its agent reads (an entry written while
    processing partition p goes to changelog partition p), so the changelog has the
    source's partition count; it is compacted, keeping the latest value per key. The
    name is the one Faust derives (``<app id>-<table>-changelog``, the app id being
    ``clipstream-<role>``).
    """

    role: str
    table: str
    source: TopicSpec
    description: str
    configs: Mapping[str, str] = field(default_factory=lambda: {"cleanup.policy": "compact"})

    @property
    def name(self) -> str:
        return f"clipstream-{self.role}-{self.table}-changelog"

    @property
    def partitions(self) -> int:
        return self.source.partitions


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "ranking",
        "user_taste",
        INTERACTIONS,
        "Each user's taste vector, likes, see-less list and author affinity (ranking/taste_table.py).",
    ),
)
USER_TASTE = TABLES[0]


def all_topic_names() -> list[tuple[str, int]]:
    """(name, partitions) for every source topic and its DLQ, and every table changelog."""
    out: list[tuple[str, int]] = []
    for spec in CATALOG:
        out.append((spec.name, spec.partitions))
        out.append((spec.dlq, DLQ_PARTITIONS))
    out += [(table.name, table.partitions) for table in TABLES]
    return out


def topic_configs(name: str) -> dict[str, str]:
    """Topic-level configs the catalog asks for when creating ``name`` (none for most)."""
    return next((dict(t.configs) for t in TABLES if t.name == name), {})


def record_key(spec: TopicSpec, record: r.Record) -> bytes:
    return str(getattr(record, spec.key_field)).encode()


def decode(spec: TopicSpec, raw: bytes | None) -> r.Record:
    """Bytes from the wire → the topic's record, or RecordError saying why not."""
    if raw is None:
        raise RecordError(f"{spec.name}: message has no value")
    try:  # the common case, parsed and validated in pydantic's Rust core
        return spec.record.model_validate_json(raw)
    except ValidationError:
        pass  # find out why, below, for an error a person can read
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise RecordError(f"{spec.name}: value is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise RecordError(f"{spec.name}: value is a JSON {type(data).__name__}, expected an object")
    version = data.get("schema_version")
    if version != spec.record.SCHEMA_VERSION:
        raise RecordError(
            f"{spec.name}: unknown schema_version {version!r} (this consumer reads {spec.record.SCHEMA_VERSION})"
        )
    try:
        return spec.record.model_validate(data)
    except ValidationError as e:
        raise RecordError(f"{spec.name}: invalid {spec.record.__name__}: {e}") from e
