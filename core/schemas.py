"""Export the JSON Schema of every topic's record into ``schemas/``.

Non-Python consumers (kcat, Java services, notebooks) read topics with these; a test
keeps the committed files in step with the records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.topics import CATALOG, TopicSpec

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def topic_schema(spec: TopicSpec) -> dict[str, Any]:
    schema = spec.record.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://clipstream.dev/schemas/{spec.name}.v{spec.record.SCHEMA_VERSION}.json"
    schema["description"] = spec.description + " " + (schema.get("description") or "")
    schema["x-kafka"] = {"topic": spec.name, "key": spec.key_field, "partitions": spec.partitions, "dlq": spec.dlq}
    return schema


def render_all() -> dict[str, str]:
    """File name → JSON text, for every topic."""
    return {
        f"{spec.name}.v{spec.record.SCHEMA_VERSION}.json": json.dumps(topic_schema(spec), indent=2, sort_keys=True)
        + "\n"
        for spec in CATALOG
    }


def export(directory: Path = SCHEMAS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
