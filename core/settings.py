"""One typed settings object, built explicitly and passed into factories.

Environment variables use ``__`` for nesting (``KAFKA__BOOTSTRAP_SERVERS``,
``MEDIA__ROOT``); ``DATABASE_URL`` and ``ENVIRONMENT`` are top-level. Nothing reads
the environment at import time: call :func:`get_settings` (cached) or build
:class:`Settings` yourself in tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigurationError

PLACEHOLDER_SECRET = "dev-only-change-me"


class KafkaSettings(BaseModel):
    # None means "no external Kafka": the `up` command starts the embedded Tansu broker.
    bootstrap_servers: str | None = None
    embedded_host: str = "127.0.0.1"
    embedded_port: int = 9092
    replication_factor: int = 1
    # Short group timeouts: with Faust's defaults a join on Tansu takes about a minute.
    session_timeout_s: float = 10.0
    rebalance_timeout_s: float = 10.0
    heartbeat_interval_s: float = 1.0
    request_timeout_s: float = 30.0
    # How long a consumer's fetch may wait for data. Tansu does not wake a waiting
    # fetch that spans several partitions when one of them receives data, so each hop
    # would cost up to this wait (Faust hard-codes 1.5 s); 100 ms keeps hops fast and
    # costs an idle consumer ten small requests a second on a real Kafka.
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=5000)

    @property
    def embedded(self) -> bool:
        return self.bootstrap_servers is None

    @property
    def servers(self) -> str:
        """host:port list that clients connect to, embedded or not."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return f"{self.embedded_host}:{self.embedded_port}"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # Relay publishes the outbox from inside the API process (one per replica; rows are
    # claimed with SKIP LOCKED on PostgreSQL so replicas do not double-send).
    run_outbox_relay: bool = True
    outbox_poll_interval_s: float = 0.5
    # Per-user and per-IP token buckets (api/ratelimit.py), kept in each API process.
    rate_limits_enabled: bool = True
    # Worker threads for blocking request work (SQL, ranking). The work is CPU-bound
    # under one GIL, so many threads only add hand-overs: at 8 connections the feed
    # served 50 req/s with anyio's default 40 threads, 66 with 2, 76 with 1
    # (docs/performance.md). A few stay so one slow request does not stall the rest.
    threads: int = Field(default=4, ge=1, le=400)
    # Seconds between heap settles (core/heap.py: collect, then freeze what survived, so
    # a garbage collection walks only objects younger than that); the first once the
    # ranking replica has loaded and made its first feed plans. 0: never.
    gc_settle_every_s: float = Field(default=300.0, ge=0)
    # Bind the port with SO_REUSEPORT so several API processes on one host share it (the
    # kernel spreads connections over them). `clipstream up` sets it when processes > 1
    # and balance is "kernel".
    reuse_port: bool = False
    # Bind nothing: take connections from the balancer listening on this Unix socket
    # (core/balancer.py). `clipstream up` sets it when processes > 1 and balance is
    # "least-connections".
    balancer_socket: Path | None = None
    # How `clipstream up` spreads connections over several API processes:
    # "least-connections": a balancer process owns the port and hands each new
    # connection to the process holding the fewest; "kernel": every process binds the
    # port with SO_REUSEPORT and the kernel hashes connections to them (no extra process,
    # but keep-alive connections can pile up on one).
    balance: Literal["least-connections", "kernel"] = "least-connections"

    @field_validator("balancer_socket")
    @classmethod
    def _fits_a_unix_socket(cls, path: Path | None) -> Path | None:
        """Refused when the settings load, not when a process first binds or connects."""
        if path is not None:
            from core.balancer import channel_path_ok

            channel_path_ok(path)
        return path

    # API processes `clipstream up` runs on the port. The work of a request is CPU-bound
    # under one GIL, so one process uses one core; each holds its own ranking replica
    # (its own memory) and makes its own feed plans. Only the first writes the replica's
    # snapshot; on SQLite only the first relays the outbox (on PostgreSQL all do, sharing
    # rows with SKIP LOCKED). Rate limits and /metrics are per process.
    processes: int = Field(default=1, ge=1, le=64)


