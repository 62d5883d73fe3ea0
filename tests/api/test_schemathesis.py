"""Property-based requests against the live API's own OpenAPI schema (schemathesis):
whatever it generates, the API answers without a 5xx, with a documented status code,
content type and headers, and a body that matches the schema.

The API runs as a real process (uvicorn, `clipstream api`) on SQLite; requests carry a
signed-in admin's token, so the endpoints behind authentication and roles are reached,
not only their 401s. Generation is derandomised, so a failure reproduces.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from core.broker import free_port
from tests.support.stack import wait_for

pytestmark = [pytest.mark.slow]

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@dataclass
class LiveApi:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    root = tmp_path_factory.mktemp("schemathesis")
    port = free_port()
    db = root / "clipstream.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API__", "DATABASE_URL", "MEDIA__", "RANKING__"))}
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{db}",
            "MEDIA__ROOT": str(root / "media"),
            "API__PORT": str(port),
            "API__RUN_OUTBOX_RELAY": "false",  # no broker: writes wait in the outbox
            "RANKING__REPLICA": "false",
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
        }
    )
    subprocess.run([sys.executable, "-m", "core.cli", "migrate"], env=env, check=True, cwd=root)
    log = open(root / "api.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 60, "the API to answer")
        resp = httpx.post(
            f"{url}/v1/auth/signup",
            json={"handle": "fuzz_admin", "display_name": "Fuzz", "password": "correct horse battery"},
        )
        assert resp.status_code == 201, resp.text
        with sqlite3.connect(db) as conn:  # reviewers' and admins' endpoints are fuzzed too
            conn.execute("UPDATE users SET role = 'admin' WHERE handle = 'fuzz_admin'")
        yield LiveApi(url, {"Authorization": f"Bearer {resp.json()['token']}"})
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        server_errors = (root / "api.log").read_text(errors="replace").count("Traceback")
        print(f"API log: {root / 'api.log'} ({server_errors} tracebacks)")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


#: Examples generated per operation: about 3,000 requests over the API's operations.
EXAMPLES = 50


def test_the_api_honours_its_schema(live_api: LiveApi) -> None:
    """Every operation of the live schema, each with its own derandomised examples;
    the failures of all operations are reported together."""
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    failures: dict[str, str] = {}
    calls = 0
    # Logging out revokes the token every other call uses: last.
    operations = sorted((found.ok() for found in schema.get_all_operations()), key=lambda op: "logout" in op.path)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=live_api.headers, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 — reported below, by operation
            failures[operation.label] = str(exc)[:3000]
    print(f"{calls} requests over {len(operations)} operations")
    assert calls >= 1000
    assert not failures, "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())
