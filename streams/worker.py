"""Entry point of one worker process: `clipstream worker <role>`."""

from __future__ import annotations

import logging

import faust
from faust.worker import Worker

from core.health import HEARTBEAT_FILE, HEARTBEAT_INTERVAL_S
from core.settings import Settings
from streams.app import create_app
from streams.roles import registrar


def build(settings: Settings, role: str) -> faust.App:
    settings.workers.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = create_app(settings, role)
    registrar(role)(app, settings)
    heartbeat = settings.workers.data_dir / role / HEARTBEAT_FILE

    @app.timer(HEARTBEAT_INTERVAL_S)
    async def beat() -> None:
        # Written from the event loop: a stale file means the loop is blocked or dead.
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        heartbeat.touch()

    return app


def run(settings: Settings, role: str) -> None:
    app = build(settings, role)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
