"""Several API processes on one port (``API__PROCESSES``): a balancer hands each
connection to the process holding the fewest (or the kernel spreads them, with
``API__BALANCE=kernel``), only the first relays the outbox, and one going away leaves
the others serving."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from core.balancer import listen_on
from core.broker import free_port
from core.settings import ApiSettings, Settings
from core.stack import Stack, balancer_socket_path
from tests.support.stack import wait_for


def test_sockets_bound_for_sharing_share_the_port() -> None:
    port = free_port()
    first = listen_on("127.0.0.1", port, reuse_port=True)
    second = listen_on("127.0.0.1", port, reuse_port=True)
    try:
        assert first.getsockname() == second.getsockname()
    finally:
        first.close()
        second.close()


def test_up_starts_the_processes_asked_for_and_one_writes_the_snapshot(tmp_path: Path) -> None:
    sqlite = "sqlite:///var/clipstream.db"
    one = Stack(Settings(database_url=sqlite, api=ApiSettings(processes=1)), var_dir=tmp_path).api_children()
    assert [c.name for c in one] == ["api"] and one[0].own_env == {}, "one process binds the port itself"
    stack = Stack(Settings(database_url=sqlite, api=ApiSettings(processes=3)), var_dir=tmp_path)
    balancer, *three = stack.api_children()
    assert balancer.name == "api-balancer" and balancer.argv[-1] == "balance"
    assert [c.name for c in three] == ["api-1", "api-2", "api-3"]
    path = str(tmp_path.resolve() / "run" / "api.sock")
    assert all(c.own_env["API__BALANCER_SOCKET"] == path for c in [balancer, *three])
    assert "API__RUN_OUTBOX_RELAY" not in three[0].own_env and "RANKING__SAVE_SNAPSHOTS" not in three[0].own_env
    assert all(c.own_env["RANKING__SAVE_SNAPSHOTS"] == "false" for c in three[1:])
    assert all(c.own_env["API__RUN_OUTBOX_RELAY"] == "false" for c in three[1:]), "SQLite: one relay"
    pg = Settings(database_url="postgresql://postgres@127.0.0.1:5432/x", api=ApiSettings(processes=2))
    _, *both = Stack(pg, var_dir=tmp_path).api_children()
    assert all("API__RUN_OUTBOX_RELAY" not in c.own_env for c in both), "PostgreSQL: SKIP LOCKED shares the rows"
    assert both[1].own_env["RANKING__SAVE_SNAPSHOTS"] == "false"
    kernel = Settings(database_url=sqlite, api=ApiSettings(processes=2, balance="kernel"))
    two = Stack(kernel, var_dir=tmp_path).api_children()
    assert [c.name for c in two] == ["api-1", "api-2"], "no balancer: each binds the port (SO_REUSEPORT)"
    assert all(c.own_env["API__REUSE_PORT"] == "true" and "API__BALANCER_SOCKET" not in c.own_env for c in two)


def test_a_var_folder_too_deep_for_a_unix_socket_puts_it_in_the_temporary_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    path = balancer_socket_path(deep, 8000)
    assert path.parent == Path(tempfile.gettempdir()) and path.name == "clipstream-api-8000.sock"
    assert balancer_socket_path(tmp_path, 8000) == tmp_path / "run" / "api.sock"


async def _processes_of_keepalive_connections(port: int, n: int) -> list[int]:
    """Open ``n`` connections at once and ask each, twice, which process serves it."""

    async def one() -> tuple[int, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pids = set()
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            pids.add(json.loads(await reader.readexactly(length))["process"])
        assert len(pids) == 1, "a connection stays with its process"
        return pids.pop(), writer

    served = await asyncio.gather(*[one() for _ in range(n)])
    for _, writer in served:
        writer.close()
    return [pid for pid, _ in served]


@pytest.mark.integration
@pytest.mark.parametrize("balance", ["least-connections", "kernel"])
def test_two_api_processes_share_a_port_and_outlive_each_other(tmp_path: Path, balance: str) -> None:
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
    stack = Stack(Settings(api=ApiSettings(port=port, processes=2, balance=balance)), var_dir=tmp_path)  # type: ignore[arg-type]
    stack.logs.mkdir(parents=True)
    children = stack.api_children()
    apis = [c for c in children if c.name != "api-balancer"]
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
        pids = {c.pid for c in apis}
        seen = wait_for(lambda: (a := answers(40)).keys() == pids and a, 90, "both API processes to answer")
        first, second = (seen[c.pid] for c in apis)  # type: ignore[index]
        assert first["outbox_pending"] == 0, "the first process relays (and reports) the outbox"
        assert second["outbox_pending"] is None, "the second does not relay"
        if balance == "least-connections":
            for _ in range(3):  # every time, not by luck of the hash
                # Connections closed a moment ago count until their process has seen them close.
                time.sleep(1.0)
                held = asyncio.run(_processes_of_keepalive_connections(port, 8))
                assert set(held) == pids and sorted(Counter(held).values()) == [4, 4], held

        assert apis[0].process is not None
        os.kill(apis[0].process.pid, signal.SIGKILL)
        apis[0].process.wait(10)
        assert set(answers(20)) == {apis[1].pid}, "the survivor takes every new connection"
    finally:
        for c in children:
            if c.alive():
                assert c.process is not None
                c.process.terminate()
                c.process.wait(30)
