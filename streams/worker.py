"""Entry point of one worker process: `clipstream worker <role>`."""

from __future__ import annotations

import logging

import faust
from faust.worker import Worker

from core import metrics
from core.health import HEARTBEAT_FILE, HEARTBEAT_INTERVAL_S, HEARTBEAT_STALE_S
from core.logging import logging_config
from core.settings import Settings
from streams.app import create_app
from streams.roles import registrar


def build(settings: Settings, role: str, liveness: metrics.LoopProbe | None = None) -> faust.App:
    settings.workers.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = create_app(settings, role)
    registrar(role)(app, settings)
    heartbeat = settings.workers.data_dir / role / HEARTBEAT_FILE

    @app.timer(HEARTBEAT_INTERVAL_S)
    async def beat() -> None:
        # Written from the event loop: a stale file means the loop is blocked or dead.
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        heartbeat.touch()
        if liveness is not None:
            liveness.beat()

    @app.timer(LAG_INTERVAL_S)
    async def lag() -> None:
        metrics.set_lag(app.conf.id, consumer_lag(app))

    return app


#: How often a worker refreshes its consumer-lag gauges.
LAG_INTERVAL_S = 5.0


def consumer_lag(app: faust.App) -> list[tuple[str, int, int]]:
    """``(topic, partition, lag)`` for every stream partition this worker holds: the end
    the last fetch saw less the group's committed offset (no figure before the first
    fetch). Table changelogs are left out: the worker writes them, reads them only to
    recover, and never commits offsets on them."""
    consumer = app.consumer
    changelogs = set(app.tables.changelog_topics)
    out = []
    for tp in sorted(consumer.assignment()):
        end = consumer.highwater(tp)
        if end is None or tp.topic in changelogs:
            continue
        committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]  # no public view
        out.append((tp.topic, tp.partition, end - (committed or 0)))
    return out


def readiness(app: faust.App) -> metrics.Probe:
    """Ready once the worker has joined its group and recovered its tables, and while
    no rebalance is under way (it then consumes what it was assigned)."""

    def probe() -> tuple[bool, str]:
        if not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            return False, "joining the group / recovering tables"
        if app.rebalancing:
            return False, "rebalancing"
        return True, f"consuming {len(app.consumer.assignment())} partition(s)"

    return probe


def run(settings: Settings, role: str) -> None:
    liveness = metrics.LoopProbe(HEARTBEAT_STALE_S)
    app = build(settings, role, liveness)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    metrics.serve(settings.workers.metrics_port, liveness=liveness, readiness=readiness(app))
    # mode replaces the root logger's handlers with its own unless given this config.
    config = logging_config(settings.log_level, f"worker-{role}", settings.log_format)
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True, logging_config=config)
    worker.execute_from_commandline()
