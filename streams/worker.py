"""Entry point of one worker process: `clipstream worker <role>`."""

from __future__ import annotations

import logging

from faust.worker import Worker

from core.settings import Settings
from streams.app import create_app
from streams.roles import registrar


def build(settings: Settings, role: str):  # type: ignore[no-untyped-def]
    app = create_app(settings, role)
    registrar(role)(app, settings)
    return app


def run(settings: Settings, role: str) -> None:
    app = build(settings, role)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
