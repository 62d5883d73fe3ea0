"""The feed and how a user steers it."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import BearerDep, CurrentUserDep, InteractionsDep, SessionDep, user_id_from, user_rate_limit
from api.feed_service import FeedOutcome, FeedService, impressions_for
from api.pagination import LimitQ
from api.problems import ApiError, Problem
from api.schemas import FeedPage, SteeringPublic, SteeringSet
from core.db.models import FeedSteering
from ranking.cursor import InvalidCursor
from ranking.steering import SteeringError

router = APIRouter(tags=["feed"])

FeedCursorQ = Annotated[
    str | None, Query(max_length=4000, description="next_cursor from the previous page (the feed's own cursor)")
]


async def get_feed_service(request: Request) -> FeedService:
    return request.app.state.feed  # type: ignore[no-any-return]


FeedDep = Annotated[FeedService, Depends(get_feed_service)]


@router.get("/v1/feed", response_model=FeedPage, responses={400: {"model": Problem}, 422: {"model": Problem}})
async def feed(
    request: Request,
    credentials: BearerDep,
    service: FeedDep,
    interactions: InteractionsDep,
    limit: LimitQ = 20,
    cursor: FeedCursorQ = None,
    order: Annotated[
        str, Query(pattern="^(for_you|newest)$", description="for_you (ranked for you) or newest (newest first)")
    ] = "for_you",
    explain: Annotated[bool, Query(description="Add each clip's score, sources and features")] = False,
) -> Response:
    """Your feed, ranked for you (anyone may call this; with a token it is personal).

    Friends and people you follow come first, then clips that cast you, clips like those
    you liked and watched, what is trending, and a share of fresh clips from new
    creators; clips you have seen, clips by authors you blocked or muted, and anything
    taken down are left out. Pages never repeat a clip: pass `next_cursor` as `cursor`.
    Each page served to a signed-in user is recorded as one impression on `interactions`
    naming its clips in order.
    Steer it in words with `PUT /v1/me/feed/steering`; `order=newest` gives plain
    newest-first."""
    started = time.perf_counter()
    settings = request.app.state.settings

    def serve() -> tuple[uuid.UUID | None, FeedOutcome]:
        # One worker thread for the whole request (session, token, ranking, hydration):
        # each hop to the thread pool costs about as much as slicing a feed plan.
        with request.app.state.sessionmaker() as session:
            viewer = None if credentials is None else user_id_from(request, session, settings, credentials)
            return viewer, service.page(session, viewer, limit, cursor, explain=explain, newest=order == "newest")

    try:
        viewer, out = await run_in_threadpool(serve)
    except InvalidCursor as e:
        raise ApiError(400, "invalid-cursor", "Invalid cursor", str(e)) from e
    if viewer is not None and out.mode == "personalised" and out.clip_ids:
        interactions.publish_later(impressions_for(viewer, out.clip_ids))
    body = {
        "data": out.data,
        "next_cursor": out.next_cursor,
        "ranking": {"mode": out.mode, "reason": out.reason},
        "explain": out.explain,
    }
    # Built as FeedPage's JSON directly (tests check it against the schema): validating
    # twenty clips through the model again would cost more than the page itself, and
    # orjson writes it in a tenth of the time json takes.
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
        headers={"Server-Timing": f"rank;dur={(time.perf_counter() - started) * 1000:.1f}"},
    )


def _steering_public(row: FeedSteering) -> SteeringPublic:
    return SteeringPublic(text=row.text, more=list(row.more), less=list(row.less), updated_at=row.updated_at)


@router.get(
    "/v1/me/feed/steering", response_model=SteeringPublic, responses={401: {"model": Problem}, 404: {"model": Problem}}
)
def get_steering(user: CurrentUserDep, session: SessionDep) -> SteeringPublic:
    """What you asked your feed for (404 when you have not)."""
    row = session.get(FeedSteering, user.id)
    if row is None:
        raise ApiError(404, "not-found", "Not found", "you have not steered your feed; PUT some words to start")
    return _steering_public(row)


@router.put(
    "/v1/me/feed/steering",
    response_model=SteeringPublic,
    responses={401: {"model": Problem}, 422: {"model": Problem}},
    dependencies=[Depends(user_rate_limit("writes"))],
)
def set_steering(body: SteeringSet, user: CurrentUserDep, session: SessionDep, service: FeedDep) -> SteeringPublic:
    """Tell the feed in plain words what you want: "more cats and beaches, less horror".

    The phrases are embedded with the CLIP text tower, in the same space as the clips;
    "more" phrases join your taste in retrieval and rank matching clips up, "less"
    phrases rank them down. It holds until you change or delete it."""
    try:
        row = service.steering_row(user, body.text)
    except SteeringError as e:
        raise ApiError(422, "validation-error", "Cannot steer by this text", str(e)) from e
    existing = session.get(FeedSteering, user.id)
    if existing is not None:
        session.delete(existing)
        session.flush()
    session.add(row)
    session.commit()
    session.refresh(row)
    return _steering_public(row)


@router.delete("/v1/me/feed/steering", status_code=204, responses={401: {"model": Problem}})
def clear_steering(user: CurrentUserDep, session: SessionDep) -> Response:
    """Stop steering: the feed goes back to following your taste alone."""
    row = session.get(FeedSteering, user.id)
    if row is not None:
        session.delete(row)
        session.commit()
    return Response(status_code=204)
