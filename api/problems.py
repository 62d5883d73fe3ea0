"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ClipstreamError, ConflictError, NotFoundError, PermissionDeniedError

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://clipstream.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    loc: str = Field(description="Where the bad value is, e.g. body.text or query.limit")
    message: str


class Problem(BaseModel):
    type: str = Field(examples=[PROBLEM_BASE + "validation-error"])
    title: str = Field(examples=["Request validation failed"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["body.text: String should have at most 1000 characters"])
    instance: str | None = Field(default=None, examples=["/v1/prompts"])
    errors: list[FieldError] | None = None


RATE_LIMITED: dict[str, object] = {
    "model": Problem,
    "description": "Too many requests; wait the number of seconds in Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}},
}


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    request: Request | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=PROBLEM_BASE + slug,
        title=title,
        status=status,
        detail=detail,
        instance=str(request.url.path) if request else None,
        errors=errors,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE, headers=headers)


class ApiError(ClipstreamError):
    """An error with an HTTP status, a problem slug and a readable detail."""

    def __init__(self, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.headers = status, slug, title, detail, headers


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(loc=_loc(e.get("loc", ())), message=e.get("msg", "invalid")) for e in exc.errors()]
        detail = "; ".join(f"{e.loc}: {e.message}" for e in errors) or "invalid request"
        return problem(422, "validation-error", "Request validation failed", detail, request, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 403: "Forbidden"}
        return problem(
            exc.status_code,
            f"http-{exc.status_code}",
            titles.get(exc.status_code, "HTTP error"),
            str(exc.detail),
            request,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.slug, exc.title, exc.detail, request, headers=exc.headers)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return problem(404, "not-found", "Not found", str(exc), request)

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return problem(409, "conflict", "Conflict", str(exc), request)

    @app.exception_handler(PermissionDeniedError)
    async def _forbidden(request: Request, exc: PermissionDeniedError) -> JSONResponse:
        return problem(403, "forbidden", "Forbidden", str(exc), request)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return problem(
            503,
            "database-unavailable",
            "Service unavailable",
            "the database is unavailable; nothing was written, retry later",
            request,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(
            500, "internal-error", "Internal error", "an unexpected error occurred; it has been logged", request
        )
