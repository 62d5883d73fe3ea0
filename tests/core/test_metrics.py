"""Prometheus metrics: what the error policy, the lag gauges and the API's /metrics report."""

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from core import metrics
from core.broker import free_port
from core.records import GenerationStatus
from core.topics import GENERATION_STATUS
from streams.errors import ErrorPolicy
from tests.streams.test_error_policy import FakeSender, Msg


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_error_policy_counts_outcomes_times_handlers_and_measures_queue_wait() -> None:
    consumer = f"test-{uuid.uuid4().hex[:8]}"
    sender = FakeSender()

    async def handler(rec: Any, msg: Any) -> None:
        if rec.status == "failed":
            raise ValueError("cannot")

    policy = ErrorPolicy(GENERATION_STATUS, sender, handler, consumer=consumer, max_attempts=2, backoff_s=0)  # type: ignore[arg-type]
    old = datetime.now(UTC) - timedelta(seconds=30)
    good = GenerationStatus(prompt_id=uuid.uuid4(), status="queued", occurred_at=old).to_bytes()
    bad = GenerationStatus(prompt_id=uuid.uuid4(), status="failed").to_bytes()

    async def go() -> None:
        for value in (good, good, b"{broken", bad):
            await policy(Msg(value))

    asyncio.run(go())
    topic = GENERATION_STATUS.name
    assert sample("clipstream_messages_total", consumer=consumer, topic=topic, outcome="processed") == 2
    assert sample("clipstream_messages_total", consumer=consumer, topic=topic, outcome="dead_lettered") == 2
    assert sample("clipstream_dead_letters_total", dlq=GENERATION_STATUS.dlq, consumer=consumer) == 2
    assert sample("clipstream_handler_seconds_count", consumer=consumer, topic=topic) == 2
    # Two records had waited 30 s; the failing one (occurred now) is timed too.
    waits = sample("clipstream_queue_wait_seconds_sum", consumer=consumer, topic=topic)
    assert 60 <= waits < 62
    assert sample("clipstream_queue_wait_seconds_bucket", consumer=consumer, topic=topic, le="10.0") == 1


def test_lag_gauges_follow_the_partitions_held() -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    metrics.set_lag(group, [("prompts", 0, 5), ("prompts", 1, 0)])
    assert sample("clipstream_consumer_lag", group=group, topic="prompts", partition="0") == 5
    metrics.set_lag(group, [("prompts", 1, 3)])  # partition 0 went to another member
    assert (
        REGISTRY.get_sample_value("clipstream_consumer_lag", {"group": group, "topic": "prompts", "partition": "0"})
        is None
    )
    assert sample("clipstream_consumer_lag", group=group, topic="prompts", partition="1") == 3


def test_a_failing_scrape_gauge_leaves_the_rest_of_the_page() -> None:
    def broken() -> Any:
        raise RuntimeError("database gone")

    body, content_type = metrics.exposition(metrics.ScrapeGauges(broken))
    assert content_type.startswith("text/plain")
    assert b"# TYPE clipstream_messages_total counter" in body, "the process's own metrics are still there"

    ok = metrics.ScrapeGauges(lambda: {"clipstream_x": ("x", ["k"], [(["a"], 2.0)])})
    body, _ = metrics.exposition(ok)
    assert b'clipstream_x{k="a"} 2.0' in body


def test_a_worker_serves_metrics_on_its_port_and_skips_a_taken_one() -> None:
    port = free_port()
    assert metrics.serve(port, "127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b"# TYPE clipstream_messages_total counter" in body
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert err.value.code == 404, "no probe given: not served, rather than a pass"
    assert not metrics.serve(port, "127.0.0.1"), "a taken port is reported, not raised"
    assert not metrics.serve(0)


def test_probes_answer_200_or_503_and_a_failing_probe_is_a_503() -> None:
    liveness = metrics.LoopProbe(stale_s=30)
    port = free_port()

    def broken() -> tuple[bool, str]:
        raise RuntimeError("consumer gone")

    assert metrics.serve(port, "127.0.0.1", liveness=liveness, readiness=broken)
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/readyz", timeout=5)
    assert err.value.code == 503 and "consumer gone" in json.loads(err.value.read())["detail"]
    liveness.last -= 31  # no beat from the loop for 31 s
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/healthz", timeout=5)
    assert err.value.code == 503 and "31." in json.loads(err.value.read())["detail"]
    assert b"clipstream_messages_total" in urllib.request.urlopen(f"{base}/metrics", timeout=5).read()
