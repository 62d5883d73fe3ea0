"""The API settles its heap (core.heap) once what it builds at start is built."""

from __future__ import annotations

import gc
import time

from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import ApiSettings, Settings


def test_the_api_settles_its_heap_once_started(settings: Settings) -> None:
    """Other tests turn it off (it would freeze the test process's heap); here it is on,
    with a replica-less API (started at once)."""
    gc.unfreeze()
    on = settings.model_copy(update={"api": ApiSettings(run_outbox_relay=False, gc_settle_every_s=3600)})
    try:
        with TestClient(create_app(on)) as client:
            assert client.app.state.feed.started()  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
                assert client.get("/healthz").status_code == 200
                time.sleep(0.05)
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
