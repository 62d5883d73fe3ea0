"""The `up` command: the whole embedded default stack as supervised child processes.

Order: broker → topics → migrations → API and one worker process per role → demo
seeder. Children run in their own sessions (so a terminal's Ctrl-C reaches only the
supervisor, which then stops them in order) and get SIGTERM from the kernel if the
supervisor itself dies, so no broker or worker is ever orphaned. A child that exits
unexpectedly is restarted with backoff.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from core.balancer import channel_path_ok
from core.broker import EmbeddedBroker, die_with_parent, ensure_topics, free_port
from core.db import migrate
from core.lake import set_aside
from core.settings import Settings
from generation.provenance import credentials_from
from streams.roles import ROLES

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
MAX_RESTARTS = 5


@dataclass
class Child:
    name: str
    argv: list[str]
    address: str
    log_path: Path
    restart: bool = True
    gave_up: bool = False
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    #: Settings of this child alone (its metrics port), over the stack's environment.
    own_env: dict[str, str] = field(default_factory=dict)

    def start(self, env: dict[str, str]) -> None:
        out = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, **self.own_env},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        out.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def absolute_settings_env(settings: Settings, bootstrap: str, var_dir: Path) -> dict[str, str]:
    """Children must agree on paths whatever their working directory."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    env["MEDIA__ROOT"] = str(settings.media.root.resolve())
    env["WORKERS__DATA_DIR"] = str(settings.workers.data_dir.resolve())
    env["PROVENANCE__DIR"] = str(settings.provenance.dir.resolve())
    if "://" not in settings.lake.root:
        env["LAKE__ROOT"] = str(Path(settings.lake.root).resolve())
    url = settings.database_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    env["DATABASE_URL"] = url
    return env


def balancer_socket_path(var_dir: Path, port: int) -> Path:
    """Where the API processes register with the balancer: under ``var_dir``, or in the
    temporary folder when that path is too long for a Unix socket."""
    try:
        return channel_path_ok(var_dir / "run" / "api.sock")
    except ValueError:
        return Path(tempfile.gettempdir()) / f"clipstream-api-{port}.sock"


@dataclass
class ApiLayout:
    """The settings of each of ``API__PROCESSES`` API processes, and of the balancer in
    front of them, over the shared ones."""

    balancer: dict[str, str] | None  # None: no balancer process (one API process, or balance=kernel)
    processes: list[dict[str, str]]


def api_layout(settings: Settings, var_dir: Path) -> ApiLayout:
    """Several API processes share the port: a balancer owns it and hands each
    connection to the process holding the fewest (balance=least-connections), or each
    binds it with SO_REUSEPORT (balance=kernel). The first process writes the ranking
    snapshot and the others start from it. On PostgreSQL each relays the outbox (rows
    are claimed with SKIP LOCKED); on SQLite, which has no row locks, only the first
    does, or two relays would send the same rows."""
    api = settings.api
    n = api.processes
    one_relay = make_url(settings.database_url).get_backend_name() == "sqlite"
    balancer = None
    shared: dict[str, str] = {}
    if n > 1 and api.balance == "least-connections":
        balancer = {"API__BALANCER_SOCKET": str(balancer_socket_path(var_dir, api.port))}
        shared = dict(balancer)
    elif n > 1:
        shared = {"API__REUSE_PORT": "true"}
    out = []
    for i in range(n):
        own = dict(shared)
        if i > 0:
            own["RANKING__SAVE_SNAPSHOTS"] = "false"
            if one_relay:
                own["API__RUN_OUTBOX_RELAY"] = "false"
        out.append(own)
    return ApiLayout(balancer, out)


