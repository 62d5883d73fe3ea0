import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import schemas
from core.errors import RecordError
from core.records import GenerationStatus, PromptModeration, PromptSubmitted, clip_id_for_prompt
from core.topics import CATALOG, GENERATION_STATUS, PROMPTS, all_topic_names, decode, record_key


def _prompt() -> PromptSubmitted:
    return PromptSubmitted(
        prompt_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        creator_handle="maya",
        text="a cat",
        seed=7,
        moderation=PromptModeration(action="allow", policy_version="t"),
    )


def test_round_trip_keeps_every_field() -> None:
    rec = _prompt()
    assert decode(PROMPTS, rec.to_bytes()) == rec
    assert record_key(PROMPTS, rec) == str(rec.prompt_id).encode()


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"schema_version": 2}', "unknown schema_version 2"),
        (b'{"prompt_id": "x"}', "unknown schema_version None"),
        (b'{"schema_version": 1, "prompt_id": "nope", "status": "queued"}', "invalid GenerationStatus"),
        (b"\xff\xfe", "not JSON"),
        (None, "no value"),
    ],
)
def test_decode_rejects_with_a_reason(raw: bytes | None, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        decode(GENERATION_STATUS, raw)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        GenerationStatus(prompt_id=uuid.uuid4(), status="queued", occurred_at=datetime(2026, 1, 1))


def test_clip_id_is_a_function_of_the_prompt() -> None:
    p = uuid.uuid4()
    assert clip_id_for_prompt(p) == clip_id_for_prompt(p) != clip_id_for_prompt(uuid.uuid4())


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_but_record_error(raw: bytes) -> None:
    try:
        decode(PROMPTS, raw)
    except RecordError:
        pass


def test_every_topic_has_a_dlq_and_fixed_partitions() -> None:
    names = dict(all_topic_names())
    for spec in CATALOG:
        assert names[spec.name] == spec.partitions > 0
        assert names[f"{spec.name}.dlq"] >= 1


def test_committed_json_schemas_match_the_records() -> None:
    rendered = schemas.render_all()
    for name, text in rendered.items():
        path = schemas.SCHEMAS_DIR / name
        assert path.exists(), f"{path} missing: run `clipstream export-schemas`"
        assert path.read_text() == text, f"{path} is stale: run `clipstream export-schemas`"


def test_schema_validates_a_real_record() -> None:
    import jsonschema

    schema = json.loads((schemas.SCHEMAS_DIR / "prompts.v1.json").read_text())
    jsonschema.validate(json.loads(_prompt().to_bytes()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema_version": 1, "occurred_at": datetime.now(UTC).isoformat()}, schema)


def test_a_feed_page_is_one_impression_record_read_one_a_clip() -> None:
    from core.records import MAX_PAGE_CLIPS, Interaction
    from core.topics import INTERACTIONS

    clips = [uuid.uuid4() for _ in range(3)]
    page = Interaction(user_id=uuid.uuid4(), kind="impression", clip_ids=clips, attributes={"page": "p"})
    assert decode(INTERACTIONS, page.to_bytes()) == page
    each = page.per_clip()
    assert [(r.clip_id, r.attributes["position"], r.kind) for r in each] == [
        (c, i, "impression") for i, c in enumerate(clips)
    ]
    assert all(r.attributes["page"] == "p" and r.occurred_at == page.occurred_at for r in each)
    assert len({r.event_id for r in each}) == 3 and [r.event_id for r in page.per_clip()] == [r.event_id for r in each]
    like = Interaction(user_id=uuid.uuid4(), clip_id=clips[0], kind="like")
    assert like.per_clip() == [like]
    with pytest.raises(ValueError, match="impression of a feed page only"):
        Interaction(user_id=uuid.uuid4(), kind="like", clip_ids=clips)
    with pytest.raises(ValueError, match="impression of a feed page only"):
        Interaction(user_id=uuid.uuid4(), kind="impression", clip_id=clips[0], clip_ids=clips)
    for bad in ([], [uuid.uuid4() for _ in range(MAX_PAGE_CLIPS + 1)]):
        with pytest.raises(ValueError):
            Interaction(user_id=uuid.uuid4(), kind="impression", clip_ids=bad)
