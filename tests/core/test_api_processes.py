"""Several API processes on one port (``API__PROCESSES``): the kernel spreads
connections over them, only the first relays the outbox, and one going away leaves
the others serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.broker import free_port
from core.cli import shared_port_socket
from core.settings import ApiSettings, Settings
from core.stack import Stack
from tests.support.stack import wait_for


def test_sockets_bound_for_sharing_share_the_port() -> None:
    port = free_port()
    first = shared_port_socket("127.0.0.1", port)
    second = shared_port_socket("127.0.0.1", port)
    try:
        assert first.getsockname() == second.getsockname()
    finally:
        first.close()
        second.close()


def test_up_starts_the_processes_asked_for_and_one_writes_the_snapshot(tmp_path: Path) -> None:
    sqlite = "sqlite:///var/clipstream.db"
    one = Stack(Settings(database_url=sqlite, api=ApiSettings(processes=1)), var_dir=tmp_path).api_children()
    assert [c.name for c in one] == ["api"] and one[0].own_env == {}
    three = Stack(Settings(database_url=sqlite, api=ApiSettings(processes=3)), var_dir=tmp_path).api_children()
    assert [c.name for c in three] == ["api-1", "api-2", "api-3"]
    assert all(c.own_env["API__REUSE_PORT"] == "true" for c in three)
    assert "API__RUN_OUTBOX_RELAY" not in three[0].own_env and "RANKING__SAVE_SNAPSHOTS" not in three[0].own_env
    assert all(c.own_env["RANKING__SAVE_SNAPSHOTS"] == "false" for c in three[1:])
    assert all(c.own_env["API__RUN_OUTBOX_RELAY"] == "false" for c in three[1:]), "SQLite: one relay"
    pg = Settings(database_url="postgresql://postgres@127.0.0.1:5432/x", api=ApiSettings(processes=2))
    both = Stack(pg, var_dir=tmp_path).api_children()
    assert all("API__RUN_OUTBOX_RELAY" not in c.own_env for c in both), "PostgreSQL: SKIP LOCKED shares the rows"
    assert both[1].own_env["RANKING__SAVE_SNAPSHOTS"] == "false"


@pytest.mark.integration
def test_two_api_processes_share_a_port_and_outlive_each_other(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "clipstream.db"
    ours = ("API__", "DATABASE_URL", "MEDIA__", "RANKING__", "KAFKA__")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{db}",
            "MEDIA__ROOT": str(tmp_path / "media"),
            "API__PORT": str(port),
            "KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # no broker: writes wait in the outbox
            "RANKING__REPLICA": "false",
            "MODERATION__CLASSIFIER_ENABLED": "false",
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
        }
    )
    subprocess.run([sys.executable, "-m", "core.cli", "migrate"], env=env, check=True, cwd=tmp_path)
    stack = Stack(Settings(api=ApiSettings(port=port, processes=2)), var_dir=tmp_path)
    stack.logs.mkdir(parents=True)
    children = stack.api_children()
    url = f"http://127.0.0.1:{port}"

    def answers(n: int) -> dict[int, dict]:  # type: ignore[type-arg]
        out = {}
        for _ in range(n):
            body = httpx.get(f"{url}/readyz", timeout=5).json()  # a new connection each time
            out[body["process"]] = body
        return out

    try:
        for c in children:
            c.start(env)
        pids = {c.pid for c in children}
        seen = wait_for(lambda: (a := answers(40)).keys() == pids and a, 90, "both API processes to answer")
        first, second = (seen[c.pid] for c in children)  # type: ignore[index]
        assert first["outbox_pending"] == 0, "the first process relays (and reports) the outbox"
        assert second["outbox_pending"] is None, "the second does not relay"

        assert children[0].process is not None
        os.kill(children[0].process.pid, signal.SIGKILL)
        children[0].process.wait(10)
        assert set(answers(20)) == {children[1].pid}, "the survivor takes every new connection"
    finally:
        for c in children:
            if c.alive():
                assert c.process is not None
                c.process.terminate()
                c.process.wait(30)