class AuthSettings(BaseModel):
    token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    min_password_length: int = Field(default=10, ge=8)


class MediaSettings(BaseModel):
    root: Path = Path("var/media")


class WorkerSettings(BaseModel):
    # Bounded retries before a message is dead-lettered.
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_s: float = Field(default=0.2, ge=0)
    render_timeout_s: float = Field(default=120.0, gt=0)
    moderation_timeout_s: float = Field(default=60.0, gt=0)
    # Faust's web server is off; health is reported through the supervisor.
    data_dir: Path = Path("var/faust")
    # Prometheus /metrics of each worker and the lake sink on this port (0: off). `up`
    # gives every process a free one; compose uses 9400 in every container.
    metrics_port: int = Field(default=0, ge=0, le=65535)


class DiffusersSettings(BaseModel):
    """The GPU backend (``GENERATION__BACKEND=diffusers``); see docs/operations.md."""

    # A local folder holding a diffusers pipeline (model_index.json + component folders):
    # nothing is ever downloaded at run time.
    model_dir: Path | None = None
    # A diffusers pipeline class name (WanPipeline, LTXPipeline, WanImageToVideoPipeline…)
    # or "auto" to take the class named in model_index.json.
    pipeline: str = "auto"
    device: str = "cuda"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    num_inference_steps: int = Field(default=30, ge=1, le=200)
    guidance_scale: float = Field(default=5.0, ge=0)
    # Frames the model generates (Wan wants 4k+1) and the fps the clip is encoded at.
    num_frames: int = Field(default=33, ge=1, le=257)
    fps: int = Field(default=16, ge=8, le=30)
    # Compatible requests rendered in one forward pass; halved on CUDA out-of-memory.
    max_batch: int = Field(default=4, ge=1, le=32)
    # Wait this long for more prompts to fill a batch before rendering a partial one.
    batch_wait_s: float = Field(default=0.05, ge=0, le=5)
    cpu_offload: bool = False
    negative_prompt: str = "blurry, low quality, distorted, watermark, text"


class GenerationSettings(BaseModel):
    backend: str = "procedural"
    # Accepted prompts per user in any rolling 24 hours: generation is the expensive part.
    daily_quota: int = Field(default=50, ge=1)
    width: int = 288
    height: int = 512
    fps: int = 12
    duration_s: float = 3.0
    diffusers: DiffusersSettings = Field(default_factory=DiffusersSettings)


class ProvenanceSettings(BaseModel):
    """Signing of every clip's C2PA manifest (generation/provenance.py)."""

    # Development root and signer, created on first use when the files below are unset.
    dir: Path = Path("var/provenance")
    # Production: the signer's certificate chain (PEM, signer first), its key, and the
    # roots a verifier trusts. All three or none.
    cert_chain_file: Path | None = None
    key_file: Path | None = None
    trust_anchors_file: Path | None = None


class FrameFilterSettings(BaseModel):
    """The CLIP frame safety filter (moderation/frame_filter.py)."""

    enabled: bool = True
    #: A folder with open_clip_config.json and weights, or an open_clip architecture
    #: name (ViT-B-32) with ``pretrained`` a local weights file. None: the shipped model.
    model: str | None = None
    pretrained: Path | None = None
    #: Concepts and thresholds calibrated for ``model``. None: the shipped file.
    concepts: Path | None = None
    device: str = "cpu"
    batch_size: int = Field(default=32, ge=1, le=1024)
    #: torch threads in the moderation worker (it shares the machine with the others).
    threads: int = Field(default=1, ge=1, le=64)
    #: Fold the image tower's batch norms into its convolutions for inference
    #: (moderation.frame_filter.inference_tower); false runs the tower as trained.
    optimize: bool = True


class ModerationSettings(BaseModel):
    # The learned prompt classifier next to the term lists (moderation/harm_classifier.py).
    classifier_enabled: bool = True
    frame_filter: FrameFilterSettings = FrameFilterSettings()


