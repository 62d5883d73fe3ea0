"""Log lines carry the ids of what the process was working on, as text or JSON."""

import asyncio
import io
import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.logging import ContextFilter, JsonFormatter, RequestContext, TextFormatter, current_ids, log_context
from core.records import GenerationStatus
from core.topics import GENERATION_STATUS
from streams.errors import ErrorPolicy
from tests.streams.test_error_policy import FakeSender, Msg


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter("worker-test"))
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, out


def test_json_lines_carry_the_context_ids_and_the_traceback() -> None:
    logger, out = capture(JsonFormatter())
    with log_context(prompt_id="p1", clip_id=None), log_context(event_id="e1"):
        logger.info("rendered in %d ms", 12)
    logger.info("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "rendered in 12 ms" and first["process"] == "worker-test"
    assert first["prompt_id"] == "p1" and first["event_id"] == "e1" and "clip_id" not in first
    assert first["level"] == "INFO" and first["time"].endswith("+00:00")
    assert "prompt_id" not in second, "the context ends with its block"
    assert "ValueError: boom" in third["exception"]


def test_text_lines_append_the_ids_before_any_traceback() -> None:
    logger, out = capture(TextFormatter())
    with log_context(prompt_id="p1"):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("failed prompt_id=p1") and "[worker-test]" in first
    assert any("ValueError: boom" in line for line in rest)


def test_a_worker_handler_logs_with_the_records_ids_and_position() -> None:
    seen: list[dict[str, str]] = []

    async def handler(rec: Any, msg: Any) -> None:
        seen.append(current_ids())

    policy = ErrorPolicy(GENERATION_STATUS, FakeSender(), handler, consumer="c")  # type: ignore[arg-type]
    rec = GenerationStatus(prompt_id=uuid.uuid4(), status="queued")
    asyncio.run(policy(Msg(rec.to_bytes())))
    assert seen == [
        {
            "topic": "generation.status",
            "partition": "2",
            "offset": "41",
            "event_id": str(rec.event_id),
            "prompt_id": str(rec.prompt_id),
        }
    ]
    assert current_ids() == {}


def test_requests_get_an_id_echoed_in_the_response() -> None:
    app = FastAPI()
    app.add_middleware(RequestContext)

    @app.get("/ids")
    def ids() -> dict[str, str]:  # a sync route: the ids cross into the thread pool
        return current_ids()

    with TestClient(app) as client:
        fresh = client.get("/ids")
        assert fresh.json()["request_id"] == fresh.headers["x-request-id"] and len(fresh.headers["x-request-id"]) == 16
        assert fresh.json()["method"] == "GET" and fresh.json()["path"] == "/ids"
        given = client.get("/ids", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123" == given.json()["request_id"]
        hostile = client.get("/ids", headers={"X-Request-ID": 'x" injected=1'})
        assert hostile.headers["x-request-id"] != 'x" injected=1', "only plain tokens are taken over"