class Stack:
    def __init__(self, settings: Settings, *, seed: bool = True, var_dir: Path = Path("var")) -> None:
        self.settings = settings
        self.seed_enabled = seed and settings.seed.enabled
        self.var_dir = var_dir.resolve()
        self.logs = self.var_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.seeder: Child | None = None
        self._stopping = False

    def _child(self, name: str, args: list[str], address: str, restart: bool = True) -> Child:
        return Child(name, [sys.executable, "-m", "core.cli", *args], address, self.logs / f"{name}.log", restart)

    def api_children(self) -> list[Child]:
        """``API__PROCESSES`` API processes on one port, with the balancer in front when
        it has one (see :func:`api_layout`)."""
        api = self.settings.api
        layout = api_layout(self.settings, self.var_dir)
        address = f"http://{api.host}:{api.port}"
        out = []
        if layout.balancer is not None:
            balancer = self._child("api-balancer", ["balance"], f"{address}  (least connections)")
            balancer.own_env.update(layout.balancer)
            out.append(balancer)
        for i, own in enumerate(layout.processes):
            name = "api" if api.processes == 1 else f"api-{i + 1}"
            where = f"{address}  (docs: /docs, /metrics)" if layout.balancer is None else "via api-balancer"
            child = self._child(name, ["api"], where)
            child.own_env.update(own)
            out.append(child)
        return out

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        k = self.settings.kafka
        if k.embedded:
            self.broker = EmbeddedBroker(k.embedded_host, k.embedded_port, self.logs / "broker.log")
            self.broker.start()
            # Its topics start empty: the last run's lake names offsets that no longer exist.
            kept = set_aside(self.settings.lake.root)
            if kept is not None:
                log.info("the previous run's lake is kept in %s; this run archives into a new one", kept)
        bootstrap = k.servers
        created = ensure_topics(bootstrap, k.replication_factor)
        log.info("topics ready (%d created)", len(created))
        migrate(self.settings.database_url)
        credentials_from(self.settings)  # the development signer exists before any worker signs
        self.env = absolute_settings_env(self.settings, bootstrap, self.var_dir)
        api = self.settings.api
        self.children = self.api_children()
        serving = len(self.children)
        self.children += [
            self._child(f"worker-{role}", ["worker", role], f"consumer group clipstream-{role}") for role in ROLES
        ]
        lake = self.env.get("LAKE__ROOT", self.settings.lake.root)
        self.children.append(self._child("lake-sink", ["lake", "sink"], f"Parquet under {lake}"))
        # The API serves /metrics on its own port; each other process gets one of its own.
        base = self.settings.workers.metrics_port
        for i, child in enumerate(self.children[serving:]):
            port = base + i if base else free_port(api.host)
            child.own_env["WORKERS__METRICS_PORT"] = str(port)
            child.address += f"  metrics :{port}"
        for child in self.children:
            child.start(self.env)
        if self.seed_enabled:
            self.seeder = self._child("seeder", ["seed"], "demo users and prompts", restart=False)
            self.seeder.start(self.env)
        self.print_table(bootstrap)

    def print_table(self, bootstrap: str) -> None:
        lines = ["", "Clipstream is up" + (" (embedded default)" if self.broker else ""), ""]
        if self.broker and self.broker.process:
            lines.append(
                f"  {'broker':<22} Tansu kafka://{bootstrap:<26} pid {self.broker.process.pid:<7} "
                f"log {self.logs / 'broker.log'}"
            )
        else:
            lines.append(f"  {'broker':<22} external Kafka at {bootstrap}")
        for c in self.children + ([self.seeder] if self.seeder else []):
            lines.append(f"  {c.name:<22} {c.address:<56} pid {c.pid!s:<7} log {c.log_path}")
        shown = make_url(self.env["DATABASE_URL"]).render_as_string(hide_password=True)
        lines.append(f"  {'database':<22} {shown}")
        lines.append(f"  {'media':<22} {self.env['MEDIA__ROOT']}")
        lines += ["", "Ctrl-C stops everything.", ""]
        print("\n".join(lines), flush=True)

    def supervise(self, poll_s: float = 0.5) -> None:
        while not self._stopping:
            for child in self.children:
                if self._stopping or child.gave_up or child.alive():
                    continue
                code = child.process.returncode if child.process else None
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60]
                if len(child.restarts) >= MAX_RESTARTS:
                    log.error(
                        "%s exited %s times in a minute; giving up on it (see %s)",
                        child.name,
                        len(child.restarts),
                        child.log_path,
                    )
                    child.gave_up = True
                    continue
                log.warning("%s exited with %s; restarting (see %s)", child.name, code, child.log_path)
                time.sleep(min(2 ** len(child.restarts) * 0.5, 8))
                child.restarts.append(now)
                child.start(self.env)
            if self.seeder and self.seeder.process and self.seeder.process.poll() is not None:
                code = self.seeder.process.returncode
                (log.info if code == 0 else log.error)("demo seeder finished with exit code %s", code)
                self.seeder = None
            time.sleep(poll_s)

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def stop(self) -> None:
        self._stopping = True
        procs = [c for c in ([self.seeder] if self.seeder else []) + self.children if c.alive()]
        for child in procs:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in procs:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.name, STOP_TIMEOUT_S)
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(5)
        # Each child ran in its own session: sweep its group for grandchildren (render pools).
        for child in procs:
            assert child.process is not None
            try:
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.broker:
            self.broker.stop()
        print("Clipstream stopped.", flush=True)


def run_up(settings: Settings, seed: bool = True) -> int:
    stack = Stack(settings, seed=seed)
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    try:
        stack.start()
        stack.supervise()
    finally:
        stack.stop()
    return 0
