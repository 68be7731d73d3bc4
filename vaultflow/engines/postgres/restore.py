"""PostgreSQL restores: into a staging database created with the snapshot's properties,
loaded by pg_restore (schema, data extras) and one COPY per table, then swapped in under
the target's name; staging left by killed restores is swept up."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from vaultflow.engines.base import RestoreObserver, StreamReader
from vaultflow.engines.postgres import DATA_EXTRA_FORMAT, LEGACY_FORMAT, SCHEMA_FORMAT, TABLE_FORMAT
from vaultflow.engines.postgres.database import DatabaseProperties
from vaultflow.engines.postgres.dump import tool_failure
from vaultflow.engines.postgres.patches import read_rows
from vaultflow.engines.postgres.segments import COPY_SETTINGS
from vaultflow.engines.process import Deadline, ToolProcess
from vaultflow.errors import InputError, TargetNotEmpty, ToolFailed, VaultflowError
from vaultflow.repository.manifest import StreamManifest

if TYPE_CHECKING:
    from vaultflow.engines.postgres.engine import PostgresEngine

_log = logging.getLogger("vaultflow.postgres")

# A restore's staging database older than this with nobody connected is an orphan of a
# killed restore (the default run deadline is 6 h).
STAGING_ORPHAN_SECONDS = 12 * 3600
_MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL cuts longer names


def side_database_name(prefix: str, target: str) -> str:
    """`<prefix>_<target>`, cut to 63 bytes: a staging or replaced copy names the database it
    belongs to, so whoever finds one left over knows which restore made it."""
    return f"{prefix}_{target}".encode()[:_MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")


def restore(
    engine: PostgresEngine, streams: list[StreamManifest], read: StreamReader, *, replace: bool = False,
    timeout: float | None = None, no_owner: bool = False, jobs: int = 1,
    tables: list[str] | None = None, observer: RestoreObserver | None = None, server_locale: bool = False,
) -> None:
    """See DatabaseEngine.restore. The database is created with the snapshot's encoding,
    locale, settings, comment, connection limit and owner (database.py)."""
    formats = {s.format for s in streams}
    if not formats <= {LEGACY_FORMAT, SCHEMA_FORMAT, TABLE_FORMAT, DATA_EXTRA_FORMAT}:
        raise InputError(f"a snapshot with {', '.join(sorted(formats))} streams cannot be restored into "
                         "PostgreSQL", "restore it into an engine of its own kind")
    target = engine.conn.database
    with engine._connect(engine.conn.maintenance_database) as admin:
        exists = engine._database_exists(admin, target)
        engine._check_tools(*engine._server_version(admin))
    if exists and not replace and engine.has_user_objects():
        raise TargetNotEmpty(
            f"database {target!r} on {engine.server_label()} already has tables",
            "restore into a new database name, or pass --replace to swap it out",
        )
    props = None if server_locale else next(
        (DatabaseProperties.from_meta(s.meta["database"]) for s in streams
         if s.format == SCHEMA_FORMAT and "database" in s.meta), None)
    staging = side_database_name(f"vf_restore_{int(time.time())}_{os.urandom(4).hex()}", target)
    with engine._connect(engine.conn.maintenance_database) as admin:
        _sweep_orphaned_staging(engine, admin)
        _create_database(engine, admin, staging, props)
    observer = observer or RestoreObserver()
    try:
        _load(engine.with_database(staging), streams, read, deadline=Deadline.start(timeout),
              no_owner=no_owner, jobs=jobs, tables=tables, observer=observer)
        if props is not None:
            _apply_properties(engine, staging, props, no_owner=no_owner)
        observer.finishing(failed=False)
        _swap_in(engine, staging, target, exists)
    except BaseException:
        observer.finishing(failed=True)
        _drop_quietly(engine, staging)
        raise


def _create_database(engine: PostgresEngine, admin: psycopg.Connection[Any], name: str,
                     props: DatabaseProperties | None) -> None:
    """CREATE DATABASE from template0, with the snapshot's encoding and locale if given."""
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if props is None:
        admin.execute(statement)
        return
    fix = ("install that locale on the target server (locale-gen, or an ICU build), or restore (or drill) "
           "with --server-locale to use the server's default encoding and locale")
    try:
        options = props.create_options(engine._server_version(admin)[0])
    except ValueError as exc:
        raise InputError(f"cannot restore into {engine.describe()} the snapshot's {props.describe()}: {exc}",
                         fix) from None
    try:
        admin.execute(sql.SQL("{} {}").format(statement, options))
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.WrongObjectType,
            psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedObject,
            psycopg.errors.ObjectNotInPrerequisiteState) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"cannot restore into {engine.describe()} the snapshot's {props.describe()} ({first})",
                         fix) from None


