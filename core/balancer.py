"""Least-connections balancing of the API port over several API processes on one host.

With ``SO_REUSEPORT`` the kernel hashes each new connection to one process: eight
keep-alive connections split 4/4 over two processes only about a quarter of the time,
and the process holding six queues three times the requests of the one holding two
(docs/performance.md). Instead, ``clipstream balance`` owns the port: it accepts each
connection and hands its file descriptor (``SCM_RIGHTS`` over a Unix socket) to the API
process that holds the fewest open connections. From then on the client and that API
process talk directly; the balancer never sees a byte of HTTP, so it costs one accept
and one ``sendmsg`` a connection, nothing a request.

Each API process (``API__BALANCER_SOCKET`` set) connects to the balancer's Unix socket,
says its pid, and then receives connections on it; whenever a connection arrives or
closes, it reports how many it holds open and how many it has received from this
balancer, so the balancer knows what each one holds, counting those handed over but not
yet received. Either
side may restart: an API process that goes away is dropped (the connections it held go
with it, as they would with any server), and one that loses the balancer reconnects
until it is back. Connections that arrive while no API process is registered wait in the
port's backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 2.0

MAX_PATH = 97  # sun_path holds 108 bytes with the terminating NUL; 10 for the name it is bound under first


def channel_path_ok(path: Path) -> Path:
    if len(os.fsencode(path)) > MAX_PATH:
        raise ValueError(f"the balancer socket path {path} is longer than a Unix socket allows ({MAX_PATH} bytes)")
    return path


@dataclass(eq=False)
class Backend:
    sock: socket.socket
    pid: int
    handed: int = 0  # connections sent to it
    reported_open: int = 0  # as it last said: connections open
    reported_received: int = 0  # ... and received from this balancer

    @property
    def open(self) -> int:
        return self.reported_open + self.handed - self.reported_received


class Balancer:
    """Accepts on ``listener`` and hands each connection to the registered API process
    holding the fewest open connections (ties in turn)."""

    def __init__(self, listener: socket.socket, channel_path: Path) -> None:
        self.listener = listener
        self.channel_path = channel_path_ok(channel_path)
        self.backends: list[Backend] = []
        self._changed = threading.Condition()
        self._turn = 0
        self._channel: socket.socket | None = None
        self._stopped = False

    # ------------------------------------------------------------------ registration
    def open_channel(self) -> None:
        self.channel_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.channel_path.unlink()  # left by a balancer that was killed
        chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Bound under another name and renamed once listening, so the path never names
        # a socket that refuses connections.
        pending = self.channel_path.with_name(f".{self.channel_path.name}.{os.getpid()}")
        old = os.umask(0o177)  # only this user may register as an API process
        try:
            chan.bind(str(pending))
        finally:
            os.umask(old)
        chan.listen(64)
        os.rename(pending, self.channel_path)
        self._channel = chan
        threading.Thread(target=self._register, name="balancer-register", daemon=True).start()

    def _register(self) -> None:
        assert self._channel is not None
        while not self._stopped:
            try:
                sock, _ = self._channel.accept()
            except OSError:
                return  # closed: stopping
            sock.settimeout(5)
            try:
                hello = sock.recv(64).decode()
                pid = int(hello.removeprefix("pid "))
            except (OSError, ValueError):
                sock.close()
                continue
            # A process that leaves handed connections unread until its socket's buffer is
            # full is hung: after this long a send gives up on it (it registers again if
            # it recovers) instead of stalling every new connection.
            sock.settimeout(SEND_TIMEOUT_S)
            backend = Backend(sock, pid)
            with self._changed:
                self.backends.append(backend)
                self._changed.notify_all()
            log.info("API process %d registered (%d in all)", pid, len(self.backends))
            threading.Thread(target=self._follow, args=(backend,), name=f"balancer-{pid}", daemon=True).start()

    def _follow(self, backend: Backend) -> None:
        """Read what the API process reports ("open N received M") until it goes away."""
        while True:
            try:
                msg = backend.sock.recv(64)
            except TimeoutError:
                continue  # nothing to report: fine
            except OSError:
                msg = b""
            if not msg:
                self._drop(backend)
                return
            parts = msg.split()
            if len(parts) == 4 and parts[0] == b"open" and parts[2] == b"received":
                with contextlib.suppress(ValueError), self._changed:
                    backend.reported_open, backend.reported_received = int(parts[1]), int(parts[3])

    def _drop(self, backend: Backend) -> None:
        with self._changed:
            if backend not in self.backends:
                return
            self.backends.remove(backend)
        _close(backend.sock)
        log.info("API process %d went away (%d left)", backend.pid, len(self.backends))

    # ------------------------------------------------------------------ connections
    def pick(self) -> Backend | None:
        """The backend holding the fewest open connections; among equals, the next in turn."""
        with self._changed:
            if not self.backends:
                return None
            n = len(self.backends)
            order = [self.backends[(self._turn + i) % n] for i in range(n)]
            self._turn = (self._turn + 1) % n
            return min(order, key=lambda b: b.open)

    def hand(self, conn: socket.socket) -> bool:
        """Give ``conn`` to a backend (the next one if a send fails); False if none took it."""
        try:
            while (backend := self.pick()) is not None:
                try:
                    socket.send_fds(backend.sock, [b"c"], [conn.fileno()])
                except OSError:
                    self._drop(backend)
                    continue
                with self._changed:
                    backend.handed += 1
                return True
            return False
        finally:
            conn.close()  # the backend holds its own descriptor now

    def serve_forever(self) -> None:
        self.open_channel()
        try:
            while not self._stopped:
                with self._changed:
                    self._changed.wait_for(lambda: self.backends or self._stopped)
                if self._stopped:
                    break
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    if self._stopped:
                        break
                    raise
                if not self.hand(conn):
                    log.warning("no API process took a connection; it was closed")
        finally:
            self.close()

    def stop(self) -> None:
        self._stopped = True
        with self._changed:
            self._changed.notify_all()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close() would not)

    def close(self) -> None:
        self._stopped = True
        _close(self.listener)
        if self._channel is not None:
            _close(self._channel)
            with contextlib.suppress(FileNotFoundError):
                self.channel_path.unlink()
        with self._changed:
            backends, self.backends = self.backends, []
        for b in backends:
            _close(b.sock)


def _close(sock: socket.socket) -> None:
    """Shut down, then close: a plain close() from one thread neither wakes another
    blocked in recv() or accept() on the socket nor, until that returns, ends the
    connection (the peer would never hear)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def listen_on(host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket; with ``reuse_port`` (SO_REUSEPORT) several processes on
    this host can each bind one on the same port, and the kernel spreads new
    connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def run_balancer(host: str, port: int, channel_path: Path) -> int:
    """``clipstream balance``: serve until SIGTERM or SIGINT."""
    balancer = Balancer(listen_on(host, port), channel_path)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: balancer.stop())
    log.info("balancing http://%s:%d over the API processes registered at %s", host, port, channel_path)
    balancer.serve_forever()
    return 0


