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


def document(app: FastAPI) -> None:
    """Make the OpenAPI document say what the API sends: every error response (4xx, 5xx)
    is a :class:`Problem` as ``application/problem+json``, including FastAPI's own 422;
    and every operation that reads a bearer token, even one open to anonymous callers,
    may answer 401 (a token that is sent must be valid)."""

    generate = app.openapi  # FastAPI's own: every app setting, cached in app.openapi_schema
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        spec = generate()
        if done:
            return spec
        done = True
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        schemas.setdefault("FieldError", FieldError.model_json_schema())
        schemas["Problem"].pop("$defs", None)
        unauthorized = {
            "description": "The bearer token is missing (where one is needed), unknown, expired or revoked",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": {"application/json": {}},
        }
        limited = rate_limited_operations(app)
        bad_cursor = {
            "description": "The cursor is malformed or belongs to another list",
            "content": {"application/json": {}},
        }
        for route, path in spec.get("paths", {}).items():
            for method, operation in path.items():
                responses = operation.setdefault("responses", {})
                if operation.get("security"):
                    responses.setdefault("401", dict(unauthorized))
                if (route, method.upper()) in limited:
                    responses.setdefault(
                        "429",
                        {
                            "description": RATE_LIMITED["description"],
                            "headers": RATE_LIMITED["headers"],
                            "content": {"application/json": {}},
                        },
                    )
                if any(p.get("in") == "query" and p.get("name") == "cursor" for p in operation.get("parameters", [])):
                    responses.setdefault("400", dict(bad_cursor))
                for code, response in operation.get("responses", {}).items():
                    if code[0] in "45" and "application/json" in response.get("content", {}):
                        response["content"] = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def api_routes(app: FastAPI) -> list[Any]:
    """Every API route with its full path, methods and dependencies. FastAPI 0.165 keeps
    included routers as such in ``app.routes``; older versions flatten them."""
    try:
        from fastapi.openapi.utils import _get_api_route_for_openapi
        from fastapi.routing import iter_route_contexts
    except ImportError:
        from fastapi.routing import APIRoute

        return [r for r in app.routes if isinstance(r, APIRoute)]
    found = (_get_api_route_for_openapi(context) for context in iter_route_contexts(app.routes))
    return [r for r in found if r is not None]


def rate_limited_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, METHOD) of every route with a rate-limit dependency (``api.deps``)."""

    def limited(dependant: Any) -> bool:
        return any(getattr(d.call, "rate_limit", None) or limited(d) for d in dependant.dependencies)

    return {(r.path, m) for r in api_routes(app) if limited(r.dependant) for m in r.methods or ()}


def install(app: FastAPI) -> None:
    document(app)

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