class RankingSettings(BaseModel):
    """The personalised feed (ranking/, api/feed_service.py)."""

    #: Each API process tails the log into its own ranking state; off, the feed is
    #: newest-first from the SQL store (what tests without a broker use).
    replica: bool = True
    #: Dimension of the clip embeddings on clips.published: the frame model's embed_dim.
    embedding_dim: int = Field(default=128, ge=2, le=4096)
    #: Scorer weights and stage sizes; None: ranking/data/feed_weights.json.
    weights: Path | None = None
    #: How long a fetch may wait for new records (the like → feed freshness hop).
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=5000)
    #: Folder for the replica's snapshot (written every ``snapshot_every_s`` and on
    #: shutdown, read at start so a restart catches up from there); None: no snapshot.
    snapshot_dir: Path | None = None
    #: False: read the snapshot at start but never write it (the second and later API
    #: processes on one host share the first one's folder).
    save_snapshots: bool = True
    snapshot_every_s: float = Field(default=300.0, ge=5.0)
    #: Feed plans (ranking/plans.py): a viewer's ranked candidates, made ahead and
    #: sliced per page. One older than ``plan_ttl_s`` (trending and fresh clips move
    #: on), or made before a followed author's new clip arrived, is served once more
    #: while a new one is made in the background; ``plan_max_users`` plans are kept (LRU).
    plan_ttl_s: float = Field(default=600.0, ge=1.0)
    plan_max_users: int = Field(default=20_000, ge=100)  # about 90 KB a plan
    #: When the replica is ready, plans are made in the background for this many of the
    #: most recently active users, so their first request is served from a plan too.
    warm_users: int = Field(default=10_000, ge=0)
    #: The ranking worker keeps the decoded tastes of this many users it wrote last
    #: (about 4 KB each for a typical user, up to ~94 KB for one at every cap; see
    #: docs/performance.md), so their next interaction skips decoding the table entry.
    worker_states: int = Field(default=20_000, ge=0)


class LakeSettings(BaseModel):
    """The Parquet archive of every topic (core/lake.py, streams/lake_sink.py)."""

    root: str = Field(default="var/lake", description="A folder, or an fsspec URL such as s3://bucket/prefix.")
    roll_rows: int = Field(default=50_000, ge=1)
    roll_bytes: int = Field(default=64 << 20, ge=1)
    roll_seconds: float = Field(default=60.0, gt=0)


class SeedSettings(BaseModel):
    enabled: bool = True
    prompts_per_user: int = 2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        env_file=None,
        extra="ignore",
        case_sensitive=False,
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///var/clipstream.db"
    # Signs provenance manifests and API tokens' pepper; must be real outside development.
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    kafka: KafkaSettings = KafkaSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    media: MediaSettings = MediaSettings()
    workers: WorkerSettings = WorkerSettings()
    generation: GenerationSettings = GenerationSettings()
    provenance: ProvenanceSettings = ProvenanceSettings()
    moderation: ModerationSettings = ModerationSettings()
    seed: SeedSettings = SeedSettings()
    ranking: RankingSettings = RankingSettings()
    lake: LakeSettings = LakeSettings()
    log_level: str = "INFO"
    # text: for people (ids appended as key=value); json: one object a line for log
    # pipelines, with the prompt / clip / event / request ids (core/logging.py).
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "production" and self.secret_key.get_secret_value() == PLACEHOLDER_SECRET:
            raise ValueError("SECRET_KEY is the development placeholder; set a real secret in production")
        p = self.provenance
        given = [f is not None for f in (p.cert_chain_file, p.key_file, p.trust_anchors_file)]
        if any(given) and not all(given):
            raise ValueError(
                "PROVENANCE__CERT_CHAIN_FILE, PROVENANCE__KEY_FILE and PROVENANCE__TRUST_ANCHORS_FILE go together"
            )
        if self.environment == "production" and not all(given):
            raise ValueError("production signs clips with an operator's certificate: set the PROVENANCE__*_FILE paths")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    try:
        return Settings()
    except ValueError as e:  # pydantic.ValidationError is a ValueError
        raise ConfigurationError(f"invalid settings: {e}") from e