# ---------------------------------------------------------------------- API process side
class HandedConnections:
    """In an API process: register with the balancer and serve each connection it hands
    over with ``protocol_factory``; reconnect when the balancer goes away.

    Whenever a connection arrives or closes, the balancer hears at once how many this
    process holds open and how many it has received since it registered (a report that
    lagged would let a burst of new connections pile onto one process)."""

    def __init__(
        self, channel_path: Path, protocol_factory: Callable[[], asyncio.Protocol], retry_s: float = 0.5
    ) -> None:
        self.channel_path = channel_path_ok(channel_path)
        self.protocol_factory = protocol_factory
        self.retry_s = retry_s
        self.open = 0  # connections held, those from before a balancer restart included
        self.received = 0  # connections received since registering
        self.registered = asyncio.Event()
        self._chan: socket.socket | None = None
        self._report_due = False
        self._accepting: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            try:
                chan = await self._connect()
            except OSError as e:
                log.debug("balancer not reachable at %s: %s", self.channel_path, e)
                await asyncio.sleep(self.retry_s)
                continue
            try:
                await self._serve(chan)
            finally:
                self._chan = None
                self.registered.clear()
                chan.close()
            log.warning("lost the balancer at %s; registering again", self.channel_path)
            await asyncio.sleep(self.retry_s)

    async def _connect(self) -> socket.socket:
        chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        chan.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(chan, str(self.channel_path))
            chan.send(f"pid {os.getpid()}".encode())
        except BaseException:
            chan.close()
            raise
        return chan

    async def _serve(self, chan: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        gone = loop.create_future()

        def take() -> None:
            while True:
                try:
                    msg, fds, _, _ = socket.recv_fds(chan, 16, 16)
                except BlockingIOError:
                    return
                except OSError:
                    msg, fds = b"", []
                if not msg and not fds:
                    if not gone.done():
                        gone.set_result(None)
                    return
                self.received += len(fds)
                self.open += len(fds)
                self._changed()
                for fd in fds:
                    task = loop.create_task(self._accept(socket.socket(fileno=fd)))
                    self._accepting.add(task)
                    task.add_done_callback(self._accepting.discard)

        self.received = 0
        self._chan = chan
        loop.add_reader(chan.fileno(), take)
        self.registered.set()
        self._changed()
        try:
            await gone
        finally:
            loop.remove_reader(chan.fileno())

    def _changed(self) -> None:
        """Report once this turn of the event loop is done (several changes, one report)."""
        if not self._report_due:
            self._report_due = True
            asyncio.get_running_loop().call_soon(self._report)

    def _report(self) -> None:
        self._report_due = False
        if self._chan is None:
            return
        try:
            self._chan.send(f"open {self.open} received {self.received}".encode())
        except BlockingIOError:  # the balancer is behind: say it a moment later
            self._report_due = True
            asyncio.get_running_loop().call_later(0.01, self._report)
        except OSError:
            pass  # gone: the reader notices

    def _protocol(self) -> asyncio.Protocol:
        protocol = self.protocol_factory()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self.open -= 1
            self._changed()
            lost(exc)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    async def _accept(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._protocol, sock)
        except OSError as e:  # the client left before it was served
            log.debug("a handed connection failed: %s", e)
            sock.close()
            self.open -= 1
            self._changed()


class BalancedServer(uvicorn.Server):
    """A uvicorn server that binds nothing: its connections come from the balancer."""

    def __init__(self, config: uvicorn.Config, channel_path: Path) -> None:
        super().__init__(config)
        self.channel_path = channel_path
        self._taker: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        if not self.started:
            return
        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg,no-any-return]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        handed = HandedConnections(self.channel_path, protocol)
        self._taker = asyncio.create_task(handed.run())
        log.info("serving the connections the balancer at %s hands over", self.channel_path)

    async def shutdown(self, sockets: Any = None) -> None:
        if self._taker is not None:  # take no new connections, then finish the open ones
            self._taker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._taker
        await super().shutdown(sockets=sockets)
