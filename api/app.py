"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from api import problems
from api.deps import RelayDep, SessionDep
from api.events import InteractionPublisher
from api.feed_service import FeedService
from api.ratelimit import RateLimiter
from api.routes import auth, cameos, clips, engagement, feed, prompts, provenance, review, users
from api.schemas import Health
from core import metrics
from core.db import make_engine, make_sessionmaker
from core.db.engine import session_scope
from core.heap import keep_settled
from core.logging import RequestContext
from core.media import LocalMediaStore
from core.outbox import OutboxRelay
from core.outbox import pending as outbox_pending
from core.review import health as review_health
from core.settings import Settings
from generation.provenance import credentials_from
from moderation.harm_classifier import default_classifier
from moderation.prompt_policy import load_prompt_policy
from moderation.text_moderation import TextModerator

log = logging.getLogger(__name__)

DESCRIPTION = """
Clipstream turns prompts into short vertical AI-generated clips and serves them in a feed.

* Sign up (`POST /v1/auth/signup`) or log in (`POST /v1/auth/login`) to get a bearer token.
* Submit a prompt (`POST /v1/prompts`, 202), follow it (`GET /v1/prompts/{id}`:
  queued → generating → moderating → published, or rejected / failed with a reason).
* Read the feed (`GET /v1/feed`), a clip (`GET /v1/clips/{id}`) and its video.

Errors are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api.threads
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.media = LocalMediaStore(settings.media.root)
        classifier = default_classifier() if settings.moderation.classifier_enabled else None
        app.state.prompt_policy = TextModerator(load_prompt_policy(), classifier)
        app.state.prompt_policy.warm_up()
        app.state.provenance_trust = credentials_from(settings).trust_anchors_pem
        app.state.relay = None
        app.state.rate_limiter = RateLimiter()
        task = None
        if settings.api.run_outbox_relay:
            relay = OutboxRelay(
                app.state.sessionmaker, settings.kafka.servers, poll_interval_s=settings.api.outbox_poll_interval_s
            )
            app.state.relay = relay
            task = asyncio.create_task(relay.run(), name="outbox-relay")
        app.state.interactions = InteractionPublisher(settings.kafka.servers, app.state.sessionmaker, app.state.relay)
        app.state.feed = FeedService(settings, app.state.sessionmaker)
        await app.state.feed.start()
        settler = None
        if settings.api.gc_settle_every_s > 0:
            started = app.state.feed.started
            settler = asyncio.create_task(keep_settled(started, settings.api.gc_settle_every_s), name="heap-settle")
        try:
            yield
        finally:
            if settler is not None:
                settler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await settler
            await app.state.feed.stop()
            await app.state.interactions.close()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await app.state.relay.close()
            engine.dispose()

    app = FastAPI(
        title="Clipstream API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "accounts", "description": "Sign-up, login, logout, your own account"},
            {"name": "users", "description": "Profiles, follower lists, follow / block / mute"},
            {"name": "admin", "description": "Roles (admins only)"},
            {"name": "prompts", "description": "Submit prompts and follow their status"},
            {"name": "feed", "description": "The feed, clips and their media"},
            {"name": "engagement", "description": "Likes, views, shares, comments, reports"},
            {"name": "health", "description": "Liveness and readiness"},
        ],
    )
    problems.install(app)
    app.add_middleware(metrics.HttpMetrics)
    app.add_middleware(RequestContext)  # outermost: its ids are on every line the request logs
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(users.admin_router)
    app.include_router(prompts.router)
    app.include_router(feed.router)
    app.include_router(clips.router)
    app.include_router(engagement.router)
    app.include_router(cameos.router)
    app.include_router(provenance.router)
    app.include_router(review.router)

    web = Path(__file__).parent / "web"
    app.mount("/static", StaticFiles(directory=web), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The web client (plain HTML and JavaScript, no build step)."""
        return FileResponse(web / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", tags=["health"], response_model=Health)
    def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok", database="not checked", process=os.getpid())

    @app.get("/readyz", tags=["health"], response_model=Health, responses={503: {"model": Health}})
    def readyz(session: SessionDep, relay: RelayDep) -> Health | JSONResponse:
        """Readiness: the database answers; reports the outbox backlog and relay errors."""
        try:
            session.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001
            body = Health(status="unavailable", database=f"error: {type(e).__name__}")
            return JSONResponse(body.model_dump(), status_code=503)
        pending = relay.pending() if relay else None
        error = relay.last_error if relay else None
        return Health(
            status="degraded" if error else "ok",
            database="ok",
            outbox_pending=pending,
            outbox_error=error,
            ranking=app.state.feed.status(),
            process=os.getpid(),
        )

    scrape = metrics.ScrapeGauges(lambda: scrape_gauges(app))

    @app.get("/metrics", tags=["health"], response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        """Prometheus metrics (text format): requests by route, the outbox backlog, the
        review queue's depth and age, the ranking replica's lag. Workers serve theirs on
        ``WORKERS__METRICS_PORT``; names and labels are listed in ``core/metrics.py``."""
        body, content_type = metrics.exposition(scrape)
        return Response(body, media_type=content_type)

    return app


def scrape_gauges(app: FastAPI) -> dict[str, tuple[str, list[str], list[tuple[list[str], float]]]]:
    """The API's gauges, read when Prometheus scrapes."""
    with session_scope(app.state.sessionmaker) as session:
        queue = review_health(session)
        backlog = outbox_pending(session)
    ranking = app.state.feed.status()
    gauges: dict[str, tuple[str, list[str], list[tuple[list[str], float]]]] = {
        "clipstream_review_queue_depth": (
            "Open and claimed review items, by severity",
            ["severity"],
            [([str(k)], float(v)) for k, v in sorted(queue.depth_by_severity.items())],
        ),
        "clipstream_review_queue_oldest_seconds": (
            "Age of the oldest open review item (0: the queue is empty)",
            [],
            [([], queue.oldest_open_age_s or 0.0)],
        ),
        "clipstream_ranking_replica_lag": (
            "Records the API's ranking replica has still to read",
            [],
            [([], float(ranking.get("lag") or 0))],
        ),
        "clipstream_outbox_pending": ("Outbox events not yet on the broker", [], [([], float(backlog))]),
    }
    return gauges
