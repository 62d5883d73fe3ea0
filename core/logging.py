"""Logging for every process: plain text for people, JSON lines for machines.

``LOG_FORMAT=json`` (compose sets it) writes one JSON object a line with ``time``,
``level``, ``process`` (api, worker-generation, …), ``logger``, ``message`` and the ids
of what the process was working on when it logged: a worker's record (``event_id``,
``prompt_id``, ``clip_id``, ``topic``, ``partition``, ``offset``) and an API request
(``request_id``, ``method``, ``path``), so one prompt can be followed through every
stage with a single filter, for example ``jq 'select(.prompt_id == "…")'``. The text
format appends the same ids as ``key=value``.

The ids come from :func:`log_context`, which the worker error policy and the API's
request middleware enter; anything logged inside (by any library) carries them.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

_context: ContextVar[dict[str, str]] = ContextVar("clipstream_log_context", default={})  # noqa: B039 — never mutated

#: Record fields that identify what a log line is about.
RECORD_IDS = ("event_id", "prompt_id", "clip_id")


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Within the block, every log line carries ``ids`` (None values are left out)."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def record_ids(record: Any) -> dict[str, Any]:
    """The ids a record carries (``event_id``, ``prompt_id``, ``clip_id``), for :func:`log_context`."""
    return {k: getattr(record, k, None) for k in RECORD_IDS}


def current_ids() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Puts the current ids on every record (``record.ids``) and the process name."""

    def __init__(self, process: str = "clipstream") -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.ids = _context.get()
        record.process_name = self.process
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": getattr(record, "process_name", "clipstream"),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "ids", {}),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process_name)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "process_name"):
            record.process_name = "clipstream"
        text = super().format(record)
        ids = getattr(record, "ids", None)
        if ids:
            head, sep, tail = text.partition("\n")  # ids on the message line, before any traceback
            text = head + " " + " ".join(f"{k}={v}" for k, v in ids.items()) + sep + tail
        return text


def logging_config(level: str = "INFO", name: str = "clipstream", fmt: LogFormat = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for this process: one stderr handler on the root
    logger; uvicorn's and Faust's loggers propagate to it (uvicorn and mode take this
    same dict, so they do not install handlers of their own)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter, "process": name}},
        "formatters": {"main": {"()": JsonFormatter if fmt == "json" else TextFormatter}},
        "handlers": {
            "main": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["context"],
                "formatter": "main",
            }
        },
        "root": {"level": level.upper(), "handlers": ["main"]},
        "loggers": {
            # Alembic announces each of its plugins at INFO on every start: noise, not news.
            "alembic.runtime.plugins": {"level": "WARNING"},
            **{n: {"handlers": [], "propagate": True} for n in ("uvicorn", "uvicorn.error", "uvicorn.access")},
        },
    }


def setup_logging(level: str = "INFO", name: str = "clipstream", fmt: LogFormat = "text") -> None:
    logging.config.dictConfig(logging_config(level, name, fmt))


#: A caller's X-Request-ID is taken over only when it is a plain token like this.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestContext:
    """Pure ASGI middleware: each HTTP request's log lines carry ``request_id`` (the
    caller's ``X-Request-ID`` when it is a plain token, else a new one), ``method`` and
    ``path``; the response echoes ``X-Request-ID`` so a client can quote it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(8).hex()

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with log_context(request_id=request_id, method=scope.get("method"), path=scope.get("path")):
            await self.app(scope, receive, sending)