def _apply_properties(engine: PostgresEngine, database: str, props: DatabaseProperties, *, no_owner: bool) -> None:
    """The database's settings, comment, connection limit and (unless `no_owner`) owner,
    privileges and role settings, once its content is in: a setting such as
    default_transaction_read_only would stop the load. One that this server refuses is skipped
    with a warning (naming it and the error's kind, never the server's text, which may quote a value)."""
    ident = sql.Identifier(database)
    with engine._connect(engine.conn.maintenance_database) as admin:
        statements = props.setting_statements(database)
        if props.comment is not None:
            statements.append(("comment", sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                ident, sql.Literal(props.comment))))
        if not no_owner:
            statements += props.grant_statements(database) + props.role_setting_statements(database)
        if props.connection_limit != -1:
            statements.append(("connection limit", sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                ident, sql.Literal(props.connection_limit))))
        if props.owner and not no_owner:  # last: the rest needs the restoring role to own it
            statements.append((f"owner {props.owner}", sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                ident, sql.Identifier(props.owner))))
        for what, statement in statements:
            try:
                admin.execute(statement)
            except psycopg.Error as exc:  # its text may quote a setting's value: only its kind
                _log.warning("restoring %s: the source database's %s was not applied (%s)", engine.describe(),
                             what, type(exc).__name__)


def _sweep_orphaned_staging(engine: PostgresEngine, admin: psycopg.Connection[Any]) -> None:
    """Drop staging databases left by restores that were killed: older than
    STAGING_ORPHAN_SECONDS (from the time in their name) and with no session on them."""
    rows = admin.execute(
        "SELECT d.datname FROM pg_database d WHERE d.datname ~ '^vf_restore_[0-9]+_[0-9a-f]{8}(_|$)' "
        "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)").fetchall()
    for (name,) in rows:
        if time.time() - int(name.split("_")[2]) < STAGING_ORPHAN_SECONDS:
            continue
        try:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
            _log.warning("dropped %s on %s, left behind by a restore that did not finish", name,
                         engine.server_label())
        except psycopg.Error:
            pass  # in use after all, or dropped by another restore just now


def _load(engine: PostgresEngine, streams: list[StreamManifest], read: StreamReader, *, deadline: Deadline,
          no_owner: bool, jobs: int, tables: list[str] | None, observer: RestoreObserver) -> None:
    owner_flags = ["--no-owner", "--no-acl"] if no_owner else []
    restore = [engine._tool("pg_restore"), "--exit-on-error", *owner_flags, *engine._conn_args(engine.conn.database)]
    by_format: dict[str, list[StreamManifest]] = {}
    for s in streams:
        by_format.setdefault(s.format, []).append(s)
    for legacy in by_format.get(LEGACY_FORMAT, []):
        feed(engine, "pg_restore", restore, legacy, read, deadline)
    schema = by_format.get(SCHEMA_FORMAT, [])
    for s in schema:
        feed(engine, "pg_restore", [*restore, "--section=pre-data"], s, read, deadline)
    table_streams = by_format.get(TABLE_FORMAT, [])
    if tables is not None:
        wanted = set(tables)
        unknown = wanted - {f"{s.meta['schema']}.{s.meta['table']}" for s in table_streams}
        if unknown:
            raise InputError(f"the snapshot has no rows of table(s) {', '.join(sorted(unknown))}",
                             "give tables as schema.name, as vaultflow lists them")
        table_streams = [s for s in table_streams if f"{s.meta['schema']}.{s.meta['table']}" in wanted]
    # A table's streams (its key-range segments) load in key order through one COPY, so
    # its heap holds the rows in the order a backup reads them. Tables load `jobs` at a
    # time, largest first, so one big table does not start last and run alone at the end.
    by_table: dict[str, list[StreamManifest]] = {}
    for s in table_streams:
        by_table.setdefault(f"{s.meta['schema']}.{s.meta['table']}", []).append(s)

    def load_table(table: str, group: list[StreamManifest]) -> None:
        group.sort(key=lambda s: int(s.meta.get("segment", "0")))
        _copy_in(engine, table, group, read, deadline)
        observer.table_loaded(engine, table, group)

    order = sorted(by_table.items(), key=lambda item: sum(s.size for s in item[1]), reverse=True)
    with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="vf-load") as pool:
        futures = [pool.submit(load_table, table, group) for table, group in order]
        try:
            for fut in futures:
                fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    for s in by_format.get(DATA_EXTRA_FORMAT, []):
        feed(engine, "pg_restore", restore, s, read, deadline)
    for s in schema:
        if tables is None:
            feed(engine, "pg_restore", [*restore, "--section=post-data"], s, read, deadline)
        else:
            # A subset can lack the rows a foreign key of a restored table points at; such
            # constraints are left out (and named) instead of failing the whole restore.
            lenient = [a for a in restore if a != "--exit-on-error"]
            feed(engine, "pg_restore", [*lenient, "--section=post-data"], s, read, deadline, lenient=True)
        _refresh_matviews(engine, json.loads(s.meta.get("refresh_matviews", "[]")))


