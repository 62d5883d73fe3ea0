"""`clipstream` command line: up, api, balance, worker, migrate, topics, seed, export-schemas, tiny-pipeline,
provenance, rescan."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from core.errors import ConfigurationError
from core.lake import archived_topics
from core.logging import logging_config, setup_logging
from core.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clipstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole stack (embedded broker unless KAFKA__BOOTSTRAP_SERVERS is set)")
    up.add_argument("--no-seed", action="store_true", help="do not create demo users and prompts")
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser(
        "balance", help="own the API port and hand each connection to the API process holding the fewest (up runs it)"
    )
    worker = sub.add_parser("worker", help="run one stream-processing worker role")
    worker.add_argument("role", help="generation | moderation | materializer | ranking")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("topics", help="create the topic catalog (idempotent)")
    sub.add_parser("broker", help="run only the embedded Tansu broker in the foreground")
    seed = sub.add_parser("seed", help="create demo users and prompts through the API")
    seed.add_argument("--api", default=None, help="API base URL (default from API__HOST/API__PORT)")
    sub.add_parser("export-schemas", help="write the JSON Schema of every topic into schemas/")
    role = sub.add_parser("set-role", help="give a user the user, reviewer or admin role (bootstraps the first admin)")
    role.add_argument("handle")
    role.add_argument("role", choices=["user", "reviewer", "admin"])
    tiny = sub.add_parser(
        "tiny-pipeline", help="write a tiny random Wan pipeline to DIR (tries the diffusers backend without weights)"
    )
    tiny.add_argument("directory", type=Path)
    tiny.add_argument("--image-to-video", action="store_true", help="a WanImageToVideoPipeline (renders cameos)")
    prov = sub.add_parser("provenance", help="show or rotate the development provenance signer (PROVENANCE__DIR)")
    prov.add_argument("action", choices=["show", "rotate"])
    rescan = sub.add_parser(
        "rescan", help="re-judge published clips with the current frame filter (after concepts or thresholds change)"
    )
    rescan.add_argument("--dry-run", action="store_true", help="report what would be flagged or taken down")
    rescan.add_argument("--limit", type=int, default=None, help="stop after this many clips")
    rescan.add_argument(
        "--after", type=uuid.UUID, default=None, help="resume after this clip id (clips are walked in id order)"
    )
    lake = sub.add_parser("lake", help="the Parquet archive of every topic (LAKE__ROOT)")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True)
    lake_sub.add_parser("sink", help="archive every topic until stopped (`up` runs it)")
    compact = lake_sub.add_parser("compact", help="merge each partition's small files of an hour into one")
    compact.add_argument("--topic", default=None, choices=archived_topics(), help="only this topic")
    compact.add_argument("--min-files", type=int, default=2, help="merge runs of at least this many files")
    health = sub.add_parser("health", help="exit 0 when a process is healthy (container health checks)")
    health.add_argument("target", choices=["api", "worker"])
    health.add_argument("role", nargs="?", help="worker role (default: any worker on this host)")
    args = parser.parse_args(argv)

    try:
        settings = get_settings()
    except ConfigurationError as e:
        print(f"clipstream: {e}", file=sys.stderr)
        return 2
    process = f"worker-{args.role}" if args.command == "worker" else args.command
    setup_logging(settings.log_level, process, settings.log_format)

    if args.command == "up":
        from core.stack import run_up

        return run_up(settings, seed=not args.no_seed)
    if args.command == "api":
        import uvicorn

        from api.app import create_app
        from core.balancer import BalancedServer, listen_on

        config = uvicorn.Config(
            create_app(settings),
            host=settings.api.host,
            port=settings.api.port,
            log_level=settings.log_level.lower(),
            log_config=logging_config(settings.log_level, "api", settings.log_format),
            timeout_graceful_shutdown=5,
        )
        api = settings.api
        sockets = None
        if api.balancer_socket is not None:  # binds nothing: the balancer hands connections over
            server: uvicorn.Server = BalancedServer(config, api.balancer_socket)
        else:
            server = uvicorn.Server(config)
            if api.reuse_port:  # every API process on this host binds its own socket on the port
                sockets = [listen_on(api.host, api.port, reuse_port=True)]
        server.run(sockets=sockets)
        return 0 if server.started else 3  # as uvicorn.run: 3 when start-up failed
    if args.command == "balance":
        from core.balancer import run_balancer

        if settings.api.balancer_socket is None:
            print("clipstream balance needs API__BALANCER_SOCKET (the API processes register there)", file=sys.stderr)
            return 2
        return run_balancer(settings.api.host, settings.api.port, settings.api.balancer_socket)
    if args.command == "worker":
        from streams.worker import run

        run(settings, args.role)
        return 0
    if args.command == "lake":
        if args.lake_command == "sink":
            from streams.lake_sink import run as run_sink

            run_sink(settings)
            return 0
        from core.lake import Lake

        lk = Lake(settings.lake.root)
        removed = lk.remove_leftovers()
        made = lk.compact(args.topic, min_files=args.min_files)
        print(f"{len(made)} file(s) made by merging; {removed} leftover(s) removed")
        return 0
    if args.command == "tiny-pipeline":
        from generation.tiny_pipeline import save_tiny_pipeline

        path = save_tiny_pipeline(args.directory, image_to_video=args.image_to_video)
        kind = "WanImageToVideoPipeline" if args.image_to_video else "WanPipeline"
        print(f"tiny {kind} written to {path}; try it with GENERATION__BACKEND=diffusers")
        print(f"GENERATION__DIFFUSERS__MODEL_DIR={path} GENERATION__DIFFUSERS__DEVICE=cpu (or cuda)")
        return 0
    if args.command == "provenance":
        from generation.provenance import credentials_from, rotate_dev_signer

        p = settings.provenance
        if args.action == "rotate":
            if p.cert_chain_file is not None:
                print("the signer comes from PROVENANCE__CERT_CHAIN_FILE: replace those files instead", file=sys.stderr)
                return 2
            credentials_from(settings)
            rotate_dev_signer(p.dir)
            print(f"new development signer in {p.dir}; restart the generation workers to sign with it")
        creds = credentials_from(settings)
        from cryptography import x509

        signer = x509.load_pem_x509_certificates(creds.cert_chain_pem)[0]
        print(f"signer: {signer.subject.rfc4514_string()}  serial {signer.serial_number:x}")
        print(f"valid:  {signer.not_valid_before_utc:%Y-%m-%d} to {signer.not_valid_after_utc:%Y-%m-%d}")
        return 0
    if args.command == "rescan":
        from core.db import make_engine, make_sessionmaker
        from core.media import LocalMediaStore
        from moderation.frame_filter import frame_filter_for
        from moderation.rescan import rescan as run_rescan

        frame_filter = frame_filter_for(settings.moderation.frame_filter)
        report = run_rescan(
            make_sessionmaker(make_engine(settings.database_url)),
            LocalMediaStore(settings.media.root),
            frame_filter,
            after=args.after,
            limit=args.limit,
            dry_run=args.dry_run,
            progress=True,
        )
        print(("(dry run) " if args.dry_run else "") + report.summary())
        for clip_id, error in report.errors.items():
            print(f"  {clip_id}: {error}", file=sys.stderr)
        if report.last_id is not None:
            print(f"last clip: {report.last_id} (resume with --after)")
        return 1 if report.errors else 0
    if args.command == "migrate":
        from core.db import migrate

        migrate(settings.database_url)
        print(f"database at {settings.database_url.split('@')[-1]} is at the latest migration")
        return 0
    if args.command == "topics":
        from core.broker import ensure_topics

        created = ensure_topics(settings.kafka.servers, settings.kafka.replication_factor)
        print(f"topic catalog ready on {settings.kafka.servers}; created: {', '.join(created) or 'none'}")
        return 0
    if args.command == "broker":
        import signal
        import threading

        from core.broker import EmbeddedBroker

        broker = EmbeddedBroker(settings.kafka.embedded_host, settings.kafka.embedded_port)
        broker.start()
        print(f"Tansu listening on {broker.bootstrap_servers}; Ctrl-C stops it", flush=True)
        done = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: done.set())
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        done.wait()
        broker.stop()
        return 0
    if args.command == "seed":
        from core.seed import seed as run_seed

        base = args.api or f"http://{settings.api.host}:{settings.api.port}"
        tokens = run_seed(base, Path("var/demo-tokens.json").resolve(), settings.seed.prompts_per_user)
        print(f"seeded {len(tokens)} demo users; their tokens are in var/demo-tokens.json")
        return 0
    if args.command == "set-role":
        from sqlalchemy import select

        from core.db import make_engine, make_sessionmaker, session_scope
        from core.db.models import User

        engine = make_engine(settings.database_url)
        with session_scope(make_sessionmaker(engine)) as session:
            user = session.scalar(select(User).where(User.handle_key == args.handle.removeprefix("@").lower()))
            if user is None:
                print(f"no user @{args.handle.removeprefix('@')}", file=sys.stderr)
                return 1
            user.role = args.role
        print(f"@{user.handle} is now {args.role}")
        return 0
    if args.command == "health":
        from core.health import check

        ok, message = check(settings, args.target, args.role)
        print(message)
        return 0 if ok else 1
    if args.command == "export-schemas":
        from core.schemas import export

        for path in export():
            print(path)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
