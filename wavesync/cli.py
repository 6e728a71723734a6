"""The `wavesync` command: run the service, the sandboxes, and the operator's tools."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from shared.settings import ENTITIES, Settings, SettingsError, load_settings

cli = typer.Typer(
    help="Two-way sync between Customerp (a Custom ERP) and Wave.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="The link-store database.", no_args_is_help=True)
dlq_cli = typer.Typer(help="Dead-letter queues: inspect, replay, purge.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(dlq_cli, name="dlq")

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["--wavesync-help"]}
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _settings() -> Settings:
    return load_settings()


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@contextmanager
def _link_store() -> Iterator[None]:
    """An unreachable or unmigrated link store is one clear line and exit status 1, not a traceback."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        yield
    except OSError as exc:  # the SQLite file's directory cannot be made (WAVESYNC_DATA_DIR under a file, no rights)
        typer.echo(
            f"wavesync: cannot open the link store ({exc.strerror or type(exc).__name__}: {exc.filename}); "
            "check WAVESYNC_DATA_DIR and WAVESYNC_DATABASE_URL",
            err=True,
        )
        raise typer.Exit(1) from None
    except (OperationalError, ProgrammingError) as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        typer.echo(
            f"wavesync: cannot read the link store ({detail}); check WAVESYNC_DATABASE_URL and run "
            "`wavesync db upgrade`",
            err=True,
        )
        raise typer.Exit(1) from None


@cli.command()
def up(
    seed: Annotated[bool, typer.Option(help="Seed the embedded sandboxes with demo data.")] = True,
) -> None:
    """Run everything: worker, beat, and embedded services.

    Embedded Redis and sandboxes start where nothing is configured.
    """
    from wavesync.services import run_up
    from wavesync.startup import prepare_data_dir

    settings = _settings()
    prepare_data_dir(settings)
    raise typer.Exit(run_up(settings, seed=seed))


@cli.command(context_settings=PASSTHROUGH)
def worker(ctx: typer.Context) -> None:
    """Run a Celery worker (takes Celery's worker options).

    For example `wavesync worker -Q customers -c 8 --pool threads`.
    """
    from wavesync.services import worker_argv
    from wavesync.startup import prepare_data_dir, require_migrated

    settings = _settings()
    prepare_data_dir(settings)
    require_migrated(settings)
    argv = worker_argv(list(ctx.args))
    # `celery -P gevent` monkey-patches in its own __main__; app.worker_main does not, so do it first.
    from celery import maybe_patch_concurrency

    maybe_patch_concurrency(["celery", *argv])
    from shared.celery_app import app

    app.worker_main(argv)


@cli.command(context_settings=PASSTHROUGH)
def beat(ctx: typer.Context) -> None:
    """Run beat, which schedules pollers and reconcile.

    One beat schedules at a time (a lease in Redis); another stands by and takes over if it stops or dies.
    """
    from wavesync.startup import prepare_data_dir, require_migrated

    settings = _settings()
    prepare_data_dir(settings)
    require_migrated(settings)
    from shared.celery_app import app

    app.start(["beat", *ctx.args])


@cli.command(context_settings=PASSTHROUGH)
def celery(ctx: typer.Context) -> None:
    """Any Celery command on this app, e.g. flower.

    For example `wavesync celery flower` or `wavesync celery inspect active`.
    """
    _settings()
    from shared.celery_app import app

    app.start(list(ctx.args))


