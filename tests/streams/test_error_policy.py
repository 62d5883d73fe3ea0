"""The agents' error policy: decode → bounded retries → dead letter with headers."""

import uuid
from dataclasses import dataclass, field
from typing import Any

from core.records import GenerationStatus
from core.topics import GENERATION_STATUS
from streams.errors import MAX_DLQ_VALUE_BYTES, ErrorPolicy


@dataclass
class Msg:
    value: bytes | None
    key: bytes | None = b"k"
    topic: str = "generation.status"
    partition: int = 2
    offset: int = 41
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("trace", b"abc")])


class FakeSender:
    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[str, Any, Any, dict[str, bytes]]] = []
        self.fail_first = fail_first

    async def send_raw(self, name: str, key: Any, value: Any, headers: dict[str, bytes]) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("broker down")
        self.sent.append((name, key, value, headers))


def _good() -> bytes:
    return GenerationStatus(prompt_id=uuid.uuid4(), status="queued").to_bytes()


async def test_undecodable_message_goes_straight_to_the_dlq_with_headers() -> None:
    sender, seen = FakeSender(), []

    async def handler(rec: Any, msg: Any) -> None:
        seen.append(rec)

    policy = ErrorPolicy(GENERATION_STATUS, sender, handler, consumer="c", max_attempts=3, backoff_s=0)  # type: ignore[arg-type]
    await policy(Msg(b"{broken"))
    await policy(Msg(_good()))
    assert len(seen) == 1, "the next good message is processed"
    ((name, key, value, headers),) = sender.sent
    assert name == "generation.status.dlq" and key == b"k" and value == b"{broken"
    assert headers["x-dlq-source-topic"] == b"generation.status"
    assert headers["x-dlq-source-partition"] == b"2" and headers["x-dlq-source-offset"] == b"41"
    assert headers["x-dlq-exception"] == b"RecordError" and b"not JSON" in headers["x-dlq-error"]
    assert headers["x-dlq-attempts"] == b"0" and headers["trace"] == b"abc"


async def test_handler_failures_are_retried_then_dead_lettered() -> None:
    sender, calls, gave_up = FakeSender(), [], []

    async def handler(rec: Any, msg: Any) -> None:
        calls.append(rec)
        raise RuntimeError("disk full")

    async def give_up(rec: Any, exc: BaseException) -> None:
        gave_up.append(str(exc))

    policy = ErrorPolicy(
        GENERATION_STATUS,
        sender,
        handler,
        consumer="c",
        max_attempts=3,
        backoff_s=0,  # type: ignore[arg-type]
        on_give_up=give_up,
    )
    await policy(Msg(_good()))
    assert len(calls) == 3 and gave_up == ["disk full"]
    assert sender.sent[0][3]["x-dlq-attempts"] == b"3"
    assert sender.sent[0][3]["x-dlq-exception"] == b"RuntimeError"


async def test_transient_failure_recovers_without_dead_letter() -> None:
    sender, calls = FakeSender(), []

    async def handler(rec: Any, msg: Any) -> None:
        calls.append(rec)
        if len(calls) < 2:
            raise TimeoutError("slow")

    policy = ErrorPolicy(GENERATION_STATUS, sender, handler, consumer="c", max_attempts=3, backoff_s=0)  # type: ignore[arg-type]
    await policy(Msg(_good()))
    assert len(calls) == 2 and sender.sent == [] and policy.processed == 1


async def test_dead_letter_send_is_retried_until_the_broker_takes_it() -> None:
    sender = FakeSender(fail_first=2)

    async def handler(rec: Any, msg: Any) -> None:
        raise AssertionError("not reached")

    policy = ErrorPolicy(
        GENERATION_STATUS,
        sender,
        handler,
        consumer="c",
        backoff_s=0,  # type: ignore[arg-type]
        dlq_retry_s=0.001,
    )
    await policy(Msg(b"nope"))
    assert len(sender.sent) == 1 and policy.dead_lettered == 1


async def test_oversized_poison_is_kept_as_a_prefix_with_its_size() -> None:
    sender = FakeSender()

    async def handler(rec: Any, msg: Any) -> None:
        raise AssertionError("not reached")

    policy = ErrorPolicy(GENERATION_STATUS, sender, handler, consumer="c")  # type: ignore[arg-type]
    big = b"x" * (10 * 1024 * 1024)
    await policy(Msg(big))
    _, _, value, headers = sender.sent[0]
    assert len(value) == MAX_DLQ_VALUE_BYTES and headers["x-dlq-original-size"] == str(len(big)).encode()
