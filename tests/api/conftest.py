from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.db import migrate
from core.settings import ApiSettings, MediaSettings, RankingSettings, Settings


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    migrate(db_url)
    return Settings(
        environment="test",
        database_url=db_url,
        media=MediaSettings(root=tmp_path / "media"),
        api=ApiSettings(run_outbox_relay=False, gc_settle_every_s=0),  # core.heap would freeze the test process
        # No broker here: the feed is newest-first from the SQL store (tests/ranking
        # and tests/integration cover the ranked feed against a real broker).
        ranking=RankingSettings(replica=False),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def token(client: TestClient) -> str:
    resp = client.post(
        "/v1/auth/signup", json={"handle": "maya_makes", "display_name": "Maya", "password": "correct horse battery"}
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