@cli.command()
def sandbox(
    seed_customers: Annotated[int, typer.Option(help="Customerp customers to seed.")] = 20,
    seed_products: Annotated[int, typer.Option(help="Customerp products to seed.")] = 10,
    seed_orders: Annotated[int, typer.Option(help="Customerp orders to seed.")] = 15,
) -> None:
    """Serve the Customerp and Wave sandboxes on loopback."""
    from wavesync.services import run_sandboxes

    # The sandboxes keep everything in memory: they need nothing on disk.
    run_sandboxes(_settings(), seed_customers, seed_products, seed_orders)


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the link-store tables (Alembic)."""
    from shared.store.db import upgrade

    settings = _settings()
    with _link_store():
        upgrade(settings.database_url)
    typer.echo("database is up to date")


@cli.command()
def status(as_json: JsonOption = False) -> None:
    """Queues, dead letters, watermarks, links, lag."""
    from wavesync.ops import collect_status, render_status

    with _link_store():
        report = collect_status(_settings())
    _echo_json(report) if as_json else typer.echo(render_status(report))


@cli.command()
def reconcile(
    check: Annotated[bool, typer.Option("--check", help="Only report; exit 1 on any drift.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare both systems; repair drift (or --check).

    Repairs go through the normal queues; --check only reports and exits 1 on drift.
    """
    from wavesync.ops import render_reconcile, run_reconcile

    reports = run_reconcile(_settings(), repair=not check, quiet=as_json)
    _echo_json([r.as_dict() for r in reports]) if as_json else typer.echo(render_reconcile(reports, check=check))
    if check and any(r.problems for r in reports):
        raise typer.Exit(1)


@cli.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo's data directory afterwards.")] = False,
) -> None:
    """Show all three flows syncing both ways, then exit.

    Runs on the embedded defaults and ends with a drift check.
    """
    from wavesync.demo import run_demo

    raise typer.Exit(run_demo(_settings(), keep=keep))


EntityOption = Annotated[str | None, typer.Option("--entity", help=f"One of {', '.join(ENTITIES)}.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Substring of the reason or error class.")]


def _filter(entity: str | None, reason: str | None, ids: tuple[int, ...] = ()) -> Any:
    from shared.deadletters import Filter

    if entity and entity not in ENTITIES:
        raise typer.BadParameter(f"--entity must be one of {', '.join(ENTITIES)}")
    return Filter(entity=entity, reason=reason, ids=ids)


def _dead_letters() -> Any:
    from shared.deadletters import DeadLetters
    from shared.store.db import Database

    settings = _settings()
    return DeadLetters(Database(settings.database_url), settings)


@dlq_cli.command("list")
def dlq_list(entity: EntityOption = None, reason: ReasonOption = None, as_json: JsonOption = False) -> None:
    """List dead letters."""
    from wavesync.ops import render_dead_letters

    with _link_store():
        entries = _dead_letters().list(_filter(entity, reason))
    _echo_json(entries) if as_json else typer.echo(render_dead_letters(entries))


@dlq_cli.command("show")
def dlq_show(entry_id: int, as_json: JsonOption = False) -> None:
    """Show one dead letter in full."""
    with _link_store():
        entry = _dead_letters().get(entry_id)
    if entry is None:
        typer.echo(f"no dead letter {entry_id}", err=True)
        raise typer.Exit(1)
    from wavesync.ops import render_dead_letter

    _echo_json(entry) if as_json else typer.echo(render_dead_letter(entry))


