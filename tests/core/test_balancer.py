"""The connection balancer in front of several API processes (core/balancer.py): real
TCP and Unix sockets, connections handed over as file descriptors."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.balancer import Balancer, HandedConnections, channel_path_ok, listen_on
from tests.support.stack import wait_for


class FakeApi:
    """An API process's side of the channel, by hand: registers, counts the connections
    it is handed, and reports what it holds."""

    def __init__(self, path: Path, pid: int) -> None:
        self.chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.chan.connect(str(path))
        self.chan.send(f"pid {pid}".encode())
        self.conns: list[socket.socket] = []
        self.chan.settimeout(5)

    def take(self, n: int) -> list[socket.socket]:
        got = []
        for _ in range(n):
            _, fds, _, _ = socket.recv_fds(self.chan, 16, 4)
            got += [socket.socket(fileno=fd) for fd in fds]
        self.conns += got
        return got

    def pending(self) -> bool:
        self.chan.setblocking(False)
        try:
            socket.recv_fds(self.chan, 16, 4, socket.MSG_PEEK)
            return True
        except BlockingIOError:
            return False
        finally:
            self.chan.settimeout(5)

    def report(self, open_now: int, received: int) -> None:
        self.chan.send(f"open {open_now} received {received}".encode())

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.chan.close()


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    b = Balancer(listen_on("127.0.0.1", 0), tmp_path / "run" / "api.sock")
    thread = threading.Thread(target=b.serve_forever, daemon=True)
    thread.start()
    wait_for(lambda: b.channel_path.exists() or None, 5, "the balancer's channel")
    yield b
    b.stop()
    thread.join(5)
    assert not thread.is_alive(), "the balancer stops on stop()"
    assert not b.channel_path.exists(), "and removes its socket"


def connect(b: Balancer) -> socket.socket:
    return socket.create_connection(b.listener.getsockname()[:2], timeout=5)


def registered(b: Balancer, n: int) -> None:
    wait_for(lambda: len(b.backends) == n or None, 5, f"{n} registered API processes")


def test_connections_go_to_the_process_holding_the_fewest(balancer: Balancer) -> None:
    one, two = FakeApi(balancer.channel_path, 101), FakeApi(balancer.channel_path, 102)
    registered(balancer, 2)
    clients = [connect(balancer) for _ in range(8)]
    got_one, got_two = one.take(4), two.take(4)  # 8 at once: 4 each, whatever the timing
    assert not one.pending() and not two.pending()

    # The handed descriptor is the client's connection itself: bytes flow both ways.
    clients[0].sendall(b"ping")
    served = {s.getpeername(): s for s in got_one + got_two}
    server_side = served[clients[0].getsockname()]
    assert server_side.recv(4) == b"ping"
    server_side.sendall(b"pong")
    assert clients[0].recv(4) == b"pong"

    # The first process closes three of its four: the next three connections are its.
    one.report(open_now=1, received=4)
    wait_for(lambda: [b.open for b in balancer.backends] == [1, 4] or None, 5, "the report to arrive")
    more = [connect(balancer) for _ in range(3)]
    assert len(one.take(3)) == 3 and not two.pending()
    for c in clients + more:
        c.close()
    one.close()
    two.close()


def test_a_process_that_goes_away_gets_no_more_connections(balancer: Balancer) -> None:
    one, two = FakeApi(balancer.channel_path, 101), FakeApi(balancer.channel_path, 102)
    registered(balancer, 2)
    one.close()
    registered(balancer, 1)
    clients = [connect(balancer) for _ in range(4)]
    assert len(two.take(4)) == 4
    for c in clients:
        c.close()
    two.close()


def test_a_hung_process_is_given_up_on(balancer: Balancer, monkeypatch: pytest.MonkeyPatch) -> None:
    """One that leaves its handed connections unread until its socket is full must not
    stall the port: the send times out, the process is dropped, the rest go elsewhere."""
    monkeypatch.setattr("core.balancer.SEND_TIMEOUT_S", 0.2)
    hung, alive = FakeApi(balancer.channel_path, 101), FakeApi(balancer.channel_path, 102)
    registered(balancer, 2)
    taken = []
    stop = threading.Event()

    def serve() -> None:
        alive.chan.settimeout(0.1)
        while not stop.is_set():
            try:
                _, fds, _, _ = socket.recv_fds(alive.chan, 16, 4)
            except TimeoutError:
                continue
            taken.extend(fds)

    reader = threading.Thread(target=serve, daemon=True)
    reader.start()
    clients = []
    try:
        for _ in range(300):  # far more than a Unix socket's buffer holds unread
            clients.append(connect(balancer))
        registered(balancer, 1)
        assert balancer.backends[0].pid == 102, "the hung one was dropped"
        held = []  # what the hung process had been given before: its socket's buffer full
        while True:
            msg, fds, _, _ = socket.recv_fds(hung.chan, 16, 4)
            if not msg:
                break  # then the end: the balancer closed its channel
            held += fds
        assert 20 < len(held) < 300
        wait_for(lambda: len(taken) + len(held) == 300 or None, 10, "every connection handed to someone")
        for fd in held:
            socket.socket(fileno=fd).close()
    finally:
        stop.set()
        reader.join(5)
        for c in clients:
            c.close()
        for fd in taken:
            socket.socket(fileno=fd).close()
        hung.close()
        alive.close()


def test_garbage_on_the_channel_registers_nothing_and_breaks_nothing(balancer: Balancer) -> None:
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bad.connect(str(balancer.channel_path))
    bad.send(b"hello there")  # not "pid N": refused
    bad.settimeout(5)
    assert bad.recv(16) == b"", "the balancer closed it"
    bad.close()
    good = FakeApi(balancer.channel_path, 104)
    registered(balancer, 1)
    good.chan.send(b"open lots received ?")  # a malformed report is ignored
    client = connect(balancer)
    assert len(good.take(1)) == 1
    # (counted once the send returns, which may be just after the fake has taken it)
    wait_for(lambda: balancer.backends[0].open == 1 or None, 5, "the connection counted, the report ignored")
    client.close()
    good.close()


def test_connections_wait_while_no_process_is_registered(balancer: Balancer) -> None:
    client = connect(balancer)  # the kernel completes the handshake; the balancer holds off
    time.sleep(0.2)
    late = FakeApi(balancer.channel_path, 103)
    (conn,) = late.take(1)
    client.sendall(b"x")
    assert conn.recv(1) == b"x"
    client.close()
    late.close()


def test_an_api_process_serves_handed_connections_and_reregisters(tmp_path: Path) -> None:
    """HandedConnections, as the API process runs it: each connection is served by the
    protocol, the balancer learns how many it holds, and a restarted balancer gets it back."""
    path = tmp_path / "api.sock"

    held: set[asyncio.Protocol] = set()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            held.add(self)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())  # type: ignore[attr-defined]

        def connection_lost(self, exc: Exception | None) -> None:
            held.discard(self)

    def start_balancer() -> tuple[Balancer, threading.Thread]:
        b = Balancer(listen_on("127.0.0.1", 0), path)
        t = threading.Thread(target=b.serve_forever, daemon=True)
        t.start()
        return b, t

    async def scenario() -> None:
        handed = HandedConnections(path, Echo, retry_s=0.05)
        runner = asyncio.create_task(handed.run())
        b, t = start_balancer()
        try:
            await asyncio.wait_for(handed.registered.wait(), 5)
            loop = asyncio.get_running_loop()

            async def talk(b: Balancer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                r, w = await asyncio.open_connection(*b.listener.getsockname()[:2])
                w.write(b"hello")
                assert await asyncio.wait_for(r.readexactly(5), 5) == b"HELLO"
                return r, w

            streams = [await talk(b) for _ in range(3)]
            await loop.run_in_executor(None, registered, b, 1)

            async def backend_open(n: int) -> None:
                for _ in range(500):
                    if b.backends and b.backends[0].open == n:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(f"the balancer thinks {b.backends[0].open}, not {n}")

            await backend_open(3)
            streams[0][1].close()
            await backend_open(2)

            # The balancer restarts: the process registers again, keeps its two open
            # connections, and serves new ones.
            b.stop()
            await loop.run_in_executor(None, t.join, 5)
            b, t = start_balancer()
            await asyncio.wait_for(handed.registered.wait(), 5)
            streams.append(await talk(b))  # (kept: a collected writer closes its connection)
            await backend_open(3)  # the two kept from before count
            r, w = streams[1]
            w.write(b"still")
            assert await asyncio.wait_for(r.readexactly(5), 5) == b"STILL"
        finally:
            runner.cancel()
            b.stop()
            await loop.run_in_executor(None, t.join, 5)

    asyncio.run(scenario())


def test_a_socket_path_too_long_for_unix_sockets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than a Unix socket allows"):
        channel_path_ok(tmp_path / ("x" * 120))


def test_a_balancer_socket_too_long_is_a_settings_error_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ, "API__BALANCER_SOCKET": str(tmp_path / ("x" * 120))}
    for command in ("api", "balance"):
        out = subprocess.run([sys.executable, "-m", "core.cli", command], env=env, capture_output=True, text=True)
        assert out.returncode == 2, "refused before anything starts"
        assert "invalid settings" in out.stderr and "longer than a Unix socket allows" in out.stderr
        assert "Traceback" not in out.stderr