def _refresh_matviews(engine: PostgresEngine, names: list[list[str]]) -> None:
    """Refresh in creation order, retrying those that depend on a later one."""
    pending = [sql.Identifier(schema, name) for schema, name in names]
    with engine._connect() as c:
        while pending:
            failed = []
            for ident in pending:
                try:
                    c.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(ident))
                except psycopg.errors.ObjectNotInPrerequisiteState:
                    failed.append(ident)
            if len(failed) == len(pending):
                raise ToolFailed(f"cannot refresh materialized view {failed[0].as_string(None)} in "
                                 f"{engine.describe()}", "check the views it depends on")
            pending = failed


def _copy_in(engine: PostgresEngine, table: str, streams: list[StreamManifest], read: StreamReader,
             deadline: Deadline) -> None:
    """All rows of one new, empty table through one COPY, in the order of `streams`.

    The table is truncated in the COPY's own transaction: then COPY appends page after
    page without looking for free space in earlier pages (so the heap keeps the load
    order) and can FREEZE the rows (no hint-bit writes or freeze vacuum later).
    """
    meta = streams[0].meta
    ident = sql.Identifier(meta["schema"], meta["table"])
    columns = json.loads(meta.get("columns", "[]"))
    query = sql.SQL("COPY {} ({}) FROM STDIN WITH (FREEZE)").format(
        ident, sql.SQL(", ").join(sql.Identifier(c) for c in columns)).as_string(None)
    argv = [engine._tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *engine._conn_args(engine.conn.database),
            "-c", COPY_SETTINGS, "-c", "BEGIN", "-c", sql.SQL("TRUNCATE ONLY {}").format(ident).as_string(None),
            "-c", query, "-c", "COMMIT"]
    feed(engine, "psql", argv, streams, read, deadline, what=f"table {table}")


def feed(engine: PostgresEngine, tool: str, argv: list[str], streams: StreamManifest | list[StreamManifest],
         read: StreamReader, deadline: Deadline, *, lenient: bool = False, what: str | None = None) -> None:
    """Write the streams, one after another, into the tool's stdin."""
    if isinstance(streams, StreamManifest):
        what = what or f"stream {streams.name!r}"
        streams = [streams]
    with ToolProcess(argv, env=engine._tool_env(), stdin=subprocess.PIPE, timeout=deadline.remaining()) as proc:
        try:
            for stream in streams:
                read_rows(read, stream, proc.stdin)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the tool stopped early; its own error is reported below
        code = proc.wait()
        if lenient and code == 1 and _only_foreign_key_errors(proc.stderr_text()):
            _log.warning("%s: foreign keys pointing at rows that were not restored were left out: %s",
                         engine.describe(), proc.last_error_line())
            return
        if code != 0:
            failure = tool_failure(engine, tool, proc, deadline)
            # Keep the class: a restore cut off by a refused connection is worth a retry.
            raise type(failure)(f"restoring {what}: {failure.what}", failure.fix) from None


def _swap_in(engine: PostgresEngine, staging: str, target: str, exists: bool) -> None:
    ident = sql.Identifier
    with engine._connect(engine.conn.maintenance_database) as admin:
        if exists:
            old = side_database_name(f"vf_old_{os.urandom(6).hex()}", target)
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (target,))
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(target), ident(old)))
            try:
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(staging), ident(target)))
            except psycopg.Error:
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(old), ident(target)))
                raise
            try:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(old)))
            except psycopg.Error as exc:  # the restore itself succeeded; say what is left over
                _log.warning("restored %s, but could not drop the previous copy %s: %s", engine.describe(),
                             old, str(exc).strip().splitlines()[0])
        else:
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(staging), ident(target)))


def _drop_quietly(engine: PostgresEngine, name: str) -> None:
    try:
        with engine._connect(engine.conn.maintenance_database) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except VaultflowError:
        pass


def _only_foreign_key_errors(stderr: str) -> bool:
    """Whether every error pg_restore ignored was a foreign key its restored rows violate
    (what a restore of chosen tables expects), and none was lost from the kept stderr."""
    ignored = re.search(r"errors ignored on restore: (\d+)", stderr)
    failures = [ln for ln in stderr.splitlines() if "could not execute query" in ln]
    return (ignored is not None and int(ignored.group(1)) == len(failures) > 0
            and all("violates foreign key constraint" in ln for ln in failures))