@dlq_cli.command("replay")
def dlq_replay(
    entry_id: Annotated[int | None, typer.Argument(help="One entry; or use --entity / --all.")] = None,
    entity: EntityOption = None,
    reason: ReasonOption = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Every entry.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-enqueue dead letters: the record is re-read and synced.

    An entry leaves when its record syncs; a record that fails again keeps its entry, with one more attempt.
    """
    if entry_id is None and not (entity or reason or all_entries):
        raise typer.BadParameter("name an entry ID, or use --entity, --reason or --all")
    from workers.deadletters import send_sync

    def progress(done: int, total: int) -> None:
        if not as_json:
            typer.echo(f"replayed {done}/{total}", err=True)

    where = _filter(entity, reason, (entry_id,) if entry_id is not None else ())
    with _link_store():
        count = _dead_letters().replay(where, send_sync, progress)
    _echo_json({"replayed": count}) if as_json else typer.echo(f"{count} dead letter(s) re-enqueued")


@dlq_cli.command("purge")
def dlq_purge(
    entry_id: Annotated[int | None, typer.Argument(help="One entry; or use --entity / --all.")] = None,
    entity: EntityOption = None,
    reason: ReasonOption = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Every entry.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete dead letters without syncing them (the records stay as they are)."""
    if entry_id is None and not (entity or reason or all_entries):
        raise typer.BadParameter("name an entry ID, or use --entity, --reason or --all")
    with _link_store():
        count = _dead_letters().purge(_filter(entity, reason, (entry_id,) if entry_id is not None else ()))
    _echo_json({"purged": count}) if as_json else typer.echo(f"{count} dead letter(s) purged")


# --- wavesync doctor (logic in wavesync/doctor.py and wavesync/conformance.py) ---------------------------------
doctor_cli = typer.Typer(help="Preflight checks of the configured systems (read-only unless asked).")
cli.add_typer(doctor_cli, name="doctor")


@doctor_cli.callback(invoke_without_command=True)
def doctor(
    ctx: typer.Context,
    as_json: JsonOption = False,
    # `wavesync up`'s own run (wavesync/services.py): the beat it has just started is not checked.
    preflight: Annotated[bool, typer.Option("--preflight", hidden=True)] = False,
) -> None:
    """Check Redis, beat, the link store, Wave, Customerp and the settings: ✓ or ✗ with the fix; exit 1 on any ✗.

    `wavesync doctor customerp --conformance` checks an ERP against the Customerp contract.
    """
    if ctx.invoked_subcommand is not None:
        return
    from wavesync.doctor import dumps, exit_code, render, run_doctor

    checks = run_doctor(_settings(), preflight=preflight)
    typer.echo(dumps(checks) if as_json else render(checks))
    raise typer.Exit(exit_code(checks))


@doctor_cli.command("customerp")
def doctor_customerp(
    conformance: Annotated[
        bool, typer.Option("--conformance", help="Run the contract kit against WAVESYNC_CUSTOMERP_URL.")
    ] = False,
    write_checks: Annotated[
        bool,
        typer.Option("--write-checks", help="Also check writes, on scratch records named wavesync-conformance-*."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check Customerp only; with --conformance, the contract kit for ERP implementers (exit 1 on any ✗)."""
    from wavesync.doctor import dumps, exit_code, redact, render, utc_now

    settings = _settings()
    if write_checks and not conformance:
        raise typer.BadParameter("--write-checks needs --conformance")
    if conformance:
        from wavesync.conformance import run_conformance

        checks = run_conformance(settings, write_checks=write_checks)
    else:
        from wavesync.doctor import check_customerp

        checks = check_customerp(settings, utc_now, None)
    checks = redact(checks, settings.secrets())
    typer.echo(dumps(checks) if as_json else render(checks))
    raise typer.Exit(exit_code(checks))


@cli.command()
def connect(
    system: Annotated[str, typer.Argument(help="The system to authorize: wave.")],
    open_browser: Annotated[bool, typer.Option("--open", help="Open the authorize address in a browser.")] = False,
    code: Annotated[str | None, typer.Option(help="The code from Wave's redirect, pasted.")] = None,
    state: Annotated[str | None, typer.Option(help="The state from Wave's redirect, pasted with --code.")] = None,
    port: Annotated[int, typer.Option(help="Loopback port of the redirect (registered with Wave).")] = 8765,
    listen: Annotated[bool, typer.Option(help="Wait for the redirect; --no-listen only prints the address.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the redirect.")] = 300.0,
    rekey: Annotated[bool, typer.Option("--rekey", help="Only re-encrypt stored tokens with the first key.")] = False,
) -> None:
    """Authorize wavesync at Wave with OAuth2 and store the tokens (encrypted); resumes a paused sync.

    See docs/connecting.md.
    """
    from wavesync import connect as connecting

    if system != "wave":
        raise typer.BadParameter("only `wave` can be connected (Customerp takes an API key)")
    settings = _settings()
    try:
        with _link_store():
            if rekey:
                connecting.rekey(settings, typer.echo)
            else:
                connecting.connect_wave(
                    settings,
                    code=code,
                    state=state,
                    open_browser=open_browser,
                    listen=listen,
                    port=port,
                    timeout=timeout,
                    echo=typer.echo,
                )
    except connecting.ConnectError as exc:
        typer.echo(f"wavesync: {exc}", err=True)
        raise typer.Exit(1) from None


@cli.command()
def console() -> None:
    """Serve the operator console (a web page) on WAVESYNC_CONSOLE_HOST:PORT.

    Needs WAVESYNC_CONSOLE_PASSWORD (the operator's); WAVESYNC_CONSOLE_READONLY_PASSWORD adds a read-only login.
    """
    settings = _settings()
    if settings.console_password is None or not settings.console_password.get_secret_value():
        typer.echo("wavesync: set WAVESYNC_CONSOLE_PASSWORD (the operator's login) to serve the console", err=True)
        raise typer.Exit(2)
    for name, path in (("CERT", settings.console_tls_cert), ("KEY", settings.console_tls_key)):
        if path is not None and not path.is_file():
            typer.echo(f"wavesync: WAVESYNC_CONSOLE_TLS_{name} names no readable file: {path}", err=True)
            raise typer.Exit(2)
    import socket

    try:  # uvicorn would log the bind error after "console on ..." and exit 3: say it first, with the setting
        with socket.create_server((settings.console_host, settings.console_port)):
            pass
    except OSError as exc:
        typer.echo(
            f"wavesync: cannot serve the console on {settings.console_host}:{settings.console_port} "
            f"({exc.strerror or exc}): another console or `wavesync up` there? Set WAVESYNC_CONSOLE_PORT",
            err=True,
        )
        raise typer.Exit(2) from None
    from shared import logs
    from wavesync.console.app import serve

    logs.configure(settings.log_level, settings.log_format, settings.secrets())
    with _link_store():
        serve(settings)


@cli.command("history")
def history_command(
    entity: Annotated[str, typer.Argument(help=f"One of {', '.join(ENTITIES)}.")],
    record: Annotated[str, typer.Argument(help="Either system's id, an email, an order or invoice number, a name.")],
    limit: Annotated[int, typer.Option(help="Decisions per record, newest first.")] = 200,
    as_json: JsonOption = False,
) -> None:
    """Every sync decision about one record, newest first."""
    if entity not in ENTITIES:
        raise typer.BadParameter(f"ENTITY must be one of {', '.join(ENTITIES)}")
    from wavesync.audit import record_history, render_history

    with _link_store():
        found = record_history(_settings().database_url, entity, record, limit=limit)
    if not found:
        typer.echo(f"no {entity} record matches {record!r}", err=True)
        raise typer.Exit(1)
    _echo_json(found) if as_json else typer.echo(render_history(found))


def main(argv: list[str] | None = None) -> None:
    """Entry point: a bad setting is one clear line on stderr and exit status 2, never a traceback."""
    from kombu.exceptions import OperationalError as BrokerUnreachable
    from redis.exceptions import ConnectionError as RedisUnreachable
    from redis.exceptions import TimeoutError as RedisTimeout

    try:
        cli(args=argv, prog_name="wavesync")
    except SettingsError as exc:
        for line in exc.lines:
            print(f"wavesync: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    except (RedisUnreachable, RedisTimeout, BrokerUnreachable) as exc:  # kombu's, when it sends (dlq replay)
        # An operator's tool (reconcile, dlq) with Redis down; the worker and beat retry the broker themselves.
        # redis-py's message names the host and port, never the URL's password.
        print(f"wavesync: cannot reach Redis ({exc}); check WAVESYNC_REDIS_URL and that Redis runs", file=sys.stderr)
        raise SystemExit(1) from None
